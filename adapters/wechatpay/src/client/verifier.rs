//! The keys that WeChat Pay signs with, by serial: platform certificates (downloaded from
//! `/v3/certificates`, decrypted with the APIv3 key) and/or the WeChat Pay public key
//! (`PUB_KEY_ID_…`). During a migration both kinds arrive; both are accepted.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rsa::RsaPublicKey;

use crate::v3::keys::Certificate;
use crate::v3::sign;

/// Which key signed, and how to check a signature with it.
pub struct Verifier {
    public_key: Option<(String, RsaPublicKey)>,
    certificates: RwLock<HashMap<String, Certificate>>,
    last_fetch: std::sync::Mutex<Option<Instant>>,
    refetch_interval: Duration,
}

/// What a response or notification carries to prove it comes from WeChat Pay.
pub struct Signed<'a> {
    pub timestamp: Option<&'a str>,
    pub nonce: Option<&'a str>,
    pub signature: Option<&'a str>,
    pub serial: Option<&'a str>,
    pub signature_type: Option<&'a str>,
    pub body: &'a [u8],
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("unsupported signature type {0}")]
    SignatureType(String),
    #[error("timestamp outside the 300 s window")]
    Stale,
    #[error("no key with serial {0}")]
    UnknownSerial(String),
    #[error("signature does not verify")]
    BadSignature,
}

impl Verifier {
    pub fn new(public_key: Option<(String, RsaPublicKey)>, refetch_interval: Duration) -> Verifier {
        Verifier {
            public_key,
            certificates: RwLock::new(HashMap::new()),
            last_fetch: std::sync::Mutex::new(None),
            refetch_interval,
        }
    }

