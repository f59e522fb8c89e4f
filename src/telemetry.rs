//! The process's metrics: the Prometheus recorder (installed once per process, however many
//! engines it starts — the tests start many), and the metrics of the background jobs, named and
//! described here. The engine's and the HTTP adapter's live in their own `telemetry` modules.

use std::sync::OnceLock;

use metrics::{describe_counter, describe_gauge, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Counter `{result}`: payments asked about at WeChat Pay by the poller — `recorded` (paid, no
/// notice had come), `user_paying`, `payment_failed`, `nothing` (unpaid, closed, already known),
/// `error` (the query failed).
pub const PAYMENT_CHECKS_TOTAL: &str = "payment_checks_total";
/// Counter `{result}`: refunds asked about (or sent again) by the poller — `ok`, `error`.
pub const REFUND_CHECKS_TOTAL: &str = "refund_checks_total";
/// Counter: unpaid orders closed because their time was up.
pub const ORDERS_EXPIRED_TOTAL: &str = "orders_expired_total";
/// Gauge: refunds still processing (requested, no outcome yet), as of the poller's last pass.
pub const REFUNDS_IN_FLIGHT: &str = "refunds_in_flight";
/// Gauge: events in the log the RabbitMQ relay has not yet published (confirmed and
/// checkpointed), counted up to [`RELAY_LAG_CAP`]. Only with `AMQP_URL`. The orders read model
/// has no lag to report: it is projected inline, in the append's own transaction.
pub const RELAY_LAG_EVENTS: &str = "relay_lag_events";
/// Counting stops here: past it the gauge says "at least this many".
pub const RELAY_LAG_CAP: i64 = 100_000;

/// Histogram buckets, in seconds: an HTTP request (milliseconds to the 10 s deadline).
const HTTP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Histogram buckets, in seconds: one append (sub-millisecond on SQLite, a commit on PostgreSQL).
const APPEND_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// The process-wide Prometheus recorder's handle: installs the recorder on the first call and
/// returns the same handle on every call after. Should another recorder already be installed
/// (an embedding program's), this handle renders nothing and a warning says why.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(install).clone()
}

fn install() -> PrometheusHandle {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(paystream_http::telemetry::HTTP_REQUEST_DURATION_SECONDS.into()),
            HTTP_BUCKETS,
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(paystream_engine::telemetry::EVENT_APPEND_DURATION_SECONDS.into()),
                APPEND_BUCKETS,
            )
        })
        .expect("bucket lists are not empty")
        .build_recorder();
    let handle = recorder.handle();
    match metrics::set_global_recorder(recorder) {
        Ok(()) => {
            paystream_engine::telemetry::describe();
            paystream_http::telemetry::describe();
            describe();
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder not installed: /metrics stays empty")
        }
    }
    handle
}

fn describe() {
    describe_counter!(
        PAYMENT_CHECKS_TOTAL,
        Unit::Count,
        "Payments asked about at WeChat Pay by the poller, by result"
    );
    describe_counter!(
        REFUND_CHECKS_TOTAL,
        Unit::Count,
        "Refunds asked about at WeChat Pay by the poller, by result"
    );
    describe_counter!(
        ORDERS_EXPIRED_TOTAL,
        Unit::Count,
        "Unpaid orders closed because their time was up"
    );
    describe_gauge!(
        REFUNDS_IN_FLIGHT,
        Unit::Count,
        "Refunds still processing as of the poller's last pass"
    );
    describe_gauge!(
        RELAY_LAG_EVENTS,
        Unit::Count,
        "Events in the log not yet published to RabbitMQ by the relay (capped)"
    );
}
