//! WeChat as it really answers (docs/wechat-compat.md), end to end through the engine's HTTP API
//! against the simulator with each behaviour switched on: unsigned errors, a close while the
//! customer pays, refunds WeChat's refund system does not know yet, failed payment attempts — and
//! signatures that must still be refused.

mod common;

use std::time::Duration;

use common::{count, spawn_app, spawn_app_with, TestApp};
use paystream_engine::db::Backend;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A WeChat Pay control call of the simulator that must succeed.
async fn control(app: &TestApp, path: &str, body: Value) -> Value {
    app.sandbox(&format!("/wechatpay{path}"), body).await
}

/// The customer's side of the order at WeChat (control `trade-state`).
async fn set_trade_state(app: &TestApp, order: &Value, trade_state: &str) {
    let body = json!({ "out_trade_no": out_trade_no(order), "trade_state": trade_state });
    control(app, "/trade-state", body).await;
}

async fn at_wechat(app: &TestApp, order: &Value) -> Value {
    app.get(
        &format!(
            "/sandbox/control/wechatpay/transactions/{}",
            out_trade_no(order)
        ),
        None,
    )
    .await
    .1
}

fn out_trade_no(order: &Value) -> String {
    order["out_trade_no"].as_str().unwrap().to_string()
}

fn id(order: &Value) -> &str {
    order["id"].as_str().unwrap()
}

