//! APIv2 over real HTTP (and HTTPS with the merchant's client certificate for `/secapi`): a
//! small v2 merchant client built on the pure primitives of `paystream_wechatpay::v2`, and an XML
//! notification receiver.

mod notifications;
mod orders;
mod refunds;
mod vectors;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::Router;
use paystream_wechatpay::v2::answer::{self, V2Answer};
use paystream_wechatpay::v2::request::signed_xml;
use paystream_wechatpay::v2::sign::{self, SignType};
use paystream_wechatpay::v2::xml;

use crate::support::{serve, Harness, APPID, MCHID, PAYER, PREFIX};

pub type Fields = BTreeMap<String, String>;

pub const NOTIFY: &str = "https://shop.example.com/wechatpay/v2/notify";

pub fn fields(pairs: &[(&str, &str)]) -> Fields {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A JSAPI unifiedorder's fields (100 fen, the harness's payer), unsigned.
pub fn order_fields(out_trade_no: &str, notify_url: &str) -> Fields {
    fields(&[
        ("appid", APPID),
        ("mch_id", MCHID),
        ("nonce_str", &paystream_wechatpay::nonce_str()),
        ("body", "Image形象店-深圳腾大-QQ公仔"),
        ("out_trade_no", out_trade_no),
        ("total_fee", "100"),
        ("spbill_create_ip", "203.0.113.7"),
        ("notify_url", notify_url),
        ("trade_type", "JSAPI"),
        ("openid", &paystream_sandbox::openid_for(APPID, PAYER)),
    ])
}

/// The envelope of the other calls: appid, mch_id, nonce_str and `extra`.
pub fn call_fields(extra: &[(&str, &str)]) -> Fields {
    let mut f = fields(&[
        ("appid", APPID),
        ("mch_id", MCHID),
        ("nonce_str", &paystream_wechatpay::nonce_str()),
    ]);
    f.extend(fields(extra));
    f
}

#[derive(Debug)]
pub struct Raw {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Raw {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub struct V2Client {
    /// `http://127.0.0.1:port/sandbox` or `https://127.0.0.1:port`.
    pub base: String,
    pub key: String,
    pub http: reqwest::Client,
}

impl V2Client {
    pub fn over_http(h: &Harness) -> V2Client {
        V2Client {
            base: format!("{}{PREFIX}", h.origin),
            key: h.sandbox.merchant().apiv2_key,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    /// POST `body` as is.
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> Raw {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "text/xml")
            .body(body)
            .send()
            .await
            .unwrap();
        Raw {
            status: response.status().as_u16(),
            content_type: response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            body: response.bytes().await.unwrap().to_vec(),
        }
    }

    /// Sign `fields` with `sign_type` (sending `sign_type`, as the engine does) and POST them.
    pub async fn post(&self, path: &str, fields: Fields, sign_type: SignType) -> Raw {
        let body = signed_xml(fields, &self.key, sign_type).unwrap();
        self.post_raw(path, body).await
    }

    /// POST and read the answer as a merchant must: signed with the request's sign type.
    pub async fn call(&self, path: &str, fields: Fields, sign_type: SignType) -> V2Answer {
        let raw = self.post(path, fields, sign_type).await;
        assert_eq!(raw.status, 200, "{}", raw.text());
        assert!(raw.content_type.starts_with("text/xml"), "{raw:?}");
        answer::read(&raw.body, &self.key, sign_type)
            .unwrap_or_else(|e| panic!("{e}: {}", raw.text()))
    }

    pub async fn success(&self, path: &str, fields: Fields, sign_type: SignType) -> Fields {
        match self.call(path, fields, sign_type).await {
            V2Answer::Success(f) => f,
            other => panic!("{path}: {other:?}"),
        }
    }

    /// A business refusal: `(err_code, err_code_des)`.
    pub async fn refused(
        &self,
        path: &str,
        fields: Fields,
        sign_type: SignType,
    ) -> (String, String) {
        match self.call(path, fields, sign_type).await {
            V2Answer::Refused {
                err_code,
                err_code_des,
                ..
            } => (err_code, err_code_des),
            other => panic!("{path}: {other:?}"),
        }
    }

    /// Order `out_trade_no` (100 fen) and return the prepay id.
    pub async fn order(&self, out_trade_no: &str, notify_url: &str, sign_type: SignType) -> String {
        let answer = self
            .success(
                "/pay/unifiedorder",
                order_fields(out_trade_no, notify_url),
                sign_type,
            )
            .await;
        answer["prepay_id"].clone()
    }

    pub async fn query(&self, out_trade_no: &str) -> Fields {
        self.success(
            "/pay/orderquery",
            call_fields(&[("out_trade_no", out_trade_no)]),
            SignType::HmacSha256,
        )
        .await
    }
}

/// Order through v2 and pay through control; returns the transaction id.
pub async fn paid_order(
    h: &Harness,
    client: &V2Client,
    out_trade_no: &str,
    notify_url: &str,
) -> String {
    client
        .order(out_trade_no, notify_url, SignType::HmacSha256)
        .await;
    let paid = h
        .control_ok(
            "pay",
            serde_json::json!({ "out_trade_no": out_trade_no, "channel": "wechatpay_v2" }),
        )
        .await;
    paid["transaction_id"].as_str().unwrap().to_string()
}

/// A merchant's v2 notification endpoint: records every POST and answers the scripted bodies
/// in turn (then WeChat's acknowledgement).
#[derive(Clone)]
pub struct XmlReceiver {
    pub url: String,
    received: Arc<Mutex<Vec<(String, Bytes)>>>,
}

impl XmlReceiver {
    pub async fn start(script: &[&str]) -> XmlReceiver {
        let received: Arc<Mutex<Vec<(String, Bytes)>>> = Arc::default();
        let script = Arc::new(Mutex::new(
            script
                .iter()
                .map(|s| s.to_string())
                .collect::<VecDeque<_>>(),
        ));
        let r = received.clone();
        let app = Router::new().route(
            "/notify",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: Bytes| async move {
                    let content_type = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    r.lock().unwrap().push((content_type, body));
                    script
                        .lock()
                        .unwrap()
                        .pop_front()
                        .unwrap_or_else(|| xml::NOTIFY_ACK_SUCCESS.to_string())
                },
            ),
        );
        let origin = serve(app).await;
        XmlReceiver {
            url: format!("{origin}/notify"),
            received,
        }
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// Wait until at least `n` POSTs arrived (up to 10 s); `(content type, parsed body, raw)`.
    pub async fn wait_for(&self, n: usize) -> Vec<(String, Fields, Bytes)> {
        for _ in 0..1000 {
            if self.count() >= n {
                return self
                    .received
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(t, b)| (t.clone(), xml::parse(b).unwrap(), b.clone()))
                    .collect();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("expected {n} notifications, got {}", self.count());
    }
}

/// Whether a received pay notification verifies with `sign_type` under `key`.
pub fn verifies(fields: &Fields, key: &str, sign_type: SignType) -> bool {
    sign::verify(fields, key, sign_type)
}
