//! Which queues this server is streaming right now: one stream per queue, decided atomically
//! here before the broker is asked (the broker's exclusive consume then guards against other
//! servers).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

#[derive(Default)]
pub struct Registry {
    active: Mutex<HashMap<String, u64>>,
    next: AtomicU64,
}

/// Proof that this stream owns its queue here; dropping it releases the queue.
pub struct Claim<'a> {
    registry: &'a Registry,
    queue: String,
    id: u64,
}

impl Registry {
    /// Claims `queue`, or `None` when another stream of this server holds it.
    pub fn claim(&self, queue: &str) -> Option<Claim<'_>> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut active = lock(&self.active);
        if active.contains_key(queue) {
            return None;
        }
        active.insert(queue.to_string(), id);
        Some(Claim {
            registry: self,
            queue: queue.to_string(),
            id,
        })
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut active = lock(&self.registry.active);
        if active.get(&self.queue) == Some(&self.id) {
            active.remove(&self.queue);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_claim_per_queue_until_released() {
        let registry = Registry::default();
        let first = registry.claim("q");
        assert!(first.is_some());
        assert!(registry.claim("q").is_none());
        assert!(registry.claim("other").is_some());
        drop(first);
        assert!(registry.claim("q").is_some());
    }
}
