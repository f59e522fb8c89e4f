//! Both clients' `trade_bill` over real HTTP against a stand-in WeChat Pay that checks what it is
//! sent (the v3 signatures over the exact path and query, the v2 sign and fields) and answers as
//! WeChat does: v3 a signed JSON with the download URL and SHA1, then an unsigned gzip bill; v2
//! the gzip bill directly, or an XML error.
#![cfg(feature = "client")]

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::NaiveDate;
use paystream_engine::payments::bills::{BillOutcome, BillRefundState};
use paystream_engine::payments::gateway::{GatewayError, PayGateway};
use paystream_wechatpay::client::{V2Client, V2Config, V3Client, V3Config};
use paystream_wechatpay::v2::{sign as v2sign, xml};
use paystream_wechatpay::v3::keys::{load_private_key_pem, MerchantPrivateKey};
use paystream_wechatpay::v3::sign::{
    parse_authorization, request_message, response_message, verify_sha256_rsa,
};
use paystream_wechatpay::{ApiV2Key, ApiV3Key};
use rsa::RsaPublicKey;
use sha1::{Digest, Sha1};

const KEY: &str = include_str!("fixtures/merchant_key_pkcs1.pem");
const PUB_KEY_ID: &str = "PUB_KEY_ID_0112345678202612010000000000000001";
const V2_KEY: &str = "192006250b4c09247ec02edce69f6a2d";

