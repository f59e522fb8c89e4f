//! WeChat Pay simulator. APIv3 (below): JSAPI orders, query, close, refunds, `/v3/certificates`,
//! signed answers and encrypted, signed notifications with WeChat's retry schedule. APIv2 (XML,
//! MD5/HMAC-SHA256, `/pay/...` next to `/v3`, `/secapi/pay/refund` over mutual TLS with
//! [`Sandbox::serve_secapi`](crate::Sandbox::serve_secapi)) is documented in [`v2`]; the control
//! API below drives both.
//!
//! # WeChat's endpoints
//!
//! Mounted at `/v3/...` under whatever prefix the sandbox router is nested at; point the client's
//! API base (WeChat's `https://api.mch.weixin.qq.com`) at that prefix. Requests must carry a valid
//! `Authorization: WECHATPAY2-SHA256-RSA2048 …` signed with the merchant key from
//! [`MerchantCredentials`] over the path **as sent** (prefix included), a `User-Agent`, an
//! `Accept` that takes JSON and `Content-Type: application/json` on a body (else 400
//! `PARAM_ERROR`); every answer, errors and 204s included, is signed with a platform certificate
//! or the WeChat Pay public key — except a 401 `SIGN_ERROR`, which WeChat never signs. In `both`
//! mode (the default, WeChat's migration period) each notification is signed with either, at
//! random. A payer's openid must be one this app knows (a `wx.login`, a card or a subscription),
//! else 400 `PARAM_ERROR`.
//!
//! | Method | Path | |
//! |---|---|---|
//! | GET | `/v3/certificates` | platform certificates, AEAD-encrypted with the APIv3 key (404 in public-key mode) |
//! | POST | `/v3/pay/transactions/jsapi` | place an order → `prepay_id` |
//! | GET | `/v3/pay/transactions/out-trade-no/{no}?mchid=` | query by merchant order number |
//! | GET | `/v3/pay/transactions/id/{transaction_id}?mchid=` | query by WeChat transaction id |
//! | POST | `/v3/pay/transactions/out-trade-no/{no}/close` | close an unpaid order → 204 |
//! | POST | `/v3/refund/domestic/refunds` | request a refund (idempotent per `out_refund_no`) |
//! | GET | `/v3/refund/domestic/refunds/{out_refund_no}` | query a refund |
//! | GET | `/v3/bill/tradebill?bill_date=&bill_type=&tar_type=` | apply for a day's trade bill → `{"download_url","hash_type":"SHA1","hash_value"}` (see `bills`) |
//! | GET | `/v3/billdownload/file?token=` | the bill itself (gzip if applied for so); the answer is **not** signed, as at WeChat |
//!
//! # Control API (`/control/wechatpay/...`, unsigned JSON, for developers and tests)
//!
//! `pay`, `notify`, `trade-state` and `refunds/{out_refund_no}/settle` take an optional
//! `"channel": "wechatpay_v3" | "wechatpay_v2"` (default v3) and act on that API's books;
//! `GET transactions/{out_trade_no}?channel=wechatpay_v2` shows a v2 order (its orderquery fields,
//! `prepay_id`, `notify_url`, `sign_type`, refunds). On v2, `settle`'s CLOSED and ABNORMAL are
//! `REFUNDCLOSE` and `CHANGE`, and `pay`'s `amount_fen` is the notified `total_fee`/`cash_fee`.
//!
//! | Method | Path | Body → answer |
//! |---|---|---|
//! | GET | `merchant` | → the merchant's credentials ([`MerchantCredentials`] as JSON, **private key included**) |
//! | POST | `mode` | `{"mode":"certificates"\|"public_key"\|"both"}` → `{"mode"}` |
//! | POST | `pay` | `{"out_trade_no","amount_fen"?,"duplicates"?,"delay_ms"?,"notify"?,"wait"?}` → `{"transaction_id","notified"?}`: the user pays. `"wait": true` answers only once the merchant answered the first delivery attempt (after `delay_ms`; at most 15 s more), with that answer as `"notified": {"status","acknowledged","error"?}` (`status` null when nothing came back) — so the merchant has recorded the payment when the call returns; not with `"notify": false` (400). `"notify": false` loses the notification: the order is paid (query SUCCESS, in the bill) but nothing is ever sent (a later control `notify` still can). `amount_fen` replaces the amount recorded as paid and notified (a wrong-amount notification); `duplicates` extra identical notifications are sent concurrently; `delay_ms` delays the notification (the order is paid at once, so a query sees it first). 404 without an order, 409 if it is paid, closed or past `time_expire`. |
//! | POST | `notify` | `{"out_trade_no"}` → sends the order's `TRANSACTION.SUCCESS` notification again, byte for byte (same `id`). |
//! | POST | `trade-state` | `{"out_trade_no","trade_state":"USERPAYING"\|"PAYERROR"\|"NOTPAY"\|"CLOSED"}` → the transaction: the user is entering the password (a close answers 202 `USERPAYING`), the attempt failed, the user gave up, or WeChat closed the order. 409 once paid or closed. |
//! | POST | `faults` | `{"fail_next"?,"status"?,"code"?,"after_processing"?,"unsigned_next"?,"path_contains"?,"delay_ms"?,"hold_refunds"?,"refund_settle_ms"?,"refund_lag_ms"?,"probe_share"?,"unsigned_errors"?,"balance_fen"?}` → the fault settings. The next `fail_next` API calls answer `status` (500) with `code` (`SYSTEM_ERROR`), signed; with `after_processing` the call takes effect first and only the answer is lost. The next `unsigned_next` answers carry no signature headers. `path_contains` limits both counters to matching paths. `delay_ms` delays every API answer; `hold_refunds` keeps refunds `PROCESSING` until settled by control (refunds created while held stay so after the hold is lifted); `refund_settle_ms` (default 200) is how long a refund stays `PROCESSING` otherwise. `refund_lag_ms`: refunds within that long of the payment answer 404 `RESOURCE_NOT_EXISTS`. `probe_share` (0..=1): that share of answers and notifications carry a `WECHATPAY/SIGNTEST/` probe signature. `unsigned_errors`: every 4xx goes out unsigned. `balance_fen` (`null` = unlimited): refunds beyond the merchant's balance answer 403 `NOT_ENOUGH`. The faults apply to APIv2 calls too (see `v2`), plus two of v2's own: `v2_notify_sign_type` (`"MD5"`\|`"HMAC-SHA256"`\|`null`) signs v2 pay notifications that way instead of the order's, `v2_notify_with_sign_type` (bool) adds the `sign_type` field to them. |
//! | POST | `refunds/{out_refund_no}/settle` | `{"status":"SUCCESS"\|"CLOSED"\|"ABNORMAL"}` → the refund; notifies its `notify_url`. |
//! | POST | `rotate-certificate` | → `{"serial_no"}`: a new platform certificate; both are served, the new one signs. |
//! | GET | `transactions/{out_trade_no}` | → `{"transaction","prepay_id","notify_url","refunds","queries"}`; `queries` counts the merchant's queries of the order (v3: by `out_trade_no` and by transaction id; v2: `/pay/orderquery`) that reached the books (not those pre-empted by an injected failure) |
//! | GET/POST | `bills/settings`, POST `bills/unknown-payment`, `bills/amount`, `bills/omit`, `bills/reset` | trade bills served at once, and bills that disagree with the books: see `bills` |
//! | GET | `notifications` | → `{"deliveries":[{"channel","notification_id","event_type","url","attempts","last_status","last_error","delivered","gave_up",…}]}`, both APIs' (`channel` `wechatpay_v3`\|`wechatpay_v2`; v2 deliveries are named by the sandbox, their `event_type` is v3's name for the same event) |
//!
//! # Deliberate differences from WeChat
//!
//! * `notify_url` may be `http://` for loopback hosts (`localhost`, `127.0.0.0/8`, `::1`) so a
//!   local engine can receive notifications; WeChat requires `https://` everywhere.
//! * A refund without `notify_url` is not notified (WeChat would use the URL configured in the
//!   merchant platform, which the sandbox does not have).
//! * Refunds settle after `refund_settle_ms` instead of minutes to days.
//! * More than 50 refunds on one order answer 400 `INVALID_REQUEST` (a business-rule refusal; not
//!   `FREQUENCY_LIMITED`, which tells a client to retry later).
//! * Notification retry intervals are WeChat's multiplied by `notify_time_scale`.
//! * APIv2 and APIv3 keep separate order and refund books (WeChat has one per merchant), so one
//!   engine order number can be ordered through either API; see `v2` for its own differences.

