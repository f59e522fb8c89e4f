//! APIv2 signatures (MD5 / HMAC-SHA256 over `k=v&…&key=KEY`).
//!
//! Rules, per WeChat's documentation and the official PHP SDK:
//! every field except `sign` and except empty values, sorted by name in
//! byte (ASCII, case-sensitive) order, joined as `k=v` with **raw** values
//! (no URL encoding, no trimming), then `&key=<APIv2 key>`; digest as upper
//! hex. `sign_type` is an ordinary field and is signed when present. A
//! verifier must include every received field, unknown ones too — dropping
//! fields WeChat adds later would break every signature.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The v2 digest algorithm. The wire names are `MD5` and `HMAC-SHA256`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignType {
    /// `MD5` — WeChat's default when `sign_type` is absent.
    Md5,
    /// `HMAC-SHA256`.
    HmacSha256,
}

impl SignType {
    /// The exact wire spelling used in `sign_type` / `signType`.
    pub const fn as_str(self) -> &'static str {
        match self {
            SignType::Md5 => "MD5",
            SignType::HmacSha256 => "HMAC-SHA256",
        }
    }
}

impl fmt::Display for SignType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parse the wire spelling. Exact match only: WeChat compares these
/// case-sensitively, so accepting `md5` here would hide a bug that WeChat
/// would reject.
impl FromStr for SignType {
    type Err = UnknownSignType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "MD5" => Ok(SignType::Md5),
            "HMAC-SHA256" => Ok(SignType::HmacSha256),
            other => Err(UnknownSignType(other.to_owned())),
        }
    }
}

/// A `sign_type` value that is neither `MD5` nor `HMAC-SHA256`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown sign type {0:?}")]
pub struct UnknownSignType(pub String);

/// The field that carries the signature and is never itself signed.
pub const SIGN_FIELD: &str = "sign";

