//! WeChat Pay v3 end to end: the real engine over HTTP, on PostgreSQL (and SQLite for the happy
//! path), against the WeChat Pay simulator — which verifies our signatures and signs its answers
//! and notifications as WeChat does.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use common::{assert_error, count, spawn_app, spawn_app_with, TestApp};
use paystream_engine::db::Backend;
use paystream_engine::money::Fen;
use paystream_engine::order::OrderCommand;
use paystream_engine::orders::{Metadata, OrderService};
use paystream_engine::payments::gateway::{Notice, PayGateway, PrepayRequest, RawNotice};
use paystream_projections::Checks;
use paystream_wechatpay::client::{V3Client, V3Config};
use paystream_wechatpay::v3::keys::{load_public_key_pem, MerchantPrivateKey};
use paystream_wechatpay::v3::sign;
use paystream_wechatpay::ApiV3Key;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

const PRICE: i64 = 1250;
const TOTAL: i64 = 2 * PRICE;

async fn control(app: &TestApp, path: &str, body: Value) -> (StatusCode, Value) {
    app.post(&format!("/sandbox/control/wechatpay{path}"), None, body)
        .await
}

/// A WeChat simulator running on its own, outliving engine restarts as WeChat does.
struct StandaloneWechat {
    base: String,
    merchant: paystream_sandbox::MerchantCredentials,
    _keys: tempfile::TempDir,
    key_file: std::path::PathBuf,
}

async fn standalone_wechat() -> StandaloneWechat {
    let sandbox = paystream_sandbox::Sandbox::new(paystream_sandbox::SandboxConfig {
        appid: paystream::config::SANDBOX_APPID.into(),
        secret: paystream::config::SANDBOX_SECRET.into(),
        pay: paystream_sandbox::PaySandboxConfig {
            notify_time_scale: 0.001,
            ..Default::default()
        },
    });
    let merchant = sandbox.merchant();
    // The customer the tests log in opens the mini-program: this WeChat knows their openid.
    sandbox.login_code("payer", None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, paystream_sandbox::router(sandbox))
            .await
            .unwrap()
    });
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("apiclient_key.pem");
    std::fs::write(&key_file, &merchant.merchant_private_key_pem).unwrap();
    StandaloneWechat {
        base,
        merchant,
        _keys: keys,
        key_file,
    }
}

impl StandaloneWechat {
    /// Engine settings for a real merchant whose WeChat Pay is this simulator.
    fn configure(&self, settings: &mut paystream::config::Settings) {
        // The whole of WeChat is this simulator: its mini-program APIs (default credentials)
        // and its WeChat Pay. A mix with the engine's built-in one is refused at start-up.
        settings.wechat_api_base = Some(self.base.parse().unwrap());
        settings.wechatpay_mchid = Some(self.merchant.mchid.clone());
        settings.wechatpay_api_base = Some(self.base.parse().unwrap());
        settings.wechatpay_apiv3_key = Some(self.merchant.apiv3_key.clone());
        settings.wechatpay_mch_private_key = Some(self.key_file.clone());
        settings.wechatpay_mch_serial = Some(self.merchant.merchant_serial.clone());
    }

