//! The v2 pay notification: signed with the order's sign type, retried until the XML
//! acknowledgement, re-sent byte for byte; the sign-type faults.

use std::time::Duration;

use paystream_wechatpay::v2::sign::SignType;
use paystream_wechatpay::v2::xml;
use serde_json::{json, Value};

use super::{verifies, V2Client, XmlReceiver};
use crate::support::{eventually, start, APPID, MCHID, PAYER};

const FAIL_ANSWER: &str =
    "<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[处理失败]]></return_msg></xml>";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pay_notification_is_signed_the_orders_way_and_retried_until_the_xml_ack() {
    let h = start().await;
    let v2 = V2Client::over_http(&h);
    // A bare `success` and an XML FAIL are not acknowledgements; the third answer is.
    let receiver = XmlReceiver::start(&["success", FAIL_ANSWER]).await;
    v2.order("V2NOTE0001", &receiver.url, SignType::HmacSha256)
        .await;
    let paid = h
        .control_ok(
            "pay",
            json!({ "out_trade_no": "V2NOTE0001", "channel": "wechatpay_v2" }),
        )
        .await;

    let got = receiver.wait_for(3).await;
    let (content_type, n, raw) = &got[0];
    assert!(content_type.starts_with("text/xml"), "{content_type}");
    assert!(verifies(n, &v2.key, SignType::HmacSha256), "{n:?}");
    assert!(!verifies(n, &v2.key, SignType::Md5));
    assert!(
        !n.contains_key("sign_type"),
        "WeChat's notifications omit it"
    );
    for (field, value) in [
        ("return_code", "SUCCESS"),
        ("result_code", "SUCCESS"),
        ("appid", APPID),
        ("mch_id", MCHID),
        ("out_trade_no", "V2NOTE0001"),
        ("trade_type", "JSAPI"),
        ("total_fee", "100"),
        ("cash_fee", "100"),
        ("fee_type", "CNY"),
        ("is_subscribe", "N"),
        ("transaction_id", paid["transaction_id"].as_str().unwrap()),
        ("openid", &paystream_sandbox::openid_for(APPID, PAYER)),
    ] {
        assert_eq!(n.get(field).map(String::as_str), Some(value), "{field}");
    }
    for present in ["nonce_str", "bank_type", "time_end"] {
        assert!(n.get(present).is_some_and(|v| !v.is_empty()), "{present}");
    }
    // Every retry carries the same bytes (the signature is in the body).
    assert!(got.iter().all(|(_, _, b)| b == raw));

    // Acknowledged: no fourth attempt (15 s × 0.001 = 15 ms).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.count(), 3);
    let (_, log) = h.control("GET", "notifications", Value::Null).await;
    let d = &log["deliveries"][0];
    assert_eq!(d["channel"], "wechatpay_v2");
    assert_eq!(d["event_type"], "TRANSACTION.SUCCESS");
    assert_eq!(d["attempts"], 3);
    assert_eq!(d["delivered"], true);
    assert_eq!(d["last_status"], 200);

    // Re-sent byte for byte on request.
    h.control_ok(
        "notify",
        json!({ "out_trade_no": "V2NOTE0001", "channel": "wechatpay_v2" }),
    )
    .await;
    let got = receiver.wait_for(4).await;
    assert_eq!(got[3].2, *raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_that_is_not_the_ack_is_retried_and_logged() {
    let h = start().await;
    let v2 = V2Client::over_http(&h);
    let receiver = XmlReceiver::start(&["success"; 3]).await;
    v2.order("V2NOTE0002", &receiver.url, SignType::Md5).await;
    h.control_ok(
        "pay",
        json!({ "out_trade_no": "V2NOTE0002", "channel": "wechatpay_v2", "amount_fen": 1 }),
    )
    .await;
    let got = receiver.wait_for(4).await;
    assert!(verifies(&got[0].1, &v2.key, SignType::Md5));
    // The wrong amount the control call asked for.
    assert_eq!(got[0].1["total_fee"], "1");
    assert!(
        eventually(async || {
            let (_, log) = h.control("GET", "notifications", Value::Null).await;
            log["deliveries"][0]["delivered"] == true && log["deliveries"][0]["attempts"] == 4
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_sign_type_faults() {
    let h = start().await;
    let v2 = V2Client::over_http(&h);
    let receiver = XmlReceiver::start(&[]).await;
    let set = h
        .control_ok(
            "faults",
            json!({ "v2_notify_sign_type": "MD5", "v2_notify_with_sign_type": true }),
        )
        .await;
    assert_eq!(set["v2_notify_sign_type"], "MD5");
    v2.order("V2NOTE0003", &receiver.url, SignType::HmacSha256)
        .await;
    h.control_ok(
        "pay",
        json!({ "out_trade_no": "V2NOTE0003", "channel": "wechatpay_v2" }),
    )
    .await;
    let got = receiver.wait_for(1).await;
    let n = &got[0].1;
    // An HMAC order notified with MD5, as WeChat has been seen doing.
    assert_eq!(n["sign_type"], "MD5");
    assert!(verifies(n, &v2.key, SignType::Md5));
    assert!(!verifies(n, &v2.key, SignType::HmacSha256));

    let (status, _) = h
        .control("POST", "faults", json!({ "v2_notify_sign_type": "md5" }))
        .await;
    assert_eq!(status, 400);
    let cleared = h
        .control_ok(
            "faults",
            json!({ "v2_notify_sign_type": null, "v2_notify_with_sign_type": false }),
        )
        .await;
    assert_eq!(cleared["v2_notify_sign_type"], Value::Null);
    v2.order("V2NOTE0004", &receiver.url, SignType::HmacSha256)
        .await;
    h.control_ok(
        "pay",
        json!({ "out_trade_no": "V2NOTE0004", "channel": "wechatpay_v2" }),
    )
    .await;
    let got = receiver.wait_for(2).await;
    assert!(verifies(&got[1].1, &v2.key, SignType::HmacSha256));
    assert!(xml::parse(&got[1].2).is_ok());
}
