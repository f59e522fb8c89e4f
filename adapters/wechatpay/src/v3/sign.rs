//! APIv3 signatures: SHA256withRSA (PKCS#1 v1.5) over newline-terminated
//! messages.
//!
//! * Request (merchant → WeChat):
//!   `METHOD\nPATH?QUERY\nTIMESTAMP\nNONCE\nBODY\n`, sent as
//!   `Authorization: WECHATPAY2-SHA256-RSA2048 mchid="…",nonce_str="…",signature="…",timestamp="…",serial_no="…"`.
//! * Response / notification (WeChat → merchant): `TIMESTAMP\nNONCE\nBODY\n`
//!   over the **raw body bytes** — never re-serialise before verifying.
//! * `wx.requestPayment`: `appId\ntimeStamp\nnonceStr\npackage\n`.
//!
//! Every string goes in byte-for-byte as given: no case folding, no
//! trimming, no URL normalisation. Timestamps are taken as
//! `impl Display` so callers can pass either an integer or the exact header
//! text they received.

use std::fmt::{self, Display};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The Authorization scheme and the value of `Wechatpay-Signature-Type`.
pub const SCHEMA: &str = "WECHATPAY2-SHA256-RSA2048";

/// Prefix of the deliberately invalid probe signatures WeChat sends to check
/// that merchants really verify. Such signatures must always fail.
pub const SIGNTEST_PREFIX: &str = "WECHATPAY/SIGNTEST/";

/// Maximum clock skew: a timestamp is acceptable iff |now − ts| < 300 s.
pub const TIMESTAMP_WINDOW_SECS: u64 = 300;

/// `signType` value for APIv3 `wx.requestPayment` (not itself signed).
pub const PAY_SIGN_TYPE_RSA: &str = "RSA";

/// The request signing message: five lines, each ending in `\n`.
///
/// `path_and_query` is exactly what goes on the request line (no scheme or
/// host), including `?query` if any. `body` is exactly the bytes sent; `""`
/// for GET (the fifth line is then just `\n`).
pub fn request_message(
    method: &str,
    path_and_query: &str,
    timestamp: impl Display,
    nonce: &str,
    body: &str,
) -> String {
    format!("{method}\n{path_and_query}\n{timestamp}\n{nonce}\n{body}\n")
}

/// [`request_message`] over a raw body, for a verifier (the simulator) that
/// holds the received bytes rather than a `str`.
pub fn request_message_bytes(
    method: &str,
    path_and_query: &str,
    timestamp: impl Display,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut m = format!("{method}\n{path_and_query}\n{timestamp}\n{nonce}\n").into_bytes();
    m.extend_from_slice(body);
    m.push(b'\n');
    m
}

/// The response/notification message `TIMESTAMP\nNONCE\nBODY\n` over the raw
/// body bytes (an empty body gives `TIMESTAMP\nNONCE\n\n`).
pub fn response_message(timestamp: impl Display, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut m = format!("{timestamp}\n{nonce}\n").into_bytes();
    m.extend_from_slice(body);
    m.push(b'\n');
    m
}

/// The `Authorization` header value, fields in WeChat's documented order:
/// `WECHATPAY2-SHA256-RSA2048 mchid="…",nonce_str="…",signature="…",timestamp="…",serial_no="…"`.
///
/// `serial` is the merchant certificate serial (upper hex).
pub fn authorization(
    mchid: &str,
    serial: &str,
    nonce: &str,
    timestamp: impl Display,
    signature: &str,
) -> String {
    format!(
        "{SCHEMA} mchid=\"{mchid}\",nonce_str=\"{nonce}\",signature=\"{signature}\",timestamp=\"{timestamp}\",serial_no=\"{serial}\""
    )
}

/// `SHA256withRSA` (RSASSA-PKCS1-v1_5 with SHA-256), base64 (standard
/// alphabet, padded).
///
/// PKCS#1 v1.5 is deterministic, so the same key and message always give the
/// same signature. RSA blinding (with the OS-seeded thread RNG) is used to
/// resist timing attacks; it does not change the output.
pub fn sign_sha256_rsa(private_key: &RsaPrivateKey, message: impl AsRef<[u8]>) -> Result<String> {
    let digest = Sha256::digest(message.as_ref());
    let sig = private_key
        .sign_with_rng(
            &mut rand::thread_rng(),
            Pkcs1v15Sign::new::<Sha256>(),
            &digest,
        )
        .map_err(|e| Error::Signing(e.to_string()))?;
    Ok(B64.encode(sig))
}

/// Whether `signature` is one of WeChat's `WECHATPAY/SIGNTEST/` probes.
pub fn is_probe_signature(signature: &str) -> bool {
    signature.starts_with(SIGNTEST_PREFIX)
}

