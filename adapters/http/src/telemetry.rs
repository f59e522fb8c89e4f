//! The HTTP adapter's metrics, named and described in one place (the process installs the
//! recorder; `/metrics` renders it).

use std::time::Duration;

use metrics::{counter, describe_counter, describe_histogram, histogram, Unit};
use paystream_engine::order::PayChannel;
use paystream_engine::payments::{NoticeError, NoticeOutcome};

/// Counter `{method, route, status}`: requests answered. `route` is the matched path template
/// (`/api/orders/{id}`), or `unmatched`, so that ids never become label values.
pub const HTTP_REQUESTS_TOTAL: &str = "http_requests_total";
/// Histogram `{method, route}`: time from the request's arrival to its answer.
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "http_request_duration_seconds";
/// Counter `{channel, outcome}`: WeChat Pay notifications by what became of them —
/// `recorded`, `duplicate` (already known, nothing to record), `unverifiable`, `malformed`,
/// `not_ours`, `failed` (believed but not recorded: WeChat sends it again).
pub const NOTIFICATIONS_TOTAL: &str = "notifications_total";

/// Gives the recorder the help text of these metrics (call once it is installed).
pub fn describe() {
    describe_counter!(
        HTTP_REQUESTS_TOTAL,
        Unit::Count,
        "HTTP requests answered, by method, route template and status"
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Time to answer an HTTP request, by method and route template"
    );
    describe_counter!(
        NOTIFICATIONS_TOTAL,
        Unit::Count,
        "WeChat Pay notifications received, by channel and outcome"
    );
}

/// One answered request.
pub(crate) fn request(method: &'static str, route: &str, status: u16, elapsed: Duration) {
    let route = route.to_owned();
    counter!(HTTP_REQUESTS_TOTAL, "method" => method, "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    histogram!(HTTP_REQUEST_DURATION_SECONDS, "method" => method, "route" => route).record(elapsed);
}

/// The `outcome` label of a notification.
pub(crate) fn notice_outcome(result: &Result<NoticeOutcome, NoticeError>) -> &'static str {
    match result {
        Ok(NoticeOutcome::Recorded) => "recorded",
        Ok(NoticeOutcome::Nothing) => "duplicate",
        Err(NoticeError::Unverifiable(_)) => "unverifiable",
        Err(NoticeError::Malformed(_)) => "malformed",
        Err(NoticeError::NotOurs(_)) => "not_ours",
        Err(NoticeError::Failed(_)) => "failed",
    }
}

/// One notification handed to the engine, and what became of it.
pub(crate) fn notice(channel: PayChannel, result: &Result<NoticeOutcome, NoticeError>) {
    counter!(NOTIFICATIONS_TOTAL, "channel" => channel.as_str(), "outcome" => notice_outcome(result))
        .increment(1);
}
