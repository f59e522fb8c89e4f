//! Which WeChat key signs an answer or notification, and the `Wechatpay-*` headers it produces.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use paystream_wechatpay::v3::keys::MerchantPrivateKey;
use paystream_wechatpay::v3::sign::{response_message, SCHEMA};

use super::{Pay, VerificationMode};

pub(crate) const WECHATPAY_TIMESTAMP: &str = "wechatpay-timestamp";
pub(crate) const WECHATPAY_NONCE: &str = "wechatpay-nonce";
pub(crate) const WECHATPAY_SIGNATURE: &str = "wechatpay-signature";
pub(crate) const WECHATPAY_SERIAL: &str = "wechatpay-serial";
pub(crate) const WECHATPAY_SIGNATURE_TYPE: &str = "wechatpay-signature-type";

/// A signing key and the `Wechatpay-Serial` that names it (a certificate serial or a
/// `PUB_KEY_ID_…`). Cloned out of the state so no lock is held while signing.
pub(crate) struct Signer {
    pub serial: String,
    key: MerchantPrivateKey,
}

impl Pay {
    fn newest_cert_signer(&self) -> Option<Signer> {
        self.lock().newest_cert().map(|c| Signer {
            serial: c.serial_no.clone(),
            key: c.key.clone(),
        })
    }

    fn public_key_signer(&self) -> Signer {
        Signer {
            serial: self.public_key.id.clone(),
            key: self.public_key.key.clone(),
        }
    }

    /// For a notification: in the migration period (`both`) WeChat signs each one with the
    /// certificate or the public key, at random.
    pub(crate) fn notification_signer(&self) -> Option<Signer> {
        // Read apart from the match: the guard must not live while `answer_signer` locks.
        let mode = self.lock().mode;
        match mode {
            VerificationMode::Both if rand::random::<bool>() => Some(self.public_key_signer()),
            _ => self.answer_signer(None),
        }
    }

    /// For an API answer. The merchant says what it can verify with `Wechatpay-Serial`:
    /// * our `PUB_KEY_ID_…` → the public key (unless the merchant is in certificate-only mode);
    /// * a platform-certificate serial, known or not, or nothing → the newest certificate, so a
    ///   client holding only an older certificate must notice the new serial and refetch, as
    ///   after a rotation at WeChat;
    /// * in public-key mode there are no certificates: always the public key.
    pub(crate) fn answer_signer(&self, requested: Option<&str>) -> Option<Signer> {
        let mode = self.lock().mode;
        let wants_public_key = requested == Some(self.public_key.id.as_str());
        match mode {
            VerificationMode::PublicKey => Some(self.public_key_signer()),
            VerificationMode::Both if wants_public_key => Some(self.public_key_signer()),
            VerificationMode::Both | VerificationMode::Certificates => self.newest_cert_signer(),
        }
    }
}

/// The five `Wechatpay-*` headers over `body` exactly as it goes on the wire.
pub(crate) fn signature_headers(signer: &Signer, body: &[u8]) -> Result<HeaderMap, String> {
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let nonce = paystream_wechatpay::nonce_str();
    let signature = signer
        .key
        .sign_sha256_rsa(response_message(&timestamp, &nonce, body))
        .map_err(|e| e.to_string())?;
    let mut headers = HeaderMap::new();
    for (name, value) in [
        (WECHATPAY_TIMESTAMP, timestamp.as_str()),
        (WECHATPAY_NONCE, nonce.as_str()),
        (WECHATPAY_SIGNATURE, signature.as_str()),
        (WECHATPAY_SERIAL, signer.serial.as_str()),
        (WECHATPAY_SIGNATURE_TYPE, SCHEMA),
    ] {
        let value = HeaderValue::from_str(value).map_err(|e| e.to_string())?;
        headers.insert(HeaderName::from_static(name), value);
    }
    Ok(headers)
}

/// The same headers with the signature replaced by a `WECHATPAY/SIGNTEST/` probe (random bytes
/// after the prefix), which no key verifies.
pub(crate) fn probe(mut headers: HeaderMap) -> HeaderMap {
    use base64::Engine as _;
    let junk: [u8; 32] = rand::random();
    let value = format!(
        "WECHATPAY/SIGNTEST/{}",
        base64::engine::general_purpose::STANDARD.encode(junk)
    );
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(HeaderName::from_static(WECHATPAY_SIGNATURE), value);
    }
    headers
}