/// A logged-in customer with an order whose payment was requested at WeChat.
async fn order_at_wechat(app: &TestApp, user: &str) -> (String, Value) {
    // A product per customer: several customers share one app.
    let sku = format!("tea-{user}");
    app.add_product(&sku, 1250, true).await;
    let (token, _) = app.login(user).await;
    let (status, order) = app
        .post(
            "/api/orders",
            Some(&token),
            json!({ "items": [{ "sku": sku, "quantity": 2 }] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let (status, params) = app
        .post(
            &format!("/api/orders/{}/pay", id(&order)),
            Some(&token),
            json!({ "channel": "wechatpay_v3" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{params}");
    (token, order)
}

async fn cancel(app: &TestApp, token: &str, order: &Value) -> (StatusCode, Value) {
    app.post(
        &format!("/api/orders/{}/cancel", id(order)),
        Some(token),
        json!({}),
    )
    .await
}

async fn status_of(app: &TestApp, token: &str, order: &Value) -> Value {
    app.get(&format!("/api/orders/{}", id(order)), Some(token))
        .await
        .1
}

async fn wait_for_status(app: &TestApp, token: &str, order: &Value, status: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        last = status_of(app, token, order).await;
        if last["status"] == status {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never {status}: {last}");
}

async fn paid_order(app: &TestApp, user: &str) -> (String, Value) {
    let (token, order) = order_at_wechat(app, user).await;
    control(app, "/pay", json!({ "out_trade_no": out_trade_no(&order) })).await;
    wait_for_status(app, &token, &order, "paid").await;
    (token, order)
}

async fn refund(app: &TestApp, admin: &str, order: &Value, amount: i64) -> (StatusCode, Value) {
    app.post(
        &format!("/admin/orders/{}/refunds", id(order)),
        Some(admin),
        json!({ "amount_fen": amount, "reason": "customer request" }),
    )
    .await
}

/// WeChat closed the order already (say at `time_expire`) and answers the close with an
/// unsigned 400 ORDER_CLOSED: read as "closed", not as a forgery.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unsigned_order_closed_closes_the_order() {
    let app = spawn_app(Backend::Postgres).await;
    let (token, order) = order_at_wechat(&app, "closed-at-wechat").await;
    set_trade_state(&app, &order, "CLOSED").await;
    control(&app, "/faults", json!({ "unsigned_errors": true })).await;
    let (status, closed) = cancel(&app, &token, &order).await;
    assert_eq!(
        (status, closed["status"].as_str()),
        (StatusCode::OK, Some("closed")),
        "{closed}"
    );

    // The expiry sweep takes the same path, once.
    let (token2, order2) = order_at_wechat(&app, "closed-at-wechat-2").await;
    set_trade_state(&app, &order2, "CLOSED").await;
    let closed = app.expire_all_now().await;
    assert_eq!(closed, 1);
    assert_eq!(status_of(&app, &token2, &order2).await["status"], "closed");
}

/// The customer is entering the password when the order is cancelled: WeChat answers 202
/// USERPAYING, the order stays pending; once the customer gives up, the cancel closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_close_while_the_customer_pays_leaves_the_order_pending() {
    let app = spawn_app(Backend::Postgres).await;
    let (token, order) = order_at_wechat(&app, "paying").await;
    set_trade_state(&app, &order, "USERPAYING").await;
    let (status, body) = cancel(&app, &token, &order).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "payment_in_progress");
    assert_eq!(
        status_of(&app, &token, &order).await["status"],
        "pending_payment"
    );
    assert_eq!(count(&app.order_events(&order).await, "OrderClosed"), 0);
    // Neither does the expiry sweep close it meanwhile.
    let closed = app.expire_all_now().await;
    assert_eq!(closed, 0);
    assert_eq!(
        at_wechat(&app, &order).await["transaction"]["trade_state"],
        "USERPAYING"
    );

    // The customer gives up; the next cancel closes the order here and at WeChat.
    set_trade_state(&app, &order, "NOTPAY").await;
    let (status, closed) = cancel(&app, &token, &order).await;
    assert_eq!(
        (status, closed["status"].as_str()),
        (StatusCode::OK, Some("closed"))
    );
    assert_eq!(
        at_wechat(&app, &order).await["transaction"]["trade_state"],
        "CLOSED"
    );
}

/// A refund asked for right after the payment: WeChat's refund system does not know the payment
/// for a while (404 RESOURCE_NOT_EXISTS). The engine asks again and the refund succeeds; nothing
/// is recorded as failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refund_right_after_payment_is_retried_not_failed() {
    let app = spawn_app(Backend::Postgres).await;
    control(&app, "/faults", json!({ "refund_lag_ms": 1200 })).await;
    let (token, order) = paid_order(&app, "early-refund").await;
    let admin = app.admin_token().await;
    // Within the client's own retries.
    let (status, accepted) = refund(&app, &admin, &order, 500).await;
    assert!(status.is_success(), "{accepted}");
    let done = wait_for_status(&app, &token, &order, "partially_refunded").await;
    assert_eq!(done["refunded_fen"], 500);

    // Longer than the client waits: left processing, the refund poller finishes it.
    control(&app, "/faults", json!({ "refund_lag_ms": 6000 })).await;
    let (token2, order2) = paid_order(&app, "early-refund-2").await;
    let (status, accepted) = refund(&app, &admin, &order2, 700).await;
    assert_eq!(
        (status, accepted["status"].as_str()),
        (StatusCode::ACCEPTED, Some("processing")),
        "{accepted}"
    );
    tokio::time::sleep(Duration::from_millis(3000)).await;
    app.reconcile_now().await;
    let done = wait_for_status(&app, &token2, &order2, "partially_refunded").await;
    assert_eq!(done["refunded_fen"], 700);
    for order in [&order, &order2] {
        let history = app.order_events(order).await;
        assert_eq!(
            (
                count(&history, "RefundFailed"),
                count(&history, "RefundSucceeded")
            ),
            (0, 1)
        );
    }
}

/// Long after the payment, "no such order" from the refund API is final; and an over-refund
/// (INVALID_REQUEST) is final at once, while the merchant's balance (NOT_ENOUGH) is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn final_and_passing_refund_refusals() {
    let app = spawn_app_with_lag_grace(0).await;
    control(&app, "/faults", json!({ "refund_lag_ms": 60_000 })).await;
    let (token, order) = paid_order(&app, "late-refund").await;
    let admin = app.admin_token().await;
    let (_, refused) = refund(&app, &admin, &order, 500).await;
    assert_eq!(refused["status"], "failed", "{refused}");

    control(
        &app,
        "/faults",
        json!({ "refund_lag_ms": 0, "balance_fen": 100 }),
    )
    .await;
    let (status, waiting) = refund(&app, &admin, &order, 500).await;
    assert_eq!(
        (status, waiting["status"].as_str()),
        (StatusCode::ACCEPTED, Some("processing")),
        "NOT_ENOUGH is the balance: {waiting}"
    );
    control(&app, "/faults", json!({ "balance_fen": null })).await;
    app.reconcile_now().await;
    let done = wait_for_status(&app, &token, &order, "partially_refunded").await;
    assert_eq!(done["refunded_fen"], 500);
}

async fn spawn_app_with_lag_grace(seconds: u32) -> TestApp {
    spawn_app_with(Backend::Postgres, |s| {
        s.wechatpay_refund_lag_seconds = seconds;
    })
    .await
}

/// A payment attempt failed (PAYERROR): the poller records nothing, the order stays payable and
/// the customer pays on the second try. While the customer is paying (USERPAYING) nothing is
/// recorded either.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_and_in_progress_payments_are_not_recorded() {
    let app = spawn_app(Backend::Postgres).await;
    let (token, order) = order_at_wechat(&app, "payerror").await;
    // PAYERROR first: a USERPAYING answer puts the next query 10 s away.
    for state in ["PAYERROR", "USERPAYING"] {
        set_trade_state(&app, &order, state).await;
        app.reconcile_now().await;
        assert_eq!(
            status_of(&app, &token, &order).await["status"],
            "pending_payment",
            "{state}"
        );
    }
    assert_eq!(
        app.order_events(&order).await.len(),
        2,
        "placed, payment requested"
    );
    control(
        &app,
        "/pay",
        json!({ "out_trade_no": out_trade_no(&order) }),
    )
    .await;
    wait_for_status(&app, &token, &order, "paid").await;
}

/// What passed before still passes: an error answer with a probe signature is as suspect as a
/// success with one (nothing recorded), and probe-signed notifications are not believed — WeChat
/// sends a real one later and that one counts, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn probe_signatures_are_refused_on_errors_and_notifications() {
    let app = spawn_app(Backend::Postgres).await;
    let (token, order) = order_at_wechat(&app, "probed").await;
    // Ordered before the probes start: a probe-signed prepay answer is refused too (503).
    let (token2, order2) = order_at_wechat(&app, "probed-2").await;
    set_trade_state(&app, &order, "CLOSED").await;
    control(&app, "/faults", json!({ "probe_share": 1.0 })).await;
    let (status, body) = cancel(&app, &token, &order).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        status_of(&app, &token, &order).await["status"],
        "pending_payment"
    );

    control(
        &app,
        "/pay",
        json!({ "out_trade_no": out_trade_no(&order2) }),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        status_of(&app, &token2, &order2).await["status"],
        "pending_payment",
        "a probe-signed notification is not a payment"
    );
    let (_, deliveries) = app
        .get("/sandbox/control/wechatpay/notifications", None)
        .await;
    let refused = deliveries["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["out_trade_no"] == out_trade_no(&order2).as_str())
        .all(|d| !d["delivered"].as_bool().unwrap() && d["attempts"].as_u64().unwrap() >= 1);
    assert!(refused, "{deliveries}");
    control(&app, "/faults", json!({ "probe_share": 0.0 })).await;
    wait_for_status(&app, &token2, &order2, "paid").await;
    assert_eq!(
        count(&app.order_events(&order2).await, "PaymentSucceeded"),
        1
    );
}
