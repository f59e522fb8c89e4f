//! The whole fan-out over the real RabbitMQ: the engine relays its log, an outside consumer sees
//! every event of a checkout in the contract's shape and order, and the two workers run as their
//! own consumers (as `paystream worker …` does) against the engine's WeChat simulator.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::amqp::{Probe, Vhost};
use common::spawn_app_with;
use lapin::message::Delivery;
use paystream::workers::WorkerKind;
use paystream_engine::db::Backend;
use reqwest::StatusCode;
use serde_json::{json, Value};

const TEMPLATES: &str = r#"
[PaymentSucceeded]
template_id = "TPL-PAID"
[PaymentSucceeded.data]
character_string1 = "{out_trade_no}"
amount2 = "{paid_yuan}"
"#;

fn body(delivery: &Delivery) -> Value {
    serde_json::from_slice(&delivery.data).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_checkout_fans_out_over_rabbitmq_to_outside_consumers_and_the_workers() {
    let vhost = Vhost::new().await;
    // Bound before anything happens, as an outside consumer would be.
    let mut probe = Probe::bind(&vhost.url()).await;
    let dir = tempfile::tempdir().unwrap();
    let templates = dir.path().join("templates.toml");
    std::fs::write(&templates, TEMPLATES).unwrap();
    let app = spawn_app_with(Backend::Postgres, |s| {
        s.no_background_jobs = false;
        s.amqp_url = Some(vhost.url());
        s.subscribe_message_templates = Some(templates);
    })
    .await;

    let mut worker_settings = app.settings.clone();
    worker_settings.wechat_api_base = Some(url::Url::parse(&app.url("/sandbox")).unwrap());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let workers: Vec<_> = [WorkerKind::SubscribeMessage, WorkerKind::CardVerification]
        .into_iter()
        .map(|kind| {
            tokio::spawn(paystream::run_worker(
                kind,
                worker_settings.clone(),
                stopped.clone(),
            ))
        })
        .collect();

    app.add_product("tea", 1250, true).await;
    let (token, user) = app.login("rita").await;
    let openid = user["openid"].as_str().unwrap();
    app.sandbox(
        "/subscribe-accept",
        json!({ "openid": openid, "template_ids": ["TPL-PAID"] }),
    )
    .await;
    let (status, _) = app
        .post(
            "/api/subscriptions",
            Some(&token),
            json!({ "template_ids": ["TPL-PAID"] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let card = app.sandbox("/cards", json!({ "openid": openid })).await;
    let (status, order) = app
        .post(
            "/api/orders",
            Some(&token),
            json!({ "items": [{ "sku": "tea", "quantity": 1 }],
                    "card": { "card_id": card["card_id"], "code": card["code"] } }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let order_id = order["id"].as_str().unwrap().to_string();
    let (status, _) = app
        .post(
            &format!("/api/orders/{order_id}/pay"),
            Some(&token),
            json!({ "channel": "wechatpay_v3" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    app.sandbox(
        "/wechatpay/pay",
        json!({ "out_trade_no": order["out_trade_no"] }),
    )
    .await;

    // The card-verification worker consumed the card through RabbitMQ.
    let events = app.wait_for_event(&order, "CardConsumed").await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e["type"] == "CardConsumed")
            .count(),
        1
    );

    // The outside consumer sees every event of the order, each as the contract says.
    let wanted: HashSet<String> = events.iter().map(|e| e["version"].to_string()).collect();
    let stream = format!("order-{order_id}");
    let deliveries = probe
        .until(|got| {
            let seen: HashSet<String> = got
                .iter()
                .map(body)
                .filter(|b| b["stream_id"] == stream.as_str())
                .map(|b| b["version"].to_string())
                .collect();
            wanted.is_subset(&seen)
        })
        .await;
    let mut versions = Vec::new();
    for delivery in deliveries
        .iter()
        .filter(|d| body(d)["stream_id"] == stream.as_str())
    {
        let message = body(delivery);
        let stored = events
            .iter()
            .find(|e| e["version"] == message["version"])
            .expect("a published event is in the log");
        assert_eq!(
            delivery.routing_key.as_str(),
            message["type"].as_str().unwrap()
        );
        assert_eq!(message["type"], stored["type"]);
        assert_eq!(message["data"], stored["data"]);
        assert_eq!(message["metadata"], stored["metadata"]);
        let properties = &delivery.properties;
        assert_eq!(
            properties.message_id().as_ref().map(|m| m.as_str()),
            message["event_id"].as_str()
        );
        assert_eq!(
            properties.content_type().as_ref().map(|c| c.as_str()),
            Some("application/json")
        );
        assert_eq!(*properties.delivery_mode(), Some(2), "persistent");
        for field in [
            "event_id",
            "stream_id",
            "version",
            "type",
            "recorded_at",
            "data",
            "metadata",
        ] {
            assert!(message.get(field).is_some(), "{field} missing: {message}");
        }
        versions.push(message["version"].as_i64().unwrap());
    }
    versions.dedup();
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "in order: {versions:?}"
    );

    // The subscribe-message worker sent exactly one message.
    let mut sent = Vec::new();
    for _ in 0..200 {
        sent = app
            .get(
                &format!("/sandbox/control/subscribe-messages?openid={openid}"),
                None,
            )
            .await
            .1["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !sent.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["data"]["amount2"]["value"], "12.50");

    stop.send(true).unwrap();
    for worker in workers {
        tokio::time::timeout(Duration::from_secs(30), worker)
            .await
            .expect("workers stop")
            .unwrap()
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_broker_the_api_keeps_working_and_readyz_says_why() {
    // Nothing listens on port 1: the broker is "down" from the start.
    let app = spawn_app_with(Backend::Postgres, |s| {
        s.no_background_jobs = false;
        s.amqp_url = Some("amqp://guest:guest@127.0.0.1:1/%2f".into());
    })
    .await;
    app.add_product("tea", 1250, true).await;
    let (token, _) = app.login("sam").await;
    let (status, order) = app
        .post(
            "/api/orders",
            Some(&token),
            json!({ "items": [{ "sku": "tea", "quantity": 1 }] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let (status, body) = app.get("/readyz", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["checks"]["database"], "ok");
    assert_eq!(body["checks"]["broker"], "unavailable");
    assert_eq!(app.get("/healthz", None).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readyz_checks_the_broker_when_one_is_configured() {
    let vhost = Vhost::new().await;
    let app = spawn_app_with(Backend::Postgres, |s| s.amqp_url = Some(vhost.url())).await;
    let (status, body) = app.get("/readyz", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checks"]["broker"], "ok");
    let embedded = spawn_app_with(Backend::Sqlite, |_| {}).await;
    let (status, body) = embedded.get("/readyz", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checks"]["broker"], "not_configured", "{body}");
}
