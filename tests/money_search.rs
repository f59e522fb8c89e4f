//! Staff searching payments and refunds (`GET /admin/payments`, `GET /admin/refunds`): orders
//! paid and refunded through the in-process WeChat Pay simulator, read over HTTP, on both
//! backends — and the same rows from a rebuild and from the backfill at start.

mod common;

use std::time::Duration;

use common::{assert_error, spawn_app, TestApp};
use paystream_engine::db::Backend;
use reqwest::StatusCode;
use serde_json::{json, Value};

const PRICE: i64 = 1250;
const TOTAL: i64 = 2 * PRICE;

/// A logged-in customer (token, openid) with a fresh order of 2 × 12.50.
async fn customer_with_order(app: &TestApp, user: &str) -> (String, String, Value) {
    let admin = app.admin_token().await;
    let (_, products) = app.get("/admin/products", Some(&admin)).await;
    if products["items"].as_array().is_none_or(|p| p.is_empty()) {
        app.add_product("tea", PRICE, true).await;
    }
    let (token, login) = app.login(user).await;
    let (status, order) = app
        .post(
            "/api/orders",
            Some(&token),
            json!({ "items": [{ "sku": "tea", "quantity": 2 }] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let openid = login["openid"].as_str().unwrap().to_string();
    (token, openid, order)
}

fn id(order: &Value) -> &str {
    order["id"].as_str().unwrap()
}

fn out_trade_no(order: &Value) -> &str {
    order["out_trade_no"].as_str().unwrap()
}

async fn ask_to_pay(app: &TestApp, token: &str, order: &Value, channel: &str) {
    let (status, body) = app
        .post(
            &format!("/api/orders/{}/pay", id(order)),
            Some(token),
            json!({ "channel": channel }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn wait_for_status(app: &TestApp, token: &str, order: &Value, status: &str) {
    let path = format!("/api/orders/{}", id(order));
    let mut last = Value::Null;
    for _ in 0..200 {
        last = app.get(&path, Some(token)).await.1;
        if last["status"] == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("order never reached {status}: {last}");
}

/// Waits until WeChat Pay (the simulator) delivered all `n` notifications of the order.
async fn wait_for_notifications(app: &TestApp, order: &Value, n: usize) {
    let mut mine = Vec::new();
    for _ in 0..200 {
        let (_, log) = app
            .get("/sandbox/control/wechatpay/notifications", None)
            .await;
        mine = log["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["out_trade_no"] == out_trade_no(order))
            .cloned()
            .collect();
        if mine.len() >= n && mine.iter().all(|d| d["delivered"] == true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("notifications not delivered: {mine:?}");
}

/// One page of a search that must succeed.
async fn search(app: &TestApp, token: &str, path: &str) -> Value {
    let (status, body) = app.get(path, Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

/// The `out_trade_no` of each item, in the answer's order.
fn trade_nos(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["out_trade_no"].as_str().unwrap().to_string())
        .collect()
}

fn is_utc_rfc3339(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| s.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(s).is_ok())
}

/// Today and tomorrow in Beijing, `YYYY-MM-DD`.
fn beijing_days() -> (String, String) {
    let today = paystream_engine::beijing::day(chrono::Utc::now());
    let tomorrow = today.succ_opt().unwrap();
    (today.to_string(), tomorrow.to_string())
}

async fn rebuild(app: &TestApp) {
    let store = paystream::event_store(&app.running().db);
    paystream_projections::rebuild(store.as_ref())
        .await
        .unwrap();
}

/// Three customers: Alice pays once (WeChat Pay notifies four times), Bob pays a fen short,
/// Carol asks to pay through APIv2 and cancels.
async fn payments_are_searchable_once_each(backend: Backend) {
    let app = spawn_app(backend).await;
    let support = app.support_token().await;

    let (alice_token, alice_openid, alice) = customer_with_order(&app, "alice").await;
    ask_to_pay(&app, &alice_token, &alice, "wechatpay_v3").await;
    app.sandbox(
        "/wechatpay/pay",
        json!({ "out_trade_no": out_trade_no(&alice), "duplicates": 3 }),
    )
    .await;
    wait_for_status(&app, &alice_token, &alice, "paid").await;
    wait_for_notifications(&app, &alice, 4).await;

    let (bob_token, _, bob) = customer_with_order(&app, "bob").await;
    ask_to_pay(&app, &bob_token, &bob, "wechatpay_v3").await;
    app.sandbox(
        "/wechatpay/pay",
        json!({ "out_trade_no": out_trade_no(&bob), "amount_fen": TOTAL - 1 }),
    )
    .await;
    wait_for_status(&app, &bob_token, &bob, "needs_review").await;

    let (carol_token, _, carol) = customer_with_order(&app, "carol").await;
    ask_to_pay(&app, &carol_token, &carol, "wechatpay_v2").await;
    let (status, body) = app
        .post(
            &format!("/api/orders/{}/cancel", id(&carol)),
            Some(&carol_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Support staff read every attempt once, newest first: Carol asked after Bob paid.
    let all = search(&app, &support, "/admin/payments").await;
    assert_eq!(all["total_items"], 3, "{all}");
    assert_eq!(
        (all["page"].clone(), all["per_page"].clone()),
        (json!(1), json!(20))
    );
    assert_eq!(
        trade_nos(&all),
        [
            out_trade_no(&carol),
            out_trade_no(&bob),
            out_trade_no(&alice)
        ]
    );
    let (carols, bobs, alices) = (&all["items"][0], &all["items"][1], &all["items"][2]);

    let (_, alice_detail) = app
        .get(&format!("/admin/orders/{}", id(&alice)), Some(&support))
        .await;
    let transaction_id = alice_detail["transaction_id"].as_str().unwrap();
    assert_eq!(alices["order_id"], id(&alice));
    assert_eq!(alices["status"], "succeeded");
    assert_eq!(alices["channel"], "wechatpay_v3");
    assert_eq!(alices["transaction_id"], transaction_id);
    assert_eq!(alices["amount_fen"], TOTAL);
    assert_eq!(alices["openid"], alice_openid);
    assert!(is_utc_rfc3339(&alices["requested_at"]), "{alices}");
    assert!(is_utc_rfc3339(&alices["paid_at"]), "{alices}");
    assert!(alices.get("closed_at").is_none(), "{alices}");

    assert_eq!(bobs["status"], "amount_mismatch");
    assert_eq!(bobs["amount_fen"], TOTAL - 1, "what arrived");

    assert_eq!(carols["status"], "closed");
    assert_eq!(carols["channel"], "wechatpay_v2");
    assert_eq!(carols["amount_fen"], TOTAL, "what was asked for");
    assert!(carols.get("transaction_id").is_none(), "{carols}");
    assert!(is_utc_rfc3339(&carols["closed_at"]), "{carols}");

    // Every filter narrows; blank ones do not.
    let (today, tomorrow) = beijing_days();
    let openid_query = format!("/admin/payments?openid={alice_openid}");
    let transaction_query = format!("/admin/payments?transaction_id={transaction_id}");
    let trade_query = format!("/admin/payments?out_trade_no={}", out_trade_no(&bob));
    let today_query = format!("/admin/payments?from={today}&to={today}");
    let tomorrow_query = format!("/admin/payments?from={tomorrow}");
    let before_query = format!(
        "/admin/payments?to={}",
        &alices["paid_at"].as_str().unwrap()
    );
    for (query, expected) in [
        ("/admin/payments?status=succeeded", vec![&alice]),
        ("/admin/payments?status=amount_mismatch", vec![&bob]),
        (
            "/admin/payments?status=closed&channel=wechatpay_v2",
            vec![&carol],
        ),
        ("/admin/payments?channel=wechatpay_v3", vec![&bob, &alice]),
        ("/admin/payments?status=requested", vec![]),
        (
            "/admin/payments?status=&channel=&openid=",
            vec![&carol, &bob, &alice],
        ),
        (openid_query.as_str(), vec![&alice]),
        (transaction_query.as_str(), vec![&alice]),
        (trade_query.as_str(), vec![&bob]),
        (today_query.as_str(), vec![&carol, &bob, &alice]),
        (tomorrow_query.as_str(), vec![]),
        (before_query.as_str(), vec![]),
    ] {
        let page = search(&app, &support, query).await;
        let expected: Vec<&str> = expected.into_iter().map(out_trade_no).collect();
        assert_eq!(trade_nos(&page), expected, "{query}");
        assert_eq!(page["total_items"], expected.len(), "{query}");
    }

    // Pages split the same list.
    let first = search(&app, &support, "/admin/payments?per_page=2").await;
    let second = search(&app, &support, "/admin/payments?per_page=2&page=2").await;
    assert_eq!(
        (first["total_pages"].clone(), second["total_pages"].clone()),
        (json!(2), json!(2))
    );
    let paged: Vec<String> = [trade_nos(&first), trade_nos(&second)].concat();
    assert_eq!(paged, trade_nos(&all));

    // Bad filters are refused, naming what is wrong.
    for (query, code) in [
        ("/admin/payments?status=paid", "invalid_status"),
        ("/admin/payments?channel=alipay", "invalid_query"),
        ("/admin/payments?from=yesterday", "invalid_query"),
        ("/admin/payments?page=first", "invalid_query"),
    ] {
        let (status, body) = app.get(query, Some(&support)).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, code);
    }

    // Staff only.
    let (status, body) = app.get("/admin/payments", None).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "missing_token");
    let (status, body) = app.get("/admin/payments", Some(&alice_token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // A read model: rebuilt from the log, it says the same.
    sqlx::query("DELETE FROM payments_view")
        .execute(&app.running().db.pool)
        .await
        .unwrap();
    rebuild(&app).await;
    assert_eq!(search(&app, &support, "/admin/payments").await, all);
}

async fn refund(
    app: &TestApp,
    admin: &str,
    order: &Value,
    amount_fen: i64,
    reason: &str,
) -> String {
    let (status, body) = app
        .post(
            &format!("/admin/orders/{}/refunds", id(order)),
            Some(admin),
            json!({ "amount_fen": amount_fen, "reason": reason }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["out_refund_no"].as_str().unwrap().to_string()
}

/// WeChat Pay (the simulator) settles a held refund and notifies.
async fn settle(app: &TestApp, out_refund_no: &str, status: &str) {
    app.sandbox(
        &format!("/wechatpay/refunds/{out_refund_no}/settle"),
        json!({ "status": status }),
    )
    .await;
}

/// The refund as staff search it, once it has `status`.
async fn wait_for_refund(app: &TestApp, token: &str, out_refund_no: &str, status: &str) -> Value {
    let path = format!("/admin/refunds?out_refund_no={out_refund_no}");
    let mut last = Value::Null;
    for _ in 0..200 {
        last = search(app, token, &path).await;
        if last["items"][0]["status"] == status {
            return last["items"][0].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("refund never reached {status}: {last}");
}

fn refund_nos(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["out_refund_no"].as_str().unwrap().to_string())
        .collect()
}

/// Two refunds of a paid order, held at WeChat Pay: one succeeds, one is closed.
async fn refunds_go_from_processing_to_their_outcome(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin_token().await;
    let support = app.support_token().await;
    let (token, _, order) = customer_with_order(&app, "dave").await;
    ask_to_pay(&app, &token, &order, "wechatpay_v3").await;
    app.sandbox(
        "/wechatpay/pay",
        json!({ "out_trade_no": out_trade_no(&order) }),
    )
    .await;
    wait_for_status(&app, &token, &order, "paid").await;
    app.sandbox("/wechatpay/faults", json!({ "hold_refunds": true }))
        .await;

    let first = refund(&app, &admin, &order, 500, "tea was cold").await;
    let processing = wait_for_refund(&app, &support, &first, "processing").await;
    assert_eq!(processing["order_id"], id(&order));
    assert_eq!(processing["out_trade_no"], out_trade_no(&order));
    assert_eq!(processing["amount_fen"], 500);
    assert_eq!(processing["reason"], "tea was cold");
    assert_eq!(processing["requested_by_username"], "admin");
    assert!(processing["requested_by"].is_string(), "{processing}");
    assert!(is_utc_rfc3339(&processing["requested_at"]), "{processing}");
    assert!(processing.get("refund_id").is_none(), "{processing}");
    assert!(processing.get("finished_at").is_none(), "{processing}");

    settle(&app, &first, "SUCCESS").await;
    let succeeded = wait_for_refund(&app, &support, &first, "succeeded").await;
    assert!(
        succeeded["refund_id"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{succeeded}"
    );
    assert!(is_utc_rfc3339(&succeeded["finished_at"]), "{succeeded}");
    assert_eq!(succeeded["requested_at"], processing["requested_at"]);

    let second = refund(&app, &admin, &order, 300, "wrong size").await;
    settle(&app, &second, "CLOSED").await;
    let failed = wait_for_refund(&app, &support, &second, "failed").await;
    assert!(
        failed["failure_reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{failed}"
    );

    // Newest first; every filter narrows.
    let all = search(&app, &support, "/admin/refunds").await;
    assert_eq!(refund_nos(&all), [second.as_str(), first.as_str()]);
    let (today, tomorrow) = beijing_days();
    let trade_query = format!("/admin/refunds?out_trade_no={}", out_trade_no(&order));
    let today_query = format!("/admin/refunds?from={today}&to={today}");
    let tomorrow_query = format!("/admin/refunds?from={tomorrow}");
    for (query, expected) in [
        ("/admin/refunds?status=succeeded", vec![&first]),
        ("/admin/refunds?status=failed", vec![&second]),
        ("/admin/refunds?status=processing", vec![]),
        ("/admin/refunds?out_trade_no=T-none", vec![]),
        (trade_query.as_str(), vec![&second, &first]),
        (today_query.as_str(), vec![&second, &first]),
        (tomorrow_query.as_str(), vec![]),
    ] {
        let page = search(&app, &support, query).await;
        let expected: Vec<&str> = expected.into_iter().map(String::as_str).collect();
        assert_eq!(refund_nos(&page), expected, "{query}");
    }
    let older = search(&app, &support, "/admin/refunds?per_page=1&page=2").await;
    assert_eq!(refund_nos(&older), [first.as_str()]);
    assert_eq!(
        (older["total_items"].clone(), older["total_pages"].clone()),
        (json!(2), json!(2))
    );

    let (status, body) = app
        .get("/admin/refunds?status=refunded", Some(&support))
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_status");
    let (status, body) = app.get("/admin/refunds?to=5/1", Some(&support)).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_query");
    let (status, body) = app.get("/admin/refunds", None).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "missing_token");
    let (status, body) = app.get("/admin/refunds", Some(&token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // Rebuilt from the log, the refunds are the same, down to who asked.
    rebuild(&app).await;
    assert_eq!(search(&app, &support, "/admin/refunds").await, all);
}

/// A database whose orders predate the migration: the backfill at start fills both read models.
async fn read_models_added_later_are_filled_at_start(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let admin = app.admin_token().await;
    let (token, _, order) = customer_with_order(&app, "erin").await;
    ask_to_pay(&app, &token, &order, "wechatpay_v3").await;
    app.sandbox(
        "/wechatpay/pay",
        json!({ "out_trade_no": out_trade_no(&order) }),
    )
    .await;
    wait_for_status(&app, &token, &order, "paid").await;
    let no = refund(&app, &admin, &order, 100, "goodwill").await;
    let refunded = wait_for_refund(&app, &admin, &no, "succeeded").await;
    let payments = search(&app, &admin, "/admin/payments").await;
    assert_eq!(payments["total_items"], 1);

    // As the migration leaves a database with orders: no attempts, refunds without the new
    // columns, and the marker.
    let pool = &app.running().db.pool;
    for statement in [
        "DELETE FROM payments_view",
        "UPDATE refunds_view SET out_trade_no = '', reason = NULL, refund_id = NULL, \
         failure_reason = NULL, requested_by = NULL",
        "INSERT INTO projection_backfills (name) VALUES ('money_search')",
    ] {
        sqlx::query(statement).execute(pool).await.unwrap();
    }
    assert_eq!(
        search(&app, &admin, "/admin/payments").await["total_items"],
        0
    );

    app.restart().await;
    let admin = app.admin_token().await;
    assert_eq!(search(&app, &admin, "/admin/payments").await, payments);
    let refunds = search(&app, &admin, "/admin/refunds").await;
    assert_eq!(refunds["items"], json!([refunded]));
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM projection_backfills")
        .fetch_one(&app.running().db.pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "done once");
}

/// Both searches are in the OpenAPI document, with their own answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_searches_are_documented() {
    let app = spawn_app(Backend::Sqlite).await;
    let (status, document) = app.get("/api/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    for (path, page) in [
        ("/admin/payments", "PaymentPage"),
        ("/admin/refunds", "RefundPage"),
    ] {
        let answer = &document["paths"][path]["get"]["responses"]["200"];
        let schema = answer["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .unwrap_or_default();
        assert!(schema.ends_with(page), "{path}: {answer}");
    }
    let statuses = &document["components"]["schemas"]["PaymentStatus"]["enum"];
    assert!(
        statuses
            .as_array()
            .is_some_and(|s| s.contains(&json!("paid_twice"))),
        "{statuses}"
    );
}

on_both_backends!(
    payments_are_searchable_once_each,
    refunds_go_from_processing_to_their_outcome,
    read_models_added_later_are_filled_at_start,
);
