//! Key material generated at start-up: the merchant's API key pair and APIv2/APIv3 keys (handed to
//! the merchant through [`MerchantCredentials`]), WeChat Pay's platform certificates and WeChat
//! Pay's public key. Nothing here is ever logged; `Debug` impls redact. The merchant API
//! certificate and the `/secapi` TLS certificates are made in `v2::pki`.

use std::fmt;

use chrono::{DateTime, Datelike, Duration, Months, Timelike, Utc};
use paystream_wechatpay::v3::keys::{load_certificate_pem, MerchantPrivateKey};
use rand::distributions::{Alphanumeric, DistString};
use rand::Rng;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::RsaPrivateKey;
use serde::Serialize;

/// rcgen takes `time::OffsetDateTime`, from a crate this one does not depend on (and so cannot
/// name): build it from `date_time_ymd` and set the time of day through methods, to the second.
macro_rules! x509_time {
    ($t:expr) => {{
        let t: DateTime<Utc> = $t;
        let part = |v: u32| u8::try_from(v).map_err(|_| "date out of range".to_string());
        let bad = |_| "time of day out of range".to_string();
        rcgen::date_time_ymd(t.year(), part(t.month())?, part(t.day())?)
            .replace_hour(part(t.hour())?)
            .map_err(bad)?
            .replace_minute(part(t.minute())?)
            .map_err(bad)?
            .replace_second(part(t.second())?)
            .map_err(bad)?
    }};
}
pub(crate) use x509_time;

/// What a merchant downloads from the WeChat Pay merchant platform, for the simulated merchant.
/// `Debug` prints only the identifiers, never a key.
#[derive(Clone, Serialize, serde::Deserialize)]
pub struct MerchantCredentials {
    pub mchid: String,
    pub appid: String,
    /// Serial number of the merchant API certificate (`serial_no` in `Authorization`): the
    /// serial of [`apiv2_client_cert_pem`](Self::apiv2_client_cert_pem).
    pub merchant_serial: String,
    /// The merchant API private key (`apiclient_key.pem`), PKCS#8 PEM.
    pub merchant_private_key_pem: String,
    /// The merchant API certificate (`apiclient_cert.pem`): RSA, `CN` = mchid, issued by
    /// (the sandbox's) WeChat CA. The TLS client certificate of APIv2 `/secapi/...` calls.
    pub apiv2_client_cert_pem: String,
    /// Its private key (`apiclient_key.pem`), PKCS#8 PEM — the same key as
    /// [`merchant_private_key_pem`](Self::merchant_private_key_pem): at WeChat one certificate
    /// serves both APIs.
    pub apiv2_client_key_pem: String,
    /// The CA that issued the sandbox's HTTPS server certificate (for `localhost`, `127.0.0.1`,
    /// `::1`): what a client must trust to reach [`Sandbox::serve_secapi`](crate::Sandbox::serve_secapi).
    /// WeChat's own server certificate chains to public roots instead. Not secret.
    pub secapi_ca_pem: String,
    /// The 32-character APIv3 key (decrypts notifications and `/v3/certificates`).
    pub apiv3_key: String,
    /// The 32-character APIv2 key.
    pub apiv2_key: String,
    /// `PUB_KEY_ID_…` of the WeChat Pay public key.
    pub public_key_id: String,
    /// The WeChat Pay public key (`pub_key.pem`), SPKI PEM. Not secret.
    pub public_key_pem: String,
}

impl fmt::Debug for MerchantCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MerchantCredentials")
            .field("mchid", &self.mchid)
            .field("appid", &self.appid)
            .field("merchant_serial", &self.merchant_serial)
            .field("merchant_private_key_pem", &"<redacted>")
            .field("apiv2_client_key_pem", &"<redacted>")
            .field("apiv3_key", &"<redacted>")
            .field("apiv2_key", &"<redacted>")
            .field("public_key_id", &self.public_key_id)
            .finish_non_exhaustive()
    }
}

/// A WeChat Pay platform certificate and its private key (which only WeChat holds).
#[derive(Clone, Debug)]
pub(crate) struct PlatformCert {
    pub serial_no: String,
    pub pem: String,
    /// `MerchantPrivateKey` is simply the crate's redacting wrapper around an RSA private key.
    pub key: MerchantPrivateKey,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
}

/// The WeChat Pay public key (public-key verification mode) and its private half.
#[derive(Clone, Debug)]
pub(crate) struct WechatPublicKey {
    pub id: String,
    pub pem: String,
    pub key: MerchantPrivateKey,
}

/// A fresh RSA-2048 key. Generation only fails for invalid sizes or a broken RNG, neither of which
/// a running sandbox can recover from.
pub(crate) fn rsa_2048() -> RsaPrivateKey {
    RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("RSA-2048 key generation")
}

pub(crate) fn private_key_pem(key: &RsaPrivateKey) -> String {
    key.to_pkcs8_pem(LineEnding::LF)
        .expect("PKCS#8 encoding of a generated key")
        .to_string()
}

pub(crate) fn public_key_pem(key: &RsaPrivateKey) -> String {
    key.to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("SPKI encoding of a generated key")
}

pub(crate) fn alphanumeric(n: usize) -> String {
    Alphanumeric.sample_string(&mut rand::thread_rng(), n)
}

pub(crate) fn generate_public_key() -> WechatPublicKey {
    let key = rsa_2048();
    let digits: String = {
        let mut rng = rand::thread_rng();
        (0..32)
            .map(|_| char::from(b'0' + rng.gen_range(0..10)))
            .collect()
    };
    WechatPublicKey {
        // Real ids look like PUB_KEY_ID_0114232134912410000000000000 (digits only).
        id: format!("PUB_KEY_ID_{digits}"),
        pem: public_key_pem(&key),
        key: MerchantPrivateKey::from_rsa(key),
    }
}

/// A new self-signed platform certificate, valid from a day ago for five years, with a random
/// 20-byte serial (40 hex characters, as WeChat's are). The high bit of the serial is left random
/// on purpose: DER then pads it with `00`, which clients must not print.
pub(crate) fn generate_platform_cert(now: DateTime<Utc>) -> Result<PlatformCert, String> {
    let key = rsa_2048();
    let pkcs8 = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| format!("PKCS#8: {e}"))?;
    let key_pair = rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256)
        .map_err(|e| format!("rcgen key: {e}"))?;

    let mut serial = [0u8; 20];
    rand::thread_rng().fill(&mut serial[..]);
    if serial[0] == 0 {
        // A leading zero byte would be dropped by DER and give a 38-character serial.
        serial[0] = 1;
    }

    let mut params = rcgen::CertificateParams::default();
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CountryName, "CN");
    params.distinguished_name.push(
        rcgen::DnType::OrganizationName,
        "Tenpay.com (paystream sandbox)",
    );
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Tenpay.com sign");
    params.not_before = x509_time!(now - Duration::days(1));
    let until = now
        .checked_add_months(Months::new(60))
        .ok_or("validity end out of range")?;
    params.not_after = x509_time!(until);

    let cert = params
        .self_signed(&key_pair)
        .map_err(|e| format!("rcgen: {e}"))?;
    let pem = cert.pem();
    // Read back what we wrote, so the serial and validity we serve are those in the certificate.
    let parsed = load_certificate_pem(&pem).map_err(|e| e.to_string())?;
    Ok(PlatformCert {
        serial_no: parsed.serial_no,
        pem,
        key: MerchantPrivateKey::from_rsa(key),
        not_before: parsed.not_before,
        not_after: parsed.not_after,
    })
}
