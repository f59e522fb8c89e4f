//! The WeChat Pay APIv3 client: signs every request with the merchant key, verifies every answer
//! (an unsigned 2xx is forged), retries `SYSTEM_ERROR`/5xx/timeouts with the same parameters,
//! and implements the engine's [`PayGateway`](paystream_engine::payments::gateway::PayGateway).

mod bill;
mod gateway;
mod v2;
mod verifier;

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use rsa::RsaPublicKey;
use serde::Deserialize;

use crate::v3::aead::EncryptedResource;
use crate::v3::keys::{load_certificate_pem, MerchantPrivateKey};
use crate::v3::sign;
use crate::ApiV3Key;
pub use bill::read_trade_bill;
use paystream_engine::payments::gateway::GatewayError;
pub use v2::{ClientCertificate, V2Client, V2Config, V2ConfigError};
pub use verifier::{Signed, Verifier, VerifyError};

/// Everything the client needs to speak for one merchant.
pub struct V3Config {
    /// `https://api.mch.weixin.qq.com`, or the sandbox.
    pub api_base: String,
    pub mchid: String,
    pub appid: String,
    /// Serial of the merchant API certificate (upper hex).
    pub merchant_serial: String,
    pub merchant_key: MerchantPrivateKey,
    pub apiv3_key: ApiV3Key,
    /// Public-key mode: `PUB_KEY_ID_…` and the key.
    pub public_key: Option<(String, RsaPublicKey)>,
    /// Minimum time between certificate downloads triggered by an unknown serial.
    pub certificate_refetch_interval: Duration,
    /// Where WeChat Pay sends this merchant's payment and refund notifications (https, no query).
    pub notify_url: String,
    /// How long after a payment a refund answered "no such order" is WeChat's refund system
    /// lagging (retried) rather than a final refusal.
    pub refund_lag_grace: Duration,
}

impl V3Config {
    /// How long after a payment WeChat's refund system may not know it, by default.
    pub const DEFAULT_REFUND_LAG_GRACE: Duration = Duration::from_secs(600);
}

pub struct V3Client {
    http: reqwest::Client,
    config: V3Config,
    verifier: Verifier,
}

/// A verified answer from WeChat Pay.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

impl Answer {
    /// The `{"code","message"}` of an error answer.
    pub fn error(&self) -> (String, String) {
        serde_json::from_slice::<ErrorBody>(&self.body)
            .map(|e| (e.code, e.message))
            .unwrap_or_else(|_| (format!("HTTP_{}", self.status.as_u16()), String::new()))
    }

    /// Whether the body is WeChat's `{"code","message"}` with a code.
    fn is_wechat_error(&self) -> bool {
        serde_json::from_slice::<ErrorBody>(&self.body).is_ok_and(|e| !e.code.is_empty())
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, GatewayError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| GatewayError::Unavailable(format!("unreadable WeChat Pay answer: {e}")))
    }

    pub fn rejected(&self) -> GatewayError {
        let (code, message) = self.error();
        GatewayError::Rejected { code, message }
    }
}

/// How a call WeChat may answer "try again" to is retried, the same for both APIs: three more
/// times, from 100 ms to 2 s apart, with jitter.
fn retry_policy() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .with_max_times(3)
        .with_jitter()
}

/// Transient: worth the same call again (WeChat says so for SYSTEM_ERROR and 5xx).
fn retryable(error: &GatewayError) -> bool {
    matches!(error, GatewayError::Unavailable(_))
}

#[derive(Deserialize)]
struct CertificateList {
    data: Vec<CertificateEntry>,
}

#[derive(Deserialize)]
struct CertificateEntry {
    encrypt_certificate: EncryptedResource,
}

/// A bill download may take longer than a call (a large merchant's day is tens of MiB).
const BILL_DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether an answer carries any of WeChat's signature headers (then it must verify).
fn is_signed(headers: &HeaderMap) -> bool {
    [
        "Wechatpay-Signature",
        "Wechatpay-Serial",
        "Wechatpay-Timestamp",
    ]
    .iter()
    .any(|name| headers.contains_key(*name))
}

