//! A small, independent merchant client (signs with the merchant key, verifies with what it got
//! from `/v3/certificates` or the public key) and a notification receiver, both over real HTTP on
//! loopback. Deliberately written from the protocol description, not from the sandbox's code.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::Router;
use paystream_sandbox::{MerchantCredentials, PaySandboxConfig, Sandbox, SandboxConfig};
use paystream_wechatpay::v3::aead::EncryptedResource;
use paystream_wechatpay::v3::keys::{
    load_certificate_pem, load_private_key_pem, load_public_key_pem, MerchantPrivateKey,
};
use paystream_wechatpay::v3::sign::{
    authorization, check_timestamp, request_message, verify_response, SCHEMA,
};
use paystream_wechatpay::ApiV3Key;
use rsa::RsaPublicKey;
use serde_json::{json, Value};

pub const APPID: &str = "wxd678efh567hg6787";
pub const MCHID: &str = "1230000109";
/// The sandbox is mounted under a prefix, as the engine does: signatures cover it.
pub const PREFIX: &str = "/sandbox";

pub async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

pub struct Harness {
    pub sandbox: Sandbox,
    /// `http://127.0.0.1:port`, without the prefix.
    pub origin: String,
    pub merchant: Merchant,
}

/// The simulated user who pays every order.
pub const PAYER: &str = "payer";

pub async fn start() -> Harness {
    start_scaled(0.001).await
}

pub async fn start_scaled(notify_time_scale: f64) -> Harness {
    let sandbox = Sandbox::new(SandboxConfig {
        appid: APPID.to_string(),
        secret: "sandbox-secret".to_string(),
        pay: PaySandboxConfig {
            mchid: MCHID.to_string(),
            notify_time_scale,
        },
    });
    let origin =
        serve(Router::new().nest(PREFIX, paystream_sandbox::router(sandbox.clone()))).await;
    let merchant = Merchant::new(&origin, sandbox.merchant());
    // The payer opens the mini-program (`wx.login`), so WeChat knows their openid under APPID.
    sandbox.login_code(PAYER, None);
    Harness {
        sandbox,
        origin,
        merchant,
    }
}

