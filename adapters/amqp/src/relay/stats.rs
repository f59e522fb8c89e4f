//! The relay's counters, for /readyz and /metrics.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use paystream_engine::store::Checkpoint;

/// What the relay has done so far, readable at any time.
#[derive(Debug, Default)]
pub struct RelayStats {
    pub(super) published: AtomicU64,
    checkpoint_tx: AtomicI64,
    checkpoint_position: AtomicI64,
    pub(super) connected: AtomicBool,
    pub(super) leader: AtomicBool,
    pub(super) failures: AtomicU64,
}

impl RelayStats {
    /// Events published and confirmed by the broker (repeats after a failure count again).
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// The last checkpoint saved (everything up to it was confirmed by the broker).
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            transaction: self.checkpoint_tx.load(Ordering::Relaxed),
            position: self.checkpoint_position.load(Ordering::Relaxed),
        }
    }

    /// Connected to the broker and publishing (only the lease holder connects).
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Holds the relay lease.
    pub fn leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// Sessions that ended in an error (broker unreachable, nack, lost connection).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    pub(super) fn saved(&self, at: Checkpoint) {
        self.checkpoint_tx.store(at.transaction, Ordering::Relaxed);
        self.checkpoint_position
            .store(at.position, Ordering::Relaxed);
    }
}