impl V3Client {
    pub fn new(config: V3Config) -> V3Client {
        let http = reqwest::Client::builder()
            // WeChat answers well within this; a hung connection must not hold a request.
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(3))
            .user_agent(concat!("paystream/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("HTTP client");
        let verifier = Verifier::new(
            config.public_key.clone(),
            config.certificate_refetch_interval,
        );
        V3Client {
            http,
            config,
            verifier,
        }
    }

    pub fn config(&self) -> &V3Config {
        &self.config
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// One signed call, retried with the same parameters while the outcome is transient.
    pub async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, GatewayError> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let attempt = || self.call_once(method.clone(), path_and_query, &body);
        attempt
            .retry(retry_policy())
            .when(retryable)
            .notify(|e, wait| tracing::warn!(error = %e, ?wait, "WeChat Pay call failed; retrying with the same parameters"))
            .await
    }

    async fn call_once(
        &self,
        method: Method,
        path_and_query: &str,
        body: &str,
    ) -> Result<Answer, GatewayError> {
        let (headers, answer) = self.send_signed(method, path_and_query, body, true).await?;
        let status = answer.status;
        let unavailable = |answer: &Answer| {
            let (code, message) = answer.error();
            GatewayError::Unavailable(format!("WeChat Pay {status}: {code} {message}"))
        };
        // 429 (WeChat's rate limit) and 5xx (WeChat's or a proxy's trouble, often unsigned)
        // change nothing whoever sent them: the same parameters go again, a little later.
        // Nothing in them is believed, so there is nothing to verify.
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(unavailable(&answer));
        }
        if status.is_success() || is_signed(&headers) {
            // A 2xx is believed only signed; a signed error must verify too (a forged or
            // probe signature on an error is as suspect as on a success).
            self.verify_answer(&headers, &answer, path_and_query)
                .await?;
        } else if answer.is_wechat_error() {
            // WeChat leaves some errors unsigned (a 401 SIGN_ERROR never is signed, others vary),
            // and the official SDKs read `code` of any error without a signature. What we
            // do with one is at most "not done" (ORDER_CLOSED, NOT_FOUND), never "paid".
            tracing::debug!(%status, code = %answer.error().0, "WeChat Pay error answer without a signature; read as WeChat's");
        } else {
            // Not WeChat's error shape (a proxy's page, say): nothing in it is WeChat's word.
            return Err(GatewayError::Unavailable(format!(
                "WeChat Pay {status} without a signature and without WeChat's error body"
            )));
        }
        if !status.is_success()
            && matches!(answer.error().0.as_str(), "SYSTEM_ERROR" | "SYSTEMERROR")
        {
            return Err(unavailable(&answer));
        }
        Ok(answer)
    }

    /// Sends one request signed with the merchant key; the answer is returned unverified.
    /// `ask_serial` sends `Wechatpay-Serial` (not on the certificate download itself, which is
    /// how we learn the serials).
    async fn send_signed(
        &self,
        method: Method,
        path_and_query: &str,
        body: &str,
        ask_serial: bool,
    ) -> Result<(HeaderMap, Answer), GatewayError> {
        let url = format!(
            "{}{}",
            self.config.api_base.trim_end_matches('/'),
            path_and_query
        );
        self.send_signed_url(method, &url, body, ask_serial, None)
            .await
    }

    /// [`Self::send_signed`] to a whole URL (a bill's `download_url`), with its own time limit
    /// when the client's 10 s are too short (a large bill).
    async fn send_signed_url(
        &self,
        method: Method,
        url: &str,
        body: &str,
        ask_serial: bool,
        timeout: Option<Duration>,
    ) -> Result<(HeaderMap, Answer), GatewayError> {
        // Sign the path as it goes on the request line, including any prefix of the base URL.
        let signed_path = reqwest::Url::parse(url)
            .map(|u| match u.query() {
                Some(q) => format!("{}?{q}", u.path()),
                None => u.path().to_string(),
            })
            .map_err(|e| GatewayError::Unavailable(format!("bad WeChat Pay URL: {e}")))?;
        let timestamp = chrono::Utc::now().timestamp();
        let nonce = crate::nonce_str();
        let message = sign::request_message(method.as_str(), &signed_path, timestamp, &nonce, body);
        let signature = self
            .config
            .merchant_key
            .sign_sha256_rsa(message)
            .map_err(|e| GatewayError::Unavailable(format!("cannot sign: {e}")))?;
        let mut request = self
            .http
            .request(method, url)
            .header(ACCEPT, "application/json")
            .header(
                AUTHORIZATION,
                sign::authorization(
                    &self.config.mchid,
                    &self.config.merchant_serial,
                    &nonce,
                    timestamp,
                    &signature,
                ),
            );
        if let Some(serial) = self.verifier.preferred_serial().filter(|_| ask_serial) {
            request = request.header("Wechatpay-Serial", serial);
        }
        if !body.is_empty() {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let response = request
            .send()
            .await
            .map_err(|e| GatewayError::Unavailable(e.without_url().to_string()))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| GatewayError::Unavailable(e.without_url().to_string()))?
            .to_vec();
        Ok((headers, Answer { status, body }))
    }

