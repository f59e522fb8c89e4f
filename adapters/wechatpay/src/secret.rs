//! Wrappers for symmetric key material.
//!
//! Why wrappers: keys end up in configuration structs, and configuration
//! structs end up in `{:?}` log lines and panic messages. These types print
//! as `ApiV2Key(<redacted>)` and wipe their memory on drop, so the raw key is
//! only reachable through an explicit, greppable `expose*` call.

use std::fmt;

use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The merchant's APIv2 key (`key=` in v2 signatures, and — through its MD5 —
/// the refund-notification AES key). Usually 32 ASCII characters, but the
/// length is not enforced: signing is defined for any string.
#[derive(Clone)]
pub struct ApiV2Key(Zeroizing<String>);

impl ApiV2Key {
    /// Wrap a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(Zeroizing::new(key.into()))
    }

    /// The raw key. Named `expose` so every use is easy to audit.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiV2Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiV2Key(<redacted>)")
    }
}

/// Length of the APIv3 key: it is used directly as an AES-256 key.
pub const API_V3_KEY_LEN: usize = 32;

/// The merchant's APIv3 key: 32 bytes used verbatim as the AES-256-GCM key for
/// notifications and `/v3/certificates`. Distinct from the APIv2 key.
#[derive(Clone)]
pub struct ApiV3Key(Zeroizing<[u8; API_V3_KEY_LEN]>);

impl ApiV3Key {
    /// Wrap a key given as the ASCII string shown in the merchant console.
    /// Fails unless it is exactly 32 bytes.
    pub fn new(key: &str) -> Result<Self> {
        Self::from_bytes(key.as_bytes())
    }

    /// Wrap raw key bytes. Fails unless exactly 32 bytes.
    pub fn from_bytes(key: &[u8]) -> Result<Self> {
        if key.len() != API_V3_KEY_LEN {
            return Err(Error::InvalidKeyLength {
                what: "APIv3 key",
                expected: API_V3_KEY_LEN,
                actual: key.len(),
            });
        }
        let mut buf = Zeroizing::new([0u8; API_V3_KEY_LEN]);
        buf.copy_from_slice(key);
        Ok(Self(buf))
    }

    /// The raw key bytes. Named `expose` so every use is easy to audit.
    pub fn expose_bytes(&self) -> &[u8; API_V3_KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for ApiV3Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiV3Key(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_keys() {
        let v2 = ApiV2Key::new("192006250b4c09247ec02edce69f6a2d");
        let v3 = ApiV3Key::new("a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb").unwrap();
        let shown = format!("{v2:?} {v3:?}");
        assert!(!shown.contains("192006"), "{shown}");
        assert!(!shown.contains("a7cde1"), "{shown}");
        assert!(!shown.contains("97"), "byte values must not show: {shown}");
        assert_eq!(v2.expose(), "192006250b4c09247ec02edce69f6a2d");
        assert_eq!(&v3.expose_bytes()[..], b"a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb");
    }

    #[test]
    fn api_v3_key_length_enforced() {
        for bad in ["", "short", "a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb!"] {
            assert!(matches!(
                ApiV3Key::new(bad),
                Err(Error::InvalidKeyLength { expected: 32, .. })
            ));
        }
    }
}
