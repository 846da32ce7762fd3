//! Counters shared by the server, and their two renderings: `/debug/vars` (the original's expvar
//! layout under the key `eventsourced`) and `/metrics` (Prometheus text).

use crate::refusal::Refusal;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    /// Broker connections that are up.
    pub broker_connections: AtomicUsize,
    /// Synchronous calls to the broker in flight (a count that stays up means a silent broker).
    pub broker_calls: AtomicUsize,
    /// Streams consuming from a queue right now.
    pub consumers: Gauge,
    /// Streams following another stream of their queue here right now.
    pub followers: Gauge,
    /// Deliveries written to clients since start.
    pub deliveries: AtomicU64,
    /// Stream requests refused because every worker was busy, since start.
    pub refusals_busy: AtomicU64,
    /// Deliveries acked to the broker, since start.
    pub acks: AtomicU64,
    /// Bytes written to stream clients, since start.
    pub bytes_written: AtomicU64,
    /// Worker threads: the pool's bound, those alive, those serving a request.
    pub workers_limit: AtomicUsize,
    pub workers_live: Gauge,
    pub workers_busy: Gauge,
    /// The most of a worker's stack found in memory (after a request, and before a quiet stream
    /// gives its unused stack back): what the stack size must leave room for.
    pub worker_stack_peak: AtomicUsize,
    /// Set by SIGTERM with `server.drain`: not ready, new streams refused.
    pub draining: AtomicBool,
    /// Refusals by reason, since start.
    refusals: Mutex<BTreeMap<&'static str, u64>>,
    per_second: Mutex<SecondWindow>,
}

/// A count of things alive right now, kept by guards: `count` adds one, and dropping the guard
/// takes it away again, whatever path the counted thing leaves by.
#[derive(Debug, Default)]
pub struct Gauge(AtomicUsize);

/// One counted thing; dropping it uncounts it.
#[must_use = "the count drops when the guard does"]
pub struct Counted<'a>(&'a Gauge);

impl Gauge {
    pub fn count(&self) -> Counted<'_> {
        self.0.fetch_add(1, Ordering::AcqRel);
        Counted(self)
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire) as u64
    }
}

/// A counted thing that moves to another thread with its count.
#[must_use = "the count drops when the guard does"]
pub struct OwnedCount {
    metrics: std::sync::Arc<Metrics>,
    gauge: fn(&Metrics) -> &Gauge,
}

impl OwnedCount {
    pub fn new(metrics: &std::sync::Arc<Metrics>, gauge: fn(&Metrics) -> &Gauge) -> OwnedCount {
        gauge(metrics).0.fetch_add(1, Ordering::AcqRel);
        OwnedCount {
            metrics: std::sync::Arc::clone(metrics),
            gauge,
        }
    }
}

impl Drop for OwnedCount {
    fn drop(&mut self) {
        (self.gauge)(&self.metrics).0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
    }
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
            broker_calls: AtomicUsize::new(0),
            consumers: Gauge::default(),
            followers: Gauge::default(),
            deliveries: AtomicU64::new(0),
            refusals_busy: AtomicU64::new(0),
            acks: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            workers_limit: AtomicUsize::new(0),
            workers_live: Gauge::default(),
            workers_busy: Gauge::default(),
            worker_stack_peak: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            refusals: Mutex::new(BTreeMap::new()),
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

    /// Notes how much of the calling worker's stack is in memory, then gives back the pages
    /// below the caller's frame (see `sys::give_back_unused_stack`).
    pub fn note_stack_and_give_back(&self) {
        if let Some(bytes) = crate::sys::own_stack_resident() {
            self.worker_stack_peak.fetch_max(bytes, Ordering::Relaxed);
        }
        crate::sys::give_back_unused_stack();
    }

    /// Counts a refusal under its label.
    pub fn refused(&self, refusal: Refusal) {
        if let Ok(mut refusals) = self.refusals.lock() {
            *refusals.entry(refusal.label()).or_default() += 1;
        }
    }