/// Verify a base64 `SHA256withRSA` signature. Returns `false` for anything
/// that does not verify, including bad base64 and the `WECHATPAY/SIGNTEST/`
/// probes (which are rejected before any decoding).
pub fn verify_sha256_rsa(
    public_key: &RsaPublicKey,
    message: impl AsRef<[u8]>,
    signature_b64: &str,
) -> bool {
    if is_probe_signature(signature_b64) {
        return false;
    }
    let Ok(sig) = B64.decode(signature_b64.as_bytes()) else {
        return false;
    };
    // The key stays an `rsa` key (parsed, stored and used for signing with that crate); the
    // arithmetic of checking goes through ring, which the TLS stack already links. Checking is
    // on every notification's hot path, and ring does it in ~17 µs where rsa 0.9's
    // num-bigint-dig takes ~130 µs — half of the engine's CPU per notice (docs/benchmarks.md).
    // Both implement RSASSA-PKCS1-v1_5 with SHA-256; the tests check they agree.
    // ring counts the modulus in whole bytes (2041 bits would pass as 2048): check bits here.
    if public_key.n().bits() < 2048 {
        return false;
    }
    let components = ring::signature::RsaPublicKeyComponents {
        n: public_key.n().to_bytes_be(),
        e: public_key.e().to_bytes_be(),
    };
    components
        .verify(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            message.as_ref(),
            &sig,
        )
        .is_ok()
}

/// Verify a WeChat response or notification from its `Wechatpay-Timestamp`,
/// `Wechatpay-Nonce` and `Wechatpay-Signature` headers and the raw body.
///
/// Only the signature is checked; call [`check_timestamp`] too, and choose
/// `public_key` by `Wechatpay-Serial`.
pub fn verify_response(
    public_key: &RsaPublicKey,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
    signature_b64: &str,
) -> bool {
    verify_sha256_rsa(
        public_key,
        response_message(timestamp, nonce, body),
        signature_b64,
    )
}

/// Whether `timestamp` is within the replay window: |now − ts| < 300 s.
pub fn timestamp_within_window(timestamp: i64, now: i64) -> bool {
    timestamp.abs_diff(now) < TIMESTAMP_WINDOW_SECS
}

/// Parse a `Wechatpay-Timestamp` (or Authorization `timestamp`) value —
/// decimal Unix seconds, ASCII digits only — and check it against `now`
/// (Unix seconds). Returns the parsed value.
pub fn check_timestamp(timestamp: &str, now: i64) -> Result<i64> {
    // `i64::from_str` would accept a leading `+`; WeChat never sends one.
    if timestamp.is_empty() || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::InvalidTimestamp(timestamp.to_owned()));
    }
    let ts: i64 = timestamp
        .parse()
        .map_err(|_| Error::InvalidTimestamp(timestamp.to_owned()))?;
    if timestamp_within_window(ts, now) {
        Ok(ts)
    } else {
        Err(Error::TimestampOutOfWindow { timestamp: ts, now })
    }
}

/// The `wx.requestPayment` (APIv3) message: `appId\ntimeStamp\nnonceStr\npackage\n`.
pub fn pay_sign_message(app_id: &str, time_stamp: &str, nonce_str: &str, package: &str) -> String {
    format!("{app_id}\n{time_stamp}\n{nonce_str}\n{package}\n")
}

/// `paySign` for `wx.requestPayment` with an APIv3 prepay id.
///
/// `package` is `prepay_id=<id>`; `time_stamp` is Unix seconds as a string;
/// `app_id` must be the one used to place the order. `signType` (`RSA`) is
/// not part of the message.
pub fn pay_sign_v3(
    app_id: &str,
    time_stamp: &str,
    nonce_str: &str,
    package: &str,
    key: &RsaPrivateKey,
) -> Result<String> {
    sign_sha256_rsa(
        key,
        pay_sign_message(app_id, time_stamp, nonce_str, package),
    )
}

/// The object a mini-program passes to `wx.requestPayment` (APIv3).
/// Serialises with WeChat's camelCase names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestPayment {
    /// Unix seconds, as a string.
    pub time_stamp: String,
    /// Random string used in the signature.
    pub nonce_str: String,
    /// `prepay_id=<id>`.
    pub package: String,
    /// Always `RSA` for APIv3.
    pub sign_type: String,
    /// The signature.
    pub pay_sign: String,
}