    /// The serial to ask WeChat to sign with (`Wechatpay-Serial` request header): the public key
    /// when we have one — without it WeChat signs with a certificate we may not have.
    pub fn preferred_serial(&self) -> Option<String> {
        if let Some((id, _)) = &self.public_key {
            return Some(id.clone());
        }
        let now = Utc::now();
        self.read()
            .values()
            .filter(|c| c.is_valid_at(now))
            .max_by_key(|c| c.not_before)
            .map(|c| c.serial_no.clone())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Certificate>> {
        self.certificates.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn knows(&self, serial: &str) -> bool {
        self.public_key.as_ref().is_some_and(|(id, _)| id == serial)
            || self.read().contains_key(serial)
    }

    pub fn has_public_key(&self) -> bool {
        self.public_key.is_some()
    }

    /// Keeps every currently valid certificate (rotations overlap: a new one signs some traffic
    /// days before the old one expires) and drops expired ones.
    pub fn store_certificates(&self, certificates: Vec<Certificate>) {
        self.store_certificates_at(certificates, Utc::now());
    }

    /// [`Verifier::store_certificates`] as of `now` (the fixtures' certificates expire).
    fn store_certificates_at(&self, certificates: Vec<Certificate>, now: DateTime<Utc>) {
        let mut known = self.certificates.write().unwrap_or_else(|p| p.into_inner());
        known.retain(|_, c| c.is_valid_at(now));
        for certificate in certificates.into_iter().filter(|c| c.is_valid_at(now)) {
            known.insert(certificate.serial_no.clone(), certificate);
        }
    }

    /// Whether a download of the certificates may happen now (rate-limited, so that forged
    /// messages with made-up serials cannot make us hammer WeChat). Marks the attempt.
    pub fn may_refetch(&self) -> bool {
        let mut last = self.last_fetch.lock().unwrap_or_else(|p| p.into_inner());
        let due = last.is_none_or(|at| at.elapsed() >= self.refetch_interval);
        if due {
            *last = Some(Instant::now());
        }
        due
    }

    /// Checks a signed message: signature type, replay window, probe signatures, and the
    /// signature itself over the raw body with the key named by the serial.
    pub fn verify(&self, signed: &Signed<'_>) -> Result<(), VerifyError> {
        let timestamp = signed
            .timestamp
            .ok_or(VerifyError::Missing("Wechatpay-Timestamp"))?;
        let nonce = signed
            .nonce
            .ok_or(VerifyError::Missing("Wechatpay-Nonce"))?;
        let signature = signed
            .signature
            .ok_or(VerifyError::Missing("Wechatpay-Signature"))?;
        let serial = signed
            .serial
            .ok_or(VerifyError::Missing("Wechatpay-Serial"))?;
        if let Some(kind) = signed.signature_type {
            if kind != sign::SCHEMA {
                return Err(VerifyError::SignatureType(kind.to_string()));
            }
        }
        sign::check_timestamp(timestamp, Utc::now().timestamp()).map_err(|_| VerifyError::Stale)?;
        let check = |key: &RsaPublicKey| {
            sign::verify_response(key, timestamp, nonce, signed.body, signature)
        };
        // Checked with the key in place (under the read lock for certificates): no copy of the
        // key per message.
        let verified = match &self.public_key {
            Some((id, key)) if id == serial => check(key),
            _ => check(
                &self
                    .read()
                    .get(serial)
                    .ok_or_else(|| VerifyError::UnknownSerial(serial.to_string()))?
                    .public_key,
            ),
        };
        if verified {
            Ok(())
        } else {
            Err(VerifyError::BadSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v3::keys::{load_certificate_pem, load_private_key_pem};

    const KEY: &str = include_str!("../../tests/fixtures/merchant_key_pkcs8.pem");
    const CERT: &str = include_str!("../../tests/fixtures/merchant_cert_high_bit.pem");

    fn signed_by_key(timestamp: i64, body: &[u8]) -> (String, String) {
        let key = load_private_key_pem(KEY).unwrap();
        let nonce = "n0nce";
        let signature = key
            .sign_sha256_rsa(sign::response_message(timestamp, nonce, body))
            .unwrap();
        (nonce.to_string(), signature)
    }

    fn check(
        verifier: &Verifier,
        serial: &str,
        timestamp: i64,
        body: &[u8],
        signature: &str,
    ) -> Result<(), VerifyError> {
        let ts = timestamp.to_string();
        verifier.verify(&Signed {
            timestamp: Some(&ts),
            nonce: Some("n0nce"),
            signature: Some(signature),
            serial: Some(serial),
            signature_type: Some(sign::SCHEMA),
            body,
        })
    }

    fn public_key_verifier() -> Verifier {
        let key = load_private_key_pem(KEY).unwrap().public_key();
        Verifier::new(
            Some(("PUB_KEY_ID_0114232134912410000000000000".into(), key)),
            Duration::ZERO,
        )
    }

    #[test]
    fn verifies_with_the_public_key_and_rejects_what_it_must() {
        let verifier = public_key_verifier();
        let id = "PUB_KEY_ID_0114232134912410000000000000";
        let now = Utc::now().timestamp();
        let body = br#"{"id":"EV-1","event_type":"TRANSACTION.SUCCESS"}"#;
        let (_, signature) = signed_by_key(now, body);
        assert!(check(&verifier, id, now, body, &signature).is_ok());

        let tampered = br#"{"id":"EV-1","event_type":"TRANSACTION.SUCCESS" }"#;
        assert!(matches!(
            check(&verifier, id, now, tampered, &signature),
            Err(VerifyError::BadSignature)
        ));
        let probe = format!("WECHATPAY/SIGNTEST/{signature}");
        assert!(matches!(
            check(&verifier, id, now, body, &probe),
            Err(VerifyError::BadSignature)
        ));
        assert!(matches!(
            check(&verifier, "ABCDEF", now, body, &signature),
            Err(VerifyError::UnknownSerial(_))
        ));

        let stale = now - 300;
        let (_, old_signature) = signed_by_key(stale, body);
        assert!(matches!(
            check(&verifier, id, stale, body, &old_signature),
            Err(VerifyError::Stale)
        ));
        let future = now + 400;
        let (_, future_signature) = signed_by_key(future, body);
        assert!(matches!(
            check(&verifier, id, future, body, &future_signature),
            Err(VerifyError::Stale)
        ));

        let missing = verifier.verify(&Signed {
            timestamp: None,
            nonce: None,
            signature: None,
            serial: None,
            signature_type: None,
            body,
        });
        assert!(matches!(missing, Err(VerifyError::Missing(_))));
        let ts = now.to_string();
        let wrong_type = verifier.verify(&Signed {
            timestamp: Some(&ts),
            nonce: Some("n0nce"),
            signature: Some(&signature),
            serial: Some(id),
            signature_type: Some("WECHATPAY2-SHA256-RSA1024"),
            body,
        });
        assert!(matches!(wrong_type, Err(VerifyError::SignatureType(_))));
    }

    #[test]
    fn certificates_are_kept_by_serial_beside_the_public_key() {
        let verifier = public_key_verifier();
        let certificate = load_certificate_pem(CERT).unwrap();
        let serial = certificate.serial_no.clone();
        assert!(!verifier.knows(&serial));
        // As of a day inside its validity: the fixture expires in 2029, the test must not.
        let valid_then = certificate.not_before + chrono::Duration::days(1);
        verifier.store_certificates_at(vec![certificate], valid_then);
        assert!(verifier.knows(&serial));
        assert!(verifier.knows("PUB_KEY_ID_0114232134912410000000000000"));
        // With a public key configured, WeChat is asked to sign with it.
        assert_eq!(
            verifier.preferred_serial().as_deref(),
            Some("PUB_KEY_ID_0114232134912410000000000000")
        );
        let now = Utc::now().timestamp();
        let body = b"{}";
        let (_, signature) = signed_by_key(now, body);
        // The fixture certificate carries the fixture key: it verifies by its serial too.
        assert!(check(&verifier, &serial, now, body, &signature).is_ok());
    }

    #[test]
    fn certificate_downloads_are_rate_limited() {
        let verifier = Verifier::new(None, Duration::from_secs(60));
        assert!(verifier.may_refetch());
        assert!(
            !verifier.may_refetch(),
            "a second download right away is refused"
        );
        let eager = Verifier::new(None, Duration::ZERO);
        assert!(eager.may_refetch());
        assert!(eager.may_refetch());
    }
}
