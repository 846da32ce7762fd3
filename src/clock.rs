//! Wall-clock formatting for log lines and the HTTP `Date` header, without a date crate.

use std::time::{SystemTime, UNIX_EPOCH};

/// A UTC civil time, split into its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub micros: u32,
    /// 0 = Sunday.
    pub weekday: u32,
}

impl UtcTime {
    pub fn now() -> UtcTime {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        UtcTime::from_unix(since.as_secs() as i64, since.subsec_micros())
    }

    pub fn from_unix(secs: i64, micros: u32) -> UtcTime {
        let days = secs.div_euclid(86_400);
        let of_day = secs.rem_euclid(86_400) as u32;
        // Howard Hinnant's days-to-civil algorithm.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        UtcTime {
            year,
            month,
            day,
            hour: of_day / 3600,
            minute: of_day / 60 % 60,
            second: of_day % 60,
            micros,
            weekday: (days + 4).rem_euclid(7) as u32,
        }
    }

    /// `Sun, 22 Nov 2026 11:33:55 GMT` (RFC 9110 IMF-fixdate).
    pub fn http_date(&self) -> String {
        const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        format!(
            "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
            DAYS[self.weekday as usize],
            self.day,
            MONTHS[(self.month - 1) as usize],
            self.year,
            self.hour,
            self.minute,
            self.second
        )
    }

    /// `2026/11/22 11:33:55.123456`, the original's log timestamp.
    pub fn log_stamp(&self) -> String {
        format!(
            "{}/{:02}/{:02} {:02}:{:02}:{:02}.{:06}",
            self.year, self.month, self.day, self.hour, self.minute, self.second, self.micros
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(
            UtcTime::from_unix(0, 0).http_date(),
            "Thu, 01 Jan 1970 00:00:00 GMT"
        );
        let t = UtcTime::from_unix(1_795_347_235, 42);
        assert_eq!(t.http_date(), "Sun, 22 Nov 2026 11:33:55 GMT");
        assert_eq!(t.log_stamp(), "2026/11/22 11:33:55.000042");
        assert_eq!(
            UtcTime::from_unix(951_782_400, 0).http_date(),
            "Tue, 29 Feb 2000 00:00:00 GMT"
        );
    }
}
