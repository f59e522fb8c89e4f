//! TRANSACTION.SUCCESS notifications: content, signatures, retries, duplicates, wrong amounts.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{eventually, start, start_scaled, Receiver, APPID, MCHID, PAYER};
use paystream_sandbox::openid_for;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paying_notifies_the_merchant() {
    let h = start().await;
    let receiver = Receiver::start(&[]).await;
    h.order("PAY0000001", &receiver.url).await;
    let paid = h
        .control_ok("pay", json!({ "out_trade_no": "PAY0000001" }))
        .await;

    let got = receiver.wait_for(1).await;
    let n = &got[0];
    assert_eq!(n.headers["content-type"], "application/json");
    // In the migration period (`both`) either key may sign; the merchant verifies with either.
    h.merchant.verify(&n.headers, &n.body).await.unwrap();
    let (envelope, tx) = h.merchant.open_notification(&n.body, "transaction");
    assert_eq!(envelope["event_type"], "TRANSACTION.SUCCESS");
    assert_eq!(envelope["summary"], "支付成功");
    assert!(uuid::Uuid::parse_str(envelope["id"].as_str().unwrap()).is_ok());
    assert_eq!(tx["trade_state"], "SUCCESS");
    assert_eq!(tx["out_trade_no"], "PAY0000001");
    assert_eq!(tx["transaction_id"], paid["transaction_id"]);
    assert_eq!(
        (tx["appid"].as_str(), tx["mchid"].as_str()),
        (Some(APPID), Some(MCHID))
    );
    assert_eq!(tx["amount"]["total"], 100);
    assert_eq!(tx["amount"]["payer_total"], 100);
    assert_eq!(tx["payer"]["openid"], openid_for(APPID, PAYER).as_str());

    // The notification tampered with no longer verifies.
    let mut forged = n.body.to_vec();
    let at = forged.len() - 3;
    forged[at] ^= 1;
    assert!(h.merchant.verify(&n.headers, &forged).await.is_err());

    assert!(
        eventually(async || {
            let (_, log) = h.control("GET", "notifications", Value::Null).await;
            log["deliveries"][0]["delivered"] == true && log["deliveries"][0]["attempts"] == 1
        })
        .await
    );
    let (status, _) = h
        .control("POST", "pay", json!({ "out_trade_no": "PAY0000001" }))
        .await;
    assert_eq!(status, 409, "paying twice");
    let (status, _) = h
        .control("POST", "pay", json!({ "out_trade_no": "PAY9999999" }))
        .await;
    assert_eq!(status, 404, "no prepay for that order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_are_retried_until_acknowledged() {
    let h = start().await;
    let receiver = Receiver::start(&[500, 500, 204]).await;
    h.paid_order("PAY0000002", &receiver.url).await;
    let got = receiver.wait_for(3).await;
    // Each attempt is signed afresh and carries the same notification.
    let ids: Vec<Value> = got
        .iter()
        .map(|n| h.merchant.open_notification(&n.body, "transaction").0["id"].clone())
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]));
    for n in &got {
        h.merchant.verify(&n.headers, &n.body).await.unwrap();
    }
    // 15 s × 0.001 is 15 ms: had it gone on, a 4th attempt would be here by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.count(), 3);
    let (_, log) = h.control("GET", "notifications", Value::Null).await;
    let d = &log["deliveries"][0];
    assert_eq!(
        (
            d["attempts"].as_u64(),
            d["delivered"].as_bool(),
            d["last_status"].as_u64()
        ),
        (Some(3), Some(true), Some(204))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechat_gives_up_after_its_fifteen_retries() {
    // 24 h 4 min × 0.00001 ≈ 0.9 s.
    let h = start_scaled(0.00001).await;
    let receiver = Receiver::start(&[500; 40]).await;
    h.paid_order("PAY0000003", &receiver.url).await;
    assert!(
        eventually(async || {
            let (_, log) = h.control("GET", "notifications", Value::Null).await;
            log["deliveries"][0]["gave_up"] == true
        })
        .await
    );
    assert_eq!(receiver.count(), 16);
    let (_, log) = h.control("GET", "notifications", Value::Null).await;
    assert_eq!(log["deliveries"][0]["attempts"], 16);
    assert_eq!(log["deliveries"][0]["delivered"], false);
    assert_eq!(log["deliveries"][0]["last_status"], 500);
    assert_eq!(receiver.pending_script(), 40 - 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_and_resends_are_identical() {
    let h = start().await;
    let receiver = Receiver::start(&[]).await;
    h.order("PAY0000004", &receiver.url).await;
    h.control_ok(
        "pay",
        json!({ "out_trade_no": "PAY0000004", "duplicates": 2 }),
    )
    .await;
    let got = receiver.wait_for(3).await;
    h.control_ok("notify", json!({ "out_trade_no": "PAY0000004" }))
        .await;
    let got_again = receiver.wait_for(4).await;
    let first = &got[0].body;
    for n in got.iter().chain(&got_again[3..]) {
        assert_eq!(&n.body, first, "same bytes, same id");
        h.merchant.verify(&n.headers, &n.body).await.unwrap();
    }
    let (_, log) = h.control("GET", "notifications", Value::Null).await;
    assert_eq!(log["deliveries"].as_array().unwrap().len(), 4);

    let (status, _) = h
        .control("POST", "notify", json!({ "out_trade_no": "PAY9999999" }))
        .await;
    assert_eq!(status, 404);
    h.order("PAY0000005", &receiver.url).await;
    let (status, _) = h
        .control("POST", "notify", json!({ "out_trade_no": "PAY0000005" }))
        .await;
    assert_eq!(status, 409, "nothing to notify before payment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_amount_is_notified_and_recorded() {
    let h = start().await;
    let receiver = Receiver::start(&[]).await;
    h.order("PAY0000006", &receiver.url).await;
    h.control_ok(
        "pay",
        json!({ "out_trade_no": "PAY0000006", "amount_fen": 1 }),
    )
    .await;
    let got = receiver.wait_for(1).await;
    let (_, tx) = h.merchant.open_notification(&got[0].body, "transaction");
    assert_eq!(tx["amount"]["total"], 1, "ordered 100, told 1");
    assert_eq!(tx["amount"]["payer_total"], 1);
    let answer = h
        .merchant
        .get(&format!(
            "/v3/pay/transactions/out-trade-no/PAY0000006?mchid={MCHID}"
        ))
        .await;
    assert_eq!(answer.json()["amount"]["total"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_notification_after_the_order_is_already_paid() {
    let h = start().await;
    let receiver = Receiver::start(&[]).await;
    h.order("PAY0000007", &receiver.url).await;
    let started = Instant::now();
    h.control_ok(
        "pay",
        json!({ "out_trade_no": "PAY0000007", "delay_ms": 400 }),
    )
    .await;
    let answer = h
        .merchant
        .get(&format!(
            "/v3/pay/transactions/out-trade-no/PAY0000007?mchid={MCHID}"
        ))
        .await;
    assert_eq!(answer.json()["trade_state"], "SUCCESS");
    assert_eq!(receiver.count(), 0);
    receiver.wait_for(1).await;
    assert!(started.elapsed() >= Duration::from_millis(400));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_key_mode_notifications_use_the_public_key() {
    let h = start().await;
    h.control_ok("mode", json!({ "mode": "public_key" })).await;
    let receiver = Receiver::start(&[]).await;
    h.paid_order("PAY0000008", &receiver.url).await;
    let got = receiver.wait_for(1).await;
    let serial = h
        .merchant
        .verify(&got[0].headers, &got[0].body)
        .await
        .unwrap();
    assert_eq!(serial, h.merchant.creds.public_key_id);

    // After a rotation in certificate mode, the new certificate signs notifications.
    h.control_ok("mode", json!({ "mode": "certificates" }))
        .await;
    let rotated = h.control_ok("rotate-certificate", json!({})).await;
    h.control_ok("notify", json!({ "out_trade_no": "PAY0000008" }))
        .await;
    let got = receiver.wait_for(2).await;
    let serial = h
        .merchant
        .verify(&got[1].headers, &got[1].body)
        .await
        .unwrap();
    assert_eq!(serial, rotated["serial_no"].as_str().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_mode_notifications_are_signed_by_either_key_at_random() {
    let h = start().await;
    h.merchant.refresh_certificates().await.unwrap();
    let receiver = Receiver::start(&[]).await;
    for i in 0..16 {
        let no = format!("MIX{i:07}");
        h.order(&no, &receiver.url).await;
        h.control_ok("pay", json!({ "out_trade_no": no })).await;
    }
    let got = receiver.wait_for(16).await;
    let mut public_key = 0;
    for n in &got {
        let serial = h.merchant.verify(&n.headers, &n.body).await.unwrap();
        public_key += usize::from(serial.starts_with("PUB_KEY_ID_"));
    }
    // 16 fair coin tosses all alike: 1 in 32,768.
    assert!(
        (1..16).contains(&public_key),
        "{public_key} of 16 signed with the public key"
    );
}
