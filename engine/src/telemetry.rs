//! The engine's metrics, named and described in one place. The engine only records through the
//! `metrics` facade (a no-op until the process installs a recorder); the binary installs the
//! Prometheus recorder and serves `/metrics`.

use std::time::Duration;

use metrics::{counter, describe_counter, describe_histogram, histogram, Unit};

use crate::store::{Appended, StoreError};

/// Counter: events newly written to the log (a replayed append writes none).
pub const EVENTS_APPENDED_TOTAL: &str = "events_appended_total";
/// Histogram: how long one append took, from the call to the commit (or the failure).
pub const EVENT_APPEND_DURATION_SECONDS: &str = "event_append_duration_seconds";

/// Gives the recorder the help text of the engine's metrics (call once it is installed).
pub fn describe() {
    describe_counter!(
        EVENTS_APPENDED_TOTAL,
        Unit::Count,
        "Events newly written to the event log"
    );
    describe_histogram!(
        EVENT_APPEND_DURATION_SECONDS,
        Unit::Seconds,
        "Time one append to the event log took, including its inline projections and commit"
    );
}

/// Records one append: its duration, and the events it wrote.
pub(crate) fn appended(result: &Result<Appended, StoreError>, elapsed: Duration) {
    histogram!(EVENT_APPEND_DURATION_SECONDS).record(elapsed);
    if let Ok(appended) = result {
        if !appended.replayed && !appended.events.is_empty() {
            counter!(EVENTS_APPENDED_TOTAL).increment(appended.events.len() as u64);
        }
    }
}