const BILL: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注\r\n\
`2026-12-01 08:35:41,`wxd678efh567hg6787,`1900000001,`0,`,`4200000215202612010261405420,`PS20261201000001,`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`JSAPI,`SUCCESS,`CMB_DEBIT,`CNY,`25.00,`0.00,`0,`0,`0.00,`0.00,`,`,`咖啡,`,`0.15000,`0.60%,`25.00,`0.00,`\r\n\
`2026-12-01 20:53:36,`wxd678efh567hg6787,`1900000001,`0,`,`4200000215202612010261405420,`PS20261201000001,`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`JSAPI,`REFUND,`CMB_DEBIT,`CNY,`0.00,`0.00,`50000408942026120107145868882,`RF20261201000001,`5.00,`0.00,`ORIGINAL,`SUCCESS,`咖啡,`,`-0.03000,`0.60%,`0.00,`5.00,`\r\n\
总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\r\n\
`2,`25.00,`5.00,`0.00,`0.12000,`25.00,`5.00\r\n";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Bill,
    NoBill,
    Creating,
    /// `hash_value` of another bill.
    WrongHash,
    /// A `download_url` on another host.
    Elsewhere,
    /// The downloaded bill altered on the way (its summary no longer adds up).
    Altered,
}

struct Wechat {
    mode: Mutex<Mode>,
    /// Signs v3 answers (WeChat's key; the fixture serves for both sides).
    platform: MerchantPrivateKey,
    /// Checks the merchant's v3 signatures.
    merchant: RsaPublicKey,
}

type Shared = Arc<Wechat>;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Whether the request carries the merchant's signature over exactly this path and query.
fn signed_by_merchant(wechat: &Wechat, headers: &HeaderMap, path_and_query: &str) -> bool {
    let Some(auth) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_authorization(v).ok())
    else {
        return false;
    };
    let message = request_message("GET", path_and_query, &auth.timestamp, &auth.nonce_str, "");
    verify_sha256_rsa(&wechat.merchant, message, &auth.signature)
}

/// A v3 answer signed with WeChat's key, as every v3 API answer is.
fn signed(wechat: &Wechat, status: StatusCode, body: serde_json::Value) -> Response {
    let body = body.to_string();
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let nonce = "5K8264ILTKCH16CQ2502SI8ZNMTM67VS";
    let signature = wechat
        .platform
        .sign_sha256_rsa(response_message(&timestamp, nonce, body.as_bytes()))
        .unwrap();
    (
        status,
        [
            ("content-type", "application/json".to_string()),
            ("wechatpay-timestamp", timestamp),
            ("wechatpay-nonce", nonce.to_string()),
            ("wechatpay-signature", signature),
            ("wechatpay-serial", PUB_KEY_ID.to_string()),
            (
                "wechatpay-signature-type",
                "WECHATPAY2-SHA256-RSA2048".to_string(),
            ),
        ],
        body,
    )
        .into_response()
}

async fn tradebill(
    State(wechat): State<Shared>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    let path_and_query = uri.path_and_query().unwrap().as_str();
    if !signed_by_merchant(&wechat, &headers, path_and_query) {
        return (
            StatusCode::UNAUTHORIZED,
            r#"{"code":"SIGN_ERROR","message":"签名错误"}"#,
        )
            .into_response();
    }
    assert_eq!(
        uri.query(),
        Some("bill_date=2026-12-01&bill_type=ALL&tar_type=GZIP")
    );
    let host = headers["host"].to_str().unwrap();
    let mode = *wechat.mode.lock().unwrap();
    let hash = match mode {
        Mode::WrongHash => hex::encode(Sha1::digest(b"another bill")),
        _ => hex::encode(Sha1::digest(BILL.as_bytes())).to_uppercase(),
    };
    let origin = match mode {
        Mode::Elsewhere => "http://127.0.0.2:9".to_string(),
        _ => format!("http://{host}"),
    };
    match mode {
        Mode::NoBill => signed(
            &wechat,
            StatusCode::BAD_REQUEST,
            serde_json::json!({"code": "NO_STATEMENT_EXIST", "message": "请求的账单文件不存在"}),
        ),
        Mode::Creating => signed(
            &wechat,
            StatusCode::BAD_REQUEST,
            serde_json::json!({"code": "STATEMENT_CREATING", "message": "账单生成中"}),
        ),
        _ => signed(
            &wechat,
            StatusCode::OK,
            serde_json::json!({
                "download_url": format!("{origin}/v3/billdownload/file?token=6XIv5TUPto7pByrTQKhd6kwvyKLG2uY2wMMR8cNXqaA_Cv_isgaUtBzp4QtiozLO&tartype=gzip"),
                "hash_type": "SHA1",
                "hash_value": hash,
            }),
        ),
    }
}

/// The download: a signed request, an unsigned gzip answer.
async fn billdownload(
    State(wechat): State<Shared>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    if !signed_by_merchant(&wechat, &headers, uri.path_and_query().unwrap().as_str()) {
        return (
            StatusCode::UNAUTHORIZED,
            r#"{"code":"SIGN_ERROR","message":"签名错误"}"#,
        )
            .into_response();
    }
    let bill = match *wechat.mode.lock().unwrap() {
        Mode::Altered => BILL.replace("`25.00,`0.00,`", "`26.00,`0.00,`"),
        _ => BILL.to_string(),
    };
    gzip(bill.as_bytes()).into_response()
}

fn v2_fail(message: &str) -> Response {
    format!("<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[{message}]]></return_msg><error_code><![CDATA[20002]]></error_code></xml>").into_response()
}

async fn downloadbill(State(wechat): State<Shared>, body: Bytes) -> Response {
    let fields: BTreeMap<String, String> = xml::parse(&body).unwrap();
    if !v2sign::verify(&fields, V2_KEY, v2sign::SignType::HmacSha256) {
        return "<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[签名错误]]></return_msg></xml>".into_response();
    }
    assert_eq!(fields["bill_date"], "20261201");
    assert_eq!(fields["bill_type"], "ALL");
    assert_eq!(fields["tar_type"], "GZIP");
    assert_eq!(fields["mch_id"], "1900000001");
    match *wechat.mode.lock().unwrap() {
        Mode::NoBill => v2_fail("No Bill Exist"),
        Mode::Creating => v2_fail("Bill Creating"),
        Mode::Altered => gzip(
            BILL.replace("`5.00,`0.00,`ORIGINAL", "`6.00,`0.00,`ORIGINAL")
                .as_bytes(),
        )
        .into_response(),
        _ => gzip(BILL.as_bytes()).into_response(),
    }
}

struct Harness {
    wechat: Shared,
    v3: V3Client,
    v2: V2Client,
}

async fn start() -> Harness {
    let platform = load_private_key_pem(KEY).unwrap();
    let merchant_key = MerchantPrivateKey::from_pem(KEY).unwrap();
    let wechat = Arc::new(Wechat {
        mode: Mutex::new(Mode::Bill),
        merchant: merchant_key.public_key(),
        platform,
    });
    let router = Router::new()
        .route("/v3/bill/tradebill", get(tradebill))
        .route("/v3/billdownload/file", get(billdownload))
        .route("/pay/downloadbill", post(downloadbill))
        .with_state(wechat.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let v3 = V3Client::new(V3Config {
        api_base: base.clone(),
        mchid: "1900000001".into(),
        appid: "wxd678efh567hg6787".into(),
        merchant_serial: "0A1B2C3D4E5F60718293A4B5C6D7E8F901234567".into(),
        public_key: Some((PUB_KEY_ID.into(), merchant_key.public_key())),
        merchant_key,
        apiv3_key: ApiV3Key::new("a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb").unwrap(),
        certificate_refetch_interval: Duration::from_secs(60),
        notify_url: "https://shop.example.com/notify/wechatpay".into(),
        refund_lag_grace: V3Config::DEFAULT_REFUND_LAG_GRACE,
    });
    let v2 = V2Client::new(V2Config {
        api_base: base,
        secapi_base: None,
        mchid: "1900000001".into(),
        appid: "wxd678efh567hg6787".into(),
        api_key: ApiV2Key::new(V2_KEY),
        sign_type: v2sign::SignType::HmacSha256,
        client_certificate: None,
        extra_root_ca_pem: None,
        notify_url: "https://shop.example.com/notify/wechatpay/v2".into(),
        refund_notify_url: "https://shop.example.com/notify/wechatpay/v2/refund".into(),
        refund_lag_grace: Duration::from_secs(600),
    })
    .unwrap();
    Harness { wechat, v3, v2 }
}

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 12, 1).unwrap()
}

fn set(h: &Harness, mode: Mode) {
    *h.wechat.mode.lock().unwrap() = mode;
}

fn assert_the_bill(outcome: BillOutcome) {
    let BillOutcome::Bill(bill) = outcome else {
        panic!("a bill: {outcome:?}");
    };
    assert_eq!(bill.date, day());
    assert_eq!(bill.payments.len(), 1);
    assert_eq!(bill.payments[0].out_trade_no, "PS20261201000001");
    assert_eq!(bill.payments[0].amount_fen.get(), 2500);
    assert_eq!(
        bill.payments[0].paid_at.to_rfc3339(),
        "2026-12-01T00:35:41+00:00"
    );
    assert_eq!(bill.refunds.len(), 1);
    assert_eq!(bill.refunds[0].out_refund_no, "RF20261201000001");
    assert_eq!(bill.refunds[0].refund_id, "50000408942026120107145868882");
    assert_eq!(bill.refunds[0].amount_fen.get(), 500);
    assert_eq!(bill.refunds[0].state, BillRefundState::Succeeded);
}

#[tokio::test]
async fn v3_fetches_checks_and_reads_the_bill() {
    let h = start().await;
    assert_the_bill(h.v3.trade_bill(day()).await.unwrap());
}

#[tokio::test]
async fn v3_refuses_a_bill_that_does_not_check_out() {
    let h = start().await;
    for mode in [Mode::WrongHash, Mode::Elsewhere, Mode::Altered] {
        set(&h, mode);
        let outcome = h.v3.trade_bill(day()).await;
        assert!(
            matches!(outcome, Err(GatewayError::Unverified(_))),
            "{mode:?}: {outcome:?}"
        );
    }
}

#[tokio::test]
async fn v3_no_bill_and_not_ready_are_answers() {
    let h = start().await;
    set(&h, Mode::NoBill);
    assert_eq!(h.v3.trade_bill(day()).await.unwrap(), BillOutcome::NoBill);
    set(&h, Mode::Creating);
    assert_eq!(h.v3.trade_bill(day()).await.unwrap(), BillOutcome::NotReady);
}

#[tokio::test]
async fn v2_downloads_and_reads_the_bill() {
    let h = start().await;
    assert_the_bill(h.v2.trade_bill(day()).await.unwrap());
    set(&h, Mode::NoBill);
    assert_eq!(h.v2.trade_bill(day()).await.unwrap(), BillOutcome::NoBill);
    set(&h, Mode::Creating);
    assert_eq!(h.v2.trade_bill(day()).await.unwrap(), BillOutcome::NotReady);
    set(&h, Mode::Altered);
    assert!(matches!(
        h.v2.trade_bill(day()).await,
        Err(GatewayError::Unverified(_))
    ));
}
