//! The subscribe-message and card-verification workers in the embedded default: no broker, fed
//! from the log inside `serve`, against the built-in WeChat simulator.

mod common;

use std::time::Duration;

use common::{assert_error, count, spawn_app_with, TestApp};
use paystream_engine::db::Backend;
use reqwest::StatusCode;
use serde_json::{json, Value};

const PRICE: i64 = 1250;

const TEMPLATES: &str = r#"
[PaymentSucceeded]
template_id = "TPL-PAID"
page = "pages/order/detail?id={order_id}"
[PaymentSucceeded.data]
character_string1 = "{out_trade_no}"
amount2 = "{paid_yuan}"
time3 = "{paid_at}"
thing4 = "{item_names}"

[OrderClosed]
template_id = "TPL-CLOSED"
[OrderClosed.data]
character_string1 = "{out_trade_no}"
phrase2 = "{status}"
"#;

/// The engine with its workers running in-process and the templates above.
async fn app_with_workers(backend: Backend) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let templates = dir.path().join("templates.toml");
    std::fs::write(&templates, TEMPLATES).unwrap();
    let app = spawn_app_with(backend, |s| {
        s.no_background_jobs = false;
        s.subscribe_message_templates = Some(templates);
    })
    .await;
    app.add_product("tea", PRICE, true).await;
    (app, dir)
}

async fn place(app: &TestApp, token: &str, card: Option<&Value>) -> (StatusCode, Value) {
    let mut body = json!({ "items": [{ "sku": "tea", "quantity": 2 }] });
    if let Some(card) = card {
        body["card"] = json!({ "card_id": card["card_id"], "code": card["code"] });
    }
    app.post("/api/orders", Some(token), body).await
}

