//! AEAD_AES_256_GCM, used by APIv3 notifications (`resource`) and by
//! `/v3/certificates` (`encrypt_certificate`).
//!
//! key = the 32-byte APIv3 key; nonce = the UTF-8 bytes of the `nonce`
//! string (12); AAD = the bytes of `associated_data` (may be empty);
//! `ciphertext` = base64(ciphertext ‖ 16-byte tag).
//!
//! Every failure is a typed error — wrong key, tampering, wrong AAD and
//! truncation all surface as [`Error::Decrypt`] without further detail.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::secret::ApiV3Key;

/// The only `algorithm` value WeChat uses for these resources.
pub const AEAD_AES_256_GCM: &str = "AEAD_AES_256_GCM";

/// Required nonce length in bytes (96-bit GCM IV).
pub const NONCE_LEN: usize = 12;

/// GCM tag length in bytes, appended to the ciphertext.
pub const TAG_LEN: usize = 16;

fn cipher(key: &ApiV3Key) -> Aes256Gcm {
    Aes256Gcm::new(key.expose_bytes().into())
}

fn check_nonce(nonce: &str) -> Result<&Nonce<aes_gcm::aead::consts::U12>> {
    if nonce.len() != NONCE_LEN {
        // Checked here because `Nonce::from_slice` would panic.
        return Err(Error::InvalidNonceLength {
            expected: NONCE_LEN,
            actual: nonce.len(),
        });
    }
    Ok(Nonce::from_slice(nonce.as_bytes()))
}

/// Decrypt a base64 `ciphertext` to raw bytes.
pub fn decrypt(
    key: &ApiV3Key,
    nonce: &str,
    associated_data: &str,
    ciphertext_b64: &str,
) -> Result<Vec<u8>> {
    let nonce = check_nonce(nonce)?;
    let data = B64.decode(ciphertext_b64.as_bytes())?;
    if data.len() < TAG_LEN {
        return Err(Error::Decrypt);
    }
    cipher(key)
        .decrypt(
            nonce,
            Payload {
                msg: &data,
                aad: associated_data.as_bytes(),
            },
        )
        .map_err(|_| Error::Decrypt)
}

/// Decrypt to a UTF-8 string (JSON for notifications, PEM for certificates).
pub fn decrypt_to_string(
    key: &ApiV3Key,
    nonce: &str,
    associated_data: &str,
    ciphertext_b64: &str,
) -> Result<String> {
    let plain = decrypt(key, nonce, associated_data, ciphertext_b64)?;
    String::from_utf8(plain).map_err(|_| Error::Utf8)
}

/// Encrypt `plaintext`, returning base64(ciphertext ‖ tag). For the
/// simulator. The caller chooses the nonce and must never reuse one with the
/// same key — [`crate::nonce_str`] truncated to 12 characters will do.
pub fn encrypt(
    key: &ApiV3Key,
    nonce: &str,
    associated_data: &str,
    plaintext: &[u8],
) -> Result<String> {
    let nonce = check_nonce(nonce)?;
    let sealed = cipher(key)
        .encrypt(
            nonce,
            Payload {
                msg: plaintext,
                aad: associated_data.as_bytes(),
            },
        )
        // Only fails for plaintexts beyond GCM's 64 GiB limit.
        .map_err(|_| Error::Decrypt)?;
    Ok(B64.encode(sealed))
}

/// The encrypted object found at `resource` in notifications and at
/// `encrypt_certificate` in `/v3/certificates`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedResource {
    /// Must be `AEAD_AES_256_GCM`.
    pub algorithm: String,
    /// base64(ciphertext ‖ tag).
    pub ciphertext: String,
    /// Additional authenticated data; absent or `null` is treated as "".
    #[serde(default)]
    pub associated_data: Option<String>,
    /// 12-character nonce.
    pub nonce: String,
    /// `transaction`, `refund`, … (notifications only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_type: Option<String>,
}

