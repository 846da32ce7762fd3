//! The checks on single values, and how the configuration's own types read and write themselves.
//!
//! Each check runs inside deserialisation, while the YAML scalar is still being read, so that
//! yaml_serde reports a refusal with the key path and the line of the offending value. The
//! fields they fill are plain values: nothing downstream checks them again.

use crate::amqp::BrokerUrl;
use crate::stream::pattern::Pattern;
use crate::stream::registry::Conflict;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

/// The longest `queue.expires` whose milliseconds still fit the original's signed 32-bit
/// `x-expires` argument.
const MAX_EXPIRES_SECS: u32 = (i32::MAX / 1000) as u32;

/// The longest any duration in seconds may be set to: a day.
const DAY_SECS: u64 = 86_400;

/// A section written with nothing under it (every key commented out) sets nothing.
pub fn section<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

pub fn address<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked_str(d, |text| match text.rsplit_once(':') {
        Some((_, port)) if port.parse::<u16>().is_ok() => Ok(text.to_string()),
        _ => Err(format!(
            "address {text:?} must be HOST:PORT, like 0.0.0.0:2069"
        )),
    })
}

/// An address as `address` checks it, or empty for none.
pub fn optional_address<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked_str(d, |text| match text.rsplit_once(':') {
        _ if text.is_empty() => Ok(String::new()),
        Some((_, port)) if port.parse::<u16>().is_ok() => Ok(text.to_string()),
        _ => Err(format!(
            "address {text:?} must be HOST:PORT, like 127.0.0.1:2070, or empty for none"
        )),
    })
}

pub fn workers<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    checked_u64(d, |n| match usize::try_from(n) {
        Ok(n @ 1..=100_000) => Ok(n),
        _ => Err(format!("workers {n} must be from 1 to 100000")),
    })
}

/// A timeout in whole seconds: at least one, since zero would mean "no time at all".
pub fn timeout_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    checked_u64(d, |n| match n {
        1..=DAY_SECS => Ok(n),
        n => Err(format!("{n} must be from 1 to {DAY_SECS} seconds")),
    })
}

/// An age in whole seconds, where zero is a real setting (at once).
pub fn age_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    checked_u64(d, |n| match n {
        0..=DAY_SECS => Ok(n),
        n => Err(format!("{n} must be from 0 to {DAY_SECS} seconds")),
    })
}

pub fn percent<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    checked_u64(d, |n| match u8::try_from(n) {
        Ok(p @ 0..=100) => Ok(p),
        _ => Err(format!("{n} must be a percentage from 0 to 100")),
    })
}

pub fn expires<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    checked_u64(d, |n| match u32::try_from(n) {
        Ok(n @ 1..=MAX_EXPIRES_SECS) => Ok(n),
        _ => Err(format!(
            "expires {n} must be from 1 to {MAX_EXPIRES_SECS} seconds"
        )),
    })
}

pub fn prefetch<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    checked_u64(d, |n| match u16::try_from(n) {
        Ok(0) => Err("prefetch 0 would let the broker send without limit: use 1 or more".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("prefetch {n} must be at most 65535")),
    })
}

/// A header map: names checked and written as Go's `Header.Set` writes them, values checked and
/// trimmed.
pub fn headers<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let map = BTreeMap::<HeaderName, HeaderValue>::deserialize(d)?;
    Ok(map.into_iter().map(|(k, v)| (k.0, v.0)).collect())
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct HeaderName(String);

#[derive(Debug)]
struct HeaderValue(String);

impl<'de> Deserialize<'de> for HeaderName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, |text| {
            let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            if text.is_empty() || !text.bytes().all(token) {
                return Err(format!("{text:?} is not a valid HTTP header name"));
            }
            Ok(HeaderName(canonical_header_name(text)))
        })
    }
}

impl<'de> Deserialize<'de> for HeaderValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, |text| {
            if text.chars().any(|c| c.is_control() && c != '\t') {
                return Err(format!("header value {text:?} holds a control character"));
            }
            Ok(HeaderValue(text.trim().to_string()))
        })
    }
}

/// `content-type` -> `Content-Type`, as Go's `Header.Set` writes names.
pub fn canonical_header_name(name: &str) -> String {
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

impl<'de> Deserialize<'de> for BrokerUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, |text| {
            // The message must not carry the password: name the URL by its redacted form.
            BrokerUrl::parse(text).map_err(|e| format!("invalid broker URL {}: {e}", redact(text)))
        })
    }
}

/// `-c` prints URLs as configured, password included: its output is a config file.
impl Serialize for BrokerUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_configured())
    }
}

/// Hides whatever stands between `user:` and `@` in something that failed to parse as a URL.
fn redact(text: &str) -> String {
    match (text.find("://"), text.rfind('@')) {
        (Some(s), Some(at)) if at > s => match text[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &text[..s + 3], &text[at..]),
            None => text.to_string(),
        },
        _ => text.to_string(),
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, |text| {
            Pattern::parse(text).map_err(|e| format!("invalid pattern {text:?}: {e}"))
        })
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_configured())
    }
}

impl<'de> Deserialize<'de> for Conflict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, |text| match text {
            "share" => Ok(Conflict::Share),
            "takeover" => Ok(Conflict::Takeover),
            "reject" => Ok(Conflict::Reject),
            other => Err(format!(
                "conflict {other:?} must be share, takeover or reject"
            )),
        })
    }
}

impl Serialize for Conflict {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            Conflict::Share => "share",
            Conflict::Takeover => "takeover",
            Conflict::Reject => "reject",
        })
    }
}

/// Runs `check` on a string while the YAML scalar is still being read, so that a refusal
/// carries that value's key path and line (an error raised after `String::deserialize` has
/// returned is reported at the enclosing mapping instead).
fn checked_str<'de, D, T>(d: D, check: fn(&str) -> Result<T, String>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct Checked<T>(fn(&str) -> Result<T, String>);
    impl<T> serde::de::Visitor<'_> for Checked<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
            (self.0)(v).map_err(E::custom)
        }
    }
    d.deserialize_str(Checked(check))
}

/// As `checked_str`, for whole numbers.
fn checked_u64<'de, D, T>(d: D, check: fn(u64) -> Result<T, String>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct Checked<T>(fn(u64) -> Result<T, String>);
    impl<T> serde::de::Visitor<'_> for Checked<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a whole number")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<T, E> {
            (self.0)(v).map_err(E::custom)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<T, E> {
            let v = u64::try_from(v).map_err(|_| E::custom(format!("{v} is negative")))?;
            (self.0)(v).map_err(E::custom)
        }
    }
    d.deserialize_u64(Checked(check))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_are_canonical() {
        assert_eq!(
            canonical_header_name("x-accel-BUFFERING"),
            "X-Accel-Buffering"
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("amqps://u:pw@h/"), "amqps://u:***@h/");
        assert_eq!(redact("amqp://h/"), "amqp://h/");
    }
}