    /// The `/metrics` document, in Prometheus' text format.
    pub fn prometheus_text(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let plain = |v: u64| vec![(String::new(), v)];
        let load = |a: &AtomicUsize| a.load(Ordering::Relaxed) as u64;
        metric(
            "eventsourced_streams_open",
            "gauge",
            "Streams open now.",
            &plain(self.consumers.get()),
        );
        metric(
            "eventsourced_followers_open",
            "gauge",
            "Streams open now that follow another stream of their queue here.",
            &plain(self.followers.get()),
        );
        metric(
            "eventsourced_deliveries_total",
            "counter",
            "Messages written to stream clients.",
            &plain(self.deliveries.load(Ordering::Relaxed)),
        );
        metric(
            "eventsourced_acks_total",
            "counter",
            "Messages acked to the broker once the client had them.",
            &plain(self.acks.load(Ordering::Relaxed)),
        );
        metric(
            "eventsourced_bytes_written_total",
            "counter",
            "Bytes written to stream clients.",
            &plain(self.bytes_written.load(Ordering::Relaxed)),
        );
        let refusals: Vec<(String, u64)> = self
            .refusals
            .lock()
            .map(|r| {
                r.iter()
                    .map(|(k, v)| (format!("{{reason=\"{}\"}}", label(k)), *v))
                    .collect()
            })
            .unwrap_or_default();
        metric(
            "eventsourced_refusals_total",
            "counter",
            "Requests refused, by reason.",
            &refusals,
        );
        metric(
            "eventsourced_broker_connections",
            "gauge",
            "Broker connections up.",
            &plain(load(&self.broker_connections)),
        );
        metric(
            "eventsourced_broker_calls_pending",
            "gauge",
            "Synchronous calls to the broker in flight.",
            &plain(load(&self.broker_calls)),
        );
        let workers = vec![
            ("{state=\"limit\"}".to_string(), load(&self.workers_limit)),
            ("{state=\"live\"}".to_string(), self.workers_live.get()),
            ("{state=\"busy\"}".to_string(), self.workers_busy.get()),
        ];
        metric(
            "eventsourced_workers",
            "gauge",
            "Worker threads: the pool's bound, alive, serving.",
            &workers,
        );
        metric(
            "eventsourced_worker_stack_peak_bytes",
            "gauge",
            "The most of a worker thread's stack in memory after a request.",
            &plain(load(&self.worker_stack_peak)),
        );
        metric(
            "eventsourced_draining",
            "gauge",
            "1 while the server drains before stopping.",
            &plain(u64::from(self.draining.load(Ordering::Relaxed))),
        );
        metric(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory of the process.",
            &plain(proc_status_field("VmRSS:") * 1024),
        );
        metric(
            "process_threads",
            "gauge",
            "Threads of the process.",
            &plain(process_threads()),
        );
        out
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
            self.consumers.get(),
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

/// A Prometheus label value, escaped.
fn label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
    fn prometheus_text_has_every_family_and_counts_refusals() {
        let metrics = Metrics::default();
        metrics.refused(Refusal::InvalidQueueName);
        metrics.refused(Refusal::InvalidQueueName);
        metrics.refused(Refusal::BrokerFailed);
        let text = metrics.prometheus_text();
        assert!(
            text.contains("eventsourced_refusals_total{reason=\"invalid queue name\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("eventsourced_refusals_total{reason=\"broker: request failed\"} 1\n"),
            "{text}"
        );
        for family in [
            "eventsourced_streams_open",
            "eventsourced_deliveries_total",
            "eventsourced_acks_total",
            "eventsourced_bytes_written_total",
            "eventsourced_broker_connections",
            "eventsourced_workers{state=\"busy\"}",
            "process_resident_memory_bytes",
            "process_threads",
        ] {
            assert!(text.contains(family), "{family} missing in\n{text}");
        }
        assert_eq!(label("a\"b\\c"), "a\\\"b\\\\c");
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
