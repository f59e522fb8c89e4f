//! Injected trouble: failures, unsigned answers, slow answers.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{jsapi_body, start, MCHID};

const NOTIFY: &str = "https://shop.example.com/wechatpay/notify";
const JSAPI: &str = "/v3/pay/transactions/jsapi";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_next_answers_signed_errors_then_recovers() {
    let h = start().await;
    // Fetched first: a refetch to verify would otherwise be the call that fails.
    h.merchant.refresh_certificates().await.unwrap();
    h.control_ok("faults", json!({ "fail_next": 2 })).await;
    for _ in 0..2 {
        let answer = h
            .merchant
            .post(JSAPI, &jsapi_body("FLT0000001", 100, NOTIFY))
            .await;
        assert_eq!((answer.status, answer.code()), (500, "SYSTEM_ERROR".into()));
        h.merchant.verify_answer(&answer).await.unwrap();
    }
    // Nothing was ordered by the failed calls.
    let (status, _) = h
        .control("GET", "transactions/FLT0000001", Value::Null)
        .await;
    assert_eq!(status, 404);
    let answer = h
        .merchant
        .post(JSAPI, &jsapi_body("FLT0000001", 100, NOTIFY))
        .await;
    assert_eq!(answer.status, 200);

    // Only calls whose path matches count down.
    h.control_ok(
        "faults",
        json!({ "fail_next": 1, "status": 429, "path_contains": "/refund/" }),
    )
    .await;
    let answer = h
        .merchant
        .post(JSAPI, &jsapi_body("FLT0000002", 100, NOTIFY))
        .await;
    assert_eq!(answer.status, 200);
    let refund = h
        .merchant
        .post("/v3/refund/domestic/refunds", &json!({ "out_trade_no": "FLT0000002", "out_refund_no": "F1", "amount": { "refund": 1, "total": 100, "currency": "CNY" } }))
        .await;
    assert_eq!(
        (refund.status, refund.code()),
        (429, "FREQUENCY_LIMITED".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_after_processing_loses_only_the_answer() {
    let h = start().await;
    h.control_ok(
        "faults",
        json!({ "fail_next": 1, "after_processing": true, "code": "SYSTEM_ERROR" }),
    )
    .await;
    let lost = h
        .merchant
        .post(JSAPI, &jsapi_body("FLT0000003", 100, NOTIFY))
        .await;
    assert_eq!(lost.status, 500);
    let (status, t) = h
        .control("GET", "transactions/FLT0000003", Value::Null)
        .await;
    assert_eq!(status, 200, "the order exists");
    // The merchant retries with the same parameters and gets the prepay id it never saw.
    let retry = h
        .merchant
        .post(JSAPI, &jsapi_body("FLT0000003", 100, NOTIFY))
        .await;
    assert_eq!(retry.json()["prepay_id"], t["prepay_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_answers_must_be_rejected_by_the_client() {
    let h = start().await;
    h.order("FLT0000004", NOTIFY).await;
    let path = format!("/v3/pay/transactions/out-trade-no/FLT0000004?mchid={MCHID}");
    h.control_ok("faults", json!({ "unsigned_next": 1 })).await;
    let forged = h.merchant.get(&path).await;
    assert_eq!(forged.status, 200);
    assert_eq!(forged.json()["trade_state"], "NOTPAY", "the normal body");
    assert!(forged.header("wechatpay-signature").is_none());
    assert!(h.merchant.verify_answer(&forged).await.is_err());

    let next = h.merchant.get(&path).await;
    h.merchant.verify_answer(&next).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_slows_every_answer() {
    let h = start().await;
    h.control_ok("faults", json!({ "delay_ms": 300 })).await;
    let started = Instant::now();
    let answer = h
        .merchant
        .get(&format!(
            "/v3/pay/transactions/out-trade-no/NOSUCH01?mchid={MCHID}"
        ))
        .await;
    assert_eq!(answer.status, 404);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let faults = h.control_ok("faults", json!({ "delay_ms": 0 })).await;
    assert_eq!(faults["delay_ms"], 0);
    let started = Instant::now();
    h.merchant
        .get(&format!(
            "/v3/pay/transactions/out-trade-no/NOSUCH01?mchid={MCHID}"
        ))
        .await;
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merchant_credentials_over_control_match_the_handle() {
    let h = start().await;
    let (status, creds) = h.control("GET", "merchant", Value::Null).await;
    assert_eq!(status, 200);
    let direct = h.sandbox.merchant();
    assert_eq!(creds["mchid"], direct.mchid);
    assert_eq!(creds["merchant_serial"], direct.merchant_serial);
    assert_eq!(creds["apiv3_key"], direct.apiv3_key);
    assert_eq!(
        creds["merchant_private_key_pem"],
        direct.merchant_private_key_pem
    );
    assert_eq!(creds["public_key_pem"], direct.public_key_pem);
    assert_eq!(direct.apiv3_key.len(), 32);
    assert_eq!(direct.apiv2_key.len(), 32);
    assert!(direct
        .merchant_private_key_pem
        .starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(direct
        .public_key_pem
        .starts_with("-----BEGIN PUBLIC KEY-----"));
    assert_eq!(direct.merchant_serial.len(), 40);

    let shown = format!("{direct:?}");
    for secret in [&direct.apiv3_key, &direct.apiv2_key] {
        assert!(!shown.contains(secret.as_str()), "{shown}");
    }
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
}