impl Harness {
    pub async fn control(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let url = format!("{}{PREFIX}/control/wechatpay/{path}", self.origin);
        let client = reqwest::Client::new();
        let request = match method {
            "GET" => client.get(url),
            _ => client.post(url).json(&body),
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn control_ok(&self, path: &str, body: Value) -> Value {
        let (status, answer) = self.control("POST", path, body).await;
        assert_eq!(status, 200, "{path}: {answer}");
        answer
    }

    /// Order `out_trade_no` (100 fen) and return the prepay id.
    pub async fn order(&self, out_trade_no: &str, notify_url: &str) -> String {
        let answer = self
            .merchant
            .post(
                "/v3/pay/transactions/jsapi",
                &jsapi_body(out_trade_no, 100, notify_url),
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        answer.json()["prepay_id"].as_str().unwrap().to_string()
    }

    /// Order and pay; returns the transaction id.
    pub async fn paid_order(&self, out_trade_no: &str, notify_url: &str) -> String {
        self.order(out_trade_no, notify_url).await;
        let paid = self
            .control_ok("pay", json!({ "out_trade_no": out_trade_no }))
            .await;
        paid["transaction_id"].as_str().unwrap().to_string()
    }
}

pub fn jsapi_body(out_trade_no: &str, total: i64, notify_url: &str) -> Value {
    json!({
        "appid": APPID,
        "mchid": MCHID,
        "description": "Image形象店-深圳腾大-QQ公仔",
        "out_trade_no": out_trade_no,
        "notify_url": notify_url,
        "amount": { "total": total, "currency": "CNY" },
        "payer": { "openid": paystream_sandbox::openid_for(APPID, PAYER) },
    })
}

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_string()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// How to spoil a request, for the SIGN_ERROR tests.
#[derive(Default, Clone)]
pub struct Spoil {
    pub mchid: Option<String>,
    pub serial_no: Option<String>,
    pub timestamp: Option<i64>,
    /// Sign this body but send the real one.
    pub signed_body: Option<String>,
    /// Sign this path (verbatim: the prefix is not added) but request the real one.
    pub signed_path: Option<String>,
    pub key: Option<MerchantPrivateKey>,
    pub no_authorization: bool,
}

pub struct Merchant {
    origin: String,
    pub creds: MerchantCredentials,
    key: MerchantPrivateKey,
    pub apiv3: ApiV3Key,
    http: reqwest::Client,
    /// Sent as `Wechatpay-Serial`: what this merchant can verify.
    pub wechatpay_serial: Mutex<Option<String>>,
    certificates: Mutex<HashMap<String, RsaPublicKey>>,
    public_key: RsaPublicKey,
}

impl Merchant {
    pub fn new(origin: &str, creds: MerchantCredentials) -> Merchant {
        Merchant {
            origin: origin.to_string(),
            key: load_private_key_pem(&creds.merchant_private_key_pem).unwrap(),
            apiv3: ApiV3Key::new(&creds.apiv3_key).unwrap(),
            public_key: load_public_key_pem(&creds.public_key_pem).unwrap(),
            creds,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            wechatpay_serial: Mutex::new(None),
            certificates: Mutex::new(HashMap::new()),
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send("GET", path, "", Spoil::default()).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.send("POST", path, &body.to_string(), Spoil::default())
            .await
    }

    /// `path` is WeChat's (`/v3/...`); the prefix is added and signed too.
    pub async fn send(&self, method: &str, path: &str, body: &str, spoil: Spoil) -> Answer {
        let full_path = format!("{PREFIX}{path}");
        let timestamp = spoil
            .timestamp
            .unwrap_or_else(|| chrono::Utc::now().timestamp());
        let nonce = paystream_wechatpay::nonce_str();
        let signed_path = spoil.signed_path.unwrap_or(full_path.clone());
        let message = request_message(
            method,
            &signed_path,
            timestamp,
            &nonce,
            spoil.signed_body.as_deref().unwrap_or(body),
        );
        let key = spoil.key.as_ref().unwrap_or(&self.key);
        let signature = key.sign_sha256_rsa(message).unwrap();
        let auth = authorization(
            spoil.mchid.as_deref().unwrap_or(&self.creds.mchid),
            spoil
                .serial_no
                .as_deref()
                .unwrap_or(&self.creds.merchant_serial),
            &nonce,
            timestamp,
            &signature,
        );
        let url = format!("{}{full_path}", self.origin);
        let mut request = self
            .http
            .request(method.parse().unwrap(), url)
            .header("Accept", "application/json")
            .header("User-Agent", "paystream-sandbox-tests/1.0");
        if !spoil.no_authorization {
            request = request.header("Authorization", auth);
        }
        if let Some(serial) = self.wechatpay_serial.lock().unwrap().clone() {
            request = request.header("Wechatpay-Serial", serial);
        }
        if method == "POST" {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.bytes().await.unwrap().to_vec(),
        }
    }

    /// `GET /v3/certificates`, decrypt every certificate, remember them; then verify that very
    /// answer with what it contained (as the SDKs bootstrap). Returns the (serial, PEM) pairs.
    pub async fn refresh_certificates(&self) -> Result<Vec<(String, String)>, String> {
        let answer = self.get("/v3/certificates").await;
        if answer.status != 200 {
            return Err(format!("{}: {}", answer.status, answer.text()));
        }
        let mut out = Vec::new();
        for item in answer.json()["data"].as_array().ok_or("no data")? {
            let sealed: EncryptedResource =
                serde_json::from_value(item["encrypt_certificate"].clone())
                    .map_err(|e| e.to_string())?;
            assert_eq!(sealed.associated_data.as_deref(), Some("certificate"));
            assert_eq!(sealed.nonce.len(), 12);
            let pem = sealed.open_string(&self.apiv3).map_err(|e| e.to_string())?;
            let cert = load_certificate_pem(&pem).map_err(|e| e.to_string())?;
            let serial = item["serial_no"]
                .as_str()
                .ok_or("no serial_no")?
                .to_string();
            assert_eq!(
                cert.serial_no, serial,
                "serial_no must be the certificate's"
            );
            self.certificates
                .lock()
                .unwrap()
                .insert(serial.clone(), cert.public_key);
            out.push((serial, pem));
        }
        self.verify_with_known(&answer)?;
        Ok(out)
    }

    pub fn known_certificates(&self) -> usize {
        self.certificates.lock().unwrap().len()
    }

    /// Verify an answer or notification; an unknown certificate serial triggers one refresh.
    /// Returns the `Wechatpay-Serial` that signed it.
    pub async fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<String, String> {
        let answer = Answer {
            status: 200,
            headers: headers.clone(),
            body: body.to_vec(),
        };
        if let Some(serial) = answer.header("wechatpay-serial") {
            let unknown = !serial.starts_with("PUB_KEY_ID_")
                && !self.certificates.lock().unwrap().contains_key(serial);
            if unknown {
                self.refresh_certificates().await?;
            }
        }
        self.verify_with_known(&answer)
    }

    pub async fn verify_answer(&self, answer: &Answer) -> Result<String, String> {
        self.verify(&answer.headers, &answer.body).await
    }

    fn verify_with_known(&self, answer: &Answer) -> Result<String, String> {
        let get = |name: &str| {
            answer
                .header(name)
                .map(str::to_string)
                .ok_or(format!("missing {name}"))
        };
        let timestamp = get("wechatpay-timestamp")?;
        let nonce = get("wechatpay-nonce")?;
        let signature = get("wechatpay-signature")?;
        let serial = get("wechatpay-serial")?;
        if get("wechatpay-signature-type")? != SCHEMA {
            return Err("wrong signature type".into());
        }
        check_timestamp(&timestamp, chrono::Utc::now().timestamp()).map_err(|e| e.to_string())?;
        let key = if serial.starts_with("PUB_KEY_ID_") {
            if serial != self.creds.public_key_id {
                return Err(format!("unknown public key {serial}"));
            }
            self.public_key.clone()
        } else {
            self.certificates
                .lock()
                .unwrap()
                .get(&serial)
                .cloned()
                .ok_or(format!("unknown certificate {serial}"))?
        };
        if verify_response(&key, &timestamp, &nonce, &answer.body, &signature) {
            Ok(serial)
        } else {
            Err("signature does not verify".into())
        }
    }

    /// Decrypt a notification's resource after checking the envelope.
    pub fn open_notification(&self, body: &[u8], resource_type: &str) -> (Value, Value) {
        let envelope: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(envelope["resource_type"], "encrypt-resource");
        assert_eq!(envelope["resource"]["original_type"], resource_type);
        assert_eq!(envelope["resource"]["associated_data"], resource_type);
        assert_eq!(envelope["resource"]["algorithm"], "AEAD_AES_256_GCM");
        assert!(envelope["create_time"]
            .as_str()
            .unwrap()
            .ends_with("+08:00"));
        let sealed: EncryptedResource =
            serde_json::from_value(envelope["resource"].clone()).unwrap();
        let resource: Value = sealed.open_json(&self.apiv3).unwrap();
        (envelope, resource)
    }
}

/// A merchant's notification endpoint: records every POST and answers from a script (then 204).
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    received: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
}

pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Receiver {
    pub async fn start(script: &[u16]) -> Receiver {
        let received: Arc<Mutex<Vec<(HeaderMap, Bytes)>>> = Arc::default();
        let script = Arc::new(Mutex::new(
            script.iter().copied().collect::<VecDeque<u16>>(),
        ));
        let (r, s) = (received.clone(), script.clone());
        let app = Router::new().route(
            "/wechatpay/notify",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| async move {
                r.lock().unwrap().push((headers, body));
                let status = s.lock().unwrap().pop_front().unwrap_or(204);
                let status = StatusCode::from_u16(status).unwrap();
                if status.is_success() {
                    (status, String::new())
                } else {
                    (
                        status,
                        json!({ "code": "FAIL", "message": "失败" }).to_string(),
                    )
                }
            }),
        );
        let origin = serve(app).await;
        Receiver {
            url: format!("{origin}/wechatpay/notify"),
            received,
            script,
        }
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    pub fn get(&self, i: usize) -> Received {
        let (headers, body) = self.received.lock().unwrap()[i].clone();
        Received { headers, body }
    }

    /// Wait until at least `n` POSTs arrived (up to 10 s).
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        for _ in 0..1000 {
            if self.count() >= n {
                return (0..self.count()).map(|i| self.get(i)).collect();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("expected {n} notifications, got {}", self.count());
    }

    pub fn pending_script(&self) -> usize {
        self.script.lock().unwrap().len()
    }
}

/// Poll a condition for up to 5 s.
pub async fn eventually<F: AsyncFnMut() -> bool>(mut check: F) -> bool {
    for _ in 0..500 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}