impl RequestPayment {
    /// Build and sign the parameters for `prepay_id`.
    pub fn sign(
        app_id: &str,
        prepay_id: &str,
        time_stamp: &str,
        nonce_str: &str,
        key: &RsaPrivateKey,
    ) -> Result<Self> {
        let package = format!("prepay_id={prepay_id}");
        let pay_sign = pay_sign_v3(app_id, time_stamp, nonce_str, &package, key)?;
        Ok(Self {
            time_stamp: time_stamp.to_owned(),
            nonce_str: nonce_str.to_owned(),
            package,
            sign_type: PAY_SIGN_TYPE_RSA.to_owned(),
            pay_sign,
        })
    }
}

/// The five parameters of an APIv3 `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationHeader {
    /// Merchant id.
    pub mchid: String,
    /// The nonce that was signed.
    pub nonce_str: String,
    /// base64 signature.
    pub signature: String,
    /// The timestamp exactly as sent (verify over this text, not a reparse).
    pub timestamp: String,
    /// Merchant certificate serial.
    pub serial_no: String,
}

impl AuthorizationHeader {
    /// Parse a header value. The five parameters may come in any order, with
    /// optional whitespace around the commas. Refused: another scheme,
    /// missing, duplicate, unknown or empty parameters, unquoted values.
    pub fn parse(header: &str) -> Result<Self> {
        let bad = |m: &str| Error::InvalidAuthorization(m.to_owned());
        let rest = header
            .trim()
            .strip_prefix(SCHEMA)
            .ok_or_else(|| bad("scheme is not WECHATPAY2-SHA256-RSA2048"))?;
        if !rest.starts_with([' ', '\t']) {
            return Err(bad("missing space after scheme"));
        }
        let mut slots: [Option<String>; 5] = Default::default();
        const NAMES: [&str; 5] = ["mchid", "nonce_str", "signature", "timestamp", "serial_no"];

        let mut s = rest.trim_start();
        loop {
            let eq = s.find('=').ok_or_else(|| bad("expected name=\"value\""))?;
            let name = s[..eq].trim();
            let after = s[eq + 1..]
                .strip_prefix('"')
                .ok_or_else(|| bad("value must be double-quoted"))?;
            let close = after.find('"').ok_or_else(|| bad("unterminated value"))?;
            let value = &after[..close];
            let idx = NAMES.iter().position(|n| *n == name).ok_or_else(|| {
                Error::InvalidAuthorization(format!("unknown parameter {name:?}"))
            })?;
            if value.is_empty() {
                return Err(Error::InvalidAuthorization(format!("empty {name}")));
            }
            if slots[idx].replace(value.to_owned()).is_some() {
                return Err(Error::InvalidAuthorization(format!("duplicate {name}")));
            }
            s = after[close + 1..].trim_start();
            if s.is_empty() {
                break;
            }
            s = s
                .strip_prefix(',')
                .ok_or_else(|| bad("expected ',' between parameters"))?
                .trim_start();
        }
        let [mchid, nonce_str, signature, timestamp, serial_no] = slots;
        let need = |v: Option<String>, n: &str| {
            v.ok_or_else(|| Error::InvalidAuthorization(format!("missing {n}")))
        };
        Ok(Self {
            mchid: need(mchid, "mchid")?,
            nonce_str: need(nonce_str, "nonce_str")?,
            signature: need(signature, "signature")?,
            timestamp: need(timestamp, "timestamp")?,
            serial_no: need(serial_no, "serial_no")?,
        })
    }

    /// Render in the canonical order (same as [`authorization`]).
    pub fn to_header_value(&self) -> String {
        authorization(
            &self.mchid,
            &self.serial_no,
            &self.nonce_str,
            &self.timestamp,
            &self.signature,
        )
    }
}

impl fmt::Display for AuthorizationHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_header_value())
    }
}

