//! `/pay/unifiedorder`, `/pay/orderquery`, `/pay/closeorder`: signatures both ways, WeChat's
//! refusals, ordering again, and the shared faults.

use chrono::Utc;
use paystream_wechatpay::v2::answer::{self, V2Answer, V2AnswerError};
use paystream_wechatpay::v2::request::beijing_time;
use paystream_wechatpay::v2::sign::{self, pay_sign, SignType};
use paystream_wechatpay::v2::xml;
use serde_json::{json, Value};

use super::{call_fields, order_fields, paid_order, V2Client, NOTIFY};
use crate::support::{start, APPID, MCHID, PAYER};

const SIGN_ERROR: &str =
    "<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[签名错误]]></return_msg></xml>";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unifiedorder_answers_signed_with_the_requests_sign_type() {
    let h = start().await;
    let v2 = V2Client::over_http(&h);
    for (n, sign_type) in [SignType::Md5, SignType::HmacSha256]
        .into_iter()
        .enumerate()
    {
        let out_trade_no = format!("V2ORD000{n}");
        let raw = v2
            .post(
                "/pay/unifiedorder",
                order_fields(&out_trade_no, NOTIFY),
                sign_type,
            )
            .await;
        assert_eq!(raw.status, 200);
        assert!(raw.content_type.starts_with("text/xml"), "{raw:?}");
        let fields = match answer::read(&raw.body, &v2.key, sign_type).unwrap() {
            V2Answer::Success(f) => f,
            other => panic!("{other:?}"),
        };
        assert_eq!(fields["return_code"], "SUCCESS");
        assert_eq!(fields["result_code"], "SUCCESS");
        assert_eq!(
            (fields["appid"].as_str(), fields["mch_id"].as_str()),
            (APPID, MCHID)
        );
        assert_eq!(fields["trade_type"], "JSAPI");
        assert_eq!(fields["nonce_str"].len(), 32);
        assert!(
            !fields.contains_key("sign_type"),
            "answers carry no sign_type"
        );
        let prepay_id = &fields["prepay_id"];
        assert!(
            prepay_id.starts_with("wx") && prepay_id.len() == 30,
            "{prepay_id}"
        );
        // Signed the request's way only.
        let other = if sign_type == SignType::Md5 {
            SignType::HmacSha256
        } else {
            SignType::Md5
        };
        assert_eq!(
            answer::read(&raw.body, &v2.key, other),
            Err(V2AnswerError::BadSignature)
        );
        // What the mini-program then signs for wx.requestPayment (v2 paySign) is the merchant's
        // business; the sandbox's part is a prepay id of the right shape.
        let ps = pay_sign(
            APPID,
            "n",
            &format!("prepay_id={prepay_id}"),
            sign_type,
            "1",
            &v2.key,
        );
        assert_eq!(ps.len(), if sign_type == SignType::Md5 { 32 } else { 64 });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_sign_type_md5_is_assumed() {
    let h = start().await;
    let v2 = V2Client::over_http(&h);
    let mut fields = order_fields("V2ORD0010", NOTIFY);
    let signature = sign::sign(&fields, &v2.key, SignType::Md5);
    fields.insert("sign".into(), signature);
    let raw = v2
        .post_raw("/pay/unifiedorder", xml::render(&fields).unwrap())
        .await;
    assert!(matches!(
        answer::read(&raw.body, &v2.key, SignType::Md5),
        Ok(V2Answer::Success(_))
    ));

    // Signed with HMAC but not saying so: checked as MD5, refused.
    let mut fields = order_fields("V2ORD0011", NOTIFY);
    let signature = sign::sign(&fields, &v2.key, SignType::HmacSha256);
    fields.insert("sign".into(), signature);
    let raw = v2
        .post_raw("/pay/unifiedorder", xml::render(&fields).unwrap())
        .await;
    assert_eq!(raw.text(), SIGN_ERROR);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_not_taken_are_answered_fail_without_sign() {
    let h = start().await;
    let v2 = V2Client::over_http(&h);

    // A wrong key, a field altered after signing, a field added after signing.
    let wrong_key = V2Client {
        key: "0".repeat(32),
        ..V2Client::over_http(&h)
    };
    let raw = wrong_key
        .post(
            "/pay/unifiedorder",
            order_fields("V2NT000001", NOTIFY),
            SignType::HmacSha256,
        )
        .await;
    assert_eq!((raw.status, raw.text().as_str()), (200, SIGN_ERROR));
    let signed = paystream_wechatpay::v2::request::signed_xml(
        order_fields("V2NT000002", NOTIFY),
        &v2.key,
        SignType::Md5,
    )
    .unwrap();
    let altered = signed.replace("<total_fee><![CDATA[100]]>", "<total_fee><![CDATA[1]]>");
    assert_eq!(
        v2.post_raw("/pay/unifiedorder", altered).await.text(),
        SIGN_ERROR
    );
    let extra = signed.replace("</xml>", "<attach><![CDATA[x]]></attach></xml>");
    assert_eq!(
        v2.post_raw("/pay/unifiedorder", extra).await.text(),
        SIGN_ERROR
    );
    // Fields WeChat has never heard of are signed like any other.
    let mut unknown = order_fields("V2NT000003", NOTIFY);
    unknown.insert("some_future_field".into(), "x".into());
    assert!(matches!(
        v2.call("/pay/unifiedorder", unknown, SignType::Md5).await,
        V2Answer::Success(_)
    ));

    let not_taken = |raw: super::Raw| match answer::read(&raw.body, &v2.key, SignType::Md5) {
        Ok(V2Answer::NotTaken { return_msg }) => {
            assert!(!raw.text().contains("<sign>"), "{}", raw.text());
            return_msg
        }
        other => panic!("{other:?}: {}", raw.text()),
    };
    let xxe = r#"<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><appid>&e;</appid></xml>"#;
    assert_eq!(
        not_taken(v2.post_raw("/pay/unifiedorder", xxe).await),
        "XML格式错误"
    );
    assert_eq!(
        not_taken(v2.post_raw("/pay/unifiedorder", "appid=1").await),
        "XML格式错误"
    );
    let huge = format!("<xml><body>{}</body></xml>", "x".repeat(xml::MAX_XML_BYTES));
    assert_eq!(
        not_taken(v2.post_raw("/pay/unifiedorder", huge).await),
        "XML格式错误"
    );
    assert_eq!(
        not_taken(v2.post_raw("/pay/unifiedorder", "").await),
        "post数据为空"
    );

    let mut odd = order_fields("V2NT000004", NOTIFY);
    odd.insert("sign_type".into(), "HMAC_SHA256".into());
    odd.insert(
        "sign".into(),
        sign::sign(&odd, &v2.key, SignType::HmacSha256),
    );
    let raw = v2
        .post_raw("/pay/unifiedorder", xml::render(&odd).unwrap())
        .await;
    assert_eq!(not_taken(raw), "sign_type参数错误");

    let mut other_merchant = order_fields("V2NT000005", NOTIFY);
    other_merchant.insert("mch_id".into(), "1900000109".into());
    let raw = v2
        .post("/pay/unifiedorder", other_merchant, SignType::Md5)
        .await;
    assert!(not_taken(raw).contains("mch_id"));
    let mut other_app = order_fields("V2NT000006", NOTIFY);
    other_app.insert("appid".into(), "wx0000000000000000".into());
    let raw = v2.post("/pay/unifiedorder", other_app, SignType::Md5).await;
    assert_eq!(not_taken(raw), "appid和mch_id不匹配");

    // A GET is answered in XML too, and nothing was ordered by any of the above.
    let get = v2
        .http
        .get(format!("{}/pay/unifiedorder", v2.base))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    let (status, _) = h
        .control(
            "GET",
            "transactions/V2NT000001?channel=wechatpay_v2",
            Value::Null,
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_fields_are_param_error_naming_the_field() {
    let h = start().await;
    let v2 = V2Client::over_http(&h);
    // JSAPI orders must stay payable for at least five minutes.
    let soon = beijing_time(Utc::now() + chrono::Duration::seconds(290));
    let past = beijing_time(Utc::now() - chrono::Duration::hours(1));
    let cases: Vec<(&str, Option<&str>, &str)> = vec![
        ("body", None, "body"),
        ("total_fee", Some("1.00"), "total_fee"),
        ("total_fee", Some("0"), "total_fee"),
        ("total_fee", Some("-5"), "total_fee"),
        ("spbill_create_ip", Some("localhost"), "spbill_create_ip"),
        (
            "notify_url",
            Some("http://shop.example.com/notify"),
            "notify_url",
        ),
        (
            "notify_url",
            Some("https://shop.example.com/notify?x=1"),
            "notify_url",
        ),
        ("trade_type", Some("NATIVE"), "trade_type"),
        ("out_trade_no", Some("has space"), "out_trade_no"),
        ("out_trade_no", None, "out_trade_no"),
        ("openid", Some("oSomeoneElse0000000000000000"), "openid"),
        ("time_expire", Some("2030-01-01 00:00:00"), "time_expire"),
        ("time_expire", Some(&soon), "time_expire"),
        ("time_expire", Some(&past), "time_expire"),
        ("fee_type", Some("USD"), "fee_type"),
    ];
    for (n, (field, value, mentioned)) in cases.into_iter().enumerate() {
        let mut f = order_fields(&format!("V2PE{n:06}"), NOTIFY);
        match value {
            Some(v) => f.insert(field.to_string(), v.to_string()),
            None => f.remove(field),
        };
        let (code, des) = v2
            .refused("/pay/unifiedorder", f, SignType::HmacSha256)
            .await;
        assert_eq!(code, "PARAM_ERROR", "{field}={value:?}: {des}");
        assert!(
            des.contains(mentioned) || (field == "openid" && des.contains("openid")),
            "{field}={value:?}: {des}"
        );
    }
    // A loopback http notify_url and a time_expire well ahead are fine.
    let mut f = order_fields("V2PE_OK_01", "http://127.0.0.1:9/notify");
    f.insert(
        "time_expire".into(),
        beijing_time(Utc::now() + chrono::Duration::minutes(30)),
    );
    assert!(matches!(
        v2.call("/pay/unifiedorder", f, SignType::HmacSha256).await,
        V2Answer::Success(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering_again_same_prepay_id_changed_refused_paid_and_closed_refused() {
    let h = start().await;
    let v2 = V2Client::over_http(&h);
    let first = v2.order("V2AGAIN001", NOTIFY, SignType::HmacSha256).await;
    // A retry with a fresh nonce (and even another sign type) is the same order.
    assert_eq!(
        v2.order("V2AGAIN001", NOTIFY, SignType::HmacSha256).await,
        first
    );
    assert_eq!(v2.order("V2AGAIN001", NOTIFY, SignType::Md5).await, first);
    let mut changed = order_fields("V2AGAIN001", NOTIFY);
    changed.insert("total_fee".into(), "101".into());
    let (code, _) = v2
        .refused("/pay/unifiedorder", changed, SignType::HmacSha256)
        .await;
    assert_eq!(code, "OUT_TRADE_NO_USED");

    h.control_ok(
        "pay",
        json!({ "out_trade_no": "V2AGAIN001", "channel": "wechatpay_v2" }),
    )
    .await;
    let (code, _) = v2
        .refused(
            "/pay/unifiedorder",
            order_fields("V2AGAIN001", NOTIFY),
            SignType::Md5,
        )
        .await;
    assert_eq!(code, "ORDERPAID");

    v2.order("V2AGAIN002", NOTIFY, SignType::Md5).await;
    v2.success(
        "/pay/closeorder",
        call_fields(&[("out_trade_no", "V2AGAIN002")]),
        SignType::Md5,
    )
    .await;
    let (code, _) = v2
        .refused(
            "/pay/unifiedorder",
            order_fields("V2AGAIN002", NOTIFY),
            SignType::Md5,
        )
        .await;
    assert_eq!(code, "ORDERCLOSED");

    // One order book per merchant, as at WeChat: a number ordered through v2 is taken for v3,
    // and the other way round.
    let through_v3 = h
        .merchant
        .post(
            "/v3/pay/transactions/jsapi",
            &crate::support::jsapi_body("V2AGAIN001", 100, "https://shop.example.com/v3/notify"),
        )
        .await;
    assert_eq!(
        (through_v3.status, through_v3.code()),
        (403, "OUT_TRADE_NO_USED".to_string()),
        "{}",
        through_v3.text()
    );
    h.order("V3FIRST001", "https://shop.example.com/v3/notify")
        .await;
    let (code, _) = v2
        .refused(
            "/pay/unifiedorder",
            order_fields("V3FIRST001", NOTIFY),
            SignType::Md5,
        )
        .await;
    assert_eq!(code, "OUT_TRADE_NO_USED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orderquery_before_and_after_paying() {
    let h = start().await;
    let v2 = V2Client::over_http(&h);
    v2.order("V2QUERY001", NOTIFY, SignType::Md5).await;
    let q = v2.query("V2QUERY001").await;
    assert_eq!(q["trade_state"], "NOTPAY");
    assert_eq!(q["out_trade_no"], "V2QUERY001");
    for absent in ["transaction_id", "time_end", "openid", "total_fee"] {
        assert!(!q.contains_key(absent), "{absent} before payment: {q:?}");
    }

    let before = Utc::now();
    let paid = h
        .control_ok(
            "pay",
            json!({ "out_trade_no": "V2QUERY001", "channel": "wechatpay_v2" }),
        )
        .await;
    let transaction_id = paid["transaction_id"].as_str().unwrap();
    let q = v2.query("V2QUERY001").await;
    assert_eq!(q["trade_state"], "SUCCESS");
    assert_eq!(q["trade_state_desc"], "支付成功");
    assert_eq!(q["transaction_id"], transaction_id);
    assert_eq!(q["openid"], paystream_sandbox::openid_for(APPID, PAYER));
    assert_eq!(q["trade_type"], "JSAPI");
    assert_eq!(q["total_fee"], "100");
    assert_eq!(q["cash_fee"], "100");
    assert_eq!(q["fee_type"], "CNY");
    assert!(!q["bank_type"].is_empty());
    let time_end = &q["time_end"];
    assert_eq!(time_end.len(), 14);
    assert!(
        *time_end >= beijing_time(before - chrono::Duration::seconds(1)),
        "{time_end} is Beijing time"
    );

    let by_id = v2
        .success(
            "/pay/orderquery",
            call_fields(&[("transaction_id", transaction_id)]),
            SignType::Md5,
        )
        .await;
    assert_eq!(by_id["out_trade_no"], "V2QUERY001");
    let (code, _) = v2
        .refused(
            "/pay/orderquery",
            call_fields(&[("out_trade_no", "V2NOSUCH01")]),
            SignType::Md5,
        )
        .await;
    assert_eq!(code, "ORDERNOTEXIST");

    // The control API shows the same, on the v2 books only.
    let (status, t) = h
        .control(
            "GET",
            "transactions/V2QUERY001?channel=wechatpay_v2",
            Value::Null,
        )
        .await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["transaction"]["trade_state"], "SUCCESS");
    assert_eq!(t["sign_type"], "MD5");
    let (status, _) = h
        .control("GET", "transactions/V2QUERY001", Value::Null)
        .await;
    assert_eq!(status, 404, "not on the v3 books");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closeorder_closed_paid_userpaying() {
    let h = start().await;
    let v2 = V2Client::over_http(&h);
    let close = |no: &str| call_fields(&[("out_trade_no", no)]);
    v2.order("V2CLOSE001", NOTIFY, SignType::HmacSha256).await;
    let closed = v2
        .success("/pay/closeorder", close("V2CLOSE001"), SignType::HmacSha256)
        .await;
    assert_eq!(closed["result_code"], "SUCCESS");
    assert_eq!(v2.query("V2CLOSE001").await["trade_state"], "CLOSED");
    let (code, _) = v2
        .refused("/pay/closeorder", close("V2CLOSE001"), SignType::Md5)
        .await;
    assert_eq!(code, "ORDERCLOSED");

    paid_order(&h, &v2, "V2CLOSE002", NOTIFY).await;
    let (code, _) = v2
        .refused("/pay/closeorder", close("V2CLOSE002"), SignType::Md5)
        .await;
    assert_eq!(code, "ORDERPAID");

    v2.order("V2CLOSE003", NOTIFY, SignType::Md5).await;
    let state = h
        .control_ok(
            "trade-state",
            json!({ "out_trade_no": "V2CLOSE003", "trade_state": "USERPAYING", "channel": "wechatpay_v2" }),
        )
        .await;
    assert_eq!(state["trade_state"], "USERPAYING");
    let (code, _) = v2
        .refused("/pay/closeorder", close("V2CLOSE003"), SignType::Md5)
        .await;
    assert_eq!(code, "USERPAYING");
    assert_eq!(v2.query("V2CLOSE003").await["trade_state"], "USERPAYING");

    let (code, _) = v2
        .refused("/pay/closeorder", close("V2CLOSE404"), SignType::Md5)
        .await;
    assert_eq!(code, "ORDERNOTEXIST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_error_fault_is_a_signed_refusal_worth_retrying() {
    let h = start().await;
    let v2 = V2Client::over_http(&h);
    h.control_ok(
        "faults",
        json!({ "fail_next": 1, "path_contains": "unifiedorder" }),
    )
    .await;
    let answer = v2
        .call(
            "/pay/unifiedorder",
            order_fields("V2FAULT001", NOTIFY),
            SignType::HmacSha256,
        )
        .await;
    match &answer {
        V2Answer::Refused { err_code, .. } => assert_eq!(err_code, "SYSTEMERROR"),
        other => panic!("{other:?}"),
    }
    assert!(answer.worth_retrying());
    // Nothing was ordered; the retry with the same parameters works.
    let (code, _) = v2
        .refused(
            "/pay/orderquery",
            call_fields(&[("out_trade_no", "V2FAULT001")]),
            SignType::Md5,
        )
        .await;
    assert_eq!(code, "ORDERNOTEXIST");
    let first = v2.order("V2FAULT001", NOTIFY, SignType::HmacSha256).await;

    // after_processing: the call takes effect, only the answer is lost.
    h.control_ok(
        "faults",
        json!({ "fail_next": 1, "after_processing": true }),
    )
    .await;
    let lost = v2
        .call(
            "/pay/closeorder",
            call_fields(&[("out_trade_no", "V2FAULT001")]),
            SignType::Md5,
        )
        .await;
    assert!(lost.worth_retrying(), "{lost:?}");
    assert_eq!(v2.query("V2FAULT001").await["trade_state"], "CLOSED");
    assert!(!first.is_empty());

    // unsigned_next: a SUCCESS without sign is not WeChat's.
    h.control_ok("faults", json!({ "unsigned_next": 1 })).await;
    let raw = v2
        .post(
            "/pay/orderquery",
            call_fields(&[("out_trade_no", "V2FAULT001")]),
            SignType::Md5,
        )
        .await;
    assert_eq!(
        answer::read(&raw.body, &v2.key, SignType::Md5),
        Err(V2AnswerError::BadSignature)
    );
}
