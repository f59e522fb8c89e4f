//! The WeChat Pay APIv2 client: XML requests signed with the APIv2 key (MD5 or HMAC-SHA256),
//! every answer read through [`crate::v2::answer`] (a SUCCESS must verify with the request's sign
//! type; a FAIL without `sign` is understood), `SYSTEMERROR` / `BIZERR_NEED_RETRY` / network
//! trouble retried with the very same request, and `/secapi/...` calls made with the merchant's
//! API certificate (mutual TLS). Implements the engine's
//! [`PayGateway`](paystream_engine::payments::gateway::PayGateway) in [`gateway`].

mod bill;
mod gateway;
mod notice;

use std::collections::BTreeMap;
use std::time::Duration;

use backon::Retryable;
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use paystream_engine::payments::gateway::GatewayError;
use reqwest::header::CONTENT_TYPE;

use crate::v2::answer::{self, V2Answer};
use crate::v2::request::signed_xml;
use crate::v2::sign::SignType;
use crate::ApiV2Key;

/// The merchant API certificate and its key (`apiclient_cert.pem`, `apiclient_key.pem`), which
/// WeChat requires on `/secapi/...` calls.
pub struct ClientCertificate {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Everything the APIv2 client needs to speak for one merchant.
pub struct V2Config {
    /// `https://api.mch.weixin.qq.com`, or the sandbox.
    pub api_base: String,
    /// Where `/secapi/...` goes: WeChat's API host too; the sandbox serves it on its own TLS port.
    pub secapi_base: Option<String>,
    pub mchid: String,
    pub appid: String,
    pub api_key: ApiV2Key,
    pub sign_type: SignType,
    /// Without it WeChat refuses `/secapi/pay/refund`: refunds wait (in flight, retried) until
    /// it is configured.
    pub client_certificate: Option<ClientCertificate>,
    /// A CA to trust besides the system's (the sandbox's own TLS certificate; never needed for
    /// WeChat, whose certificate chains to public roots).
    pub extra_root_ca_pem: Option<String>,
    /// Where WeChat sends pay notifies (`/notify/wechatpay/v2`).
    pub notify_url: String,
    /// Where WeChat sends refund notifies (`/notify/wechatpay/v2/refund`).
    pub refund_notify_url: String,
    /// How long after a payment a refund answered "no such order" is WeChat's refund system
    /// lagging (retried later) rather than a final refusal.
    pub refund_lag_grace: Duration,
}

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum V2ConfigError {
    #[error("the merchant API certificate or key is unusable: {0}")]
    ClientCertificate(String),
    #[error("the extra root certificate is unusable: {0}")]
    RootCertificate(String),
}

pub struct V2Client {
    http: reqwest::Client,
    /// With the merchant certificate, when there is one.
    secapi: Option<reqwest::Client>,
    config: V2Config,
}

/// Which host a call goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Host {
    Api,
    /// Mutual TLS with the merchant API certificate.
    Secapi,
}

fn http_builder(config: &V2Config) -> Result<reqwest::ClientBuilder, V2ConfigError> {
    let mut builder = reqwest::Client::builder()
        // WeChat answers well within this; a hung connection must not hold a request.
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(3))
        .user_agent(concat!("paystream/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = &config.extra_root_ca_pem {
        let ca = reqwest::Certificate::from_pem(pem.as_bytes())
            .map_err(|e| V2ConfigError::RootCertificate(e.without_url().to_string()))?;
        builder = builder.add_root_certificate(ca);
    }
    Ok(builder)
}

/// How an attempt failed: worth the same request again now, or not.
#[derive(Debug)]
enum Failure {
    /// WeChat's `SYSTEMERROR` / `BIZERR_NEED_RETRY`, its outages, the network.
    Transient(GatewayError),
    /// Anything else, including a request WeChat did not take (sending it again at once would
    /// be refused the same way).
    Final(GatewayError),
}

impl Failure {
    fn into_error(self) -> GatewayError {
        match self {
            Failure::Transient(e) | Failure::Final(e) => e,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Transient(e) | Failure::Final(e) => e.fmt(f),
        }
    }
}

/// `yyyyMMddHHmmss` in Beijing time (`time_end`), as UTC.
pub(crate) fn beijing_compact(text: &str) -> Option<DateTime<Utc>> {
    beijing(text, "%Y%m%d%H%M%S")
}

/// `yyyy-MM-dd HH:mm:ss` in Beijing time (refund `success_time`), as UTC.
pub(crate) fn beijing_dashed(text: &str) -> Option<DateTime<Utc>> {
    beijing(text, "%Y-%m-%d %H:%M:%S")
}

fn beijing(text: &str, format: &str) -> Option<DateTime<Utc>> {
    let local = NaiveDateTime::parse_from_str(text, format).ok()?;
    Some(
        crate::v2::request::beijing()
            .from_local_datetime(&local)
            .single()?
            .to_utc(),
    )
}

