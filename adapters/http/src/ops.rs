//! What operators and orchestrators use: readiness (`/readyz`; liveness, `/healthz`, sits with
//! the customer API), Prometheus metrics (`/metrics`), and the one access-log line and request
//! metrics every answered request leaves ([`observe`]).

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use metrics_exporter_prometheus::PrometheusHandle;
use paystream_engine::consumers::Broker;
use paystream_engine::db::Db;
use serde_json::{json, Value};
use tokio::sync::Mutex;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::client_ip;
use crate::{telemetry, AppState, REQUEST_ID};

/// A database that does not answer `SELECT 1` within this is not ready (the pool itself would
/// wait up to its acquire timeout, far longer than a probe should).
const DATABASE_TIMEOUT: Duration = Duration::from_secs(2);
/// A broker that does not accept a connection within this is not ready.
const BROKER_TIMEOUT: Duration = Duration::from_secs(3);
/// A broker check is reused this long, so a storm of probes opens one connection, not one each.
const BROKER_CHECK_TTL: Duration = Duration::from_secs(2);

/// The route label and access-log route of a request that matched no route (never the raw path:
/// it is unbounded, and may carry anything).
pub const UNMATCHED: &str = "unmatched";

/// Where the access log goes (`RUST_LOG=paystream_http::access=off` silences it).
pub const ACCESS_LOG: &str = "paystream_http::access";

/// State of the operations endpoints: the metrics to render and the last broker check.
pub struct Ops {
    metrics: PrometheusHandle,
    /// When the broker was last checked and whether it answered. Held across a check, so
    /// concurrent probes wait for that one check instead of starting their own.
    broker_checked: Mutex<Option<(Instant, bool)>>,
}

impl Ops {
    /// `metrics`: the process-wide Prometheus recorder's handle (installed once per process).
    pub fn new(metrics: PrometheusHandle) -> Ops {
        Ops {
            metrics,
            broker_checked: Mutex::new(None),
        }
    }

    /// Whether the broker accepts a connection, checked at most every [`BROKER_CHECK_TTL`].
    async fn broker_ok(&self, broker: &dyn Broker) -> bool {
        let mut checked = self.broker_checked.lock().await;
        if let Some((at, ok)) = *checked {
            if at.elapsed() < BROKER_CHECK_TTL {
                return ok;
            }
        }
        let ok = match tokio::time::timeout(BROKER_TIMEOUT, broker.check()).await {
            Ok(Ok(())) => true,
            Ok(Err(reason)) => {
                tracing::warn!(%reason, "not ready: the broker does not accept a connection");
                false
            }
            Err(_) => {
                tracing::warn!(
                    timeout_ms = BROKER_TIMEOUT.as_millis() as u64,
                    "not ready: the broker did not answer in time"
                );
                false
            }
        };
        *checked = Some((Instant::now(), ok));
        ok
    }
}

/// Each endpoint with its OpenAPI operation (the handler's `#[utoipa::path]`).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ready))
        .routes(routes!(metrics))
}

/// One readiness check's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    Ok,
    Unavailable,
    /// Not part of this deployment (no `AMQP_URL`): does not hold readiness back.
    NotConfigured,
}

impl Check {
    fn of(ok: bool) -> Check {
        if ok {
            Check::Ok
        } else {
            Check::Unavailable
        }
    }

    fn passes(self) -> bool {
        self != Check::Unavailable
    }

    fn as_str(self) -> &'static str {
        match self {
            Check::Ok => "ok",
            Check::Unavailable => "unavailable",
            Check::NotConfigured => "not_configured",
        }
    }
}

/// The answer to `/readyz`: 200 when every check passes, 503 naming the failing ones otherwise.
fn readiness(database: Check, broker: Check) -> (StatusCode, Value) {
    let ready = database.passes() && broker.passes();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        json!({
            "status": if ready { "ready" } else { "unavailable" },
            "checks": { "database": database.as_str(), "broker": broker.as_str() },
        }),
    )
}

async fn database_ok(db: &Db) -> bool {
    tokio::time::timeout(DATABASE_TIMEOUT, db.ping())
        .await
        .unwrap_or(false)
}

/// Ready to serve: the database answers and, with RabbitMQ configured, so does the broker (the
/// API works without it — the log is the outbox — but events then wait to be published).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    summary = "Readiness: the database answers and, with `AMQP_URL` set, so does the broker",
    responses(
        (status = 200, description = "Ready", body = crate::openapi::Readiness),
        (status = 503, description = "Not ready; `checks` names what failed", body = crate::openapi::Readiness),
    ),
)]
async fn ready(State(state): State<AppState>) -> Response {
    let broker = async {
        match &state.broker {
            Some(broker) => Check::of(state.ops.broker_ok(broker.as_ref()).await),
            None => Check::NotConfigured,
        }
    };
    let (database, broker) = tokio::join!(database_ok(&state.db), broker);
    let (status, body) = readiness(Check::of(database), broker);
    (status, Json(body)).into_response()
}

/// Every metric of this process, in Prometheus' text exposition format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Every metric of this process, in Prometheus' text format",
    responses((status = 200, description = "The metrics", content_type = "text/plain; version=0.0.4", body = String)),
)]
async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.ops.metrics.render(),
    )
        .into_response()
}

/// The `method` label: the standard methods by name, anything else as `OTHER` (a client may
/// invent methods; labels must stay few).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// One answered request, as the access log shows it (logfmt): method, route template, status,
/// latency, request id and client address. Nothing else of the request — no query string, no
/// header but the request id — so no token or secret can reach the log through it.
#[derive(Clone, Debug)]
pub struct AccessLine<'a> {
    pub method: &'static str,
    pub route: &'a str,
    pub status: u16,
    pub latency: Duration,
    pub request_id: Option<&'a str>,
    pub client: IpAddr,
}

