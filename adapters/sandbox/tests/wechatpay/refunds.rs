//! Refunds: PROCESSING → SUCCESS with a notification, over-refunds, idempotency, settling.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{eventually, start, Harness, Receiver, MCHID};

const REFUNDS: &str = "/v3/refund/domestic/refunds";

fn refund_body(
    out_trade_no: &str,
    out_refund_no: &str,
    refund: i64,
    notify_url: Option<&str>,
) -> Value {
    let mut body = json!({
        "out_trade_no": out_trade_no,
        "out_refund_no": out_refund_no,
        "reason": "商品已售完",
        "amount": { "refund": refund, "total": 100, "currency": "CNY" },
    });
    if let Some(url) = notify_url {
        body["notify_url"] = json!(url);
    }
    body
}

async fn refund_status(h: &Harness, out_refund_no: &str) -> Value {
    let answer = h.merchant.get(&format!("{REFUNDS}/{out_refund_no}")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    h.merchant.verify_answer(&answer).await.unwrap();
    answer.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refund_settles_and_notifies() {
    let h = start().await;
    let receiver = Receiver::start(&[]).await;
    let transaction_id = h.paid_order("REF0000001", &receiver.url).await;
    receiver.wait_for(1).await; // TRANSACTION.SUCCESS

    let answer = h
        .merchant
        .post(
            REFUNDS,
            &refund_body("REF0000001", "R1", 30, Some(&receiver.url)),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    h.merchant.verify_answer(&answer).await.unwrap();
    let r = answer.json();
    assert_eq!(r["status"], "PROCESSING");
    assert_eq!(r["out_refund_no"], "R1");
    assert_eq!(r["out_trade_no"], "REF0000001");
    assert_eq!(r["transaction_id"], transaction_id.as_str());
    assert_eq!(r["channel"], "ORIGINAL");
    assert_eq!(r["user_received_account"], "支付用户零钱");
    assert!(r["create_time"].as_str().unwrap().ends_with("+08:00"));
    assert!(r.get("success_time").is_none());
    for (k, v) in [
        ("total", 100),
        ("refund", 30),
        ("payer_total", 100),
        ("payer_refund", 30),
    ] {
        assert_eq!(r["amount"][k], v, "{k}");
    }
    assert_eq!(r["amount"]["currency"], "CNY");

    let got = receiver.wait_for(2).await;
    h.merchant
        .verify(&got[1].headers, &got[1].body)
        .await
        .unwrap();
    let (envelope, refund) = h.merchant.open_notification(&got[1].body, "refund");
    assert_eq!(envelope["event_type"], "REFUND.SUCCESS");
    assert_eq!(refund["refund_status"], "SUCCESS");
    assert_eq!(refund["mchid"], MCHID);
    assert_eq!(refund["refund_id"], r["refund_id"]);
    assert_eq!(refund["out_refund_no"], "R1");
    assert_eq!(
        refund["amount"],
        json!({ "total": 100, "refund": 30, "payer_total": 100, "payer_refund": 30 })
    );
    assert!(refund["success_time"].as_str().unwrap().ends_with("+08:00"));

    let queried = refund_status(&h, "R1").await;
    assert_eq!(queried["status"], "SUCCESS");
    assert!(queried["success_time"].is_string());
    let tx = h
        .merchant
        .get(&format!(
            "/v3/pay/transactions/out-trade-no/REF0000001?mchid={MCHID}"
        ))
        .await;
    assert_eq!(tx.json()["trade_state"], "REFUND");

    let unknown = h.merchant.get(&format!("{REFUNDS}/NOSUCHREFUND")).await;
    assert_eq!(
        (unknown.status, unknown.code()),
        (404, "RESOURCE_NOT_EXISTS".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_are_idempotent_and_never_exceed_the_total() {
    let h = start().await;
    let transaction_id = h
        .paid_order("REF0000002", "https://shop.example.com/n")
        .await;

    let first = h
        .merchant
        .post(REFUNDS, &refund_body("REF0000002", "R2-a", 60, None))
        .await
        .json();
    // A retry of the same request: the same refund, nothing more refunded.
    let retry = h
        .merchant
        .post(REFUNDS, &refund_body("REF0000002", "R2-a", 60, None))
        .await;
    assert_eq!(retry.status, 200);
    assert_eq!(retry.json()["refund_id"], first["refund_id"]);
    let (_, t) = h
        .control("GET", "transactions/REF0000002", Value::Null)
        .await;
    assert_eq!(t["refunds"].as_array().unwrap().len(), 1);

    let reused = h
        .merchant
        .post(REFUNDS, &refund_body("REF0000002", "R2-a", 61, None))
        .await;
    assert_eq!(
        (reused.status, reused.code()),
        (400, "INVALID_REQUEST".into())
    );

    let over = h
        .merchant
        .post(REFUNDS, &refund_body("REF0000002", "R2-b", 41, None))
        .await;
    // Asking for more than is left is a bad request, final; NOT_ENOUGH is the merchant's balance.
    assert_eq!((over.status, over.code()), (400, "INVALID_REQUEST".into()));
    h.merchant.verify_answer(&over).await.unwrap();

    // By transaction_id instead of out_trade_no: the remaining 40 fen.
    let mut rest = refund_body("REF0000002", "R2-c", 40, None);
    rest.as_object_mut().unwrap().remove("out_trade_no");
    rest["transaction_id"] = json!(transaction_id);
    let answer = h.merchant.post(REFUNDS, &rest).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let again = h
        .merchant
        .post(REFUNDS, &refund_body("REF0000002", "R2-d", 1, None))
        .await;
    assert_eq!(again.code(), "INVALID_REQUEST");

    let mut wrong_total = refund_body("REF0000002", "R2-e", 1, None);
    wrong_total["amount"]["total"] = json!(99);
    let answer = h.merchant.post(REFUNDS, &wrong_total).await;
    assert_eq!(
        (answer.status, answer.code()),
        (400, "INVALID_REQUEST".into())
    );
    let mut no_currency = refund_body("REF0000002", "R2-f", 1, None);
    no_currency["amount"]
        .as_object_mut()
        .unwrap()
        .remove("currency");
    assert_eq!(
        h.merchant.post(REFUNDS, &no_currency).await.code(),
        "PARAM_ERROR"
    );
    let long_no = refund_body("REF0000002", &"R".repeat(65), 1, None);
    assert_eq!(
        h.merchant.post(REFUNDS, &long_no).await.code(),
        "PARAM_ERROR"
    );

    h.order("REF0000003", "https://shop.example.com/n").await;
    let unpaid = h
        .merchant
        .post(REFUNDS, &refund_body("REF0000003", "R3", 1, None))
        .await;
    assert_eq!(
        (unpaid.status, unpaid.code()),
        (400, "INVALID_REQUEST".into())
    );
    let unknown = h
        .merchant
        .post(REFUNDS, &refund_body("REF9999999", "R4", 1, None))
        .await;
    assert_eq!(
        (unknown.status, unknown.code()),
        (404, "RESOURCE_NOT_EXISTS".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_refunds_settle_by_control_closed_frees_the_amount() {
    let h = start().await;
    let receiver = Receiver::start(&[]).await;
    h.paid_order("REF0000005", &receiver.url).await;
    receiver.wait_for(1).await;
    h.control_ok(
        "faults",
        json!({ "hold_refunds": true, "refund_settle_ms": 20 }),
    )
    .await;

    h.merchant
        .post(
            REFUNDS,
            &refund_body("REF0000005", "R5-a", 100, Some(&receiver.url)),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        refund_status(&h, "R5-a").await["status"],
        "PROCESSING",
        "held"
    );

    let settled = h
        .control_ok("refunds/R5-a/settle", json!({ "status": "CLOSED" }))
        .await;
    assert_eq!(settled["status"], "CLOSED");
    let got = receiver.wait_for(2).await;
    let (envelope, refund) = h.merchant.open_notification(&got[1].body, "refund");
    assert_eq!(envelope["event_type"], "REFUND.CLOSED");
    assert_eq!(refund["refund_status"], "CLOSED");
    assert!(refund.get("success_time").is_none());
    assert_eq!(refund_status(&h, "R5-a").await["status"], "CLOSED");
    let (status, _) = h
        .control(
            "POST",
            "refunds/R5-a/settle",
            json!({ "status": "SUCCESS" }),
        )
        .await;
    assert_eq!(status, 409, "CLOSED is final");

    // The closed refund gave its 100 fen back: the full amount can be refunded again.
    h.merchant
        .post(
            REFUNDS,
            &refund_body("REF0000005", "R5-b", 100, Some(&receiver.url)),
        )
        .await;
    h.control_ok("refunds/R5-b/settle", json!({ "status": "ABNORMAL" }))
        .await;
    let got = receiver.wait_for(3).await;
    assert_eq!(
        h.merchant.open_notification(&got[2].body, "refund").0["event_type"],
        "REFUND.ABNORMAL"
    );
    // ABNORMAL is not final.
    h.control_ok("refunds/R5-b/settle", json!({ "status": "SUCCESS" }))
        .await;
    let got = receiver.wait_for(4).await;
    assert_eq!(
        h.merchant.open_notification(&got[3].body, "refund").1["refund_status"],
        "SUCCESS"
    );

    // Released: a refund settles on its own again.
    h.control_ok("faults", json!({ "hold_refunds": false }))
        .await;
    h.paid_order("REF0000006", &receiver.url).await;
    h.merchant
        .post(REFUNDS, &refund_body("REF0000006", "R6", 10, None))
        .await;
    assert!(eventually(async || refund_status(&h, "R6").await["status"] == "SUCCESS").await);

    let (status, _) = h
        .control(
            "POST",
            "refunds/NOSUCH/settle",
            json!({ "status": "SUCCESS" }),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = h
        .control(
            "POST",
            "refunds/R6/settle",
            json!({ "status": "PROCESSING" }),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_fifty_refunds_per_order() {
    let h = start().await;
    h.paid_order("REF0000007", "https://shop.example.com/n")
        .await;
    for i in 0..50 {
        let answer = h
            .merchant
            .post(
                REFUNDS,
                &refund_body("REF0000007", &format!("R7-{i}"), 1, None),
            )
            .await;
        assert_eq!(answer.status, 200, "refund {i}: {}", answer.text());
    }
    let answer = h
        .merchant
        .post(REFUNDS, &refund_body("REF0000007", "R7-50", 1, None))
        .await;
    assert_eq!(
        (answer.status, answer.code()),
        (400, "INVALID_REQUEST".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_merchants_balance_is_not_enough_and_the_refund_system_lags() {
    let h = start().await;
    h.paid_order("REF0000050", "https://shop.example.com/n")
        .await;

    // The merchant's account holds 30 fen: 40 is refused for now, 30 goes through.
    h.control_ok("faults", json!({ "balance_fen": 30 })).await;
    let short = h
        .merchant
        .post(REFUNDS, &refund_body("REF0000050", "R50-a", 40, None))
        .await;
    assert_eq!((short.status, short.code()), (403, "NOT_ENOUGH".into()));
    let fits = h
        .merchant
        .post(REFUNDS, &refund_body("REF0000050", "R50-b", 30, None))
        .await;
    assert_eq!(fits.status, 200, "{}", fits.text());
    let empty = h
        .merchant
        .post(REFUNDS, &refund_body("REF0000050", "R50-c", 1, None))
        .await;
    assert_eq!(empty.code(), "NOT_ENOUGH", "the balance went down by 30");
    // Topped up (no limit): the same out_refund_no now succeeds.
    h.control_ok("faults", json!({ "balance_fen": null })).await;
    let retried = h
        .merchant
        .post(REFUNDS, &refund_body("REF0000050", "R50-a", 40, None))
        .await;
    assert_eq!(retried.status, 200, "{}", retried.text());

    // Right after a payment, the refund system does not know it yet.
    h.control_ok("faults", json!({ "refund_lag_ms": 400 }))
        .await;
    h.paid_order("REF0000051", "https://shop.example.com/n")
        .await;
    let early = h
        .merchant
        .post(REFUNDS, &refund_body("REF0000051", "R51", 10, None))
        .await;
    assert_eq!(
        (early.status, early.code()),
        (404, "RESOURCE_NOT_EXISTS".into())
    );
    let (_, t) = h
        .control("GET", "transactions/REF0000051", Value::Null)
        .await;
    assert!(
        t["refunds"].as_array().unwrap().is_empty(),
        "nothing refunded"
    );
    tokio::time::sleep(std::time::Duration::from_millis(450)).await;
    let later = h
        .merchant
        .post(REFUNDS, &refund_body("REF0000051", "R51", 10, None))
        .await;
    assert_eq!(later.status, 200, "{}", later.text());
}
