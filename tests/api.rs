//! The outside contract, driven over HTTP against the real engine on PostgreSQL and SQLite.

mod common;

use common::{assert_error, spawn_app, TestApp};
use paystream_engine::accounts::{Accounts, Role};
use paystream_engine::db::Backend;
use paystream_engine::money::Fen;
use paystream_engine::order::{OrderCommand, PayChannel};
use paystream_engine::orders::{Metadata, OrderService};
use paystream_projections::{OrderFilter, OrdersView};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

async fn place(app: &TestApp, token: &str, body: Value) -> (StatusCode, Value) {
    app.post("/api/orders", Some(token), body).await
}

fn orders_service(app: &TestApp) -> OrderService {
    OrderService::new(paystream::event_store(&app.running().db))
}

/// Payments as the running engine has them (with its WeChat Pay client).
fn payments_service(app: &TestApp) -> paystream_engine::payments::Payments {
    app.running().payments.clone()
}

async fn checkout_flow(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_eq!(
        app.get("/healthz", None).await,
        (StatusCode::OK, json!({ "status": "ok" }))
    );
    app.add_product("tea", 1250, true).await;
    app.add_product("cake", 3000, true).await;
    app.add_product("retired", 100, false).await;
    let (alice, user) = app.login("alice").await;
    assert_eq!(user["openid"].as_str().unwrap().len(), 28);

    let (_, products) = app.get("/api/products", None).await;
    let skus: Vec<_> = products["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["sku"].as_str().unwrap())
        .collect();
    assert_eq!(
        skus,
        vec!["cake", "tea"],
        "inactive products are not offered"
    );

    // The client sends no prices; a price in the body is refused outright.
    let (status, body) = place(
        &app,
        &alice,
        json!({ "items": [{ "sku": "tea", "quantity": 1, "price_fen": 1 }] }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let (status, order) = place(&app, &alice, json!({ "items": [{ "sku": "tea", "quantity": 2 }, { "sku": "cake", "quantity": 1 }, { "sku": "tea", "quantity": 1 }], "note": "no sugar" })).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(order["status"], "pending_payment");
    assert_eq!(order["total_fen"], 3 * 1250 + 3000);
    assert_eq!(
        (order["paid_fen"].as_i64(), order["refunded_fen"].as_i64()),
        (Some(0), Some(0))
    );
    let items = order["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "repeated skus merge into one line");
    let tea = items.iter().find(|i| i["sku"] == "tea").unwrap();
    assert_eq!(
        (
            tea["quantity"].as_i64(),
            tea["unit_price_fen"].as_i64(),
            tea["line_total_fen"].as_i64()
        ),
        (Some(3), Some(1250), Some(3750))
    );
    let out_trade_no = order["out_trade_no"].as_str().unwrap();
    assert!(
        (6..=32).contains(&out_trade_no.len())
            && out_trade_no.chars().all(|c| c.is_ascii_alphanumeric())
    );
    let id = order["id"].as_str().unwrap().to_string();

    let (status, listed) = app.get("/api/orders", Some(&alice)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            listed["total_items"].as_i64(),
            listed["total_pages"].as_i64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(listed["items"][0], order);
    assert_eq!(
        app.get(&format!("/api/orders/{id}"), Some(&alice)).await,
        (StatusCode::OK, order.clone())
    );

    // Bob cannot see or cancel Alice's order, and cannot tell it exists.
    let (bob, _) = app.login("bob").await;
    let (status, body) = app.get(&format!("/api/orders/{id}"), Some(&bob)).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "order_not_found");
    let (status, _) = app
        .post(&format!("/api/orders/{id}/cancel"), Some(&bob), json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(app.get("/api/orders", Some(&bob)).await.1["total_items"], 0);
    assert_eq!(
        app.get(&format!("/api/orders/{}", Uuid::new_v4()), Some(&alice))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/api/orders/not-a-uuid", Some(&alice)).await.0,
        StatusCode::NOT_FOUND
    );

    let (status, closed) = app
        .post(&format!("/api/orders/{id}/cancel"), Some(&alice), json!({}))
        .await;
    assert_eq!(
        (status, closed["status"].as_str()),
        (StatusCode::OK, Some("closed"))
    );
    // Cancelling again is harmless and writes nothing.
    let (status, again) = app
        .post(&format!("/api/orders/{id}/cancel"), Some(&alice), json!({}))
        .await;
    assert_eq!(
        (status, again["status"].as_str()),
        (StatusCode::OK, Some("closed"))
    );
    let (_, closed_list) = app.get("/api/orders?status=closed", Some(&alice)).await;
    assert_eq!(closed_list["total_items"], 1);
    assert_eq!(
        app.get("/api/orders?status=paid", Some(&alice)).await.1["total_items"],
        0
    );
    assert_eq!(
        app.get("/api/orders?status=bogus", Some(&alice)).await.0,
        StatusCode::BAD_REQUEST
    );

    let admin = app.admin_token().await;
    let (status, events) = app
        .get(&format!("/admin/orders/{id}/events"), Some(&admin))
        .await;
    assert_eq!(status, StatusCode::OK);
    let events = events["items"].as_array().unwrap();
    let types: Vec<_> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, vec!["OrderPlaced", "OrderClosed"]);
    assert_eq!(
        events
            .iter()
            .map(|e| e["version"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(events[1]["data"]["reason"], "cancelled_by_customer");
    assert_eq!(
        events[0]["metadata"]["actor"],
        format!("customer:{}", user["id"].as_str().unwrap())
    );
    assert!(events[0]["metadata"]["request_id"].is_string());
    assert_eq!(events[0]["data"]["total_fen"], order["total_fen"]);

    let (status, detail) = app.get(&format!("/admin/orders/{id}"), Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detail["payments"], json!([]));
    assert_eq!(detail["refunds"], json!([]));
    assert_eq!(detail["close_reason"], "cancelled_by_customer");
}

/// 20 concurrent submissions with one Idempotency-Key make one order; the key cannot be reused
/// for another order; another user's identical key is independent.
async fn idempotent_order_placement(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_product("tea", 1250, true).await;
    let (alice, _) = app.login("alice").await;
    let body = json!({ "items": [{ "sku": "tea", "quantity": 2 }] });
    let submissions = (0..20).map(|_| {
        let req = app
            .http
            .post(app.url("/api/orders"))
            .bearer_auth(&alice)
            .header("Idempotency-Key", "checkout-1")
            .json(&body);
        async move { common::read(req.send().await.unwrap()).await }
    });
    let answers = futures::future::join_all(submissions).await;
    let ids: std::collections::HashSet<_> = answers
        .iter()
        .map(|(status, order)| {
            assert_eq!(*status, StatusCode::CREATED, "{order}");
            order["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one key, one order");
    assert_eq!(
        app.get("/api/orders", Some(&alice)).await.1["total_items"],
        1
    );
    assert_eq!(app.event_count().await, 1);

    let other_body = app
        .http
        .post(app.url("/api/orders"))
        .bearer_auth(&alice)
        .header("Idempotency-Key", "checkout-1")
        .json(&json!({ "items": [{ "sku": "tea", "quantity": 3 }] }));
    let (status, err) = common::read(other_body.send().await.unwrap()).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("idempotency_key_reused")
        )
    );

    let (bob, _) = app.login("bob").await;
    let bobs = app
        .http
        .post(app.url("/api/orders"))
        .bearer_auth(&bob)
        .header("Idempotency-Key", "checkout-1")
        .json(&body);
    let (status, bob_order) = common::read(bobs.send().await.unwrap()).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(!ids.contains(bob_order["id"].as_str().unwrap()));
    assert_eq!(app.event_count().await, 2);
}

/// Bad input gets a clear 4xx with a stable code, and not a single event is written.
async fn bad_input_changes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_product("tea", 1250, true).await;
    app.add_product("gold", 60_000_000, true).await;
    app.add_product("retired", 100, false).await;
    let (alice, _) = app.login("alice").await;

    let raw = |body: &'static str| {
        let req = app
            .http
            .post(app.url("/api/orders"))
            .bearer_auth(&alice)
            .header("content-type", "application/json")
            .body(body);
        async move { common::read(req.send().await.unwrap()).await }
    };
    let cases: Vec<((StatusCode, Value), StatusCode, &str)> = vec![
        (raw("{\"items\": [").await, StatusCode::BAD_REQUEST, "invalid_json"),
        (raw("not json").await, StatusCode::BAD_REQUEST, "invalid_json"),
        (raw("{\"items\": \"tea\"}").await, StatusCode::BAD_REQUEST, "invalid_body"),
        (raw("{\"items\": [{\"sku\": \"tea\", \"quantity\": 1e30}]}").await, StatusCode::BAD_REQUEST, "invalid_body"),
        (raw("{\"items\": [{\"sku\": \"tea\", \"quantity\": 99999999999999999999}]}").await, StatusCode::BAD_REQUEST, "invalid_body"),
        (place(&app, &alice, json!({ "items": [] })).await, StatusCode::BAD_REQUEST, "empty_order"),
        (place(&app, &alice, json!({ "items": [{ "sku": "tea", "quantity": 0 }] })).await, StatusCode::BAD_REQUEST, "invalid_quantity"),
        (place(&app, &alice, json!({ "items": [{ "sku": "tea", "quantity": -3 }] })).await, StatusCode::BAD_REQUEST, "invalid_quantity"),
        (place(&app, &alice, json!({ "items": [{ "sku": "tea", "quantity": 10_000 }] })).await, StatusCode::BAD_REQUEST, "invalid_quantity"),
        (place(&app, &alice, json!({ "items": [{ "sku": "tea", "quantity": 9_000 }, { "sku": "tea", "quantity": 9_000 }] })).await, StatusCode::BAD_REQUEST, "invalid_quantity"),
        (place(&app, &alice, json!({ "items": [{ "sku": "nope", "quantity": 1 }] })).await, StatusCode::UNPROCESSABLE_ENTITY, "unknown_sku"),
        (place(&app, &alice, json!({ "items": [{ "sku": "retired", "quantity": 1 }] })).await, StatusCode::UNPROCESSABLE_ENTITY, "product_inactive"),
        (place(&app, &alice, json!({ "items": [{ "sku": "gold", "quantity": 2 }] })).await, StatusCode::UNPROCESSABLE_ENTITY, "total_too_large"),
        (place(&app, &alice, json!({ "items": [{ "sku": "tea", "quantity": 1 }], "note": "x".repeat(201) })).await, StatusCode::BAD_REQUEST, "invalid_note"),
        (place(&app, &alice, json!({ "items": [{ "sku": "te\u{0}a", "quantity": 1 }] })).await, StatusCode::BAD_REQUEST, "invalid_sku"),
        (place(&app, &alice, json!({ "items": [{ "sku": "tea", "quantity": 1 }], "note": "a\u{0}b" })).await, StatusCode::BAD_REQUEST, "invalid_note"),
        (app.post("/api/orders", None, json!({ "items": [{ "sku": "tea", "quantity": 1 }] })).await, StatusCode::UNAUTHORIZED, "missing_token"),
        (app.post("/api/orders", Some("forged.token.value"), json!({ "items": [{ "sku": "tea", "quantity": 1 }] })).await, StatusCode::UNAUTHORIZED, "invalid_token"),
    ];
    for ((status, body), want_status, want_code) in cases {
        assert_eq!(status, want_status, "{body}");
        assert_eq!(body["error"]["code"], want_code, "{body}");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(
        app.event_count().await,
        0,
        "a rejected request wrote an event"
    );
    assert_eq!(
        app.get("/api/orders", Some(&alice)).await.1["total_items"],
        0
    );
}

async fn login_maps_wechat_answers(backend: Backend) {
    let app = spawn_app(backend).await;
    let (status, body) = app
        .post("/api/login", None, json!({ "code": "never-issued" }))
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "invalid_code");

    let code = app.login_code("carol", None).await;
    let (status, body) = app.post("/api/login", None, json!({ "code": code })).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !body.to_string().contains("session_key"),
        "session_key must stay on the server"
    );
    let carol = body["user"]["id"].clone();
    let (status, body) = app.post("/api/login", None, json!({ "code": code })).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "invalid_code");

    let faults = |codes: Value| {
        app.post(
            "/sandbox/control/faults",
            None,
            json!({ "code2session": codes }),
        )
    };
    faults(json!([45011])).await;
    let code = app.login_code("carol", None).await;
    let (status, body) = app.post("/api/login", None, json!({ "code": code })).await;
    assert_error(
        status,
        &body,
        StatusCode::TOO_MANY_REQUESTS,
        "wechat_rate_limited",
    );

    // A busy WeChat (-1) is retried; persistent busyness is a 503.
    faults(json!([-1])).await;
    let (status, body) = app
        .post(
            "/api/login",
            None,
            json!({ "code": app.login_code("carol", None).await }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["id"], carol, "same openid, same user");
    faults(json!([-1, -1, -1])).await;
    let (status, body) = app
        .post(
            "/api/login",
            None,
            json!({ "code": app.login_code("carol", None).await }),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "wechat_unavailable",
    );

    assert_eq!(
        app.post("/api/login", None, json!({ "code": "" })).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        app.post("/api/login", None, json!({})).await.0,
        StatusCode::BAD_REQUEST
    );

    // Two openids with one unionid are one user.
    let code = app.login_code("dave-app1", Some("union-dave")).await;
    let (_, first) = app.post("/api/login", None, json!({ "code": code })).await;
    let code = app.login_code("dave-app2", Some("union-dave")).await;
    let (_, second) = app.post("/api/login", None, json!({ "code": code })).await;
    assert_eq!(first["user"]["id"], second["user"]["id"]);
    assert_ne!(first["user"]["openid"], second["user"]["openid"]);
    assert_eq!(second["user"]["unionid"], "union-dave");
}

async fn phone_number_binding(backend: Backend) {
    let app = spawn_app(backend).await;
    let (token, _) = app.login("erin").await;
    let (_, code) = app
        .post(
            "/sandbox/control/phone-code",
            None,
            json!({ "phone": "13912345678" }),
        )
        .await;
    let code = code["code"].as_str().unwrap();
    let (status, body) = app
        .post("/api/me/phone", Some(&token), json!({ "code": code }))
        .await;
    assert_eq!(
        (status, body.clone()),
        (
            StatusCode::OK,
            json!({ "phone": "13912345678", "country_code": "86" })
        ),
        "{body}"
    );
    let (status, body) = app
        .post("/api/me/phone", Some(&token), json!({ "code": code }))
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_code");
    assert_eq!(
        app.post("/api/me/phone", None, json!({ "code": "x" }))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let (_, again) = app
        .post(
            "/api/login",
            None,
            json!({ "code": app.login_code("erin", None).await }),
        )
        .await;
    assert_eq!(again["user"]["phone"], "13912345678");
}

async fn staff_roles_and_catalogue(backend: Backend) {
    let app = spawn_app(backend).await;
    let accounts = Accounts::new(app.running().db.clone());
    accounts
        .create_staff("sam", "support-password".to_string().into(), Role::Support)
        .await
        .unwrap();
    // A wrong password and an unknown name are indistinguishable.
    for username in ["sam", "nobody"] {
        let credentials = json!({ "username": username, "password": "wrong-password" });
        let (status, body) = app.post("/admin/login", None, credentials).await;
        assert_error(
            status,
            &body,
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        );
    }
    let (_, body) = app
        .post(
            "/admin/login",
            None,
            json!({ "username": "sam", "password": "support-password" }),
        )
        .await;
    let support = body["token"].as_str().unwrap().to_string();
    let admin = app.admin_token().await;

    let product = json!({ "sku": "tea", "name": "Tea", "price_fen": 1000, "active": true });
    let (status, body) = app
        .post("/admin/products", Some(&support), product.clone())
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "admin_only");
    assert_eq!(
        app.post("/admin/products", Some(&admin), product.clone())
            .await
            .0,
        StatusCode::CREATED
    );
    let (status, body) = app.post("/admin/products", Some(&admin), product).await;
    assert_error(status, &body, StatusCode::CONFLICT, "product_exists");
    assert_eq!(
        app.get("/admin/products", Some(&support)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        app.get("/admin/orders", Some(&support)).await.0,
        StatusCode::OK
    );

    // A customer token is not a staff token, and the reverse.
    let (alice, _) = app.login("alice").await;
    assert_eq!(
        app.get("/admin/orders", Some(&alice)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/api/orders", Some(&admin)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/admin/orders", None).await.0,
        StatusCode::UNAUTHORIZED
    );

    let (_, old) = place(
        &app,
        &alice,
        json!({ "items": [{ "sku": "tea", "quantity": 1 }] }),
    )
    .await;
    let put = |token: String, body: Value| {
        let req = app
            .http
            .put(app.url("/admin/products/tea"))
            .bearer_auth(token)
            .json(&body);
        async move { common::read(req.send().await.unwrap()).await }
    };
    assert_eq!(
        put(
            support.clone(),
            json!({ "name": "Tea", "price_fen": 1, "active": true })
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    let (status, updated) = put(
        admin.clone(),
        json!({ "name": "Tea", "price_fen": 1500, "active": true }),
    )
    .await;
    assert_eq!(
        (status, updated["price_fen"].as_i64()),
        (StatusCode::OK, Some(1500))
    );
    assert_eq!(
        put(
            admin.clone(),
            json!({ "name": "Tea", "price_fen": 0, "active": true })
        )
        .await
        .0,
        StatusCode::BAD_REQUEST
    );
    let (_, new) = place(
        &app,
        &alice,
        json!({ "items": [{ "sku": "tea", "quantity": 1 }] }),
    )
    .await;
    assert_eq!(new["total_fen"], 1500, "new orders use the new price");
    let (_, old_again) = app
        .get(
            &format!("/api/orders/{}", old["id"].as_str().unwrap()),
            Some(&alice),
        )
        .await;
    assert_eq!(
        old_again["total_fen"], 1000,
        "placed orders keep their price"
    );

    // Back-office search over the projection.
    let (_, all) = app.get("/admin/orders", Some(&support)).await;
    assert_eq!(all["total_items"], 2);
    let (_, by_no) = app
        .get(
            &format!(
                "/admin/orders?out_trade_no={}",
                old["out_trade_no"].as_str().unwrap()
            ),
            Some(&support),
        )
        .await;
    assert_eq!(by_no["items"][0]["id"], old["id"]);
    assert_eq!(by_no["total_items"], 1);
    let (_, paged) = app
        .get("/admin/orders?per_page=1&page=2", Some(&support))
        .await;
    assert_eq!(
        (
            paged["total_pages"].as_i64(),
            paged["items"][0]["id"].clone()
        ),
        (Some(2), old["id"].clone()),
        "newest first"
    );
    let (_, user) = app
        .post(
            "/api/login",
            None,
            json!({ "code": app.login_code("alice", None).await }),
        )
        .await;
    let openid = user["user"]["openid"].as_str().unwrap();
    assert_eq!(
        app.get(&format!("/admin/orders?openid={openid}"), Some(&support))
            .await
            .1["total_items"],
        2
    );
    assert_eq!(
        app.get("/admin/orders?openid=someone-else", Some(&support))
            .await
            .1["total_items"],
        0
    );
    let today = chrono::Utc::now()
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap())
        .date_naive();
    assert_eq!(
        app.get(
            &format!("/admin/orders?from={today}&to={today}"),
            Some(&support)
        )
        .await
        .1["total_items"],
        2
    );
    assert_eq!(
        app.get("/admin/orders?to=2000-01-01", Some(&support))
            .await
            .1["total_items"],
        0
    );
    assert_eq!(
        app.get("/admin/orders?from=yesterday", Some(&support))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
}

/// Expiry closes what is due exactly once, even with two sweepers racing, and never touches a
/// paid order.
async fn expiry_closes_due_orders_once(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_product("tea", 1250, true).await;
    let (alice, _) = app.login("alice").await;
    let (_, unpaid) = place(
        &app,
        &alice,
        json!({ "items": [{ "sku": "tea", "quantity": 1 }] }),
    )
    .await;
    let (_, paid) = place(
        &app,
        &alice,
        json!({ "items": [{ "sku": "tea", "quantity": 2 }] }),
    )
    .await;
    let orders = orders_service(&app);
    let payments = payments_service(&app);
    let view = OrdersView::new(app.running().db.clone());
    let checks = paystream_projections::Checks::new(app.running().db.clone());
    let paid_id: Uuid = paid["id"].as_str().unwrap().parse().unwrap();
    orders
        .execute(
            paid_id,
            OrderCommand::RecordPayment {
                channel: PayChannel::WechatpayV3,
                transaction_id: "4200000001".into(),
                amount_fen: Fen::new(2500).unwrap(),
                paid_at: chrono::Utc::now(),
            },
            &Metadata::actor("test"),
        )
        .await
        .unwrap();

    let now = chrono::Utc::now();
    assert_eq!(
        paystream::jobs::expire_due_orders(&payments, &view, &checks, now)
            .await
            .unwrap(),
        0,
        "nothing is due yet"
    );
    let later = now + chrono::Duration::seconds(1801);
    let (a, b) = tokio::join!(
        paystream::jobs::expire_due_orders(&payments, &view, &checks, later),
        paystream::jobs::expire_due_orders(&payments, &view, &checks, later)
    );
    assert_eq!(
        a.unwrap() + b.unwrap(),
        1,
        "exactly one sweeper closes the order"
    );

    let (_, unpaid_now) = app
        .get(
            &format!("/api/orders/{}", unpaid["id"].as_str().unwrap()),
            Some(&alice),
        )
        .await;
    assert_eq!(unpaid_now["status"], "closed");
    let (_, paid_now) = app
        .get(&format!("/api/orders/{paid_id}"), Some(&alice))
        .await;
    assert_eq!(paid_now["status"], "paid");
    let admin = app.admin_token().await;
    let (_, events) = app
        .get(
            &format!("/admin/orders/{}/events", unpaid["id"].as_str().unwrap()),
            Some(&admin),
        )
        .await;
    let closes: Vec<_> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "OrderClosed")
        .collect();
    assert_eq!(closes.len(), 1);
    assert_eq!(closes[0]["data"]["reason"], "expired");
    assert_eq!(closes[0]["metadata"]["actor"], "system:expiry");
}

/// The read model is derived: dropping and replaying it gives the same answers.
async fn projections_rebuild_from_the_log(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_product("tea", 1250, true).await;
    let (alice, _) = app.login("alice").await;
    for quantity in 1..=3 {
        place(
            &app,
            &alice,
            json!({ "items": [{ "sku": "tea", "quantity": quantity }] }),
        )
        .await;
    }
    let (_, first) = app.get("/api/orders", Some(&alice)).await;
    app.post(
        &format!(
            "/api/orders/{}/cancel",
            first["items"][0]["id"].as_str().unwrap()
        ),
        Some(&alice),
        json!({}),
    )
    .await;
    let (_, before) = app.get("/api/orders", Some(&alice)).await;
    let view = OrdersView::new(app.running().db.clone());
    sqlx::query("DELETE FROM orders_view")
        .execute(&app.running().db.pool)
        .await
        .unwrap();
    assert_eq!(
        view.search(&OrderFilter::default(), 1, 20)
            .await
            .unwrap()
            .total_items,
        0
    );
    let store = paystream::event_store(&app.running().db);
    assert_eq!(
        paystream_projections::rebuild(store.as_ref())
            .await
            .unwrap()
            .streams,
        3
    );
    let (_, after) = app.get("/api/orders", Some(&alice)).await;
    assert_eq!(before, after);
    assert_eq!(after["items"][0]["status"], "closed");
}

on_both_backends!(
    checkout_flow,
    idempotent_order_placement,
    bad_input_changes_nothing,
    login_maps_wechat_answers,
    phone_number_binding,
    staff_roles_and_catalogue,
    expiry_closes_due_orders_once,
    projections_rebuild_from_the_log,
);

/// A restart on PostgreSQL keeps orders, users and sessions (the token key is in the database).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restart_keeps_state() {
    let mut app = spawn_app(Backend::Postgres).await;
    app.add_product("tea", 1250, true).await;
    let (alice, _) = app.login("alice").await;
    let (_, order) = place(
        &app,
        &alice,
        json!({ "items": [{ "sku": "tea", "quantity": 4 }] }),
    )
    .await;
    app.restart().await;
    let (status, again) = app
        .get(
            &format!("/api/orders/{}", order["id"].as_str().unwrap()),
            Some(&alice),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "the token survives the restart");
    assert_eq!(again, order);
    assert_eq!(
        app.get("/api/orders", Some(&alice)).await.1["total_items"],
        1
    );
    assert_eq!(app.event_count().await, 1);
}

/// The background loop itself closes an order whose time is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn background_expiry_runs() {
    let app = common::spawn_app_with(Backend::Sqlite, |s| {
        s.order_ttl_seconds = 1;
        s.expiry_interval_seconds = 1;
        s.no_background_jobs = false;
    })
    .await;
    app.add_product("tea", 1250, true).await;
    let (alice, _) = app.login("alice").await;
    let (_, order) = place(
        &app,
        &alice,
        json!({ "items": [{ "sku": "tea", "quantity": 1 }] }),
    )
    .await;
    let path = format!("/api/orders/{}", order["id"].as_str().unwrap());
    let mut status = String::new();
    for _ in 0..100 {
        status = app.get(&path, Some(&alice)).await.1["status"]
            .as_str()
            .unwrap()
            .to_string();
        if status == "closed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, "closed");
}

/// Several first logins of one new user at once create one user, not an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_first_logins() {
    let app = spawn_app(Backend::Postgres).await;
    let mut codes = Vec::new();
    for _ in 0..8 {
        codes.push(app.login_code("frank", None).await);
    }
    let logins = codes
        .iter()
        .map(|code| app.post("/api/login", None, json!({ "code": code })));
    let answers = futures::future::join_all(logins).await;
    let ids: std::collections::HashSet<_> = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, StatusCode::OK, "{body}");
            body["user"]["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1);
}

/// Answers outside the handlers keep the contract's shape; paging accepts empty values; a retry
/// with the same key is answered from the log even after the product was withdrawn.
async fn edges_of_the_contract(backend: Backend) {
    let app = spawn_app(backend).await;
    let (status, body) = app.get("/api/nothing-here", None).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "no_such_endpoint");
    let response = app
        .http
        .delete(app.url("/api/products"))
        .send()
        .await
        .unwrap();
    let (status, body) = common::read(response).await;
    assert_error(
        status,
        &body,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );

    app.add_product("tea", 1250, true).await;
    let (alice, _) = app.login("alice").await;
    let body = json!({ "items": [{ "sku": "tea", "quantity": 1 }] });
    let send = || {
        let req = app
            .http
            .post(app.url("/api/orders"))
            .bearer_auth(&alice)
            .header("Idempotency-Key", "k-1")
            .json(&body);
        async move { common::read(req.send().await.unwrap()).await }
    };
    let (status, first) = send().await;
    assert_eq!(status, StatusCode::CREATED);
    let admin = app.admin_token().await;
    let withdraw = app
        .http
        .put(app.url("/admin/products/tea"))
        .bearer_auth(&admin)
        .json(&json!({ "name": "Tea", "price_fen": 1250, "active": false }));
    assert_eq!(withdraw.send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(send().await, (StatusCode::CREATED, first));

    let (status, page) = app
        .get("/api/orders?page=&per_page=&status=", Some(&alice))
        .await;
    assert_eq!(
        (status, page["page"].as_i64(), page["per_page"].as_i64()),
        (StatusCode::OK, Some(1), Some(20))
    );
    assert_eq!(
        app.get("/api/orders?page=abc", Some(&alice)).await.0,
        StatusCode::BAD_REQUEST
    );
    let (status, body) = app.get("/admin/orders?openid=%00", Some(&admin)).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_query");
    assert_eq!(
        app.get("/admin/orders?page=&per_page=", Some(&admin))
            .await
            .0,
        StatusCode::OK
    );
    let (status, body) = app
        .post(
            "/admin/login",
            None,
            json!({ "username": "ad\u{0}min", "password": "x" }),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
}

mod edges {
    use super::*;
    on_both_backends!(edges_of_the_contract);
}

/// The back-office page is served as HTML, and its refund form (`admin_ui/js/refund.js`) sends
/// each refund with an Idempotency-Key (one per intent), so a double click or a retry after a
/// lost answer cannot pay a refund twice — a refund without a key is a new refund every time.
#[tokio::test]
async fn back_office_page_sends_refunds_with_an_idempotency_key() {
    let app = spawn_app(Backend::Sqlite).await;
    let response = app.http.get(app.url("/admin/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let response = app
        .http
        .get(app.url("/admin/assets/refund.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let script = response.text().await.unwrap();
    for wired in [
        "/refunds`",
        r#""Idempotency-Key": keyFor(order.id, parsed.fen, why)"#,
        "key: newKey()",
    ] {
        assert!(script.contains(wired), "the refund form lacks {wired}");
    }
}