mod api;
mod bills;
mod control;
mod ids;
mod keys;
mod middleware;
mod notify;
mod refunds;
mod signing;
mod state;
pub mod v2;
mod validate;

use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::middleware::from_fn_with_state;
use axum::routing::{any, get, post};
use axum::Router;
use paystream_wechatpay::{ApiV2Key, ApiV3Key};
use rsa::RsaPublicKey;
use serde::{Deserialize, Serialize};

pub use keys::MerchantCredentials;

/// WeChat Pay settings of the sandbox.
#[derive(Clone, Debug)]
pub struct PaySandboxConfig {
    /// The simulated merchant's `mchid`.
    pub mchid: String,
    /// Multiplies WeChat's notification retry intervals: 1.0 is WeChat's real schedule
    /// (15 s … 6 h), tests use ~0.001. Negative or non-finite values count as 1.0.
    pub notify_time_scale: f64,
}

impl Default for PaySandboxConfig {
    fn default() -> Self {
        PaySandboxConfig {
            mchid: "1900000001".to_string(),
            notify_time_scale: 1.0,
        }
    }
}

/// How WeChat lets the merchant verify its answers and notifications.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerificationMode {
    /// Platform certificates only (`/v3/certificates`).
    Certificates,
    /// WeChat Pay public key only (`PUB_KEY_ID_…`); `/v3/certificates` answers 404.
    PublicKey,
    /// The migration period: both are accepted and served.
    #[default]
    Both,
}

