//! Both sides of a conversation, as the sandbox simulator and the engine will
//! hold it, using only the public API.

use std::collections::BTreeMap;

use paystream_wechatpay::v2::{refund_notify, sign as v2sign, xml};
use paystream_wechatpay::v3::aead::EncryptedResource;
use paystream_wechatpay::v3::keys::load_private_key_pem;
use paystream_wechatpay::v3::sign::{
    check_timestamp, response_message, sign_sha256_rsa, verify_response,
};
use paystream_wechatpay::{ApiV2Key, ApiV3Key};

const PLATFORM_KEY: &str = include_str!("fixtures/merchant_key_pkcs1.pem");

fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn v2_pay_notify_round_trip() {
    let key = ApiV2Key::new("192006250b4c09247ec02edce69f6a2d");
    // Simulator: build and sign a notify (no sign_type — WeChat may omit it).
    let mut notify = fields(&[
        ("appid", "wxd678efh567hg6787"),
        ("mch_id", "1900000001"),
        ("nonce_str", "5K8264ILTKCH16CQ2502SI8ZNMTM67VS"),
        ("out_trade_no", "PS20240101000001"),
        ("result_code", "SUCCESS"),
        ("return_code", "SUCCESS"),
        ("total_fee", "100"),
        ("transaction_id", "4200000215201811190261405420"),
        ("trade_type", "JSAPI"),
        ("time_end", "20240101120000"),
        ("openid", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"),
        ("coupon_fee", ""),
    ]);
    let sig = v2sign::sign(&notify, key.expose(), v2sign::SignType::HmacSha256);
    notify.insert("sign".into(), sig);
    let body = xml::render(&notify).unwrap();

    // Engine: parse, verify with the order's sign type, ack.
    let received = xml::parse(body.as_bytes()).unwrap();
    assert_eq!(received, notify);
    assert!(v2sign::verify(
        &received,
        key.expose(),
        v2sign::SignType::HmacSha256
    ));
    assert!(!v2sign::verify(
        &received,
        key.expose(),
        v2sign::SignType::Md5
    ));
    assert_eq!(
        xml::NOTIFY_ACK_SUCCESS,
        "<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>"
    );

    // A man in the middle raising total_fee breaks the signature.
    let forged = body.replace("<![CDATA[100]]>", "<![CDATA[1]]>");
    let forged = xml::parse(forged.as_bytes()).unwrap();
    assert!(!v2sign::verify(
        &forged,
        key.expose(),
        v2sign::SignType::HmacSha256
    ));
}

#[test]
fn v2_refund_notify_round_trip() {
    let key = ApiV2Key::new("qazwsxedcrfvtgbyhnujmikolp111111");
    let inner = fields(&[
        ("out_refund_no", "RF20240101000001"),
        ("out_trade_no", "PS20240101000001"),
        ("refund_fee", "100"),
        ("refund_id", "50000408942018111907145868882"),
        ("refund_status", "SUCCESS"),
        ("success_time", "2024-01-01 12:00:00"),
        ("total_fee", "100"),
        ("transaction_id", "4200000215201811190261405420"),
    ]);
    let req_info = refund_notify::encrypt_req_info(&inner, key.expose()).unwrap();
    let outer = fields(&[
        ("return_code", "SUCCESS"),
        ("appid", "wxd678efh567hg6787"),
        ("mch_id", "1900000001"),
        ("nonce_str", "TeqClE3i0mvn3DrK"),
        ("req_info", &req_info),
    ]);
    let body = xml::render(&outer).unwrap();

    let received = xml::parse(body.as_bytes()).unwrap();
    let decrypted = refund_notify::decrypt_req_info(&received["req_info"], key.expose()).unwrap();
    assert_eq!(decrypted, inner);
    assert!(refund_notify::decrypt_req_info(&received["req_info"], "another-key").is_err());
}

#[test]
fn v3_notification_round_trip() {
    let platform = load_private_key_pem(PLATFORM_KEY).unwrap();
    let api_v3 = ApiV3Key::new("a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb").unwrap();

    // Simulator: encrypt the transaction, wrap, sign the exact body bytes.
    let transaction = r#"{"mchid":"1900000001","appid":"wxd678efh567hg6787","out_trade_no":"PS20240101000001","transaction_id":"4200000215201811190261405420","trade_state":"SUCCESS","amount":{"total":100,"payer_total":100,"currency":"CNY","payer_currency":"CNY"}}"#;
    let resource = EncryptedResource::seal(
        &api_v3,
        "Kj7QIyUiYx1q",
        "transaction",
        Some("transaction"),
        transaction.as_bytes(),
    )
    .unwrap();
    let body = serde_json::to_vec(&serde_json::json!({
        "id": "EV-2018022511223320873",
        "create_time": "2024-01-01T12:00:00+08:00",
        "resource_type": "encrypt-resource",
        "event_type": "TRANSACTION.SUCCESS",
        "summary": "支付成功",
        "resource": resource,
    }))
    .unwrap();
    let (ts, nonce) = ("1704081600", "fdasfjihihihlkja484");
    let signature =
        sign_sha256_rsa(platform.expose_rsa(), response_message(ts, nonce, &body)).unwrap();

    // Engine: time window, signature over the raw bytes, then decrypt.
    check_timestamp(ts, 1_704_081_650).unwrap();
    let wechat_pub = platform.public_key();
    assert!(verify_response(&wechat_pub, ts, nonce, &body, &signature));
    let envelope: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let res: EncryptedResource = serde_json::from_value(envelope["resource"].clone()).unwrap();
    let tx: serde_json::Value = res.open_json(&api_v3).unwrap();
    assert_eq!(tx["amount"]["total"], 100);

    // Re-serialising the body (even semantically identical) breaks the signature.
    let reserialised = serde_json::to_vec_pretty(&envelope).unwrap();
    assert!(!verify_response(
        &wechat_pub,
        ts,
        nonce,
        &reserialised,
        &signature
    ));
}
