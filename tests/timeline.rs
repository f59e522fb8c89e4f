//! `GET /admin/orders/{id}/timeline`: a real order's history (placed, paid through the WeChat Pay
//! sandbox, partly refunded by staff; another expired) in plain words, with actor names.

mod common;

use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use common::{assert_error, spawn_app, TestApp};
use paystream_engine::accounts::{Accounts, Role};
use paystream_engine::db::Backend;
use reqwest::StatusCode;
use serde_json::{json, Value};

const PHONE: &str = "13912345678";

async fn new_order(app: &TestApp, token: &str) -> Value {
    let (status, order) = app
        .post(
            "/api/orders",
            Some(token),
            json!({ "items": [{ "sku": "tea", "quantity": 2 }] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    order
}

async fn wait_for_status(app: &TestApp, token: &str, order: &Value, status: &str) {
    let path = format!("/api/orders/{}", order["id"].as_str().unwrap());
    for _ in 0..200 {
        if app.get(&path, Some(token)).await.1["status"] == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("order never became {status}");
}

async fn timeline(app: &TestApp, token: &str, order: &Value, lang: Option<&str>) -> Vec<Value> {
    let mut path = format!("/admin/orders/{}/timeline", order["id"].as_str().unwrap());
    if let Some(lang) = lang {
        path.push_str(&format!("?lang={lang}"));
    }
    let (status, body) = app.get(&path, Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["items"].as_array().unwrap().clone()
}

fn texts(items: &[Value]) -> Vec<&str> {
    items.iter().map(|i| i["text"].as_str().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paid_and_refunded_order_in_plain_words() {
    let app = spawn_app(Backend::Postgres).await;
    app.add_product("tea", 1250, true).await;
    let (token, _) = app.login("tina").await;
    let code = app.sandbox("/phone-code", json!({ "phone": PHONE })).await;
    let (status, body) = app
        .post(
            "/api/me/phone",
            Some(&token),
            json!({ "code": code["code"] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Paid through the sandbox (its notice), then ¥5.00 refunded by the admin.
    let order = new_order(&app, &token).await;
    let path = format!("/api/orders/{}/pay", order["id"].as_str().unwrap());
    let (status, body) = app
        .post(&path, Some(&token), json!({ "channel": "wechatpay_v3" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.sandbox(
        "/wechatpay/pay",
        json!({ "out_trade_no": order["out_trade_no"] }),
    )
    .await;
    wait_for_status(&app, &token, &order, "paid").await;
    let admin = app.admin_token().await;
    let (status, body) = app
        .post(
            &format!("/admin/orders/{}/refunds", order["id"].as_str().unwrap()),
            Some(&admin),
            json!({ "amount_fen": 500, "reason": "customer asked" }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let history = app.wait_for_event(&order, "RefundSucceeded").await;
    let transaction = history
        .iter()
        .find(|e| e["type"] == "PaymentSucceeded")
        .map(|e| e["data"]["transaction_id"].as_str().unwrap().to_string())
        .unwrap();

    // Support staff may read it.
    Accounts::new(app.running().db.clone())
        .create_staff("sue", "support-password".to_string().into(), Role::Support)
        .await
        .unwrap();
    let (_, login) = app
        .post(
            "/admin/login",
            None,
            json!({ "username": "sue", "password": "support-password" }),
        )
        .await;
    let sue = login["token"].as_str().unwrap();

    let en = timeline(&app, sue, &order, Some("en")).await;
    let types: Vec<_> = en.iter().map(|i| i["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "OrderPlaced",
            "PaymentRequested",
            "PaymentSucceeded",
            "RefundRequested",
            "RefundSucceeded"
        ],
        "{en:?}"
    );
    let said = texts(&en);
    assert_eq!(said[0], "Order placed: Product tea ×2, total ¥25.00");
    assert_eq!(said[1], "The customer started paying (WeChat Pay v3)");
    assert_eq!(
        said[2],
        format!("WeChat Pay notify: paid ¥25.00 (transaction {transaction})")
    );
    assert_eq!(
        said[3],
        "Refund of ¥5.00 requested by admin: customer asked"
    );
    assert!(
        said[4].starts_with("Refund of ¥5.00 completed"),
        "{}",
        said[4]
    );

    let customer = json!({ "kind": "customer", "name": PHONE });
    assert_eq!(en[0]["actor"], customer);
    assert_eq!(en[1]["actor"], customer);
    assert_eq!(
        en[2]["actor"],
        json!({ "kind": "wechatpay", "name": "WeChat Pay notify", "detail": "v3" })
    );
    assert_eq!(en[3]["actor"], json!({ "kind": "staff", "name": "admin" }));
    assert_eq!(en[4]["actor"]["kind"], "wechatpay");
    assert_eq!(en[4]["actor"]["detail"], "v3");

    // Oldest first, each with its Beijing wall-clock time.
    let beijing = FixedOffset::east_opt(8 * 3600).unwrap();
    for (n, item) in en.iter().enumerate() {
        assert_eq!(item["version"], n as i64 + 1);
        let at = DateTime::parse_from_rfc3339(item["at"].as_str().unwrap()).unwrap();
        assert_eq!(
            item["at_beijing"],
            at.with_timezone(&beijing)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        );
    }

    // Chinese is the default.
    let zh = timeline(&app, sue, &order, None).await;
    assert_eq!(zh, timeline(&app, sue, &order, Some("zh-CN")).await);
    let said = texts(&zh);
    assert_eq!(said[0], "顾客下单：Product tea ×2，合计 ¥25.00");
    assert_eq!(
        said[2],
        format!("微信支付通知：已支付 ¥25.00（交易号 {transaction}）")
    );
    assert_eq!(said[3], "admin 申请退款 ¥5.00：customer asked");
    assert!(said[4].starts_with("退款 ¥5.00已完成"), "{}", said[4]);
    assert_eq!(zh[2]["actor"]["name"], "微信支付通知");

    // An order left unpaid is closed by the expiry job.
    let unpaid = new_order(&app, &token).await;
    assert_eq!(app.expire_all_now().await, 1);
    let en = timeline(&app, sue, &unpaid, Some("en")).await;
    let last = en.last().unwrap();
    assert_eq!(last["type"], "OrderClosed");
    assert_eq!(last["text"], "Closed: not paid in time (expired)");
    assert_eq!(last["actor"], json!({ "kind": "system", "name": "expiry" }));

    // Refusals.
    let path = format!("/admin/orders/{}/timeline", order["id"].as_str().unwrap());
    let (status, body) = app.get(&format!("{path}?lang=fr"), Some(sue)).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_query");
    let (status, _) = app.get(&path, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app.get(&path, Some(&token)).await;
    assert!(status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN);
    let missing = format!("/admin/orders/{}/timeline", uuid::Uuid::nil());
    let (status, _) = app.get(&missing, Some(sue)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