    /// Downloads a bill from the `download_url` `/v3/bill/tradebill` gave: a GET signed with the
    /// merchant key over the URL's path and query, like any call, but whose answer WeChat does
    /// not sign (the bill is checked by its SHA1 instead). Only 200 is a bill. The URL must be
    /// on the API's own host: our signed request goes nowhere else.
    pub(crate) async fn download(&self, download_url: &str) -> Result<Vec<u8>, GatewayError> {
        let url = reqwest::Url::parse(download_url)
            .map_err(|_| GatewayError::Unverified("unreadable bill download_url".into()))?;
        let base = reqwest::Url::parse(&self.config.api_base)
            .map_err(|e| GatewayError::Unavailable(format!("bad WeChat Pay URL: {e}")))?;
        if url.origin() != base.origin() {
            return Err(GatewayError::Unverified(format!(
                "bill download_url is not on {}",
                base.origin().ascii_serialization()
            )));
        }
        // (error, worth the same download again now)
        let attempt = || async {
            let (_, answer) = self
                .send_signed_url(
                    Method::GET,
                    url.as_str(),
                    "",
                    false,
                    Some(BILL_DOWNLOAD_TIMEOUT),
                )
                .await
                .map_err(|e| (e, true))?;
            let status = answer.status;
            if status == StatusCode::OK {
                return Ok(answer.body);
            }
            let (code, message) = answer.error();
            let transient = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
            Err(match code.as_str() {
                // The merchant may not have this bill: asking again changes nothing.
                "NO_AUTH" => (GatewayError::Rejected { code, message }, false),
                // 5xx and 429 pass; a 400 INVALID_REQUEST is an expired URL: the next
                // trade_bill asks for a fresh one.
                _ => (
                    GatewayError::Unavailable(format!(
                        "bill download answered {status}: {code} {message}"
                    )),
                    transient,
                ),
            })
        };
        attempt
            .retry(retry_policy())
            .when(|(_, transient)| *transient)
            .notify(|(e, _), wait| tracing::warn!(error = %e, ?wait, "WeChat Pay bill download failed; retrying"))
            .await
            .map_err(|(e, _)| e)
    }

    async fn verify_answer(
        &self,
        headers: &HeaderMap,
        answer: &Answer,
        path: &str,
    ) -> Result<(), GatewayError> {
        let signed = Signed {
            timestamp: header(headers, "Wechatpay-Timestamp"),
            nonce: header(headers, "Wechatpay-Nonce"),
            signature: header(headers, "Wechatpay-Signature"),
            serial: header(headers, "Wechatpay-Serial"),
            signature_type: header(headers, "Wechatpay-Signature-Type"),
            body: &answer.body,
        };
        let may_refetch = !path.starts_with("/v3/certificates");
        match self.verify_signed(&signed, may_refetch).await {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::error!(error = %e, status = %answer.status, "WeChat Pay answer failed verification; treated as not received");
                Err(GatewayError::Unverified(e.to_string()))
            }
        }
    }

    /// Verifies a signed answer or notification — once. Only a message that passes every cheap
    /// check but names a serial we do not know triggers a (rate-limited) certificate download,
    /// after which it is verified a second time.
    pub async fn verify_signed(
        &self,
        signed: &Signed<'_>,
        may_refetch: bool,
    ) -> Result<(), VerifyError> {
        match self.verifier.verify(signed) {
            Err(VerifyError::UnknownSerial(_)) if may_refetch => {
                self.refresh_certificates_if_allowed().await;
                self.verifier.verify(signed)
            }
            outcome => outcome,
        }
    }

    /// Downloads the platform certificates unless one was fetched very recently.
    pub async fn refresh_certificates_if_allowed(&self) {
        if self.verifier.may_refetch() {
            if let Err(e) = self.fetch_certificates().await {
                tracing::warn!(error = %e, "could not download WeChat Pay platform certificates");
            }
        }
    }

    /// `GET /v3/certificates`: decrypts each certificate with the APIv3 key, then checks the
    /// answer's own signature with the certificate it names (the official SDKs' bootstrap).
    pub async fn fetch_certificates(&self) -> Result<usize, GatewayError> {
        let (headers, answer) = self
            .send_signed(Method::GET, "/v3/certificates", "", false)
            .await?;
        let (status, body) = (answer.status, answer.body);
        if status == StatusCode::NOT_FOUND && self.verifier.has_public_key() {
            // Public-key merchants have no platform certificates.
            return Ok(0);
        }
        if !status.is_success() {
            return Err(GatewayError::Unavailable(format!(
                "/v3/certificates answered {status}"
            )));
        }
        let list: CertificateList = serde_json::from_slice(&body)
            .map_err(|e| GatewayError::Unverified(format!("unreadable certificate list: {e}")))?;
        let mut certificates = Vec::new();
        for entry in list.data {
            let pem = entry
                .encrypt_certificate
                .open_string(&self.config.apiv3_key)
                .map_err(|_| {
                    GatewayError::Unverified(
                        "a certificate did not decrypt with the APIv3 key".into(),
                    )
                })?;
            certificates.push(
                load_certificate_pem(&pem)
                    .map_err(|e| GatewayError::Unverified(format!("bad certificate: {e}")))?,
            );
        }
        let candidate = Verifier::new(self.config.public_key.clone(), Duration::ZERO);
        candidate.store_certificates(certificates.clone());
        candidate
            .verify(&Signed {
                timestamp: header(&headers, "Wechatpay-Timestamp"),
                nonce: header(&headers, "Wechatpay-Nonce"),
                signature: header(&headers, "Wechatpay-Signature"),
                serial: header(&headers, "Wechatpay-Serial"),
                signature_type: header(&headers, "Wechatpay-Signature-Type"),
                body: &body,
            })
            .map_err(|e| GatewayError::Unverified(format!("certificate list: {e}")))?;
        let count = certificates.len();
        self.verifier.store_certificates(certificates);
        tracing::info!(count, "WeChat Pay platform certificates loaded");
        Ok(count)
    }
}