/// The canonical string **without** the trailing `key=…`: `a=1&b=2`.
///
/// Exposed for diagnostics (logging what was signed) — it never contains the
/// key. `BTreeMap<String, _>` iterates in byte order, which is exactly the
/// ASCII, case-sensitive order WeChat requires.
pub fn canonical_string(fields: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for (k, v) in signed_fields(fields) {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

fn signed_fields(fields: &BTreeMap<String, String>) -> impl Iterator<Item = (&str, &str)> {
    fields
        .iter()
        .filter(|(k, v)| k.as_str() != SIGN_FIELD && !v.is_empty())
        .map(|(k, v)| (k.as_str(), v.as_str()))
}

/// Sign `fields` with the APIv2 `key`; returns upper-case hex.
///
/// `sign` and empty values are skipped; everything else — including
/// `sign_type` and fields this crate has never heard of — is signed.
pub fn sign(fields: &BTreeMap<String, String>, key: &str, t: SignType) -> String {
    // The string to digest is `k=v&…&key=KEY`; with no fields it is `key=KEY`
    // (what the official Java SDK produces by appending `k=v&` per field).
    let mut message = canonical_string(fields);
    if !message.is_empty() {
        message.push('&');
    }
    message.push_str("key=");
    message.push_str(key);

    let digest: Vec<u8> = match t {
        SignType::Md5 => Md5::digest(message.as_bytes()).to_vec(),
        SignType::HmacSha256 => {
            // HMAC accepts keys of any length; this cannot fail.
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes())
                .expect("HMAC accepts any key length");
            mac.update(message.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
    };
    // Scrub the copy of the key held in `message` before it is freed.
    zeroize::Zeroize::zeroize(&mut message);
    hex::encode_upper(digest)
}

/// Verify the `sign` field of a received message.
///
/// Returns `false` if `sign` is missing or does not match. The comparison is
/// constant-time so a forger cannot learn the correct signature byte by byte
/// from response timing. The expected value is upper hex exactly as WeChat
/// sends it; a lower-case `sign` is rejected, as WeChat itself would.
pub fn verify(fields: &BTreeMap<String, String>, key: &str, t: SignType) -> bool {
    let Some(received) = fields.get(SIGN_FIELD) else {
        return false;
    };
    let expected = sign(fields, key, t);
    // ConstantTimeEq on slices returns false immediately on length mismatch,
    // which leaks only the (public) length.
    expected.as_bytes().ct_eq(received.as_bytes()).into()
}

/// `paySign` for `wx.requestPayment` with an APIv2 (unifiedorder) prepay id.
///
/// Signs exactly the five fields `appId, nonceStr, package, signType,
/// timeStamp` (camelCase, as the mini-program runtime sends them) with the
/// same rules as [`sign`]. `package` is `prepay_id=<id>`; `sign_type` must be
/// the one used for unifiedorder and is itself one of the signed fields.
pub fn pay_sign(
    app_id: &str,
    nonce_str: &str,
    package: &str,
    sign_type: SignType,
    time_stamp: &str,
    key: &str,
) -> String {
    let fields: BTreeMap<String, String> = [
        ("appId", app_id),
        ("nonceStr", nonce_str),
        ("package", package),
        ("signType", sign_type.as_str()),
        ("timeStamp", time_stamp),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    sign(&fields, key, sign_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// WeChat's official APIv2 signing example.
    fn official_fields() -> BTreeMap<String, String> {
        map(&[
            ("appid", "wxd930ea5d5a258f4f"),
            ("mch_id", "10000100"),
            ("device_info", "1000"),
            ("body", "test"),
            ("nonce_str", "ibuaiVcKdpRxkhJA"),
        ])
    }
    const OFFICIAL_KEY: &str = "192006250b4c09247ec02edce69f6a2d";

    #[test]
    fn official_canonical_string() {
        assert_eq!(
            canonical_string(&official_fields()),
            "appid=wxd930ea5d5a258f4f&body=test&device_info=1000&mch_id=10000100&nonce_str=ibuaiVcKdpRxkhJA"
        );
    }

    #[test]
    fn official_md5_vector() {
        assert_eq!(
            sign(&official_fields(), OFFICIAL_KEY, SignType::Md5),
            "9A0A8659F005D6984697E2CA0A9CF3B7"
        );
    }

    #[test]
    fn official_hmac_sha256_vector() {
        assert_eq!(
            sign(&official_fields(), OFFICIAL_KEY, SignType::HmacSha256),
            "6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6"
        );
    }

    #[test]
    fn official_pay_sign_vector() {
        assert_eq!(
            pay_sign(
                "wxd678efh567hg6787",
                "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
                "prepay_id=wx2017033010242291fcfe0db70013231072",
                SignType::Md5,
                "1490840662",
                "qazwsxedcrfvtgbyhnujmikolp111111",
            ),
            "22D9B4E54AB1950F51E0649E8810ACD6"
        );
    }

    #[test]
    fn sign_field_is_ignored() {
        let mut f = official_fields();
        f.insert("sign".into(), "WHATEVER".into());
        assert_eq!(
            sign(&f, OFFICIAL_KEY, SignType::Md5),
            "9A0A8659F005D6984697E2CA0A9CF3B7"
        );
    }

    #[test]
    fn empty_values_are_skipped() {
        let mut f = official_fields();
        f.insert("attach".into(), String::new());
        f.insert("zzz".into(), String::new());
        assert_eq!(
            sign(&f, OFFICIAL_KEY, SignType::Md5),
            "9A0A8659F005D6984697E2CA0A9CF3B7"
        );
        // Whitespace is not empty: it is signed raw (the PHP SDK agrees; the
        // old Java SDK trimmed, which would disagree here).
        f.insert("attach".into(), " ".into());
        assert_ne!(
            sign(&f, OFFICIAL_KEY, SignType::Md5),
            "9A0A8659F005D6984697E2CA0A9CF3B7"
        );
        assert!(canonical_string(&f).starts_with("appid=wxd930ea5d5a258f4f&attach= &body="));
    }

    #[test]
    fn unknown_fields_are_included() {
        let mut f = official_fields();
        f.insert("some_future_field".into(), "x".into());
        let s = sign(&f, OFFICIAL_KEY, SignType::Md5);
        assert_ne!(s, "9A0A8659F005D6984697E2CA0A9CF3B7");
        assert!(canonical_string(&f).ends_with("&some_future_field=x"));
        f.insert("sign".into(), s);
        assert!(verify(&f, OFFICIAL_KEY, SignType::Md5));
        // Dropping the unknown field must break verification.
        f.remove("some_future_field");
        assert!(!verify(&f, OFFICIAL_KEY, SignType::Md5));
    }

    #[test]
    fn sign_type_field_is_signed_and_order_is_ascii() {
        let f = map(&[
            ("sign_type", "HMAC-SHA256"),
            ("B", "2"),
            ("a", "1"),
            ("_", "3"),
        ]);
        // Upper case sorts before `_`, which sorts before lower case.
        assert_eq!(canonical_string(&f), "B=2&_=3&a=1&sign_type=HMAC-SHA256");
    }

    #[test]
    fn values_are_raw_not_encoded() {
        let f = map(&[("body", "a&b=c 测试"), ("url", "https://x/y?z=1")]);
        assert_eq!(canonical_string(&f), "body=a&b=c 测试&url=https://x/y?z=1");
    }

    #[test]
    fn no_fields_signs_key_only() {
        let expected = hex::encode_upper(Md5::digest(b"key=K"));
        assert_eq!(sign(&BTreeMap::new(), "K", SignType::Md5), expected);
    }

    #[test]
    fn verify_accepts_good_and_rejects_bad() {
        for t in [SignType::Md5, SignType::HmacSha256] {
            let mut f = official_fields();
            f.insert("sign".into(), sign(&f, OFFICIAL_KEY, t));
            assert!(verify(&f, OFFICIAL_KEY, t));
            assert!(!verify(&f, "wrong-key", t));
            let other = if t == SignType::Md5 {
                SignType::HmacSha256
            } else {
                SignType::Md5
            };
            assert!(!verify(&f, OFFICIAL_KEY, other));
            // Lower-case hex is not what WeChat sends: rejected.
            let lower = f["sign"].to_lowercase();
            f.insert("sign".into(), lower);
            assert!(!verify(&f, OFFICIAL_KEY, t));
            // Tampered value.
            let mut g = official_fields();
            g.insert("sign".into(), sign(&g, OFFICIAL_KEY, t));
            g.insert("body".into(), "tesT".into());
            assert!(!verify(&g, OFFICIAL_KEY, t));
        }
    }

    #[test]
    fn verify_without_sign_is_false() {
        assert!(!verify(&official_fields(), OFFICIAL_KEY, SignType::Md5));
        let mut f = official_fields();
        f.insert("sign".into(), String::new());
        assert!(!verify(&f, OFFICIAL_KEY, SignType::Md5));
    }

    #[test]
    fn sign_type_wire_names() {
        assert_eq!("MD5".parse::<SignType>().unwrap(), SignType::Md5);
        assert_eq!(
            "HMAC-SHA256".parse::<SignType>().unwrap(),
            SignType::HmacSha256
        );
        assert!("md5".parse::<SignType>().is_err());
        assert!("HMAC_SHA256".parse::<SignType>().is_err());
        assert_eq!(SignType::HmacSha256.to_string(), "HMAC-SHA256");
    }
}