/// The longest request id the access log repeats (a client may send its own).
const MAX_REQUEST_ID: usize = 128;

impl fmt::Display for AccessLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "method={} route={} status={} latency_ms={:.1} request_id=",
            self.method,
            LogfmtValue(self.route),
            self.status,
            self.latency.as_secs_f64() * 1000.0,
        )?;
        match self.request_id {
            Some(id) => {
                let id = match id.char_indices().nth(MAX_REQUEST_ID) {
                    Some((end, _)) => &id[..end],
                    None => id,
                };
                LogfmtValue(id).fmt(f)?;
            }
            None => f.write_str("-")?,
        }
        write!(f, " client={}", self.client)
    }
}

/// A logfmt value: bare when it can be, else quoted with `"` and `\` escaped, so that a value a
/// client chose cannot pass for another field.
struct LogfmtValue<'a>(&'a str);

impl fmt::Display for LogfmtValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bare = !self.0.is_empty()
            && self
                .0
                .chars()
                .all(|c| c.is_ascii_graphic() && !matches!(c, '"' | '=' | '\\'));
        if bare {
            return f.write_str(self.0);
        }
        f.write_str("\"")?;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                c if c.is_control() => write!(f, "\\u{{{:x}}}", c as u32)?,
                c => write!(f, "{c}")?,
            }
        }
        f.write_str("\"")
    }
}

/// Middleware: once a request is answered, one access-log line at INFO and the request metrics
/// (`http_requests_total`, `http_request_duration_seconds`). Layered on the router (so it runs
/// after routing and sees the matched route template) outside the request deadline (so a
/// request cut short is counted with the status it got).
pub(crate) async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let client = client_ip(request.headers(), request.extensions());
    let response = next.run(request).await;
    let line = AccessLine {
        method,
        route: route.as_deref().unwrap_or(UNMATCHED),
        status: response.status().as_u16(),
        latency: started.elapsed(),
        request_id: request_id.as_deref(),
        client,
    };
    telemetry::request(line.method, line.route, line.status, line.latency);
    tracing::info!(target: ACCESS_LOG, "{line}");
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(request_id: Option<&str>) -> AccessLine<'_> {
        AccessLine {
            method: "GET",
            route: "/api/orders/{id}",
            status: 200,
            latency: Duration::from_micros(12_345),
            request_id,
            client: "203.0.113.7".parse().unwrap(),
        }
    }

    #[test]
    fn access_line_names_every_field_once() {
        assert_eq!(
            line(Some("0190a4b2-7c1e-7d4e-9f00-3a1b2c3d4e5f")).to_string(),
            "method=GET route=/api/orders/{id} status=200 latency_ms=12.3 \
             request_id=0190a4b2-7c1e-7d4e-9f00-3a1b2c3d4e5f client=203.0.113.7"
        );
    }

    #[test]
    fn access_line_without_a_request_id() {
        assert_eq!(
            line(None).to_string(),
            "method=GET route=/api/orders/{id} status=200 latency_ms=12.3 request_id=- \
             client=203.0.113.7"
        );
    }

    #[test]
    fn a_request_id_chosen_by_the_client_cannot_forge_fields() {
        let forged = line(Some(r#"x status=500 route="/admin" \"#)).to_string();
        assert_eq!(
            forged,
            r#"method=GET route=/api/orders/{id} status=200 latency_ms=12.3 request_id="x status=500 route=\"/admin\" \\" client=203.0.113.7"#
        );
        assert_eq!(
            line(Some("")).to_string(),
            "method=GET route=/api/orders/{id} status=200 latency_ms=12.3 request_id=\"\" \
             client=203.0.113.7"
        );
    }

    #[test]
    fn a_long_request_id_is_cut() {
        let long = "a".repeat(1000);
        let text = line(Some(&long)).to_string();
        assert!(text.contains(&format!("request_id={} ", "a".repeat(MAX_REQUEST_ID))));
        assert!(!text.contains(&"a".repeat(MAX_REQUEST_ID + 1)));
    }

    #[test]
    fn unmatched_requests_and_ipv6_clients() {
        let text = AccessLine {
            method: method_label(&Method::from_bytes(b"BREW").unwrap()),
            route: UNMATCHED,
            status: 404,
            latency: Duration::from_micros(400),
            request_id: None,
            client: "2001:db8::1".parse().unwrap(),
        }
        .to_string();
        assert_eq!(
            text,
            "method=OTHER route=unmatched status=404 latency_ms=0.4 request_id=- client=2001:db8::1"
        );
    }

    #[test]
    fn readiness_names_the_failing_check() {
        let (status, body) = readiness(Check::Ok, Check::NotConfigured);
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            json!({"status": "ready", "checks": {"database": "ok", "broker": "not_configured"}})
        );
        let (status, body) = readiness(Check::Ok, Check::Ok);
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["checks"]["broker"], "ok");
        let (status, body) = readiness(Check::Ok, Check::Unavailable);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            json!({"status": "unavailable", "checks": {"database": "ok", "broker": "unavailable"}})
        );
        let (status, body) = readiness(Check::Unavailable, Check::NotConfigured);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["checks"]["database"], "unavailable");
    }

    struct CountingBroker {
        checks: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Broker for CountingBroker {
        async fn check(&self) -> Result<(), String> {
            self.checks
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Err("connection refused".into())
        }
    }

    #[tokio::test]
    async fn a_probe_storm_checks_the_broker_once() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let ops = Ops::new(recorder.handle());
        let broker = CountingBroker {
            checks: Default::default(),
        };
        let answers = futures::future::join_all((0..20).map(|_| ops.broker_ok(&broker))).await;
        assert!(answers.iter().all(|ok| !ok));
        assert_eq!(broker.checks.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