/// Which WeChat Pay API a control call or a delivery is about. APIv2 and APIv3 keep separate
/// books (see the module documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Channel {
    #[default]
    #[serde(rename = "wechatpay_v3")]
    V3,
    #[serde(rename = "wechatpay_v2")]
    V2,
}

/// The WeChat Pay half of the sandbox. Cheap to clone; all clones share state.
#[derive(Clone)]
pub(crate) struct Pay(Arc<PayInner>);

pub(crate) struct PayInner {
    pub mchid: String,
    pub appid: String,
    pub notify_time_scale: f64,
    pub merchant_serial: String,
    merchant_private_key_pem: String,
    pub merchant_public_key: RsaPublicKey,
    pub apiv3_key: ApiV3Key,
    apiv2_key: ApiV2Key,
    pub public_key: keys::WechatPublicKey,
    /// The merchant API certificate and the `/secapi` HTTPS port's TLS set-up.
    pub secapi: v2::pki::SecapiPki,
    /// Used for notifications only: no proxies (the receiver is usually local), no redirects
    /// (WeChat does not follow them), WeChat's 5 s answer deadline.
    pub http: reqwest::Client,
    /// A payer's openid must be one of this appid's.
    pub openids: crate::openids::KnownOpenids,
    state: Mutex<state::PayState>,
}

impl Deref for Pay {
    type Target = PayInner;
    fn deref(&self) -> &PayInner {
        &self.0
    }
}

