//! Holding the relay lease from the relay's side: when to renew, and when to stop trusting it.

use std::time::{Duration, Instant};

use paystream_engine::consumers::lease::Lease;

/// The lease plus when it was last confirmed, so that a holder that cannot renew stops before
/// its lease could have expired and been taken by someone else.
pub(super) struct LeaseClock {
    pub(super) lease: Lease,
    renewed_at: Option<Instant>,
}

impl LeaseClock {
    pub(super) fn new(lease: Lease) -> LeaseClock {
        LeaseClock {
            lease,
            renewed_at: None,
        }
    }

    pub(super) fn renew_every(&self) -> Duration {
        self.lease.ttl() / 3
    }

    pub(super) async fn acquire(&mut self) -> Result<bool, sqlx::Error> {
        let asked_at = Instant::now();
        let held = self.lease.try_acquire().await?;
        self.renewed_at = held.then_some(asked_at);
        Ok(held)
    }

    /// Renews when due; `false` once the lease is lost or could not be renewed in time.
    pub(super) async fn keep(&mut self) -> bool {
        let Some(renewed_at) = self.renewed_at else {
            return false;
        };
        if renewed_at.elapsed() < self.renew_every() {
            return true;
        }
        let asked_at = Instant::now();
        match self.lease.try_acquire().await {
            Ok(true) => {
                self.renewed_at = Some(asked_at);
                true
            }
            Ok(false) => {
                self.renewed_at = None;
                false
            }
            Err(e) => {
                tracing::warn!(holder = %self.lease.holder(), error = %e, "cannot renew the relay lease");
                // Keep publishing while the last renewal surely still holds (3/4 of its life).
                renewed_at.elapsed() < self.lease.ttl() * 3 / 4
            }
        }
    }
}