    async fn control(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/control/wechatpay{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        common::read(response).await
    }
}

/// A user opens the mini-program (`wx.login` at the simulator): WeChat knows their openid from
/// then on, as a payer must be known. Returns the openid.
async fn opened_app(app: &TestApp, user: &str) -> String {
    let (status, answer) = app
        .post("/sandbox/control/login-code", None, json!({ "user": user }))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["openid"].as_str().unwrap().to_string()
}

async fn control_get(app: &TestApp, path: &str) -> Value {
    app.get(&format!("/sandbox/control/wechatpay{path}"), None)
        .await
        .1
}

/// A logged-in customer with a fresh order of 2 × 12.50.
async fn customer_with_order(app: &TestApp) -> (String, Value) {
    app.add_product("tea", PRICE, true).await;
    let (token, _) = app.login("payer").await;
    let order = app.place_order(&token, "tea", 2).await;
    (token, order)
}

async fn pay(app: &TestApp, token: &str, order: &Value) -> (StatusCode, Value) {
    let path = format!("/api/orders/{}/pay", order["id"].as_str().unwrap());
    app.post(&path, Some(token), json!({ "channel": "wechatpay_v3" }))
        .await
}

/// The customer pays at WeChat, but the notice will not come for a minute (lost or late): only
/// a query can tell the engine.
async fn pay_with_a_late_notice(app: &TestApp, order: &Value) {
    control(
        app,
        "/pay",
        json!({ "out_trade_no": out_trade_no(order), "delay_ms": 60_000 }),
    )
    .await;
}

fn status_is(status: &'static str) -> impl Fn(&Value) -> bool {
    move |o| o["status"] == status
}

fn out_trade_no(order: &Value) -> &str {
    order["out_trade_no"].as_str().unwrap()
}

async fn happy_path(backend: Backend) {
    let app = spawn_app(backend).await;
    let (token, order) = customer_with_order(&app).await;

    let (status, params) = pay(&app, &token, &order).await;
    assert_eq!(status, StatusCode::OK, "{params}");
    assert_eq!(params["signType"], "RSA");
    let package = params["package"].as_str().unwrap();
    assert!(package.starts_with("prepay_id=wx"), "{package}");
    assert!(params["timeStamp"].as_str().unwrap().parse::<i64>().is_ok());
    // paySign is what wx.requestPayment checks: SHA256withRSA over appId, timeStamp, nonceStr,
    // package with the merchant key.
    let merchant = control_get(&app, "/merchant").await;
    let key = MerchantPrivateKey::from_pem(merchant["merchant_private_key_pem"].as_str().unwrap())
        .unwrap();
    let message = sign::pay_sign_message(
        merchant["appid"].as_str().unwrap(),
        params["timeStamp"].as_str().unwrap(),
        params["nonceStr"].as_str().unwrap(),
        package,
    );
    assert!(sign::verify_sha256_rsa(
        &key.public_key(),
        message,
        params["paySign"].as_str().unwrap()
    ));
    let (_, again) = pay(&app, &token, &order).await;
    assert_eq!(
        again["package"], params["package"],
        "a valid prepay is reused"
    );

    let (status, paid) = control(
        &app,
        "/pay",
        json!({ "out_trade_no": out_trade_no(&order) }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    let done = app.wait_for_order(&token, &order, status_is("paid")).await;
    assert_eq!(done["paid_fen"], TOTAL);
    assert_eq!(done["transaction_id"], paid["transaction_id"]);
    assert_eq!(done["channel"], "wechatpay_v3");

    // WeChat sends the same notification again: acknowledged, nothing new recorded.
    control(
        &app,
        "/notify",
        json!({ "out_trade_no": out_trade_no(&order) }),
    )
    .await;
    let deliveries = wait_deliveries(&app, out_trade_no(&order), 2).await;
    assert!(
        deliveries
            .iter()
            .all(|d| d["delivered"] == true && d["attempts"] == 1),
        "{deliveries:?}"
    );
    let history = app.order_events(&order).await;
    let types: Vec<_> = history
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        vec!["OrderPlaced", "PaymentRequested", "PaymentSucceeded"]
    );
    assert_eq!(history[2]["metadata"]["actor"], "wechatpay_v3:notify");

    // A paid order cannot be cancelled.
    let (status, body) = app
        .post(
            &format!("/api/orders/{}/cancel", order["id"].as_str().unwrap()),
            Some(&token),
            json!({}),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "order_already_paid");
}

/// Waits until the simulator has finished delivering `n` notifications for the order.
async fn wait_deliveries(app: &TestApp, out_trade_no: &str, n: usize) -> Vec<Value> {
    let mut mine = Vec::new();
    for _ in 0..200 {
        let all = control_get(app, "/notifications").await;
        mine = all["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["out_trade_no"] == out_trade_no)
            .cloned()
            .collect::<Vec<_>>();
        if mine.len() >= n
            && mine.iter().all(|d| {
                d["delivered"] == true || d["gave_up"] == true || d["attempts"].as_u64() > Some(1)
            })
        {
            return mine;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("deliveries did not settle: {mine:?}");
}

on_both_backends!(happy_path);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_simultaneous_duplicates_record_one_payment() {
    let app = spawn_app(Backend::Postgres).await;
    let (token, order) = customer_with_order(&app).await;
    pay(&app, &token, &order).await;
    let (status, _) = control(
        &app,
        "/pay",
        json!({ "out_trade_no": out_trade_no(&order), "duplicates": 49 }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    app.wait_for_order(&token, &order, status_is("paid")).await;
    let deliveries = wait_deliveries(&app, out_trade_no(&order), 50).await;
    assert_eq!(deliveries.len(), 50);
    assert!(
        deliveries.iter().all(|d| d["delivered"] == true),
        "every duplicate is acknowledged: {deliveries:?}"
    );
    assert_eq!(
        count(&app.order_events(&order).await, "PaymentSucceeded"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_amount_is_recorded_once_and_acknowledged() {
    let app = spawn_app(Backend::Postgres).await;
    let (token, order) = customer_with_order(&app).await;
    pay(&app, &token, &order).await;
    control(
        &app,
        "/pay",
        json!({ "out_trade_no": out_trade_no(&order), "amount_fen": TOTAL - 1 }),
    )
    .await;
    let done = app
        .wait_for_order(&token, &order, status_is("needs_review"))
        .await;
    assert_eq!(done["paid_fen"], TOTAL - 1);
    let deliveries = wait_deliveries(&app, out_trade_no(&order), 1).await;
    assert_eq!(
        (
            deliveries[0]["delivered"].clone(),
            deliveries[0]["attempts"].clone()
        ),
        (json!(true), json!(1)),
        "no retry storm"
    );
    let history = app.order_events(&order).await;
    assert_eq!(count(&history, "PaymentAmountMismatch"), 1);
    assert_eq!(count(&history, "PaymentSucceeded"), 0);
    let mismatch = history
        .iter()
        .find(|e| e["type"] == "PaymentAmountMismatch")
        .unwrap();
    assert_eq!(
        (
            mismatch["data"]["expected_fen"].clone(),
            mismatch["data"]["received_fen"].clone()
        ),
        (json!(TOTAL), json!(TOTAL - 1))
    );
}

/// A receiver standing where WeChat sends notifications: keeps what arrives (headers and raw
/// body) and acknowledges, so the test can replay or tamper with real, signed notifications.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<(HeaderMap, Bytes)>>>);

async fn capture_server() -> (String, Captured) {
    let captured = Captured::default();
    let store = captured.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let store = store.clone();
        async move {
            store.0.lock().unwrap().push((headers, body));
            AxumStatus::NO_CONTENT
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, captured)
}

impl Captured {
    async fn first(&self) -> (HeaderMap, Bytes) {
        for _ in 0..200 {
            if let Some(first) = self.0.lock().unwrap().first().cloned() {
                return first;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no notification arrived");
    }
}

async fn deliver(app: &TestApp, headers: &HeaderMap, body: Bytes) -> (StatusCode, Value) {
    let mut request = app.http.post(app.url("/notify/wechatpay/v3")).body(body);
    for (name, value) in headers {
        if name.as_str().starts_with("wechatpay-") || name == "content-type" {
            request = request.header(name.as_str(), value.as_bytes());
        }
    }
    common::read(request.send().await.unwrap()).await
}

fn with_header(headers: &HeaderMap, name: &'static str, value: &str) -> HeaderMap {
    let mut changed = headers.clone();
    changed.insert(name, value.parse().unwrap());
    changed
}

/// Every way of forging or corrupting a notification is refused with 4xx and writes nothing;
/// the genuine one is then accepted once, and replaying it changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_tampered_and_replayed_notifications() {
    let (receiver, captured) = capture_server().await;
    let app = spawn_app_with(Backend::Postgres, |s| {
        s.public_base_url = Some(receiver.parse().unwrap())
    })
    .await;
    let (token, order) = customer_with_order(&app).await;
    pay(&app, &token, &order).await;
    control(
        &app,
        "/pay",
        json!({ "out_trade_no": out_trade_no(&order) }),
    )
    .await;
    let (headers, body) = captured.first().await;
    let events_before = app.event_count().await;

    let mut tampered = body.to_vec();
    let at = tampered.iter().position(|b| *b == b'}').unwrap();
    tampered.insert(at, b' ');
    let signature = headers["wechatpay-signature"].to_str().unwrap().to_string();
    let mut other_signature = signature.clone().into_bytes();
    other_signature[10] = if other_signature[10] == b'A' {
        b'B'
    } else {
        b'A'
    };
    let stale = (chrono::Utc::now().timestamp() - 400).to_string();
    let cases = vec![
        ("tampered body", headers.clone(), Bytes::from(tampered)),
        (
            "bad signature",
            with_header(
                &headers,
                "wechatpay-signature",
                std::str::from_utf8(&other_signature).unwrap(),
            ),
            body.clone(),
        ),
        (
            "probe signature",
            with_header(
                &headers,
                "wechatpay-signature",
                &format!("WECHATPAY/SIGNTEST/{signature}"),
            ),
            body.clone(),
        ),
        (
            "stale timestamp",
            with_header(&headers, "wechatpay-timestamp", &stale),
            body.clone(),
        ),
        (
            "unknown serial",
            with_header(
                &headers,
                "wechatpay-serial",
                "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
            ),
            body.clone(),
        ),
        ("no headers", HeaderMap::new(), body.clone()),
    ];
    for (what, headers, body) in cases {
        let (status, answer) = deliver(&app, &headers, body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {answer}");
        assert_eq!(answer["code"], "FAIL", "{what}");
    }
    assert_eq!(
        app.event_count().await,
        events_before,
        "a forged notification wrote something"
    );
    assert_eq!(
        app.wait_for_order(&token, &order, |_| true).await["status"],
        "pending_payment"
    );

    let (status, _) = deliver(&app, &headers, body.clone()).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.wait_for_order(&token, &order, |_| true).await["status"],
        "paid"
    );
    let (status, _) = deliver(&app, &headers, body).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "a replay is acknowledged");
    assert_eq!(
        count(&app.order_events(&order).await, "PaymentSucceeded"),
        1
    );
}

/// A client built from the simulator's merchant credentials, as a real merchant would configure.
fn merchant_client(
    merchant: &Value,
    base: &str,
    apiv3_key: &str,
    public_key: bool,
    notify_url: &str,
) -> V3Client {
    let public_key = public_key.then(|| {
        (
            merchant["public_key_id"].as_str().unwrap().to_string(),
            load_public_key_pem(merchant["public_key_pem"].as_str().unwrap()).unwrap(),
        )
    });
    V3Client::new(V3Config {
        api_base: base.to_string(),
        mchid: merchant["mchid"].as_str().unwrap().to_string(),
        appid: merchant["appid"].as_str().unwrap().to_string(),
        merchant_serial: merchant["merchant_serial"].as_str().unwrap().to_string(),
        merchant_key: MerchantPrivateKey::from_pem(
            merchant["merchant_private_key_pem"].as_str().unwrap(),
        )
        .unwrap(),
        apiv3_key: ApiV3Key::new(apiv3_key).unwrap(),
        public_key,
        notify_url: notify_url.to_string(),
        certificate_refetch_interval: Duration::ZERO,
        refund_lag_grace: V3Config::DEFAULT_REFUND_LAG_GRACE,
    })
}

fn raw_notice<'a>(headers: &'a HeaderMap, body: &'a [u8]) -> RawNotice<'a> {
    RawNotice {
        headers: headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect(),
        body,
    }
}

/// Public-key mode (merchants since late 2024): no certificates, everything signed with
/// PUB_KEY_ID_…; and a wrong APIv3 key cannot open a genuine notification.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn public_key_mode_and_a_wrong_apiv3_key() {
    let (receiver, captured) = capture_server().await;
    let app = spawn_app(Backend::Postgres).await;
    control(&app, "/mode", json!({ "mode": "public_key" })).await;
    let merchant = control_get(&app, "/merchant").await;
    let base = app.url("/sandbox");
    let client = merchant_client(
        &merchant,
        &base,
        merchant["apiv3_key"].as_str().unwrap(),
        true,
        &format!("{receiver}/notify"),
    );
    assert_eq!(
        client.fetch_certificates().await.unwrap(),
        0,
        "no certificates in public-key mode"
    );

    let out_trade_no = Uuid::now_v7().simple().to_string();
    let prepay = client
        .prepay(&PrepayRequest {
            out_trade_no: out_trade_no.clone(),
            description: "public key mode".into(),
            total_fen: Fen::new(100).unwrap(),
            openid: opened_app(&app, "public-key-mode").await,
            time_expire: chrono::Utc::now() + chrono::Duration::minutes(30),
            payer_ip: std::net::Ipv4Addr::LOCALHOST.into(),
        })
        .await
        .expect("a prepay verified with the public key");
    assert!(prepay.starts_with("wx"));
    control(&app, "/pay", json!({ "out_trade_no": out_trade_no })).await;
    let (headers, body) = captured.first().await;
    assert!(headers["wechatpay-serial"]
        .to_str()
        .unwrap()
        .starts_with("PUB_KEY_ID_"));

    match client
        .verify_notify(&raw_notice(&headers, &body))
        .await
        .unwrap()
    {
        Notice::Payment {
            out_trade_no: no,
            paid: Some(paid),
            ..
        } => {
            assert_eq!(no, out_trade_no);
            assert_eq!(paid.amount_fen.get(), 100);
        }
        other => panic!("unexpected notice {other:?}"),
    }
    let wrong_key = merchant_client(
        &merchant,
        &base,
        "0123456789abcdef0123456789abcdef",
        true,
        &format!("{receiver}/notify"),
    );
    assert!(
        wrong_key
            .verify_notify(&raw_notice(&headers, &body))
            .await
            .is_err(),
        "a wrong APIv3 key must not decrypt"
    );
    // A certificate-mode client cannot verify a public-key answer: unverified, not believed.
    let cert_only = merchant_client(
        &merchant,
        &base,
        merchant["apiv3_key"].as_str().unwrap(),
        false,
        &format!("{receiver}/notify"),
    );
    assert!(cert_only
        .verify_notify(&raw_notice(&headers, &body))
        .await
        .is_err());
}

/// A new platform certificate starts signing: the engine meets an unknown serial, downloads
/// the certificates again and goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificate_rotation() {
    let app = spawn_app(Backend::Postgres).await;
    let (token, order) = customer_with_order(&app).await;
    pay(&app, &token, &order).await;
    let (status, rotated) = control(&app, "/rotate-certificate", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    control(
        &app,
        "/pay",
        json!({ "out_trade_no": out_trade_no(&order) }),
    )
    .await;
    app.wait_for_order(&token, &order, status_is("paid")).await;
    // Certificate downloads are rate-limited (1 s in tests): a delivery refused before the
    // window opens is retried by WeChat and verified after the refetch.
    let deliveries = wait_deliveries(&app, out_trade_no(&order), 1).await;
    assert_eq!(deliveries[0]["delivered"], true, "{deliveries:?}");
}

/// A notification for an order we never had is not acknowledged (WeChat keeps retrying and an
/// operator sees it in the log), and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_order_is_not_acknowledged() {
    let app = spawn_app(Backend::Postgres).await;
    let merchant = control_get(&app, "/merchant").await;
    let client = merchant_client(
        &merchant,
        &app.url("/sandbox"),
        merchant["apiv3_key"].as_str().unwrap(),
        false,
        &app.url("/notify/wechatpay/v3"),
    );
    client.fetch_certificates().await.unwrap();
    let stranger = Uuid::now_v7().simple().to_string();
    client
        .prepay(&PrepayRequest {
            out_trade_no: stranger.clone(),
            description: "not ours".into(),
            total_fen: Fen::new(100).unwrap(),
            openid: opened_app(&app, "stranger").await,
            time_expire: chrono::Utc::now() + chrono::Duration::minutes(30),
            payer_ip: std::net::Ipv4Addr::LOCALHOST.into(),
        })
        .await
        .unwrap();
    control(&app, "/pay", json!({ "out_trade_no": stranger })).await;
    let deliveries = wait_deliveries(&app, &stranger, 1).await;
    assert_eq!(deliveries[0]["delivered"], false);
    assert_eq!(deliveries[0]["last_status"], 404);
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_closes_at_wechat_first() {
    let app = spawn_app(Backend::Postgres).await;
    let (token, order) = customer_with_order(&app).await;
    pay(&app, &token, &order).await;
    let (status, closed) = app
        .post(
            &format!("/api/orders/{}/cancel", order["id"].as_str().unwrap()),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(
        (status, closed["status"].as_str()),
        (StatusCode::OK, Some("closed"))
    );
    let at_wechat = control_get(&app, &format!("/transactions/{}", out_trade_no(&order))).await;
    assert_eq!(
        at_wechat["transaction"]["trade_state"], "CLOSED",
        "{at_wechat}"
    );
    let (status, _) = control(
        &app,
        "/pay",
        json!({ "out_trade_no": out_trade_no(&order) }),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a closed order cannot be paid at WeChat"
    );
}

/// The customer paid, the notice is late, the order is cancelled (or expires): WeChat refuses
/// to close it, the engine asks, records the payment, and refuses the cancel.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_of_an_order_paid_at_wechat_records_the_payment() {
    let app = spawn_app(Backend::Postgres).await;
    let (token, order) = customer_with_order(&app).await;
    pay(&app, &token, &order).await;
    pay_with_a_late_notice(&app, &order).await;
    let (status, body) = app
        .post(
            &format!("/api/orders/{}/cancel", order["id"].as_str().unwrap()),
            Some(&token),
            json!({}),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "order_already_paid");
    let now = app.wait_for_order(&token, &order, |_| true).await;
    assert_eq!(now["status"], "paid");
    let history = app.order_events(&order).await;
    assert_eq!(count(&history, "OrderClosed"), 0);
    assert_eq!(
        history.last().unwrap()["metadata"]["actor"],
        "wechatpay_v3:query"
    );

    // Expiry takes the same path.
    let order2 = app.place_order(&token, "tea", 2).await;
    pay(&app, &token, &order2).await;
    assert_eq!(app.expire_all_now().await, 1);
    let at_wechat = control_get(&app, &format!("/transactions/{}", out_trade_no(&order2))).await;
    assert_eq!(at_wechat["transaction"]["trade_state"], "CLOSED");

    // And an expired order the customer did pay at WeChat (notice still on its way) is recorded
    // as paid by the sweep, not closed.
    let order3 = app.place_order(&token, "tea", 2).await;
    pay(&app, &token, &order3).await;
    pay_with_a_late_notice(&app, &order3).await;
    app.expire_all_now().await;
    let history = app.order_events(&order3).await;
    assert_eq!(count(&history, "PaymentSucceeded"), 1);
    assert_eq!(count(&history, "OrderClosed"), 0);
}

/// No notice arrived (lost, delayed): the poller asks WeChat and records the payment.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn query_finds_a_payment_whose_notice_is_late() {
    let app = spawn_app(Backend::Postgres).await;
    let (token, order) = customer_with_order(&app).await;
    pay(&app, &token, &order).await;
    pay_with_a_late_notice(&app, &order).await;
    assert_eq!(app.reconcile_now().await, 1);
    assert_eq!(
        app.wait_for_order(&token, &order, |_| true).await["status"],
        "paid"
    );
    // Paid: not asked about again.
    assert_eq!(app.reconcile_now().await, 0);
    let attempts = |subject: String| {
        let pool = app.running().db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT attempts FROM payment_checks WHERE subject = $1")
                .bind(subject)
                .fetch_optional(&pool)
                .await
                .unwrap()
        }
    };
    let order_id = order["id"].as_str().unwrap();
    assert_eq!(
        attempts(format!("pay:{order_id}")).await,
        None,
        "a paid order's back-off is forgotten"
    );
    // The order above is paid, so it would not be asked again anyway: an unpaid one shows the
    // back-off itself — asked once, then not again until its check is due.
    // (A zero delay would also make the back-off zero, so this uses one second.)
    let unpaid = app.place_order(&token, "tea", 2).await;
    pay(&app, &token, &unpaid).await;
    let one_second = paystream::jobs::ReconcileTiming {
        payment_after: chrono::Duration::seconds(1),
        refund_after: chrono::Duration::seconds(1),
    };
    let later = chrono::Utc::now() + chrono::Duration::seconds(2);
    let checks = Checks::new(app.running().db.clone());
    let reconcile_at =
        |at| paystream::jobs::reconcile(&app.running().payments, &checks, one_second, at);
    assert_eq!(reconcile_at(later).await.unwrap(), 1);
    assert_eq!(reconcile_at(later).await.unwrap(), 0);
    assert_eq!(
        reconcile_at(later + chrono::Duration::seconds(3))
            .await
            .unwrap(),
        1,
        "asked again once its back-off has passed"
    );
    assert_eq!(
        attempts(format!("pay:{}", unpaid["id"].as_str().unwrap())).await,
        Some(2),
        "an unpaid order keeps its back-off"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transient_wechat_trouble_is_retried_and_forgeries_are_refused() {
    let app = spawn_app(Backend::Postgres).await;
    let (token, order) = customer_with_order(&app).await;
    control(
        &app,
        "/faults",
        json!({ "fail_next": 2, "status": 500, "path_contains": "jsapi" }),
    )
    .await;
    let (status, body) = pay(&app, &token, &order).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "retried with the same parameters: {body}"
    );

    let second = app.place_order(&token, "tea", 2).await;
    control(&app, "/faults", json!({ "unsigned_next": 1 })).await;
    let (status, body) = pay(&app, &token, &second).await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "wechatpay_unavailable",
    );
    let (status, _) = pay(&app, &token, &second).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the next, signed answer is believed"
    );
}

/// A paid order of 25.00, ready for refunds.
async fn paid_order(app: &TestApp) -> (String, Value) {
    let (token, order) = customer_with_order(app).await;
    pay(app, &token, &order).await;
    control(app, "/pay", json!({ "out_trade_no": out_trade_no(&order) })).await;
    let order = app.wait_for_order(&token, &order, status_is("paid")).await;
    (token, order)
}

async fn refund(
    app: &TestApp,
    admin: &str,
    order: &Value,
    amount: i64,
    key: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = app
        .http
        .post(app.url(&format!(
            "/admin/orders/{}/refunds",
            order["id"].as_str().unwrap()
        )))
        .bearer_auth(admin)
        .json(&json!({ "amount_fen": amount, "reason": "customer request" }));
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    common::read(request.send().await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partial_full_and_over_refunds() {
    let app = spawn_app(Backend::Postgres).await;
    let (token, order) = paid_order(&app).await;
    let admin = app.admin_token().await;

    let (status, first) = refund(&app, &admin, &order, 1000, Some("r-1")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(first["amount_fen"], 1000);
    let (_, again) = refund(&app, &admin, &order, 1000, Some("r-1")).await;
    assert_eq!(
        again["out_refund_no"], first["out_refund_no"],
        "same key, same refund"
    );
    let done = app
        .wait_for_order(&token, &order, |o| o["refunded_fen"] == 1000)
        .await;
    assert_eq!(done["status"], "partially_refunded");

    let (status, body) = refund(&app, &admin, &order, TOTAL - 999, None).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "refund_exceeds_refundable",
    );
    let (status, _) = refund(&app, &admin, &order, TOTAL - 1000, None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let done = app
        .wait_for_order(&token, &order, status_is("refunded"))
        .await;
    assert_eq!(done["refunded_fen"], TOTAL);
    let history = app.order_events(&order).await;
    assert_eq!(
        (
            count(&history, "RefundRequested"),
            count(&history, "RefundSucceeded")
        ),
        (2, 2)
    );

    let accounts = paystream_engine::accounts::Accounts::new(app.running().db.clone());
    accounts
        .create_staff(
            "sue",
            "support-password".to_string().into(),
            paystream_engine::accounts::Role::Support,
        )
        .await
        .unwrap();
    let (_, login) = app
        .post(
            "/admin/login",
            None,
            json!({ "username": "sue", "password": "support-password" }),
        )
        .await;
    let (status, _) = refund(&app, login["token"].as_str().unwrap(), &order, 1, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refunds_never_exceed_what_was_paid() {
    let app = spawn_app(Backend::Postgres).await;
    let (_, order) = paid_order(&app).await;
    let admin = app.admin_token().await;
    control(&app, "/faults", json!({ "hold_refunds": true })).await;
    let attempts = (0..10).map(|_| refund(&app, &admin, &order, 1000, None));
    let answers = futures::future::join_all(attempts).await;
    let accepted = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::ACCEPTED)
        .count();
    let refused = answers
        .iter()
        .filter(|(s, b)| {
            *s == StatusCode::UNPROCESSABLE_ENTITY
                && b["error"]["code"] == "refund_exceeds_refundable"
        })
        .count();
    assert_eq!((accepted, refused), (2, 8), "{answers:?}");
    let history = app.order_events(&order).await;
    assert_eq!(count(&history, "RefundRequested"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refund_wechat_closes_is_recorded_as_failed() {
    let app = spawn_app(Backend::Postgres).await;
    let (token, order) = paid_order(&app).await;
    let admin = app.admin_token().await;
    control(&app, "/faults", json!({ "hold_refunds": true })).await;
    let (_, accepted) = refund(&app, &admin, &order, 500, None).await;
    assert_eq!(accepted["status"], "processing");
    let no = accepted["out_refund_no"].as_str().unwrap();
    let (status, _) = control(
        &app,
        &format!("/refunds/{no}/settle"),
        json!({ "status": "CLOSED" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let path = format!("/admin/orders/{}", order["id"].as_str().unwrap());
    let mut detail = Value::Null;
    for _ in 0..200 {
        detail = app.get(&path, Some(&admin)).await.1;
        if detail["refunds"][0]["status"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(detail["refunds"][0]["status"], "failed");
    assert_eq!(
        detail["refundable_fen"], TOTAL,
        "a failed refund gives the amount back"
    );
    assert_eq!(
        app.wait_for_order(&token, &order, |_| true).await["status"],
        "paid"
    );
}

/// The engine recorded RefundRequested and died before calling WeChat. After a restart the
/// poller finds WeChat never heard of it and sends it with the same out_refund_no.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_between_refund_requested_and_the_wechat_call() {
    let wechat = standalone_wechat().await;
    let mut app = spawn_app_with(Backend::Postgres, |s| wechat.configure(s)).await;
    app.wechat_base = Some(wechat.base.clone());
    let (token, order) = customer_with_order(&app).await;
    pay(&app, &token, &order).await;
    wechat
        .control("/pay", json!({ "out_trade_no": out_trade_no(&order) }))
        .await;
    let order = app.wait_for_order(&token, &order, status_is("paid")).await;

    let orders = OrderService::new(paystream::event_store(&app.running().db));
    let order_id: Uuid = order["id"].as_str().unwrap().parse().unwrap();
    let out_refund_no = format!("R{}", Uuid::now_v7().simple());
    orders
        .execute(
            order_id,
            OrderCommand::RequestRefund {
                out_refund_no: out_refund_no.clone(),
                amount_fen: Fen::new(700).unwrap(),
                reason: None,
                now: chrono::Utc::now(),
            },
            &Metadata::actor("test"),
        )
        .await
        .unwrap();
    app.restart().await;
    app.reconcile_now().await;
    let done = app
        .wait_for_order(&token, &order, |o| o["refunded_fen"] == 700)
        .await;
    assert_eq!(done["status"], "partially_refunded");
    let history = app.order_events(&order).await;
    let succeeded: Vec<_> = history
        .iter()
        .filter(|e| e["type"] == "RefundSucceeded")
        .collect();
    assert_eq!(succeeded.len(), 1);
    assert_eq!(
        succeeded[0]["data"]["out_refund_no"],
        out_refund_no.as_str()
    );
}

/// A merchant configured for public-key mode (WECHATPAY_PUBLIC_KEY + _ID) checks out end to end
/// against a WeChat that has no certificates for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn public_key_merchant_end_to_end() {
    let wechat = standalone_wechat().await;
    let (status, mode) = wechat
        .control("/mode", json!({ "mode": "public_key" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{mode}");
    let public_key_file = wechat._keys.path().join("pub_key.pem");
    std::fs::write(&public_key_file, &wechat.merchant.public_key_pem).unwrap();
    let mut app = spawn_app_with(Backend::Postgres, |s| {
        wechat.configure(s);
        s.wechatpay_public_key = Some(public_key_file.clone());
        s.wechatpay_public_key_id = Some(wechat.merchant.public_key_id.clone());
    })
    .await;
    app.wechat_base = Some(wechat.base.clone());
    let (token, order) = customer_with_order(&app).await;
    let (status, params) = pay(&app, &token, &order).await;
    assert_eq!(status, StatusCode::OK, "{params}");
    wechat
        .control("/pay", json!({ "out_trade_no": out_trade_no(&order) }))
        .await;
    app.wait_for_order(&token, &order, status_is("paid")).await;
}

/// `paystream demo` walks login → order → pay → notify → refund against the simulator and
/// succeeds, printing every step.
#[test]
fn the_demo_runs() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_paystream"))
        .arg("demo")
        .env("RUST_LOG", "error")
        .env_remove("DATABASE_URL")
        .output()
        .expect("run paystream demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for step in [
        "PaymentSucceeded",
        "RefundSucceeded",
        "wx.requestPayment",
        "done.",
    ] {
        assert!(stdout.contains(step), "missing {step} in:\n{stdout}");
    }
}

/// WeChat says "not now" (merchant balance too low): the refund stays in flight and is sent
/// again later with the same out_refund_no — never recorded as failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refund_refused_for_now_is_retried_not_failed() {
    let app = spawn_app(Backend::Postgres).await;
    let (token, order) = paid_order(&app).await;
    let admin = app.admin_token().await;
    control(&app, "/faults", json!({ "fail_next": 1, "status": 403, "code": "NOT_ENOUGH", "path_contains": "refund/domestic" })).await;
    let (status, accepted) = refund(&app, &admin, &order, 800, None).await;
    assert_eq!(
        (status, accepted["status"].as_str()),
        (StatusCode::ACCEPTED, Some("processing")),
        "{accepted}"
    );
    app.reconcile_now().await;
    let done = app
        .wait_for_order(&token, &order, |o| o["refunded_fen"] == 800)
        .await;
    assert_eq!(done["status"], "partially_refunded");
    assert_eq!(count(&app.order_events(&order).await, "RefundFailed"), 0);
}

/// WeChat accepted the refund but its answer was lost; the retry is refused. Only WeChat's own
/// record is final: the engine asks, finds the refund, and never marks it failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refusal_after_a_lost_acceptance_is_not_a_failure() {
    let app = spawn_app(Backend::Postgres).await;
    let (token, order) = paid_order(&app).await;
    let admin = app.admin_token().await;
    control(
        &app,
        "/faults",
        json!({ "fail_next": 1, "status": 400, "code": "INVALID_REQUEST", "after_processing": true, "path_contains": "refund/domestic" }),
    )
    .await;
    let (status, _) = refund(&app, &admin, &order, 600, None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let done = app
        .wait_for_order(&token, &order, |o| o["refunded_fen"] == 600)
        .await;
    assert_eq!(done["status"], "partially_refunded");
    let history = app.order_events(&order).await;
    assert_eq!(
        (
            count(&history, "RefundFailed"),
            count(&history, "RefundSucceeded")
        ),
        (0, 1)
    );
}

/// Platform certificates are also downloaded on a timer: after WeChat rotates, the new serial is
/// known before anything signed with it arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn platform_certificates_are_refreshed_on_a_timer() {
    let app = spawn_app(Backend::Postgres).await;
    let merchant = control_get(&app, "/merchant").await;
    let base = app.url("/sandbox");
    let client = Arc::new(merchant_client(
        &merchant,
        &base,
        merchant["apiv3_key"].as_str().unwrap(),
        false,
        &app.url("/notify/wechatpay/v3"),
    ));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let timer = tokio::spawn(paystream::jobs::certificate_refresh_loop(
        client.clone(),
        Duration::from_millis(200),
        stopped,
    ));
    // The first download is at once; the rotation comes after it, so only a later tick can
    // bring the new certificate.
    for _ in 0..50 {
        if client.verifier().preferred_serial().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = client
        .verifier()
        .preferred_serial()
        .expect("first download");
    let (_, rotated) = control(&app, "/rotate-certificate", json!({})).await;
    let serial = rotated["serial_no"].as_str().unwrap().to_string();
    let mut known = false;
    for _ in 0..50 {
        if client.verifier().knows(&serial) {
            known = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(true).unwrap();
    timer.await.unwrap();
    assert!(
        known,
        "the rotated certificate {serial} was never downloaded"
    );
    assert_ne!(before, serial);
}