impl V2Client {
    pub fn new(config: V2Config) -> Result<V2Client, V2ConfigError> {
        let http = http_builder(&config)?.build().expect("HTTP client");
        let secapi = match &config.client_certificate {
            Some(certificate) => {
                // reqwest (rustls) takes the key and the certificate in one PEM buffer.
                let pem = format!("{}\n{}", certificate.key_pem, certificate.cert_pem);
                let identity = reqwest::Identity::from_pem(pem.as_bytes())
                    .map_err(|e| V2ConfigError::ClientCertificate(e.without_url().to_string()))?;
                Some(
                    http_builder(&config)?
                        .identity(identity)
                        .build()
                        .map_err(|e| {
                            V2ConfigError::ClientCertificate(e.without_url().to_string())
                        })?,
                )
            }
            None => None,
        };
        Ok(V2Client {
            http,
            secapi,
            config,
        })
    }

    pub fn config(&self) -> &V2Config {
        &self.config
    }

    /// The common fields of every call: appid, mch_id and a fresh nonce.
    fn fields(&self, pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut fields: BTreeMap<String, String> = pairs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        fields.insert("appid".into(), self.config.appid.clone());
        fields.insert("mch_id".into(), self.config.mchid.clone());
        fields.insert("nonce_str".into(), crate::nonce_str());
        fields
    }

    /// Signs `fields` once and sends that very body until the outcome is no longer transient:
    /// WeChat asks for `SYSTEMERROR` and `BIZERR_NEED_RETRY` to be retried with the same
    /// parameters (the same out_trade_no / out_refund_no make a repeat harmless).
    async fn call(
        &self,
        host: Host,
        path: &str,
        fields: BTreeMap<String, String>,
    ) -> Result<V2Answer, GatewayError> {
        let body = signed_xml(fields, self.config.api_key.expose(), self.config.sign_type)
            .map_err(|e| GatewayError::Unavailable(format!("cannot build the request: {e}")))?;
        let attempt = || self.call_once(host, path, &body);
        attempt
            .retry(super::retry_policy())
            .when(|f| matches!(f, Failure::Transient(_)))
            .notify(|e, wait| tracing::warn!(error = %e, ?wait, path, "WeChat Pay v2 call failed; retrying with the same request"))
            .await
            .map_err(Failure::into_error)
    }

    async fn call_once(&self, host: Host, path: &str, body: &str) -> Result<V2Answer, Failure> {
        let unavailable = |e: reqwest::Error| {
            Failure::Transient(GatewayError::Unavailable(e.without_url().to_string()))
        };
        let (client, base) = match host {
            Host::Api => (&self.http, &self.config.api_base),
            // Without the merchant certificate WeChat refuses the call (an HTTP 400 page, read as
            // "outcome unknown"): the refund stays in flight and goes through, with the same
            // out_refund_no, once the certificate is configured — it is never declared failed
            // for our own missing configuration.
            Host::Secapi => (
                self.secapi.as_ref().unwrap_or(&self.http),
                self.config
                    .secapi_base
                    .as_ref()
                    .unwrap_or(&self.config.api_base),
            ),
        };
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let response = client
            .post(&url)
            .header(CONTENT_TYPE, "text/xml; charset=utf-8")
            .body(body.to_string())
            .send()
            .await
            .map_err(unavailable)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(unavailable)?;
        if !status.is_success() {
            // APIv2 answers 200 whatever the outcome: anything else is a proxy's or an outage.
            return Err(Failure::Transient(GatewayError::Unavailable(format!(
                "WeChat Pay v2 {path} answered HTTP {status}"
            ))));
        }
        let answer = answer::read(
            &bytes,
            self.config.api_key.expose(),
            self.config.sign_type,
        )
        .map_err(|e| {
            tracing::error!(error = %e, path, "WeChat Pay v2 answer not believed; treated as not received");
            Failure::Final(GatewayError::Unverified(e.to_string()))
        })?;
        match &answer {
            refused @ V2Answer::Refused {
                err_code,
                err_code_des,
                ..
            } if refused.worth_retrying() => Err(Failure::Transient(GatewayError::Unavailable(
                format!("{err_code}: {err_code_des}"),
            ))),
            V2Answer::NotTaken { return_msg } => {
                // Unsigned, so it proves nothing happened — nor that nothing will: the outcome
                // stays unknown and the caller's own back-off decides (a refund is asked about
                // again with the same out_refund_no, never declared failed on this).
                tracing::error!(%return_msg, path, "WeChat Pay v2 did not take the request");
                Err(Failure::Final(GatewayError::Unavailable(format!(
                    "WeChat Pay v2 did not take the request: {return_msg}"
                ))))
            }
            _ => Ok(answer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beijing_times_read_as_utc() {
        let t = beijing_compact("20261202003005").unwrap();
        assert_eq!(t, Utc.with_ymd_and_hms(2026, 12, 1, 16, 30, 5).unwrap());
        let t = beijing_dashed("2018-11-19 16:24:13").unwrap();
        assert_eq!(t, Utc.with_ymd_and_hms(2018, 11, 19, 8, 24, 13).unwrap());
        assert!(beijing_compact("2026-12-02").is_none());
        assert!(beijing_dashed("").is_none());
    }
}
