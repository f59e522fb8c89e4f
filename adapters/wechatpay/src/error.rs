//! The crate's single error type.
//!
//! Variants are deliberately coarse where detail would help an attacker or
//! leak secrets: a failed decryption never says *why* (wrong key, tampered
//! ciphertext, wrong AAD and bad padding all look the same), and no variant
//! ever carries key material.

use thiserror::Error;

/// Everything that can go wrong in this crate.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    // ---- XML (APIv2) -------------------------------------------------------
    /// The XML body exceeds [`crate::v2::xml::MAX_XML_BYTES`].
    #[error("XML body is {size} bytes, limit is {limit}")]
    XmlTooLarge {
        /// Body size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },

    /// A DOCTYPE, a custom entity reference or a processing instruction was
    /// present. WeChat never sends these; accepting them invites XXE and
    /// entity-expansion attacks.
    #[error("forbidden XML construct: {0}")]
    XmlForbidden(&'static str),

    /// A field element contained another element. WeChat's v2 messages are
    /// flat; nested content would be silently lost by a flat map.
    #[error("nested element <{child}> inside <{field}>")]
    XmlNested {
        /// The field being read.
        field: String,
        /// The element found inside it.
        child: String,
    },

    /// The same field appeared twice. Refusing is safer than picking one:
    /// a signature could otherwise be checked over a different value than the
    /// one the application reads.
    #[error("duplicate XML field <{0}>")]
    XmlDuplicateField(String),

    /// The document element is not the one expected (`xml` or `root`).
    #[error("unexpected root element <{found}>, expected <{expected}>")]
    XmlUnexpectedRoot {
        /// The root the caller asked for.
        expected: String,
        /// The root present in the document.
        found: String,
    },

    /// Any other well-formedness problem (truncated document, mismatched tags,
    /// text outside fields, invalid UTF-8, …).
    #[error("malformed XML: {0}")]
    XmlMalformed(String),

    /// A map could not be rendered: the key is not a valid XML name or the
    /// value holds a character XML 1.0 cannot carry.
    #[error("cannot render XML field {0:?}")]
    XmlUnrepresentable(String),

    // ---- Encoding ----------------------------------------------------------
    /// Input that must be base64 was not.
    #[error("invalid base64")]
    Base64(#[from] base64::DecodeError),

    /// Decrypted or received bytes are not UTF-8.
    #[error("invalid UTF-8")]
    Utf8,

    /// A decrypted JSON resource could not be deserialised.
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),

    // ---- Symmetric crypto --------------------------------------------------
    /// Authentication/decryption failed. Intentionally carries no detail.
    #[error("decryption failed")]
    Decrypt,

    /// A key has the wrong length (APIv3 key must be 32 bytes).
    #[error("{what} must be {expected} bytes, got {actual}")]
    InvalidKeyLength {
        /// Which key.
        what: &'static str,
        /// Required length.
        expected: usize,
        /// Length given.
        actual: usize,
    },

    /// The AEAD nonce is not 12 bytes.
    #[error("AEAD nonce must be {expected} bytes, got {actual}")]
    InvalidNonceLength {
        /// Required length (12).
        expected: usize,
        /// Length given.
        actual: usize,
    },

    /// An `algorithm` field names something other than `AEAD_AES_256_GCM`.
    #[error("unsupported algorithm {0:?}")]
    UnsupportedAlgorithm(String),

    // ---- RSA / keys / certificates -----------------------------------------
    /// A private key PEM could not be loaded (wrong label, encrypted, corrupt).
    #[error("invalid private key: {0}")]
    PrivateKey(String),

    /// A public key PEM could not be loaded.
    #[error("invalid public key: {0}")]
    PublicKey(String),

    /// An X.509 certificate could not be parsed or holds no RSA key.
    #[error("invalid certificate: {0}")]
    Certificate(String),

    /// RSA signing failed (only possible with a key too small for SHA-256).
    #[error("signing failed: {0}")]
    Signing(String),

    // ---- APIv3 headers ------------------------------------------------------
    /// The Authorization header is not a well-formed
    /// `WECHATPAY2-SHA256-RSA2048 k="v",…` value.
    #[error("invalid Authorization header: {0}")]
    InvalidAuthorization(String),

    /// A timestamp header is not a decimal Unix time in seconds.
    #[error("invalid timestamp {0:?}")]
    InvalidTimestamp(String),

    /// |now − timestamp| ≥ 300 s.
    #[error("timestamp {timestamp} is outside the ±300 s window around {now}")]
    TimestampOutOfWindow {
        /// The received timestamp (Unix seconds).
        timestamp: i64,
        /// The caller's clock (Unix seconds).
        now: i64,
    },
}

/// Crate-wide result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
