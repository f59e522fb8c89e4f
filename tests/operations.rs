//! The operations endpoints: `/readyz` and `/metrics` (Prometheus text). The metrics recorder is
//! one per process and these tests share the process, so they assert on presence and increases,
//! never on absolute values.

mod common;

use std::time::Duration;

use common::{spawn_app, spawn_app_with, TestApp};
use paystream_engine::db::Backend;
use reqwest::StatusCode;
use serde_json::json;

/// The `/metrics` page.
async fn scrape(app: &TestApp) -> String {
    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    response.text().await.unwrap()
}

/// The sum of the samples of `name` that carry every one of `labels` (0 when there is none).
fn sample(page: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_set) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let wanted = metric == name
                && labels
                    .iter()
                    .all(|(k, v)| label_set.contains(&format!("{k}=\"{v}\"")));
            wanted.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Whether the page has any sample of `name`.
fn has(page: &str, name: &str) -> bool {
    page.lines()
        .any(|line| line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} ")))
}

/// Scrapes until `done` holds (a counter is bumped just after the answer that made it so; a
/// gauge is set by a job on its timer), for up to 15 s.
async fn scrape_until(app: &TestApp, done: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let page = scrape(app).await;
        if done(&page) {
            return page;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("the metrics never showed what was expected:\n{page}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readyz_is_ready_with_the_database_and_no_broker_configured() {
    let app = spawn_app(Backend::Postgres).await;
    let (status, body) = app.get("/readyz", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({ "status": "ready", "checks": { "database": "ok", "broker": "not_configured" } })
    );
    // Liveness is unchanged.
    let (status, body) = app.get("/healthz", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_are_counted_by_route_template_never_by_raw_path() {
    let app = spawn_app(Backend::Postgres).await;
    let (token, _) = app.login("metered").await;
    let route = [
        ("method", "GET"),
        ("route", "/api/orders/{id}"),
        ("status", "404"),
    ];
    let before = sample(&scrape(&app).await, "http_requests_total", &route);
    let unknown = uuid::Uuid::new_v4().to_string();
    let (status, body) = app
        .get(&format!("/api/orders/{unknown}?token=secret"), Some(&token))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = app.get("/no/such/endpoint", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let page = scrape_until(&app, |page| {
        sample(page, "http_requests_total", &route) > before
    })
    .await;
    assert!(
        sample(
            &page,
            "http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ) >= 1.0,
        "{page}"
    );
    assert!(
        sample(
            &page,
            "http_request_duration_seconds_count",
            &[("method", "GET"), ("route", "/api/orders/{id}")]
        ) >= 1.0,
        "{page}"
    );
    assert!(
        page.contains("# TYPE http_request_duration_seconds histogram"),
        "{page}"
    );
    assert!(
        !page.contains(&unknown),
        "a raw path became a label: {page}"
    );
    assert!(!page.contains("secret"), "a query string became a label");
    assert!(!page.contains(&token), "a token reached the metrics");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_notifications_and_jobs_are_counted() {
    let app = spawn_app(Backend::Postgres).await;
    app.add_product("tea", 1250, true).await;
    let (token, _) = app.login("payer").await;
    let recorded = [("channel", "wechatpay_v3"), ("outcome", "recorded")];
    let page = scrape(&app).await;
    let appended_before = sample(&page, "events_appended_total", &[]);
    let recorded_before = sample(&page, "notifications_total", &recorded);
    let appends_timed_before = sample(&page, "event_append_duration_seconds_count", &[]);

    // A paid order: prepay, the customer pays (simulated), WeChat Pay notifies.
    let order = app.place_order(&token, "tea", 1).await;
    let path = format!("/api/orders/{}/pay", order["id"].as_str().unwrap());
    let (status, params) = app
        .post(&path, Some(&token), json!({ "channel": "wechatpay_v3" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{params}");
    app.sandbox(
        "/wechatpay/pay",
        json!({ "out_trade_no": order["out_trade_no"] }),
    )
    .await;
    let page = scrape_until(&app, |page| {
        sample(page, "notifications_total", &recorded) > recorded_before
    })
    .await;
    assert!(
        sample(&page, "events_appended_total", &[]) > appended_before,
        "{page}"
    );
    assert!(
        sample(&page, "event_append_duration_seconds_count", &[]) > appends_timed_before,
        "{page}"
    );
    assert!(
        page.contains("# TYPE event_append_duration_seconds histogram"),
        "{page}"
    );
    let paid_path = format!("/api/orders/{}", order["id"].as_str().unwrap());
    for _ in 0..100 {
        if app.get(&paid_path, Some(&token)).await.1["status"] == "paid" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The expiry sweep and the pollers.
    let expired_before = sample(&page, "orders_expired_total", &[]);
    app.place_order(&token, "tea", 1).await;
    assert_eq!(app.expire_all_now().await, 1);
    app.reconcile_now().await;
    let page = scrape(&app).await;
    assert!(
        sample(&page, "orders_expired_total", &[]) > expired_before,
        "{page}"
    );
    assert!(has(&page, "refunds_in_flight"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_broker_down_readyz_names_it_and_the_relay_lag_grows() {
    // Nothing listens on port 1: the relay cannot publish, so every event waits in the log.
    let app = spawn_app_with(Backend::Postgres, |s| {
        s.no_background_jobs = false;
        s.amqp_url = Some("amqp://guest:guest@127.0.0.1:1/%2f".into());
    })
    .await;
    let (status, body) = app.get("/readyz", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        body,
        json!({ "status": "unavailable", "checks": { "database": "ok", "broker": "unavailable" } })
    );

    app.add_product("tea", 1250, true).await;
    let (token, _) = app.login("lagging").await;
    app.place_order(&token, "tea", 1).await;
    let events = app.event_count().await as f64;
    assert!(events >= 1.0);
    // Only this test runs a relay in this process, so the gauge is this database's.
    scrape_until(&app, |page| sample(page, "relay_lag_events", &[]) >= events).await;
}