async fn pay_at_wechat(app: &TestApp, token: &str, order: &Value) {
    let id = order["id"].as_str().unwrap();
    let (status, body) = app
        .post(
            &format!("/api/orders/{id}/pay"),
            Some(token),
            json!({ "channel": "wechatpay_v3" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.sandbox(
        "/wechatpay/pay",
        json!({ "out_trade_no": order["out_trade_no"] }),
    )
    .await;
}

async fn card_order_is_consumed_once_after_payment(backend: Backend) {
    let (app, _dir) = app_with_workers(backend).await;
    let (token, user) = app.login("carla").await;
    let card = app
        .sandbox("/cards", json!({ "openid": user["openid"] }))
        .await;

    let (status, order) = place(&app, &token, Some(&card)).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(order["card"]["status"], "pending", "{order}");
    // Not before payment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count(&app.order_events(&order).await, "CardConsumed"), 0);

    pay_at_wechat(&app, &token, &order).await;
    let history = app.wait_for_event(&order, "CardConsumed").await;
    assert_eq!(count(&history, "CardConsumed"), 1);
    assert_eq!(count(&history, "CardConsumeFailed"), 0);
    let (_, shown) = app
        .get(
            &format!("/api/orders/{}", order["id"].as_str().unwrap()),
            Some(&token),
        )
        .await;
    assert_eq!(shown["card"]["status"], "consumed", "{shown}");

    // The code is now used: another order with it is refused, and nothing is written.
    let before = app.event_count().await;
    let (status, body) = place(&app, &token, Some(&card)).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "card_not_usable",
    );
    assert_eq!(app.event_count().await, before);

    // A refund of that order is flagged for staff, the card is not handed back.
    let admin = app.admin_token().await;
    let (status, body) = app
        .post(
            &format!("/admin/orders/{}/refunds", order["id"].as_str().unwrap()),
            Some(&admin),
            json!({ "amount_fen": 100, "reason": "late" }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let history = app.order_events(&order).await;
    assert_eq!(count(&history, "CardRefundFlagged"), 1, "{history:?}");
}

async fn someone_elses_or_a_used_card_is_refused_at_order_time(backend: Backend) {
    let (app, _dir) = app_with_workers(backend).await;
    let (token, _) = app.login("dora").await;
    let (_, other) = app.login("eve").await;
    let theirs = app
        .sandbox("/cards", json!({ "openid": other["openid"] }))
        .await;
    let before = app.event_count().await;
    let (status, body) = place(&app, &token, Some(&theirs)).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "card_not_usable",
    );

    let (_, me) = app.login("dora").await;
    let mine = app
        .sandbox("/cards", json!({ "openid": me["openid"] }))
        .await;
    app.sandbox(
        "/cards/consume",
        json!({ "card_id": mine["card_id"], "code": mine["code"] }),
    )
    .await;
    let (status, body) = place(&app, &token, Some(&mine)).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "card_not_usable",
    );

    let unknown = json!({ "card_id": mine["card_id"], "code": "999999999999" });
    let (status, body) = place(&app, &token, Some(&unknown)).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "card_not_usable",
    );
    assert_eq!(app.event_count().await, before, "refusals write nothing");

    let bad = json!({ "card_id": "", "code": "x" });
    let (status, body) = place(&app, &token, Some(&bad)).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_card");
}

async fn a_lost_consume_answer_is_checked_not_failed(backend: Backend) {
    let (app, _dir) = app_with_workers(backend).await;
    let (token, user) = app.login("fay").await;
    let card = app
        .sandbox("/cards", json!({ "openid": user["openid"] }))
        .await;
    let (_, order) = place(&app, &token, Some(&card)).await;
    // WeChat consumes the code but the answer is lost; the retry meets 40099.
    app.sandbox("/faults", json!({ "card_consume_lose_answer": 1 }))
        .await;
    pay_at_wechat(&app, &token, &order).await;
    let history = app.wait_for_event(&order, "CardConsumed").await;
    assert_eq!(count(&history, "CardConsumeFailed"), 0, "{history:?}");
}

async fn a_customer_who_accepted_gets_exactly_one_message(backend: Backend) {
    let (app, _dir) = app_with_workers(backend).await;
    let (token, user) = app.login("gina").await;
    let openid = user["openid"].as_str().unwrap().to_string();
    // wx.requestSubscribeMessage: WeChat records the accept, the mini-program tells paystream.
    app.sandbox(
        "/subscribe-accept",
        json!({ "openid": openid, "template_ids": ["TPL-PAID"] }),
    )
    .await;
    let (status, body) = app
        .post(
            "/api/subscriptions",
            Some(&token),
            json!({ "template_ids": ["TPL-PAID"] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (_, order) = place(&app, &token, None).await;
    pay_at_wechat(&app, &token, &order).await;
    let mut sent = Vec::new();
    for _ in 0..200 {
        sent = app.subscribe_messages(&openid).await;
        if !sent.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sent.len(), 1, "{sent:?}");
    let message = &sent[0];
    assert_eq!(message["template_id"], "TPL-PAID");
    assert_eq!(
        message["data"]["character_string1"]["value"],
        order["out_trade_no"]
    );
    assert_eq!(message["data"]["amount2"]["value"], "25.00");
    assert_eq!(message["data"]["thing4"]["value"], "Product tea");
    let time = message["data"]["time3"]["value"].as_str().unwrap();
    assert_eq!(time.len(), "2026-12-02 10:00".len(), "{time}");
    assert_eq!(
        message["page"],
        format!("pages/order/detail?id={}", order["id"].as_str().unwrap())
    );

    // A second paid order: the one acceptance is spent, so nothing more is sent.
    let (_, second) = place(&app, &token, None).await;
    pay_at_wechat(&app, &token, &second).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(app.subscribe_messages(&openid).await.len(), 1);
}

async fn a_customer_who_accepted_nothing_gets_nothing(backend: Backend) {
    let (app, _dir) = app_with_workers(backend).await;
    let (token, user) = app.login("hana").await;
    let openid = user["openid"].as_str().unwrap().to_string();
    let (_, order) = place(&app, &token, None).await;
    pay_at_wechat(&app, &token, &order).await;
    // Cancelling another order is a mapped event too.
    let (_, other) = place(&app, &token, None).await;
    let (status, _) = app
        .post(
            &format!("/api/orders/{}/cancel", other["id"].as_str().unwrap()),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(app.subscribe_messages(&openid).await.is_empty());

    let (status, body) = app
        .post(
            "/api/subscriptions",
            Some(&token),
            json!({ "template_ids": [] }),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "invalid_template_ids",
    );
    let (status, _) = app
        .post("/api/subscriptions", None, json!({ "template_ids": ["T"] }))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

async fn card_ext_is_signed_with_the_api_ticket(backend: Backend) {
    let (app, _dir) = app_with_workers(backend).await;
    let (token, user) = app.login("ivy").await;
    // A card the merchant has at WeChat (the sandbox creates it with its first copy).
    let given = app
        .sandbox("/cards", json!({ "openid": user["openid"] }))
        .await;
    let card_id = given["card_id"].as_str().unwrap();
    assert_eq!(card_id, paystream_sandbox::DEFAULT_CARD_ID);
    let (status, body) = app
        .get(&format!("/api/cards/{card_id}/ext"), Some(&token))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ext: Value = serde_json::from_str(body["cardExt"].as_str().unwrap()).unwrap();
    let check = app.sandbox(
        "/cards/ext-check",
        json!({ "card_id": card_id, "timestamp": ext["timestamp"], "nonce_str": ext["nonce_str"], "signature": ext["signature"] }),
    )
    .await;
    assert_eq!(check["valid"], true, "{ext} {check}");
    let (status, _) = app.get(&format!("/api/cards/{card_id}/ext"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// A subscribe-message worker and its message for the order's PaymentSucceeded, outside `serve`
/// (the engine runs without background jobs), so a test can play a worker that died mid-send.
async fn paid_message_and_worker(
    app: &TestApp,
    dir: &tempfile::TempDir,
    order: &Value,
) -> (
    std::sync::Arc<dyn paystream_engine::consumers::Worker>,
    paystream_engine::consumers::EventMessage,
    paystream::workers::WorkerDeps,
) {
    let db = app.running().db.clone();
    let store = paystream::event_store(&db);
    let stream = format!("order-{}", order["id"].as_str().unwrap());
    let mut message = None;
    for _ in 0..200 {
        let stored = store.read_stream(&stream).await.unwrap();
        if let Some(paid) = stored.iter().find(|e| e.event_type == "PaymentSucceeded") {
            message = Some(paystream_engine::consumers::EventMessage::from(paid));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wechat = paystream::mini_program_client(
        &paystream::config::MiniProgramMode::InProcessSandbox,
        &app.url("/sandbox"),
    );
    let templates = paystream_workers::Templates::load(&dir.path().join("templates.toml")).unwrap();
    let deps = paystream::workers::WorkerDeps {
        orders: paystream_engine::orders::OrderService::new(store),
        subscriptions: paystream_engine::subscriptions::Subscriptions::new(db),
        sender: wechat.clone(),
        cards: wechat,
        templates: std::sync::Arc::new(templates),
    };
    let worker = paystream::workers::build(paystream::workers::WorkerKind::SubscribeMessage, &deps);
    (worker, message.expect("the payment is recorded"), deps)
}

/// A customer who accepted the template, and their paid order; no worker has run.
async fn accepted_and_paid(
    backend: Backend,
    user: &str,
) -> (TestApp, tempfile::TempDir, String, Value) {
    accepted_n_times_and_paid(backend, user, 1).await
}

async fn accepted_n_times_and_paid(
    backend: Backend,
    user: &str,
    times: usize,
) -> (TestApp, tempfile::TempDir, String, Value) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("templates.toml"), TEMPLATES).unwrap();
    let templates = dir.path().join("templates.toml");
    let app = spawn_app_with(backend, |s| s.subscribe_message_templates = Some(templates)).await;
    app.add_product("tea", PRICE, true).await;
    let (token, me) = app.login(user).await;
    let openid = me["openid"].as_str().unwrap().to_string();
    for _ in 0..times {
        let accept = json!({ "openid": openid, "template_ids": ["TPL-PAID"] });
        app.sandbox("/subscribe-accept", accept).await;
        let (status, _) = app
            .post(
                "/api/subscriptions",
                Some(&token),
                json!({ "template_ids": ["TPL-PAID"] }),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (_, order) = place(&app, &token, None).await;
    pay_at_wechat(&app, &token, &order).await;
    (app, dir, openid, order)
}

/// What the subscribe-message worker claims for this order's payment message.
async fn send_key(
    deps: &paystream::workers::WorkerDeps,
    message: &paystream_engine::consumers::EventMessage,
    order: &Value,
    openid: &str,
) -> (
    paystream_engine::order::Order,
    paystream_engine::subscriptions::SendKey,
) {
    let id = uuid::Uuid::parse_str(order["id"].as_str().unwrap()).unwrap();
    let order = deps.orders.get(id).await.unwrap();
    let key = paystream_engine::subscriptions::SendKey {
        message_id: message.event_id,
        template_id: "TPL-PAID".into(),
        user_id: order.user_id,
        openid: openid.to_string(),
        order_id: order.id,
        event_type: "PaymentSucceeded".into(),
    };
    (order, key)
}

/// The send a worker made at WeChat before it died (without recording it).
async fn sent_by_a_worker_that_then_died(deps: &paystream::workers::WorkerDeps, openid: &str) {
    let message = paystream_engine::subscriptions::SubscribeMessage {
        openid: openid.to_string(),
        template_id: "TPL-PAID".into(),
        page: None,
        data: [("character_string1".to_string(), "x".to_string())].into(),
    };
    deps.sender.send(&message).await.unwrap();
}

/// Makes every unfinished claim look abandoned long ago (the worker that made it died). 1 ms
/// after the epoch, as 0 marks a claim released after a failed send.
async fn age_claims(app: &TestApp) {
    sqlx::query("UPDATE subscribe_sends SET claimed_at = 1 WHERE status = 'sending'")
        .execute(&app.running().db.pool)
        .await
        .unwrap();
}

async fn send_status(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar("SELECT status FROM subscribe_sends")
        .fetch_all(&app.running().db.pool)
        .await
        .unwrap()
}

async fn a_worker_killed_after_sending_does_not_send_twice(backend: Backend) {
    let (app, dir, openid, order) = accepted_and_paid(backend, "kim").await;
    let (worker, message, deps) = paid_message_and_worker(&app, &dir, &order).await;
    // The first worker claimed the acceptance and sent, then died before recording the send.
    let (_, key) = send_key(&deps, &message, &order, &openid).await;
    assert_eq!(
        deps.subscriptions
            .claim(&key, "subscribe-message")
            .await
            .unwrap(),
        paystream_engine::subscriptions::Claim::New
    );
    sent_by_a_worker_that_then_died(&deps, &openid).await;
    age_claims(&app).await;

    // The message is redelivered to a new worker: it resumes, WeChat says the acceptance is
    // spent, and the send is recorded as done — the customer got one message.
    worker.handle(&message).await.unwrap();
    worker.handle(&message).await.unwrap();
    assert_eq!(app.subscribe_messages(&openid).await.len(), 1);
    assert_eq!(send_status(&app).await, vec!["sent_before".to_string()]);
}

async fn a_worker_killed_mid_send_is_not_resent_when_wechat_could_not_refuse_a_repeat(
    backend: Backend,
) {
    // Two acceptances: a repeat of a send that got through would spend the second one at WeChat
    // and reach the customer twice, so a send interrupted by a crash is not repeated.
    let (app, dir, openid, order) = accepted_n_times_and_paid(backend, "max", 2).await;
    let (worker, message, deps) = paid_message_and_worker(&app, &dir, &order).await;
    let (order_now, key) = send_key(&deps, &message, &order, &openid).await;
    deps.subscriptions
        .claim(&key, "subscribe-message")
        .await
        .unwrap();
    sent_by_a_worker_that_then_died(&deps, &openid).await;
    age_claims(&app).await;
    worker.handle(&message).await.unwrap();
    assert_eq!(app.subscribe_messages(&openid).await.len(), 1);
    assert_eq!(send_status(&app).await, vec!["unconfirmed".to_string()]);
    assert_eq!(
        deps.subscriptions
            .remaining(order_now.user_id, "TPL-PAID")
            .await
            .unwrap(),
        1
    );
}

async fn a_worker_killed_before_sending_sends_on_redelivery(backend: Backend) {
    let (app, dir, openid, order) = accepted_and_paid(backend, "lou").await;
    let (worker, message, deps) = paid_message_and_worker(&app, &dir, &order).await;
    let (order_now, key) = send_key(&deps, &message, &order, &openid).await;
    deps.subscriptions
        .claim(&key, "subscribe-message")
        .await
        .unwrap();
    // While the claim is fresh another worker leaves it alone (it may still be sending).
    assert!(worker.handle(&message).await.is_err());
    assert!(app.subscribe_messages(&openid).await.is_empty());
    age_claims(&app).await;
    worker.handle(&message).await.unwrap();
    worker.handle(&message).await.unwrap();
    let sent = app.subscribe_messages(&openid).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["data"]["amount2"]["value"], "25.00");
    assert_eq!(send_status(&app).await, vec!["sent".to_string()]);
    // The acceptance was spent once.
    assert_eq!(
        deps.subscriptions
            .remaining(order_now.user_id, "TPL-PAID")
            .await
            .unwrap(),
        0
    );
}

on_both_backends!(
    card_order_is_consumed_once_after_payment,
    someone_elses_or_a_used_card_is_refused_at_order_time,
    a_lost_consume_answer_is_checked_not_failed,
    a_customer_who_accepted_gets_exactly_one_message,
    a_customer_who_accepted_nothing_gets_nothing,
    card_ext_is_signed_with_the_api_ticket,
    a_worker_killed_after_sending_does_not_send_twice,
    a_worker_killed_before_sending_sends_on_redelivery,
    a_worker_killed_mid_send_is_not_resent_when_wechat_could_not_refuse_a_repeat,
);