/// Parse an `Authorization` header value; see [`AuthorizationHeader::parse`].
pub fn parse_authorization(header: &str) -> Result<AuthorizationHeader> {
    AuthorizationHeader::parse(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_message_shape() {
        assert_eq!(
            request_message(
                "GET",
                "/v3/certificates",
                1554208460,
                "593BEC0C930BF1AFEB40B4A08C8FB242",
                ""
            ),
            "GET\n/v3/certificates\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n\n"
        );
        let body = r#"{"mchid":"1900000001"}"#;
        let m = request_message(
            "POST",
            "/v3/pay/transactions/out-trade-no/1217752501201407033233368018/close",
            "1554208460",
            "N",
            body,
        );
        assert_eq!(
            m,
            "POST\n/v3/pay/transactions/out-trade-no/1217752501201407033233368018/close\n1554208460\nN\n{\"mchid\":\"1900000001\"}\n"
        );
        assert_eq!(
            request_message_bytes("POST", "/p?a=1", 1, "N", body.as_bytes()),
            request_message("POST", "/p?a=1", 1, "N", body).into_bytes()
        );
    }

    #[test]
    fn response_message_shape() {
        assert_eq!(response_message("1", "n", b""), b"1\nn\n\n");
        assert_eq!(response_message(1, "n", b"{}"), b"1\nn\n{}\n");
        // Raw bytes, even non-UTF-8, pass through untouched.
        assert_eq!(
            response_message("1", "n", &[0xff, b'\n']),
            b"1\nn\n\xff\n\n"
        );
    }

    #[test]
    fn authorization_exact() {
        assert_eq!(
            authorization("1900009191", "1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C", "593BEC0C930BF1AFEB40B4A08C8FB242", 1554208460, "SIG=="),
            "WECHATPAY2-SHA256-RSA2048 mchid=\"1900009191\",nonce_str=\"593BEC0C930BF1AFEB40B4A08C8FB242\",signature=\"SIG==\",timestamp=\"1554208460\",serial_no=\"1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C\""
        );
    }

    #[test]
    fn authorization_parse_any_order_and_round_trip() {
        let canonical = authorization("1900009191", "SER", "NONCE", "1554208460", "a+b/c==");
        let h = parse_authorization(&canonical).unwrap();
        assert_eq!(h.mchid, "1900009191");
        assert_eq!(h.serial_no, "SER");
        assert_eq!(h.nonce_str, "NONCE");
        assert_eq!(h.timestamp, "1554208460");
        assert_eq!(h.signature, "a+b/c==");
        assert_eq!(h.to_header_value(), canonical);

        let shuffled = r#"WECHATPAY2-SHA256-RSA2048   serial_no="SER", timestamp="1554208460" ,signature="a+b/c==",nonce_str="NONCE",mchid="1900009191""#;
        assert_eq!(parse_authorization(shuffled).unwrap(), h);
    }

    #[test]
    fn authorization_parse_rejects() {
        let ok = authorization("1", "S", "N", "2", "X");
        for bad in [
            String::new(),
            ok.replace("WECHATPAY2-SHA256-RSA2048", "Bearer"),
            ok.replace("WECHATPAY2-SHA256-RSA2048 ", "WECHATPAY2-SHA256-RSA2048"),
            ok.replace(",serial_no=\"S\"", ""),
            ok.replace("mchid=\"1\"", "mchid=1"),
            format!("{ok},mchid=\"1\""),
            format!("{ok},extra=\"1\""),
            ok.replace("nonce_str=\"N\"", "nonce_str=\"\""),
            ok.replace("\",", "\";"),
            format!("{ok},"),
            ok.replace("serial_no=\"S\"", "serial_no=\"S"),
        ] {
            assert!(
                matches!(
                    parse_authorization(&bad),
                    Err(Error::InvalidAuthorization(_))
                ),
                "accepted {bad:?}"
            );
        }
    }

    #[test]
    fn timestamp_window() {
        let now = 1_700_000_000;
        assert!(timestamp_within_window(now, now));
        assert!(timestamp_within_window(now - 299, now));
        assert!(timestamp_within_window(now + 299, now));
        assert!(!timestamp_within_window(now - 300, now));
        assert!(!timestamp_within_window(now + 300, now));
        assert!(!timestamp_within_window(i64::MIN, i64::MAX));
        assert_eq!(check_timestamp("1700000100", now).unwrap(), 1_700_000_100);
        assert!(matches!(
            check_timestamp("1699999700", now),
            Err(Error::TimestampOutOfWindow { .. })
        ));
        for bad in [
            "",
            "+1700000000",
            "-1",
            "17e8",
            " 1700000000",
            "1700000000.0",
            "99999999999999999999",
        ] {
            assert!(
                matches!(check_timestamp(bad, now), Err(Error::InvalidTimestamp(_))),
                "accepted {bad:?}"
            );
        }
    }

    #[test]
    fn pay_sign_message_shape() {
        assert_eq!(
            pay_sign_message("wx8888888888888888", "1414561699", "5K8264ILTKCH16CQ2502SI8ZNMTM67VS", "prepay_id=wx201410272009395522657a690389285100"),
            "wx8888888888888888\n1414561699\n5K8264ILTKCH16CQ2502SI8ZNMTM67VS\nprepay_id=wx201410272009395522657a690389285100\n"
        );
    }

    #[test]
    fn probe_signatures_detected() {
        assert!(is_probe_signature("WECHATPAY/SIGNTEST/abc"));
        assert!(!is_probe_signature("wechatpay/signtest/abc"));
        assert!(!is_probe_signature("abc"));
    }
}
