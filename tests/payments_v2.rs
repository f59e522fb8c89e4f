//! WeChat Pay APIv2 end to end: the real engine over HTTP, on PostgreSQL (and SQLite for the
//! happy path), against the simulator speaking APIv2 — which checks our signatures, answers in
//! signed XML, sends signed pay notifies and `req_info`-encrypted refund notifies, and takes
//! refunds only over mutual TLS with the merchant certificate.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{assert_error, count, spawn_app, spawn_app_with, TestApp};
use paystream_engine::db::Backend;
use paystream_wechatpay::v2::refund_notify::encrypt_req_info;
use paystream_wechatpay::v2::sign::{self, SignType};
use paystream_wechatpay::v2::xml;
use reqwest::StatusCode;
use serde_json::{json, Value};

const PRICE: i64 = 1250;
const TOTAL: i64 = 2 * PRICE;
const V2: &str = "wechatpay_v2";

async fn control(app: &TestApp, path: &str, body: Value) -> (StatusCode, Value) {
    app.post(&format!("/sandbox/control/wechatpay{path}"), None, body)
        .await
}

fn merchant(app: &TestApp) -> paystream_sandbox::MerchantCredentials {
    app.running()
        .sandbox
        .as_ref()
        .expect("sandbox mode")
        .merchant()
}

async fn customer_with_order(app: &TestApp) -> (String, Value) {
    app.add_product("tea", PRICE, true).await;
    let (token, _) = app.login("payer").await;
    let order = app.place_order(&token, "tea", 2).await;
    (token, order)
}

async fn pay_with(app: &TestApp, token: &str, order: &Value, channel: &str) -> (StatusCode, Value) {
    let path = format!("/api/orders/{}/pay", order["id"].as_str().unwrap());
    app.post(&path, Some(token), json!({ "channel": channel }))
        .await
}

async fn pay(app: &TestApp, token: &str, order: &Value) -> Value {
    let (status, params) = pay_with(app, token, order, V2).await;
    assert_eq!(status, StatusCode::OK, "{params}");
    params
}

fn out_trade_no(order: &Value) -> &str {
    order["out_trade_no"].as_str().unwrap()
}

