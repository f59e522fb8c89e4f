//! Loading RSA keys and X.509 certificates from PEM.
//!
//! * Merchant private key (`apiclient_key.pem`): PKCS#8 (`PRIVATE KEY`) or
//!   PKCS#1 (`RSA PRIVATE KEY`). Encrypted PKCS#8 is refused.
//! * WeChat Pay public key (`pub_key.pem`, identified by `PUB_KEY_ID_…`):
//!   SPKI (`PUBLIC KEY`); PKCS#1 (`RSA PUBLIC KEY`) is accepted too.
//! * Certificates (merchant `apiclient_cert.pem`, or platform certificates
//!   decrypted from `/v3/certificates`): the RSA public key, the serial number
//!   as WeChat spells it, and the validity window.
//!
//! Certificate chains are **not** verified: platform certificates reach us
//! inside an AEAD envelope sealed with the APIv3 key, which is what the
//! official SDKs rely on too.

use std::fmt;

use chrono::{DateTime, Utc};
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};

use crate::error::{Error, Result};

/// The merchant's API private key.
///
/// Wrapped because `RsaPrivateKey`'s own `Debug` prints the private exponent
/// and primes; this prints only the modulus size. The inner key zeroizes
/// itself on drop.
#[derive(Clone)]
pub struct MerchantPrivateKey(RsaPrivateKey);

impl MerchantPrivateKey {
    /// Load from PEM: PKCS#8 (`-----BEGIN PRIVATE KEY-----`) or PKCS#1
    /// (`-----BEGIN RSA PRIVATE KEY-----`). Surrounding whitespace and CRLF
    /// line ends are tolerated.
    pub fn from_pem(pem: &str) -> Result<Self> {
        let pem = pem.trim();
        let label = pem_label(pem).ok_or_else(|| Error::PrivateKey("not PEM".into()))?;
        let key = match label {
            "PRIVATE KEY" => RsaPrivateKey::from_pkcs8_pem(pem)
                .map_err(|e| Error::PrivateKey(format!("PKCS#8: {e}")))?,
            "RSA PRIVATE KEY" => RsaPrivateKey::from_pkcs1_pem(pem)
                .map_err(|e| Error::PrivateKey(format!("PKCS#1: {e}")))?,
            "ENCRYPTED PRIVATE KEY" => {
                return Err(Error::PrivateKey(
                    "encrypted private keys are not supported; decrypt it first".into(),
                ))
            }
            other => return Err(Error::PrivateKey(format!("unexpected PEM label {other:?}"))),
        };
        Ok(Self(key))
    }

    /// Wrap an existing key (e.g. one generated in tests or by the simulator).
    pub fn from_rsa(key: RsaPrivateKey) -> Self {
        Self(key)
    }

    /// The inner key. Named `expose` so every use is easy to audit.
    pub fn expose_rsa(&self) -> &RsaPrivateKey {
        &self.0
    }

    /// The matching public key.
    pub fn public_key(&self) -> RsaPublicKey {
        self.0.to_public_key()
    }

    /// Modulus size in bits (WeChat requires 2048).
    pub fn bits(&self) -> usize {
        self.0.size() * 8
    }

    /// `SHA256withRSA` (PKCS#1 v1.5) signature, base64 — see
    /// [`crate::v3::sign::sign_sha256_rsa`].
    pub fn sign_sha256_rsa(&self, message: impl AsRef<[u8]>) -> Result<String> {
        crate::v3::sign::sign_sha256_rsa(&self.0, message)
    }
}

impl fmt::Debug for MerchantPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MerchantPrivateKey(RSA-{}, <redacted>)", self.bits())
    }
}

/// Load a merchant private key from PEM (PKCS#8 or PKCS#1).
pub fn load_private_key_pem(pem: &str) -> Result<MerchantPrivateKey> {
    MerchantPrivateKey::from_pem(pem)
}

/// Load an RSA public key from PEM: SPKI (`PUBLIC KEY`, the format of
/// WeChat Pay's `pub_key.pem`) or PKCS#1 (`RSA PUBLIC KEY`).
pub fn load_public_key_pem(pem: &str) -> Result<RsaPublicKey> {
    let pem = pem.trim();
    match pem_label(pem) {
        Some("PUBLIC KEY") => {
            RsaPublicKey::from_public_key_pem(pem).map_err(|e| Error::PublicKey(e.to_string()))
        }
        Some("RSA PUBLIC KEY") => {
            RsaPublicKey::from_pkcs1_pem(pem).map_err(|e| Error::PublicKey(e.to_string()))
        }
        Some("CERTIFICATE") => Err(Error::PublicKey(
            "this is a certificate; use load_certificate_pem".into(),
        )),
        Some(other) => Err(Error::PublicKey(format!("unexpected PEM label {other:?}"))),
        None => Err(Error::PublicKey("not PEM".into())),
    }
}

