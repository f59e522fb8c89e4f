//! `paystream bench notify`: verified v3 `TRANSACTION.SUCCESS` notifications per second over
//! HTTP, on distinct orders, from concurrent senders, with p50/p99 latency.
//!
//! The notifications are real: the engine runs with its WeChat Pay simulator, each order is
//! prepaid and paid there, and the simulator's signed, encrypted notifications are captured on
//! their way (PUBLIC_BASE_URL points at a capturing receiver). They are then sent to the
//! engine's notify endpoint as fast as the senders can, each one verified, decrypted, checked
//! against its order and recorded as PaymentSucceeded.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use futures::StreamExt;
use paystream::config::Settings;
use serde_json::json;

use crate::api_client::ApiClient;
use crate::bench::BenchArgs;
use crate::bench_cpu::CpuSample;

type Captured = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

async fn receiver() -> anyhow::Result<(String, Captured)> {
    let captured: Captured = Arc::default();
    let store = captured.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let store = store.clone();
        async move {
            store
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((headers, body));
            StatusCode::NO_CONTENT
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, captured))
}

/// A captured notification: the simulator's headers and its signed, encrypted body.
pub type Notification = (HeaderMap, Bytes);

/// The engine's settings for the notify benchmarks: the simulator, a bootstrap admin to create
/// the product, orders that stay open for the whole run, no background jobs.
pub fn settings(database_url: &str) -> Settings {
    Settings {
        admin_username: Some("bench-admin".into()),
        admin_password: Some("bench-password".into()),
        order_ttl_seconds: 7200,
        ..Settings::local(database_url)
    }
}

/// Starts the engine with `settings` (PUBLIC_BASE_URL pointed at a capturing receiver) and
/// prepares `orders` distinct orders paid at the simulator, `concurrency` at a time. Returns the
/// running engine and the simulator's notifications, not yet delivered to it.
pub async fn start_with_paid_orders(
    settings: Settings,
    orders: usize,
    concurrency: usize,
) -> anyhow::Result<(paystream::Running, Vec<Notification>)> {
    let (receiver_url, captured) = receiver().await?;
    let running = paystream::start(Settings {
        public_base_url: Some(receiver_url.parse()?),
        ..settings
    })
    .await?;
    let api = ApiClient::new(running.base_url(), false);

    let admin = api
        .post(
            "/admin/login",
            None,
            json!({ "username": "bench-admin", "password": "bench-password" }),
        )
        .await?;
    let admin = admin["token"].as_str().context("admin token")?.to_string();
    let sku = format!("bench-{}", uuid::Uuid::new_v4().simple());
    api.post(
        "/admin/products",
        Some(&admin),
        json!({ "sku": sku, "name": "bench", "price_fen": 100, "active": true }),
    )
    .await?;
    let code = api
        .get("/sandbox/control/login-code?user=bench", None)
        .await?;
    let login = api
        .post("/api/login", None, json!({ "code": code["code"] }))
        .await?;
    let token = login["token"]
        .as_str()
        .context("customer token")?
        .to_string();

    println!(
        "preparing {orders} paid orders (orders, prepays and notifications from the simulator)…"
    );
    let prepared = Instant::now();
    futures::stream::iter(0..orders)
        .map(|_| {
            let (api, token, sku) = (&api, &token, &sku);
            async move {
                let order = api
                    .post(
                        "/api/orders",
                        Some(token),
                        json!({ "items": [{ "sku": sku, "quantity": 1 }] }),
                    )
                    .await?;
                let id = order["id"].as_str().context("order id")?;
                api.post(
                    &format!("/api/orders/{id}/pay"),
                    Some(token),
                    json!({ "channel": "wechatpay_v3" }),
                )
                .await?;
                api.post(
                    "/sandbox/control/wechatpay/pay",
                    None,
                    json!({ "out_trade_no": order["out_trade_no"] }),
                )
                .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while captured.lock().unwrap_or_else(|p| p.into_inner()).len() < orders {
        if Instant::now() > deadline {
            bail!("the simulator's notifications did not all arrive");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let notifications = std::mem::take(&mut *captured.lock().unwrap_or_else(|p| p.into_inner()));
    println!("prepared in {:.1} s", prepared.elapsed().as_secs_f64());
    Ok((running, notifications))
}

/// Sends one captured notification to the engine at `url` (its notify endpoint); the time to
/// its answer, which must be 204.
pub async fn send(
    http: &reqwest::Client,
    url: &str,
    (headers, body): Notification,
) -> anyhow::Result<Duration> {
    let mut request = http.post(url).body(body);
    for (name, value) in &headers {
        if name.as_str().starts_with("wechatpay-") || name == "content-type" {
            request = request.header(name.as_str(), value.as_bytes());
        }
    }
    let sent = Instant::now();
    let response = request.send().await?;
    let latency = sent.elapsed();
    if response.status() != reqwest::StatusCode::NO_CONTENT {
        bail!("notification answered {}", response.status());
    }
    Ok(latency)
}

/// The `p` quantile (0..=1) of sorted durations, in milliseconds.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let (running, notifications) =
        start_with_paid_orders(settings(&args.database_url), args.orders, args.writers).await?;
    let base = running.base_url();
    let http = reqwest::Client::new();

    let url = format!("{base}/notify/wechatpay/v3");
    let cpu = CpuSample::now();
    let started = Instant::now();
    let latencies = futures::stream::iter(notifications)
        .map(|notification| {
            let (http, url) = (&http, &url);
            async move { send(http, url, notification).await }
        })
        .buffer_unordered(args.writers)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = CpuSample::now().report_since(&cpu, latencies.len());
    let mut sorted = latencies.clone();
    sorted.sort();
    let pct = |p: f64| percentile_ms(&sorted, p);
    let rate = latencies.len() as f64 / elapsed;
    let recorded: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE event_type = 'PaymentSucceeded'")
            .fetch_one(&running.db.pool)
            .await?;
    running.stop().await;
    println!(
        "paystream verified notifies: {rate:.0}/s ({} notifications, {} senders, distinct orders), p50 {:.1} ms, p99 {:.1} ms; PaymentSucceeded in the log: {recorded}",
        latencies.len(), args.writers, pct(0.50), pct(0.99)
    );
    println!("{cpu}");
    if !args.no_pgbench {
        let baseline = crate::bench::pgbench(args).context("running pgbench")?;
        println!(
            "pgbench two-row insert transaction: {baseline:.0} tps ({} clients, {} s)",
            args.writers, args.seconds
        );
        println!("ratio: {:.2}", rate / baseline);
    }
    Ok(())
}
