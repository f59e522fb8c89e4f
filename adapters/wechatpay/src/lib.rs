//! WeChat Pay for paystream: the protocol primitives and, with the `client`
//! feature, the APIv2 and APIv3 clients that implement the engine's payment
//! port (module `client`).
//!
//! The primitives are pure functions — no HTTP, no clocks read behind your
//! back (time is always a parameter), no files. The clients and the sandbox
//! simulator build on them.
//!
//! * [`v2::sign`], [`v2::xml`], [`v2::refund_notify`] — APIv2 (XML, MD5 /
//!   HMAC-SHA256, AES-256-ECB refund notifications).
//! * [`v3::sign`], [`v3::keys`], [`v3::aead`] — APIv3 (SHA256withRSA request,
//!   response and `wx.requestPayment` signatures; PEM/X.509 loading;
//!   AEAD_AES_256_GCM).
//! * [`bill`] — the trade bill (CSV with backquotes, yuan, a summary), read
//!   and checked against its summary; the same for both APIs.
//!
//! Key material is wrapped ([`ApiV2Key`], [`ApiV3Key`],
//! [`v3::keys::MerchantPrivateKey`]) so that `Debug` never prints it.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bill;
mod error;
mod secret;
pub mod v2;
pub mod v3;

pub use error::{Error, Result};
pub use secret::{ApiV2Key, ApiV3Key, API_V3_KEY_LEN};

/// A random 32-character `[0-9A-Za-z]` nonce for `nonce_str` fields and
/// APIv3 signatures. Uses the thread-local CSPRNG (seeded from the OS).
pub fn nonce_str() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    Alphanumeric.sample_string(&mut rand::thread_rng(), 32)
}

#[cfg(test)]
mod tests {
    #[test]
    fn nonce_shape() {
        let a = super::nonce_str();
        let b = super::nonce_str();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}

/// The HTTP client (feature `client`); its items are documented where they are not obvious.
#[cfg(feature = "client")]
#[allow(missing_docs)]
pub mod client;
