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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_while_the_user_pays_is_202_and_a_closed_order_is_order_closed() {
    let h = start().await;
    h.order("FLT0000010", NOTIFY).await;
    let close = "/v3/pay/transactions/out-trade-no/FLT0000010/close";
    let state = h
        .control_ok(
            "trade-state",
            json!({ "out_trade_no": "FLT0000010", "trade_state": "USERPAYING" }),
        )
        .await;
    assert_eq!(state["trade_state"], "USERPAYING");
    let paying = h.merchant.post(close, &json!({ "mchid": MCHID })).await;
    assert_eq!((paying.status, paying.code()), (202, "USERPAYING".into()));
    h.merchant.verify_answer(&paying).await.unwrap();
    // Not closed: the user can still finish paying.
    h.control_ok("pay", json!({ "out_trade_no": "FLT0000010" }))
        .await;

    h.order("FLT0000011", NOTIFY).await;
    let close = "/v3/pay/transactions/out-trade-no/FLT0000011/close";
    h.control_ok(
        "trade-state",
        json!({ "out_trade_no": "FLT0000011", "trade_state": "PAYERROR" }),
    )
    .await;
    assert_eq!(
        h.merchant
            .post(close, &json!({ "mchid": MCHID }))
            .await
            .status,
        204
    );
    // Unsigned errors, when switched on, carry no signature headers at all.
    h.control_ok("faults", json!({ "unsigned_errors": true }))
        .await;
    let again = h.merchant.post(close, &json!({ "mchid": MCHID })).await;
    assert_eq!((again.status, again.code()), (400, "ORDER_CLOSED".into()));
    assert!(again.header("wechatpay-signature").is_none());
    // A success is still signed.
    let query = h
        .merchant
        .get(&format!(
            "/v3/pay/transactions/out-trade-no/FLT0000011?mchid={MCHID}"
        ))
        .await;
    assert_eq!(query.json()["trade_state"], "CLOSED");
    h.merchant.verify_answer(&query).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_signatures_never_verify() {
    let h = start().await;
    h.merchant.refresh_certificates().await.unwrap();
    h.order("FLT0000020", NOTIFY).await;
    h.control_ok("faults", json!({ "probe_share": 1.0 })).await;
    let path = format!("/v3/pay/transactions/out-trade-no/FLT0000020?mchid={MCHID}");
    let probed = h.merchant.get(&path).await;
    assert_eq!(probed.status, 200);
    assert!(probed
        .header("wechatpay-signature")
        .is_some_and(|s| s.starts_with("WECHATPAY/SIGNTEST/")));
    assert!(h.merchant.verify_answer(&probed).await.is_err());
    h.control_ok("faults", json!({ "probe_share": 0.0 })).await;
    h.merchant
        .verify_answer(&h.merchant.get(&path).await)
        .await
        .unwrap();
    let (status, _) = h
        .control("POST", "faults", json!({ "probe_share": 1.5 }))
        .await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_need_user_agent_accept_and_json_content_type_and_a_known_openid() {
    let h = start().await;
    let url = format!("{}/sandbox/v3/pay/transactions/jsapi", h.origin);
    let body = jsapi_body("FLT0000030", 100, NOTIFY).to_string();
    let http = reqwest::Client::new();
    // Checked before the signature, so no Authorization is needed to see these.
    let no_agent = http
        .post(&url)
        .header("Accept", "application/json")
        .header("Content-Type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(no_agent.status(), 400);
    let text = no_agent.text().await.unwrap();
    assert!(text.contains("User-Agent"), "{text}");
    let form = http
        .post(&url)
        .header("User-Agent", "t/1")
        .header("Accept", "application/json")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 400);
    let xml = http
        .post(&url)
        .header("User-Agent", "t/1")
        .header("Accept", "text/xml")
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(xml.status(), 400);

    // An openid this app never saw (another app's user, or made up) cannot pay.
    let mut stranger = jsapi_body("FLT0000031", 100, NOTIFY);
    stranger["payer"]["openid"] = json!("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o");
    let answer = h.merchant.post(JSAPI, &stranger).await;
    assert_eq!((answer.status, answer.code()), (400, "PARAM_ERROR".into()));
}
