//! Jitter for timings that many parties would otherwise share (re-dial delays, EventSource
//! retries). Not for secrets: std's per-process random hasher keys, stirred by a counter.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// 64 random bits, different on each call (and in each process).
pub fn next_u64() -> u64 {
    static STATE: OnceLock<RandomState> = OnceLock::new();
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let mut hasher = STATE.get_or_init(RandomState::new).build_hasher();
    hasher.write_u64(DRAWS.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

/// A number from 0.0 to 1.0, different on each call.
pub fn unit() -> f64 {
    (next_u64() % 1_000_001) as f64 / 1_000_000.0
}

/// `value` moved up or down by at most `percent` percent, at random.
pub fn jitter(value: f64, percent: u8) -> f64 {
    let spread = f64::from(percent) / 100.0;
    value * (1.0 - spread + 2.0 * spread * unit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_its_bounds_and_varies() {
        let draws: Vec<f64> = (0..1000).map(|_| jitter(1000.0, 20)).collect();
        assert!(draws.iter().all(|d| (800.0..=1200.0).contains(d)));
        assert!(draws.iter().any(|d| *d < 900.0) && draws.iter().any(|d| *d > 1100.0));
        assert_eq!(jitter(1000.0, 0), 1000.0);
    }
}