impl EncryptedResource {
    /// Encrypt `plaintext` into a resource (for the simulator).
    pub fn seal(
        key: &ApiV3Key,
        nonce: &str,
        associated_data: &str,
        original_type: Option<&str>,
        plaintext: &[u8],
    ) -> Result<Self> {
        Ok(Self {
            algorithm: AEAD_AES_256_GCM.to_owned(),
            ciphertext: encrypt(key, nonce, associated_data, plaintext)?,
            associated_data: Some(associated_data.to_owned()),
            nonce: nonce.to_owned(),
            original_type: original_type.map(str::to_owned),
        })
    }

    /// Decrypt after checking the algorithm name.
    pub fn open(&self, key: &ApiV3Key) -> Result<Vec<u8>> {
        if self.algorithm != AEAD_AES_256_GCM {
            return Err(Error::UnsupportedAlgorithm(self.algorithm.clone()));
        }
        decrypt(
            key,
            &self.nonce,
            self.associated_data.as_deref().unwrap_or(""),
            &self.ciphertext,
        )
    }

    /// Decrypt to a UTF-8 string.
    pub fn open_string(&self, key: &ApiV3Key) -> Result<String> {
        String::from_utf8(self.open(key)?).map_err(|_| Error::Utf8)
    }

    /// Decrypt and deserialise JSON (e.g. a transaction or refund object).
    pub fn open_json<T: DeserializeOwned>(&self, key: &ApiV3Key) -> Result<T> {
        Ok(serde_json::from_slice(&self.open(key)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ApiV3Key {
        ApiV3Key::new("a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb").unwrap()
    }

    /// Public vector from the official wechatpay-java SDK's tests
    /// (AeadAesCipherTest; key = TestConfig.API_V3_KEY), independently
    /// re-checked with Python `cryptography`'s AESGCM.
    #[test]
    fn official_wechatpay_java_vector() {
        let ct = encrypt(&key(), "uluk4a9R25RW", "associatedData", b"message").unwrap();
        assert_eq!(ct, "ulwSiIajGClcvcOYvOQ7+l+0PAbzzwI=");
        assert_eq!(
            decrypt_to_string(&key(), "uluk4a9R25RW", "associatedData", &ct).unwrap(),
            "message"
        );
    }

    #[test]
    fn round_trip_with_and_without_aad() {
        let msg = r#"{"mchid":"1900000001","trade_state":"SUCCESS","amount":{"total":100}}"#;
        for aad in ["transaction", "certificate", ""] {
            let ct = encrypt(&key(), "fdasflkja484", aad, msg.as_bytes()).unwrap();
            assert_eq!(
                decrypt_to_string(&key(), "fdasflkja484", aad, &ct).unwrap(),
                msg
            );
        }
        // Empty plaintext: the ciphertext is just the tag.
        let ct = encrypt(&key(), "fdasflkja484", "", b"").unwrap();
        assert_eq!(B64.decode(&ct).unwrap().len(), TAG_LEN);
        assert_eq!(decrypt(&key(), "fdasflkja484", "", &ct).unwrap(), b"");
    }

    #[test]
    fn wrong_key_fails() {
        let ct = encrypt(&key(), "uluk4a9R25RW", "x", b"secret").unwrap();
        let other = ApiV3Key::new("a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gc").unwrap();
        assert!(matches!(
            decrypt(&other, "uluk4a9R25RW", "x", &ct),
            Err(Error::Decrypt)
        ));
    }

    #[test]
    fn tampered_ciphertext_fails() {
        let ct = encrypt(&key(), "uluk4a9R25RW", "x", b"secret payload").unwrap();
        let mut raw = B64.decode(&ct).unwrap();
        for i in [0, raw.len() / 2, raw.len() - 1] {
            raw[i] ^= 0x01;
            let bad = B64.encode(&raw);
            assert!(matches!(
                decrypt(&key(), "uluk4a9R25RW", "x", &bad),
                Err(Error::Decrypt)
            ));
            raw[i] ^= 0x01;
        }
        // Truncated: shorter than a tag, and tag cut off.
        assert!(matches!(
            decrypt(&key(), "uluk4a9R25RW", "x", "AAAA"),
            Err(Error::Decrypt)
        ));
        let cut = B64.encode(&raw[..raw.len() - 1]);
        assert!(matches!(
            decrypt(&key(), "uluk4a9R25RW", "x", &cut),
            Err(Error::Decrypt)
        ));
        assert!(matches!(
            decrypt(&key(), "uluk4a9R25RW", "x", "%%%"),
            Err(Error::Base64(_))
        ));
    }

    #[test]
    fn wrong_aad_fails() {
        let ct = encrypt(&key(), "uluk4a9R25RW", "transaction", b"{}").unwrap();
        assert!(decrypt(&key(), "uluk4a9R25RW", "refund", &ct).is_err());
        assert!(decrypt(&key(), "uluk4a9R25RW", "", &ct).is_err());
        assert!(decrypt(&key(), "uluk4a9R25RX", "transaction", &ct).is_err());
    }

    #[test]
    fn nonce_of_wrong_length_fails_cleanly() {
        let ct = encrypt(&key(), "uluk4a9R25RW", "", b"x").unwrap();
        for n in [
            "",
            "short",
            "uluk4a9R25R",
            "uluk4a9R25RWx",
            "0123456789abcdef",
        ] {
            assert!(matches!(
                decrypt(&key(), n, "", &ct),
                Err(Error::InvalidNonceLength { expected: 12, actual }) if actual == n.len()
            ));
            assert!(matches!(
                encrypt(&key(), n, "", b"x"),
                Err(Error::InvalidNonceLength { .. })
            ));
        }
    }

    #[test]
    fn resource_json_round_trip() {
        let json = r#"{"original_type":"transaction","algorithm":"AEAD_AES_256_GCM","ciphertext":"ulwSiIajGClcvcOYvOQ7+l+0PAbzzwI=","associated_data":"associatedData","nonce":"uluk4a9R25RW"}"#;
        let r: EncryptedResource = serde_json::from_str(json).unwrap();
        assert_eq!(r.open_string(&key()).unwrap(), "message");
        assert_eq!(r.original_type.as_deref(), Some("transaction"));

        let sealed = EncryptedResource::seal(
            &key(),
            "Kj7QIyUiYx1q",
            "refund",
            Some("refund"),
            br#"{"refund_status":"SUCCESS","amount":{"refund":1}}"#,
        )
        .unwrap();
        let v: serde_json::Value = sealed.open_json(&key()).unwrap();
        assert_eq!(v["refund_status"], "SUCCESS");
        let again: EncryptedResource =
            serde_json::from_str(&serde_json::to_string(&sealed).unwrap()).unwrap();
        assert_eq!(again, sealed);
    }

    #[test]
    fn resource_missing_aad_means_empty_and_algorithm_checked() {
        let ct = encrypt(&key(), "Kj7QIyUiYx1q", "", b"{}").unwrap();
        let json = format!(
            r#"{{"algorithm":"AEAD_AES_256_GCM","ciphertext":"{ct}","nonce":"Kj7QIyUiYx1q"}}"#
        );
        let r: EncryptedResource = serde_json::from_str(&json).unwrap();
        assert_eq!(r.open(&key()).unwrap(), b"{}");
        let null_aad = json.replace(r#""nonce""#, r#""associated_data":null,"nonce""#);
        let r: EncryptedResource = serde_json::from_str(&null_aad).unwrap();
        assert_eq!(r.open(&key()).unwrap(), b"{}");

        let mut bad = r.clone();
        bad.algorithm = "AEAD_SM4_GCM".into();
        assert!(matches!(
            bad.open(&key()),
            Err(Error::UnsupportedAlgorithm(a)) if a == "AEAD_SM4_GCM"
        ));
    }
}