impl Pay {
    /// Generates every key (three RSA-2048 pairs), so it takes a moment.
    pub(crate) fn new(
        appid: &str,
        config: &PaySandboxConfig,
        openids: crate::openids::KnownOpenids,
    ) -> Pay {
        let merchant = keys::rsa_2048();
        let secapi = v2::pki::generate(&config.mchid, &merchant, chrono::Utc::now())
            .expect("merchant API certificate and secapi TLS certificates");
        let platform = keys::generate_platform_cert(chrono::Utc::now())
            .expect("self-signed platform certificate");
        let apiv3 = keys::alphanumeric(32);
        let scale = config.notify_time_scale;
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(5))
            .build()
            .expect("HTTP client for notifications");
        Pay(Arc::new(PayInner {
            mchid: config.mchid.clone(),
            appid: appid.to_string(),
            notify_time_scale: if scale.is_finite() && scale >= 0.0 {
                scale
            } else {
                1.0
            },
            // The merchant API certificate's serial, as at WeChat.
            merchant_serial: secapi.client_serial.clone(),
            merchant_private_key_pem: keys::private_key_pem(&merchant),
            merchant_public_key: merchant.to_public_key(),
            apiv3_key: ApiV3Key::new(&apiv3).expect("32 ASCII characters"),
            apiv2_key: ApiV2Key::new(keys::alphanumeric(32)),
            public_key: keys::generate_public_key(),
            secapi,
            http,
            openids,
            state: Mutex::new(state::PayState::new(platform)),
        }))
    }

    /// Never held across an `.await`.
    pub(crate) fn lock(&self) -> MutexGuard<'_, state::PayState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn credentials(&self) -> MerchantCredentials {
        MerchantCredentials {
            mchid: self.mchid.clone(),
            appid: self.appid.clone(),
            merchant_serial: self.merchant_serial.clone(),
            merchant_private_key_pem: self.merchant_private_key_pem.clone(),
            apiv2_client_cert_pem: self.secapi.client_cert_pem.clone(),
            apiv2_client_key_pem: self.merchant_private_key_pem.clone(),
            secapi_ca_pem: self.secapi.server_ca_pem.clone(),
            apiv3_key: String::from_utf8_lossy(self.apiv3_key.expose_bytes()).into_owned(),
            apiv2_key: self.apiv2_key.expose().to_string(),
            public_key_id: self.public_key.id.clone(),
            public_key_pem: self.public_key.pem.clone(),
        }
    }

    pub(crate) fn set_mode(&self, mode: VerificationMode) {
        self.lock().mode = mode;
    }

    /// A notification retry interval of WeChat's schedule, scaled.
    pub(crate) fn scaled(&self, wechat_interval: Duration) -> Duration {
        // `mul_f64` would panic on overflow with an absurd scale.
        Duration::try_from_secs_f64(wechat_interval.as_secs_f64() * self.notify_time_scale)
            .unwrap_or(Duration::MAX)
    }
}

pub(crate) fn routes(pay: Pay) -> Router {
    let v3 = Router::new()
        .route("/certificates", get(api::certificates))
        .route("/pay/transactions/jsapi", post(api::jsapi))
        .route(
            "/pay/transactions/out-trade-no/{out_trade_no}",
            get(api::query_by_out_trade_no),
        )
        .route(
            "/pay/transactions/id/{transaction_id}",
            get(api::query_by_transaction_id),
        )
        .route(
            "/pay/transactions/out-trade-no/{out_trade_no}/close",
            post(api::close),
        )
        .route("/refund/domestic/refunds", post(refunds::create))
        .route(
            "/refund/domestic/refunds/{out_refund_no}",
            get(refunds::query),
        )
        .route("/bill/tradebill", get(bills::tradebill))
        .route("/billdownload/file", get(bills::download))
        // A catch-all route rather than a fallback: fallbacks of nested routers do not survive
        // being nested and merged again by the engine, and WeChat signs its 404s too.
        .route("/{*unknown}", any(api::not_found))
        .layer(from_fn_with_state(pay.clone(), middleware::guard))
        .with_state(pay.clone());
    Router::new()
        .nest("/v3", v3)
        .merge(v2::routes(pay.clone()))
        .nest("/control/wechatpay", control::routes(pay))
}
