//! Counters shared by the server, and their `/debug/vars` rendering (the original's expvar
//! layout under the key `eventsourced`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    /// Broker connections that are up.
    pub broker_connections: AtomicUsize,
    /// Streams consuming from a queue right now.
    pub consumers: AtomicUsize,
    /// Deliveries written to clients since start.
    pub deliveries: AtomicU64,
    /// Stream requests refused because every worker was busy, since start.
    pub refusals_busy: AtomicU64,
    per_second: Mutex<SecondWindow>,
}

/// Deliveries counted per whole second since start: the one being filled and the one before.
#[derive(Debug, Default)]
struct SecondWindow {
    second: u64,
    current: u64,
    previous: u64,
}

impl SecondWindow {
    fn add(&mut self, second: u64, n: u64) {
        if second != self.second {
            self.previous = if second == self.second + 1 {
                self.current
            } else {
                0
            };
            self.current = 0;
            self.second = second;
        }
        self.current += n;
    }

    fn last_full_second(&self, second: u64) -> u64 {
        match second.checked_sub(self.second) {
            Some(0) => self.previous,
            Some(1) => self.current,
            _ => 0,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            broker_connections: AtomicUsize::new(0),
            consumers: AtomicUsize::new(0),
            deliveries: AtomicU64::new(0),
            refusals_busy: AtomicU64::new(0),
            per_second: Mutex::new(SecondWindow::default()),
        }
    }
}

impl Metrics {
    pub fn record_deliveries(&self, n: u64) {
        self.deliveries.fetch_add(n, Ordering::Relaxed);
        let second = self.started.elapsed().as_secs();
        if let Ok(mut window) = self.per_second.lock() {
            window.add(second, n);
        }
    }

    /// Deliveries during the last whole second.
    pub fn deliveries_last_second(&self) -> u64 {
        let second = self.started.elapsed().as_secs();
        self.per_second
            .lock()
            .map(|w| w.last_full_second(second))
            .unwrap_or(0)
    }

    /// The `/debug/vars` document.
    pub fn debug_vars_json(&self) -> String {
        let cmdline: Vec<String> = std::env::args().map(|a| json_string(&a)).collect();
        format!(
            "{{\n\"cmdline\": [{}],\n\"eventsourced\": {{\"Broker\": {}, \"Consumer\": {}, \"Delivery\": {}, \"Threads\": {}, \"Uptime\": {}, \"Busy\": {}}}\n}}\n",
            cmdline.join(", "),
            self.broker_connections.load(Ordering::Relaxed),
            self.consumers.load(Ordering::Relaxed),
            self.deliveries_last_second(),
            process_threads(),
            self.started.elapsed().as_nanos(),
            self.refusals_busy.load(Ordering::Relaxed),
        )
    }
}

/// Threads of this process, from `/proc/self/status` (0 where there is no procfs).
pub fn process_threads() -> u64 {
    proc_status_field("Threads:")
}

fn proc_status_field(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_reports_the_last_whole_second() {
        let mut w = SecondWindow::default();
        w.add(5, 3);
        w.add(5, 4);
        assert_eq!(w.last_full_second(5), 0);
        assert_eq!(w.last_full_second(6), 7);
        w.add(6, 1);
        assert_eq!(w.last_full_second(6), 7);
        assert_eq!(w.last_full_second(7), 1);
        assert_eq!(w.last_full_second(9), 0);
        w.add(9, 2);
        assert_eq!(w.last_full_second(9), 0);
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }

    #[test]
    fn debug_vars_has_the_original_keys() {
        let json = Metrics::default().debug_vars_json();
        for key in [
            "\"eventsourced\"",
            "\"Broker\"",
            "\"Consumer\"",
            "\"Delivery\"",
            "\"Threads\"",
            "\"Uptime\"",
        ] {
            assert!(json.contains(key), "{json}");
        }
    }
}