/// The customer pays at the simulated WeChat through APIv2.
async fn customer_pays(app: &TestApp, order: &Value, extra: Value) -> Value {
    let mut body = json!({ "out_trade_no": out_trade_no(order), "channel": V2 });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let (status, answer) = control(app, "/pay", body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer
}

async fn wait_for(app: &TestApp, token: &str, order: &Value, status: &str) -> Value {
    let path = format!("/api/orders/{}", order["id"].as_str().unwrap());
    let mut last = Value::Null;
    for _ in 0..200 {
        last = app.get(&path, Some(token)).await.1;
        if last["status"] == status {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("order never reached {status}: {last}");
}

fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A pay notify as WeChat sends it for `order`, unsigned.
fn pay_notify(
    app: &TestApp,
    order: &Value,
    transaction_id: &str,
    total: i64,
) -> BTreeMap<String, String> {
    let m = merchant(app);
    let total = total.to_string();
    fields(&[
        ("return_code", "SUCCESS"),
        ("result_code", "SUCCESS"),
        ("appid", &m.appid),
        ("mch_id", &m.mchid),
        ("nonce_str", "5K8264ILTKCH16CQ2502SI8ZNMTM67VS"),
        ("openid", "oUpF8uMEb4qRXf22hE3X68TekukE"),
        ("is_subscribe", "N"),
        ("trade_type", "JSAPI"),
        ("bank_type", "OTHERS"),
        ("total_fee", &total),
        ("cash_fee", &total),
        ("fee_type", "CNY"),
        ("transaction_id", transaction_id),
        ("out_trade_no", out_trade_no(order)),
        ("time_end", "20261202120000"),
    ])
}

fn signed_with(mut fields: BTreeMap<String, String>, key: &str, t: SignType) -> String {
    let signature = sign::sign(&fields, key, t);
    fields.insert("sign".into(), signature);
    xml::render(&fields).unwrap()
}

/// Posts a notify body; returns the HTTP status and the `return_code` answered. A connection
/// the engine cut short (a body far over the limit is refused before it is all sent) reads as
/// a 413 FAIL: not acknowledged either way.
async fn deliver(
    app: &TestApp,
    path: &str,
    body: impl Into<reqwest::Body>,
) -> (StatusCode, String) {
    let sent = app
        .http
        .post(app.url(path))
        .header("content-type", "text/xml")
        .body(body)
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(e) if e.is_request() => return (StatusCode::PAYLOAD_TOO_LARGE, "FAIL".into()),
        Err(e) => panic!("{e}"),
    };
    let status = response.status();
    let text = response.text().await.unwrap();
    let return_code = xml::parse(text.as_bytes())
        .ok()
        .and_then(|f| f.get("return_code").cloned())
        .unwrap_or_else(|| format!("unreadable: {text}"));
    (status, return_code)
}

async fn happy_path(backend: Backend) {
    let app = spawn_app(backend).await;
    let (token, order) = customer_with_order(&app).await;
    let params = pay(&app, &token, &order).await;

    // Exactly what wx.requestPayment takes, signed the APIv2 way with the unifiedorder sign type.
    let m = merchant(&app);
    assert_eq!(params["signType"], "HMAC-SHA256");
    let package = params["package"].as_str().unwrap();
    assert!(package.starts_with("prepay_id=wx"), "{params}");
    let expected = sign::pay_sign(
        &m.appid,
        params["nonceStr"].as_str().unwrap(),
        package,
        SignType::HmacSha256,
        params["timeStamp"].as_str().unwrap(),
        &m.apiv2_key,
    );
    assert_eq!(params["paySign"], expected);

    // The order at WeChat carries what the engine sent (the simulator checked the signature).
    let (status, at_wechat) = app
        .get(
            &format!(
                "/sandbox/control/wechatpay/transactions/{}?channel={V2}",
                out_trade_no(&order)
            ),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{at_wechat}");
    assert_eq!(at_wechat["sign_type"], "HMAC-SHA256");
    assert!(
        at_wechat["notify_url"]
            .as_str()
            .is_some_and(|u| u.ends_with("/notify/wechatpay/v2")),
        "{at_wechat}"
    );

    customer_pays(&app, &order, json!({})).await;
    let paid = wait_for(&app, &token, &order, "paid").await;
    assert_eq!(paid["paid_fen"], TOTAL);
    assert_eq!(paid["channel"], V2);
    let history = app.order_events(&order).await;
    assert_eq!(count(&history, "PaymentSucceeded"), 1);
    let succeeded = history
        .iter()
        .find(|e| e["type"] == "PaymentSucceeded")
        .unwrap();
    assert_eq!(succeeded["data"]["channel"], V2);
    assert_eq!(succeeded["metadata"]["actor"], "wechatpay_v2:notify");

    // Paying again is refused: the money is in.
    let (status, body) = pay_with(&app, &token, &order, V2).await;
    assert_error(status, &body, StatusCode::CONFLICT, "order_already_paid");
}

on_both_backends!(happy_path);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_concurrent_copies_of_a_genuine_notify_record_one_payment() {
    let app = spawn_app(Backend::Postgres).await;
    let (token, order) = customer_with_order(&app).await;
    pay(&app, &token, &order).await;
    let m = merchant(&app);
    let body = signed_with(
        pay_notify(&app, &order, "4200000000202612020000000001", TOTAL),
        &m.apiv2_key,
        SignType::HmacSha256,
    );
    let copies = (0..30).map(|_| deliver(&app, "/notify/wechatpay/v2", body.clone()));
    let answers = futures::future::join_all(copies).await;
    assert!(
        answers
            .iter()
            .all(|(status, code)| *status == StatusCode::OK && code == "SUCCESS"),
        "{answers:?}"
    );
    wait_for(&app, &token, &order, "paid").await;
    assert_eq!(
        count(&app.order_events(&order).await, "PaymentSucceeded"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_altered_hostile_and_oversized_notifies_are_refused_and_write_nothing() {
    let app = spawn_app(Backend::Postgres).await;
    let (token, order) = customer_with_order(&app).await;
    pay(&app, &token, &order).await;
    let before = app.event_count().await;
    let m = merchant(&app);
    let genuine = signed_with(
        pay_notify(&app, &order, "4200000000202612020000000002", TOTAL),
        &m.apiv2_key,
        SignType::HmacSha256,
    );

    let forged = signed_with(
        pay_notify(&app, &order, "4200000000202612020000000002", TOTAL),
        "not-the-merchant-api-key-0000000",
        SignType::HmacSha256,
    );
    let altered = genuine.replace(&format!("[{TOTAL}]"), "[1]");
    assert_ne!(altered, genuine);
    let unsigned = xml::render(&pay_notify(
        &app,
        &order,
        "4200000000202612020000000002",
        TOTAL,
    ))
    .unwrap();
    let entity = format!(
        "<!DOCTYPE xml [<!ENTITY total \"{TOTAL}\">]>{}",
        genuine.replacen(&format!("[{TOTAL}]"), "&total;", 1)
    );
    let external = format!(
        "<!DOCTYPE xml [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>{}",
        genuine.replacen("<xml>", "<xml><attach>&x;</attach>", 1)
    );
    let truncated = genuine[..genuine.len() / 2].to_string();
    let mut huge = genuine.clone().into_bytes();
    huge.extend(std::iter::repeat_n(b' ', 10 * 1024 * 1024));

    for (what, body) in [
        ("forged", forged.into_bytes()),
        ("altered", altered.into_bytes()),
        ("unsigned", unsigned.into_bytes()),
        ("entity", entity.into_bytes()),
        ("external entity", external.into_bytes()),
        ("truncated", truncated.into_bytes()),
        ("10 MB", huge),
        ("empty", Vec::new()),
        ("bare success", b"success".to_vec()),
    ] {
        let (status, code) = deliver(&app, "/notify/wechatpay/v2", body).await;
        assert_ne!(code, "SUCCESS", "{what} acknowledged");
        assert!(!status.is_success(), "{what}: {status}");
    }
    assert_eq!(app.event_count().await, before, "nothing written");

    // The genuine one is then believed.
    let (status, code) = deliver(&app, "/notify/wechatpay/v2", genuine).await;
    assert_eq!((status, code.as_str()), (StatusCode::OK, "SUCCESS"));
    wait_for(&app, &token, &order, "paid").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_md5_notify_for_an_hmac_order_is_believed_because_it_verifies() {
    let app = spawn_app(Backend::Postgres).await;
    let (token, order) = customer_with_order(&app).await;
    pay(&app, &token, &order).await;
    // The simulator signs this order's notify with MD5 and leaves out sign_type, as WeChat has
    // been seen doing for an order placed with HMAC-SHA256.
    let (status, answer) = control(&app, "/faults", json!({ "v2_notify_sign_type": "MD5" })).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    customer_pays(&app, &order, json!({})).await;
    wait_for(&app, &token, &order, "paid").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_total_fee_puts_the_order_in_review_once() {
    let app = spawn_app(Backend::Postgres).await;
    let (token, order) = customer_with_order(&app).await;
    pay(&app, &token, &order).await;
    customer_pays(
        &app,
        &order,
        json!({ "amount_fen": TOTAL - 1, "duplicates": 3 }),
    )
    .await;
    let review = wait_for(&app, &token, &order, "needs_review").await;
    assert_eq!(review["paid_fen"], TOTAL - 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let history = app.order_events(&order).await;
    assert_eq!(count(&history, "PaymentAmountMismatch"), 1);
    assert_eq!(count(&history, "PaymentSucceeded"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_notify_for_another_merchant_or_an_unknown_order_is_not_acknowledged() {
    let app = spawn_app(Backend::Postgres).await;
    let (token, order) = customer_with_order(&app).await;
    pay(&app, &token, &order).await;
    let m = merchant(&app);
    let mut other_merchant = pay_notify(&app, &order, "4200000000202612020000000003", TOTAL);
    other_merchant.insert("mch_id".into(), "1999999999".into());
    let (_, code) = deliver(
        &app,
        "/notify/wechatpay/v2",
        signed_with(other_merchant, &m.apiv2_key, SignType::HmacSha256),
    )
    .await;
    assert_eq!(code, "FAIL");
    let mut unknown = pay_notify(&app, &order, "4200000000202612020000000003", TOTAL);
    unknown.insert(
        "out_trade_no".into(),
        uuid::Uuid::now_v7().simple().to_string(),
    );
    let (_, code) = deliver(
        &app,
        "/notify/wechatpay/v2",
        signed_with(unknown, &m.apiv2_key, SignType::HmacSha256),
    )
    .await;
    assert_eq!(code, "FAIL");
    assert_eq!(
        count(&app.order_events(&order).await, "PaymentSucceeded"),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_closes_at_wechat_or_records_the_payment_found_there() {
    let app = spawn_app(Backend::Postgres).await;
    let (token, order) = customer_with_order(&app).await;
    pay(&app, &token, &order).await;
    let cancel = format!("/api/orders/{}/cancel", order["id"].as_str().unwrap());
    let (status, closed) = app.post(&cancel, Some(&token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{closed}");
    assert_eq!(closed["status"], "closed");
    // Closed at WeChat too: the customer can no longer pay it there.
    let (status, _) = control(
        &app,
        "/pay",
        json!({ "out_trade_no": out_trade_no(&order), "channel": V2 }),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);

    // Paid at WeChat while the notify is late: the cancel finds and records the payment.
    let order = app.place_order(&token, "tea", 2).await;
    pay(&app, &token, &order).await;
    customer_pays(&app, &order, json!({ "delay_ms": 60_000 })).await;
    let cancel = format!("/api/orders/{}/cancel", order["id"].as_str().unwrap());
    let (status, body) = app.post(&cancel, Some(&token), json!({})).await;
    assert_error(status, &body, StatusCode::CONFLICT, "order_already_paid");
    let history = app.order_events(&order).await;
    assert_eq!(count(&history, "PaymentSucceeded"), 1);
    assert_eq!(count(&history, "OrderClosed"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_notify_is_found_by_orderquery() {
    let app = spawn_app(Backend::Postgres).await;
    let (token, order) = customer_with_order(&app).await;
    pay(&app, &token, &order).await;
    customer_pays(&app, &order, json!({ "delay_ms": 60_000 })).await;
    assert_eq!(app.reconcile_now().await, 1);
    let paid = wait_for(&app, &token, &order, "paid").await;
    assert_eq!(paid["paid_fen"], TOTAL);
    let history = app.order_events(&order).await;
    let succeeded = history
        .iter()
        .find(|e| e["type"] == "PaymentSucceeded")
        .unwrap();
    assert_eq!(succeeded["metadata"]["actor"], "wechatpay_v2:query");
}

/// WeChat keeps one order book per merchant: an order ordered through v3 cannot be ordered
/// through v2 too, and the engine says so instead of passing WeChat's refusal on as a 502. Money
/// that arrives through the other channel all the same is recorded and reviewed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_channel_per_order_and_a_payment_through_the_other_is_reviewed() {
    let app = spawn_app(Backend::Postgres).await;
    let (token, order) = customer_with_order(&app).await;
    let (status, body) = pay_with(&app, &token, &order, "wechatpay_v3").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = pay_with(&app, &token, &order, V2).await;
    assert_error(status, &body, StatusCode::CONFLICT, "payment_channel_fixed");
    let (status, body) = pay_with(&app, &token, &order, "wechatpay_v3").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "paying on through v3 is fine: {body}"
    );

    let (status, answer) = control(
        &app,
        "/pay",
        json!({ "out_trade_no": out_trade_no(&order), "channel": "wechatpay_v3" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    wait_for(&app, &token, &order, "paid").await;
    // A genuine v2 notify of a second payment (another transaction) for the same order.
    let m = merchant(&app);
    let second = signed_with(
        pay_notify(&app, &order, "4200000000202612020000000077", TOTAL),
        &m.apiv2_key,
        SignType::HmacSha256,
    );
    let (status, code) = deliver(&app, "/notify/wechatpay/v2", second).await;
    assert_eq!((status, code.as_str()), (StatusCode::OK, "SUCCESS"));
    let review = wait_for(&app, &token, &order, "needs_review").await;
    assert_eq!(review["paid_fen"], 2 * TOTAL);
    let history = app.order_events(&order).await;
    let channels: Vec<&Value> = history
        .iter()
        .filter(|e| e["type"] == "PaymentSucceeded")
        .map(|e| &e["data"]["channel"])
        .collect();
    assert_eq!(channels, [&json!("wechatpay_v3"), &json!(V2)]);
}

/// A channel whose order never reached WeChat (the prepay call failed) does not fix the order
/// to it; closing then closes at every channel a payment was requested through.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn closing_an_order_closes_it_at_every_channel_it_was_requested_through() {
    let app = spawn_app(Backend::Postgres).await;
    let (token, order) = customer_with_order(&app).await;
    // WeChat v3 is down for this order's first pay call: nothing ordered there.
    control(
        &app,
        "/faults",
        json!({ "fail_next": 20, "path_contains": "/v3/pay/transactions/jsapi" }),
    )
    .await;
    let (status, body) = pay_with(&app, &token, &order, "wechatpay_v3").await;
    assert!(status.is_server_error(), "{status} {body}");
    control(&app, "/faults", json!({ "fail_next": 0 })).await;
    pay(&app, &token, &order).await;
    assert_eq!(app.expire_all_now().await, 1);
    for channel in [V2, "wechatpay_v3"] {
        let (status, answer) = control(
            &app,
            "/pay",
            json!({ "out_trade_no": out_trade_no(&order), "channel": channel }),
        )
        .await;
        assert!(status.is_client_error(), "{channel}: {status} {answer}");
    }
    let history = app.order_events(&order).await;
    assert_eq!(count(&history, "PaymentRequested"), 2);
    assert_eq!(count(&history, "OrderClosed"), 1);
}

async fn paid_order(app: &TestApp) -> (String, Value) {
    let (token, order) = customer_with_order(app).await;
    pay(app, &token, &order).await;
    customer_pays(app, &order, json!({})).await;
    wait_for(app, &token, &order, "paid").await;
    (token, order)
}

async fn refund(app: &TestApp, order: &Value, amount_fen: i64) -> (StatusCode, Value) {
    let admin = app.admin_token().await;
    let path = format!("/admin/orders/{}/refunds", order["id"].as_str().unwrap());
    app.post(
        &path,
        Some(&admin),
        json!({ "amount_fen": amount_fen, "reason": "customer asked" }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partial_full_and_over_refunds_over_mutual_tls() {
    let app = spawn_app(Backend::Postgres).await;
    let (token, order) = paid_order(&app).await;

    let (status, first) = refund(&app, &order, 500).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let partly = wait_for(&app, &token, &order, "partially_refunded").await;
    assert_eq!(partly["refunded_fen"], 500);

    let (status, body) = refund(&app, &order, TOTAL).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "refund_exceeds_refundable",
    );

    let (status, rest) = refund(&app, &order, TOTAL - 500).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{rest}");
    let refunded = wait_for(&app, &token, &order, "refunded").await;
    assert_eq!(refunded["refunded_fen"], TOTAL);
    let history = app.order_events(&order).await;
    assert_eq!(count(&history, "RefundSucceeded"), 2);
    // The refund notify (req_info) or the refund poller recorded each: never twice.
    app.reconcile_now().await;
    assert_eq!(count(&app.order_events(&order).await, "RefundSucceeded"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refund_notify_duplicates_are_ignored_and_a_wrong_key_refused() {
    let app = spawn_app(Backend::Postgres).await;
    let (_token, order) = paid_order(&app).await;
    // Held at WeChat: only our own notify can settle it.
    control(&app, "/faults", json!({ "hold_refunds": true })).await;
    let (status, refund) = refund(&app, &order, 700).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{refund}");
    let out_refund_no = refund["out_refund_no"].as_str().unwrap();
    let m = merchant(&app);
    let inner = fields(&[
        ("out_trade_no", out_trade_no(&order)),
        ("out_refund_no", out_refund_no),
        ("refund_id", "50000000382019052709732678859"),
        ("transaction_id", "4200000000202612020000000009"),
        ("total_fee", &TOTAL.to_string()),
        ("refund_fee", "700"),
        ("settlement_refund_fee", "700"),
        ("settlement_total_fee", &TOTAL.to_string()),
        ("refund_status", "SUCCESS"),
        ("success_time", "2026-12-02 12:00:00"),
        ("refund_recv_accout", "支付用户零钱"),
        ("refund_account", "REFUND_SOURCE_RECHARGE_FUNDS"),
        ("refund_request_source", "API"),
    ]);
    let notify_of = |inner: &BTreeMap<String, String>, key: &str| {
        xml::render(&fields(&[
            ("return_code", "SUCCESS"),
            ("appid", &m.appid),
            ("mch_id", &m.mchid),
            ("nonce_str", "0b9f35f484df17a732e537c37708d1d0"),
            ("req_info", &encrypt_req_info(inner, key).unwrap()),
        ]))
        .unwrap()
    };
    let notify = |key: &str| notify_of(&inner, key);
    let before = app.event_count().await;
    let (status, code) = deliver(
        &app,
        "/notify/wechatpay/v2/refund",
        notify("another-merchant-key-00000000000"),
    )
    .await;
    assert_eq!(code, "FAIL");
    assert!(!status.is_success());
    assert_eq!(app.event_count().await, before, "nothing written");
    // Decrypts, but the amount is not the refund's: not believed.
    let mut other_amount = inner.clone();
    other_amount.insert("refund_fee".into(), "699".into());
    let (_, code) = deliver(
        &app,
        "/notify/wechatpay/v2/refund",
        notify_of(&other_amount, &m.apiv2_key),
    )
    .await;
    assert_eq!(code, "FAIL");
    assert_eq!(app.event_count().await, before, "nothing written");

    for _ in 0..3 {
        let (status, code) =
            deliver(&app, "/notify/wechatpay/v2/refund", notify(&m.apiv2_key)).await;
        assert_eq!((status, code.as_str()), (StatusCode::OK, "SUCCESS"));
    }
    let history = app.order_events(&order).await;
    assert_eq!(count(&history, "RefundSucceeded"), 1);
    let succeeded = history
        .iter()
        .find(|e| e["type"] == "RefundSucceeded")
        .unwrap();
    assert_eq!(succeeded["metadata"]["actor"], "wechatpay_v2:notify");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_simulator_sends_the_refund_notify_when_the_refund_settles() {
    let app = spawn_app(Backend::Postgres).await;
    let (token, order) = paid_order(&app).await;
    control(&app, "/faults", json!({ "hold_refunds": true })).await;
    let (status, refund) = refund(&app, &order, 300).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{refund}");
    let out_refund_no = refund["out_refund_no"].as_str().unwrap();
    let (status, settled) = control(
        &app,
        &format!("/refunds/{out_refund_no}/settle"),
        json!({ "status": "SUCCESS", "channel": V2 }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{settled}");
    wait_for(&app, &token, &order, "partially_refunded").await;
    let history = app.wait_for_event(&order, "RefundSucceeded").await;
    let succeeded = history
        .iter()
        .find(|e| e["type"] == "RefundSucceeded")
        .unwrap();
    assert_eq!(succeeded["metadata"]["actor"], "wechatpay_v2:notify");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refund_wechat_closes_is_recorded_as_failed() {
    let app = spawn_app(Backend::Postgres).await;
    let (token, order) = paid_order(&app).await;
    control(&app, "/faults", json!({ "hold_refunds": true })).await;
    let (_, refund) = refund(&app, &order, 300).await;
    let out_refund_no = refund["out_refund_no"].as_str().unwrap();
    control(
        &app,
        &format!("/refunds/{out_refund_no}/settle"),
        json!({ "status": "CLOSED", "channel": V2 }),
    )
    .await;
    app.wait_for_event(&order, "RefundFailed").await;
    let order = wait_for(&app, &token, &order, "paid").await;
    assert_eq!(order["refunded_fen"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn systemerror_is_retried_with_the_same_request() {
    let app = spawn_app(Backend::Postgres).await;
    let (token, order) = customer_with_order(&app).await;
    let (status, _) = control(
        &app,
        "/faults",
        json!({ "fail_next": 2, "path_contains": "/pay/unifiedorder" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let params = pay(&app, &token, &order).await;
    assert!(params["package"]
        .as_str()
        .unwrap()
        .starts_with("prepay_id="));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn md5_merchants_are_served_too() {
    let app = spawn_app_with(Backend::Postgres, |s| {
        s.wechatpay_v2_sign_type = "MD5".into()
    })
    .await;
    let (token, order) = customer_with_order(&app).await;
    let params = pay(&app, &token, &order).await;
    assert_eq!(params["signType"], "MD5");
    let m = merchant(&app);
    assert_eq!(
        params["paySign"],
        sign::pay_sign(
            &m.appid,
            params["nonceStr"].as_str().unwrap(),
            params["package"].as_str().unwrap(),
            SignType::Md5,
            params["timeStamp"].as_str().unwrap(),
            &m.apiv2_key,
        )
    );
    customer_pays(&app, &order, json!({})).await;
    wait_for(&app, &token, &order, "paid").await;
    let (status, refund) = refund(&app, &order, 100).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{refund}");
    wait_for(&app, &token, &order, "partially_refunded").await;
}

#[test]
fn the_demo_walks_a_v2_checkout() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_paystream"))
        .args(["demo", "--channel", "wechatpay_v2"])
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
        "unifiedorder",
        "\"signType\":\"HMAC-SHA256\"",
        "PaymentSucceeded",
        "RefundSucceeded",
        "wechatpay_v2:notify",
        "done.",
    ] {
        assert!(stdout.contains(step), "missing {step} in:\n{stdout}");
    }
}

/// The engine recorded RefundRequested and stopped before calling WeChat: the refund poller
/// finds WeChat never heard of it (REFUNDNOTEXIST) and sends it with the same out_refund_no.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refund_recorded_but_never_sent_is_sent_by_the_poller() {
    use paystream_engine::money::Fen;
    use paystream_engine::order::OrderCommand;
    use paystream_engine::orders::{Metadata, OrderService};

    let app = spawn_app(Backend::Postgres).await;
    let (token, order) = paid_order(&app).await;
    let orders = OrderService::new(paystream::event_store(&app.running().db));
    let order_id: uuid::Uuid = order["id"].as_str().unwrap().parse().unwrap();
    let out_refund_no = format!("R{}", uuid::Uuid::now_v7().simple());
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
    app.reconcile_now().await;
    let done = wait_for(&app, &token, &order, "partially_refunded").await;
    assert_eq!(done["refunded_fen"], 700);
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

/// A merchant on APIv2 alone (WECHATPAY_MCHID + WECHATPAY_API_KEY, no APIv3 keys): v2 checks out
/// against a WeChat of its own; v3 is not offered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_v2_only_merchant() {
    let wechat = paystream_sandbox::Sandbox::new(paystream_sandbox::SandboxConfig {
        appid: paystream::config::SANDBOX_APPID.into(),
        secret: paystream::config::SANDBOX_SECRET.into(),
        pay: paystream_sandbox::PaySandboxConfig {
            notify_time_scale: 0.001,
            ..Default::default()
        },
    });
    let m = wechat.merchant();
    // The customer opens the mini-program: this WeChat knows their openid from then on.
    wechat.login_code("payer", None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, paystream_sandbox::router(wechat))
            .await
            .unwrap()
    });
    let mut app = spawn_app_with(Backend::Postgres, |s| {
        s.wechat_api_base = Some(base.parse().unwrap());
        s.wechatpay_mchid = Some(m.mchid.clone());
        s.wechatpay_api_base = Some(base.parse().unwrap());
        s.wechatpay_api_key = Some(m.apiv2_key.clone());
        s.wechatpay_v2_sign_type = "MD5".into();
    })
    .await;
    app.wechat_base = Some(base.clone());
    let (token, order) = customer_with_order(&app).await;
    let (status, body) = pay_with(&app, &token, &order, "wechatpay_v3").await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "channel_unavailable",
    );
    let params = pay(&app, &token, &order).await;
    assert_eq!(params["signType"], "MD5");
    let status = reqwest::Client::new()
        .post(format!("{base}/control/wechatpay/pay"))
        .json(&json!({ "out_trade_no": out_trade_no(&order), "channel": V2 }))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::OK);
    wait_for(&app, &token, &order, "paid").await;

    // No merchant certificate configured: WeChat refuses the refund at the TLS door. The refund
    // is not declared failed for that — it waits in flight for the certificate.
    let (status, refund) = refund(&app, &order, 100).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{refund}");
    assert_eq!(refund["status"], "processing");
    app.reconcile_now().await;
    let history = app.order_events(&order).await;
    assert_eq!(count(&history, "RefundFailed"), 0);
    assert_eq!(count(&history, "RefundSucceeded"), 0);
}

/// A real-merchant configuration against a WeChat of its own (`paystream sandbox`'s way): the
/// merchant certificate, the secapi address and the CA to trust come from settings and files,
/// and a v2 refund goes through over mutual TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_v2_merchant_with_its_certificate_refunds_over_mutual_tls() {
    let wechat = paystream_sandbox::Sandbox::new(paystream_sandbox::SandboxConfig {
        appid: paystream::config::SANDBOX_APPID.into(),
        secret: paystream::config::SANDBOX_SECRET.into(),
        pay: paystream_sandbox::PaySandboxConfig {
            notify_time_scale: 0.001,
            ..Default::default()
        },
    });
    let m = wechat.merchant();
    wechat.login_code("payer", None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let secapi = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let secapi_base = format!("https://{}", secapi.local_addr().unwrap());
    let served = wechat.clone();
    tokio::spawn(async move { served.serve_secapi(secapi, std::future::pending()).await });
    tokio::spawn(async move {
        axum::serve(listener, paystream_sandbox::router(wechat))
            .await
            .unwrap()
    });
    let files = tempfile::tempdir().unwrap();
    let file = |name: &str, pem: &str| {
        let path = files.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let (ca, cert, key) = (
        file("ca.pem", &m.secapi_ca_pem),
        file("cert.pem", &m.apiv2_client_cert_pem),
        file("key.pem", &m.apiv2_client_key_pem),
    );
    let mut app = spawn_app_with(Backend::Postgres, |s| {
        s.wechat_api_base = Some(base.parse().unwrap());
        s.wechatpay_mchid = Some(m.mchid.clone());
        s.wechatpay_api_base = Some(base.parse().unwrap());
        s.wechatpay_api_key = Some(m.apiv2_key.clone());
        s.wechatpay_v2_secapi_base = Some(secapi_base.parse().unwrap());
        s.wechatpay_v2_root_ca = Some(ca);
        s.wechatpay_v2_client_cert = Some(cert);
        s.wechatpay_v2_client_key = Some(key);
    })
    .await;
    app.wechat_base = Some(base.clone());
    let (token, order) = customer_with_order(&app).await;
    pay(&app, &token, &order).await;
    let status = reqwest::Client::new()
        .post(format!("{base}/control/wechatpay/pay"))
        .json(&json!({ "out_trade_no": out_trade_no(&order), "channel": V2 }))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::OK);
    wait_for(&app, &token, &order, "paid").await;
    let (status, refund) = refund(&app, &order, 400).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{refund}");
    let done = wait_for(&app, &token, &order, "partially_refunded").await;
    assert_eq!(done["refunded_fen"], 400);
}
