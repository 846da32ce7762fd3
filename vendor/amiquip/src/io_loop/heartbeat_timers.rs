use crate::heartbeats::Heartbeat;
use log::trace;
use std::time::{Duration, Instant};

pub(super) use crate::heartbeats::HeartbeatState;

const MAX_MISSED_SERVER_HEARTBEATS: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum HeartbeatKind {
    Rx,
    Tx,
}

struct RxTxHeartbeat {
    rx: Heartbeat<HeartbeatKind>,
    tx: Heartbeat<HeartbeatKind>,
}

#[derive(Default)]
pub(super) struct HeartbeatTimers {
    heartbeats: Option<RxTxHeartbeat>,
}

impl HeartbeatTimers {
    pub(super) fn record_rx_activity(&mut self) {
        if let Some(hb) = &mut self.heartbeats {
            trace!("recording activity for rx heartbeat");
            hb.rx.record_activity();
        }
    }

    pub(super) fn record_tx_activity(&mut self) {
        if let Some(hb) = &mut self.heartbeats {
            trace!("recording activity for tx heartbeat");
            hb.tx.record_activity();
        }
    }

    pub(super) fn start(&mut self, interval: Duration) {
        assert!(
            self.heartbeats.is_none(),
            "heartbeat timer started multiple times"
        );
        self.heartbeats = Some(RxTxHeartbeat {
            rx: Heartbeat::start(HeartbeatKind::Rx, MAX_MISSED_SERVER_HEARTBEATS * interval),
            tx: Heartbeat::start(HeartbeatKind::Tx, interval),
        });
    }

    /// The nearest deadline, if heartbeats run.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let hb = self.heartbeats.as_ref()?;
        Some(hb.rx.deadline().min(hb.tx.deadline()))
    }

    /// The heartbeats whose deadline has come, each with what it found.
    pub(super) fn fire(&mut self, now: Instant) -> Vec<(HeartbeatKind, HeartbeatState)> {
        let mut fired = Vec::new();
        if let Some(hb) = &mut self.heartbeats {
            if let Some(state) = hb.rx.fire(now) {
                fired.push((HeartbeatKind::Rx, state));
            }
            if let Some(state) = hb.tx.fire(now) {
                fired.push((HeartbeatKind::Tx, state));
            }
        }
        fired
    }
}