/// The parts of an X.509 certificate that WeChat Pay needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// The subject's RSA public key.
    pub public_key: RsaPublicKey,
    /// Serial number as upper-case hex, e.g.
    /// `5157F09EFDC096DE15EBE81A47057A7232F1B8E1`. See [`serial_hex`].
    pub serial_no: String,
    /// Start of validity.
    pub not_before: DateTime<Utc>,
    /// End of validity.
    pub not_after: DateTime<Utc>,
}

impl Certificate {
    /// Whether `now` lies within `[not_before, not_after]` (inclusive, as
    /// X.509 defines it).
    pub fn is_valid_at(&self, now: DateTime<Utc>) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

/// Format a DER INTEGER serial as WeChat does: upper hex of the magnitude
/// bytes, i.e. DER's sign-padding `00` bytes removed but a leading `0`
/// **nibble** kept (`0A1B…`, not `A1B…`). This is what wechatpay-go does
/// (`%X` of `SerialNumber.Bytes()`, after its PR #46 fixed dropped leading
/// zeros) and what OpenSSL prints; Java's `BigInteger.toString(16)` would
/// drop the nibble.
pub fn serial_hex(raw_serial: &[u8]) -> String {
    let first = raw_serial
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(raw_serial.len());
    let magnitude = &raw_serial[first..];
    if magnitude.is_empty() {
        return "00".to_owned();
    }
    hex::encode_upper(magnitude)
}

/// Parse a PEM X.509 certificate with an RSA key.
pub fn load_certificate_pem(pem: &str) -> Result<Certificate> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.trim().as_bytes())
        .map_err(|e| Error::Certificate(format!("PEM: {e}")))?;
    if block.label != "CERTIFICATE" {
        return Err(Error::Certificate(format!(
            "unexpected PEM label {:?}",
            block.label
        )));
    }
    let cert = block
        .parse_x509()
        .map_err(|e| Error::Certificate(format!("X.509: {e}")))?;
    let public_key = RsaPublicKey::from_public_key_der(cert.public_key().raw)
        .map_err(|e| Error::Certificate(format!("not an RSA key: {e}")))?;
    let ts = |t: &x509_parser::time::ASN1Time| {
        DateTime::<Utc>::from_timestamp(t.timestamp(), 0)
            .ok_or_else(|| Error::Certificate("validity out of range".into()))
    };
    let validity = cert.validity();
    Ok(Certificate {
        public_key,
        serial_no: serial_hex(cert.tbs_certificate.raw_serial()),
        not_before: ts(&validity.not_before)?,
        not_after: ts(&validity.not_after)?,
    })
}

/// Prefix of a WeChat Pay public-key id (`Wechatpay-Serial` in public-key
/// mode), as opposed to a platform-certificate serial in hex.
pub const PUB_KEY_ID_PREFIX: &str = "PUB_KEY_ID_";

/// Whether a `Wechatpay-Serial` value names a WeChat Pay public key
/// (`PUB_KEY_ID_…`) rather than a platform certificate.
pub fn is_public_key_id(serial: &str) -> bool {
    serial.starts_with(PUB_KEY_ID_PREFIX)
}

/// The label of the first `-----BEGIN <label>-----` line, if any.
fn pem_label(pem: &str) -> Option<&str> {
    let start = pem.find("-----BEGIN ")? + "-----BEGIN ".len();
    let rest = &pem[start..];
    let end = rest.find("-----")?;
    Some(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_formatting() {
        assert_eq!(serial_hex(&[0x00, 0xD7, 0xCE, 0x59]), "D7CE59");
        assert_eq!(serial_hex(&[0x0A, 0x1B]), "0A1B");
        assert_eq!(serial_hex(&[0x00, 0x00, 0x01]), "01");
        assert_eq!(serial_hex(&[0x00]), "00");
        assert_eq!(serial_hex(&[]), "00");
    }

    #[test]
    fn public_key_id_detection() {
        assert!(is_public_key_id("PUB_KEY_ID_0114232134912410000000000000"));
        assert!(!is_public_key_id(
            "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
        ));
    }

    #[test]
    fn pem_label_detection() {
        assert_eq!(
            pem_label("-----BEGIN RSA PRIVATE KEY-----\nAAA\n-----END RSA PRIVATE KEY-----"),
            Some("RSA PRIVATE KEY")
        );
        assert_eq!(pem_label("garbage"), None);
    }

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(
            load_private_key_pem("nope"),
            Err(Error::PrivateKey(_))
        ));
        assert!(matches!(
            load_private_key_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            Err(Error::PrivateKey(_))
        ));
        assert!(matches!(
            load_private_key_pem(
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
            ),
            Err(Error::PrivateKey(m)) if m.contains("encrypted")
        ));
        assert!(matches!(
            load_public_key_pem("nope"),
            Err(Error::PublicKey(_))
        ));
        assert!(matches!(
            load_certificate_pem("nope"),
            Err(Error::Certificate(_))
        ));
    }
}
