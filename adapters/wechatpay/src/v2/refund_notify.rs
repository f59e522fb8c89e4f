//! APIv2 refund notifications: the encrypted `req_info` field.
//!
//! The outer notification (`return_code, appid, mch_id, nonce_str,
//! req_info`) carries **no signature**; authenticity comes solely from the
//! fact that only WeChat and the merchant know the key:
//! `req_info = base64(AES-256-ECB-PKCS#7(key, "<root>…</root>"))` with
//! `key` = the 32 ASCII characters of lowercase hex MD5(APIv2 key).
//!
//! ECB is WeChat's choice, not ours; it is unauthenticated, so a successful
//! decrypt that yields a well-formed `<root>` is the best check available.
//! Callers must still match every field against their own order/refund.

use std::collections::BTreeMap;

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyInit};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use md5::{Digest, Md5};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::v2::xml;

type Aes256EcbEnc = ecb::Encryptor<aes::Aes256>;
type Aes256EcbDec = ecb::Decryptor<aes::Aes256>;

/// Root element of the decrypted `req_info`.
pub const REQ_INFO_ROOT: &str = "root";

/// Derive the `req_info` AES key: lowercase hex MD5 of the APIv2 key, used
/// as 32 ASCII bytes (not the 16 raw digest bytes — a common mistake).
pub fn req_info_key(api_v2_key: &str) -> Zeroizing<[u8; 32]> {
    let digest = Md5::digest(api_v2_key.as_bytes());
    let mut key = Zeroizing::new([0u8; 32]);
    // encode_to_slice writes lowercase hex; it only fails on a length mismatch.
    hex::encode_to_slice(digest, &mut key[..]).expect("16 bytes -> 32 hex chars");
    key
}

/// AES-256-ECB with PKCS#7 padding (WeChat's `req_info` cipher).
pub fn aes256_ecb_encrypt(key: &[u8; 32], plaintext: &[u8]) -> Vec<u8> {
    Aes256EcbEnc::new(key.into()).encrypt_padded_vec_mut::<Pkcs7>(plaintext)
}

/// Inverse of [`aes256_ecb_encrypt`]. A ciphertext that is not a whole number
/// of blocks or whose padding is invalid (the usual symptom of a wrong key)
/// yields [`Error::Decrypt`].
pub fn aes256_ecb_decrypt(key: &[u8; 32], ciphertext: &[u8]) -> Result<Vec<u8>> {
    if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(16) {
        return Err(Error::Decrypt);
    }
    Aes256EcbDec::new(key.into())
        .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
        .map_err(|_| Error::Decrypt)
}

/// Decrypt `req_info` to its XML text (`<root>…</root>`), without parsing.
pub fn decrypt_req_info_xml(req_info: &str, api_v2_key: &str) -> Result<String> {
    let ciphertext = B64.decode(req_info.as_bytes())?;
    let key = req_info_key(api_v2_key);
    let plain = aes256_ecb_decrypt(&key, &ciphertext)?;
    String::from_utf8(plain).map_err(|_| Error::Utf8)
}

/// Decrypt `req_info` and parse the `<root>` fields (`out_trade_no`,
/// `transaction_id`, `out_refund_no`, `refund_id`, `total_fee`,
/// `refund_fee`, `refund_status`, `success_time`, … — all kept as strings,
/// unknown ones included).
pub fn decrypt_req_info(req_info: &str, api_v2_key: &str) -> Result<BTreeMap<String, String>> {
    let xml_text = decrypt_req_info_xml(req_info, api_v2_key)?;
    xml::parse_with_root(xml_text.as_bytes(), REQ_INFO_ROOT)
}

/// Encrypt arbitrary XML text as a `req_info` value (for the simulator).
pub fn encrypt_req_info_xml(xml_text: &str, api_v2_key: &str) -> String {
    let key = req_info_key(api_v2_key);
    B64.encode(aes256_ecb_encrypt(&key, xml_text.as_bytes()))
}

/// Render `fields` as `<root><k><![CDATA[v]]></k>…</root>` and encrypt it as
/// a `req_info` value (for the simulator).
pub fn encrypt_req_info(fields: &BTreeMap<String, String>, api_v2_key: &str) -> Result<String> {
    let xml_text = xml::render_with_root(fields, REQ_INFO_ROOT)?;
    Ok(encrypt_req_info_xml(&xml_text, api_v2_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Primitive vector (also in the official PHP SDK's AesEcb tests, and
    /// reproducible with `openssl enc -aes-256-ecb`).
    #[test]
    fn ecb_primitive_vector() {
        let key: &[u8; 32] = b"0123456789abcdef0123456789abcdef";
        let ct = aes256_ecb_encrypt(key, b"hello");
        assert_eq!(B64.encode(&ct), "pZwJZBLuy3mDACEQT4YTBw==");
        let back = aes256_ecb_decrypt(key, &B64.decode("pZwJZBLuy3mDACEQT4YTBw==").unwrap());
        assert_eq!(back.unwrap(), b"hello");
    }

    #[test]
    fn ecb_padding_adds_full_block_when_aligned() {
        let key = [7u8; 32];
        assert_eq!(aes256_ecb_encrypt(&key, b"").len(), 16);
        assert_eq!(aes256_ecb_encrypt(&key, &[0u8; 16]).len(), 32);
        assert_eq!(
            aes256_ecb_decrypt(&key, &aes256_ecb_encrypt(&key, b"")).unwrap(),
            b""
        );
    }

    #[test]
    fn key_derivation_is_lowercase_hex_md5() {
        // MD5("192006250b4c09247ec02edce69f6a2d"), checked with `md5sum`.
        let k = req_info_key("192006250b4c09247ec02edce69f6a2d");
        let expected = hex::encode(Md5::digest(b"192006250b4c09247ec02edce69f6a2d"));
        assert_eq!(&k[..], expected.as_bytes());
        assert!(k
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)));
    }

    fn realistic_root() -> BTreeMap<String, String> {
        [
            ("out_refund_no", "131811191610442717309"),
            ("out_trade_no", "71106718111915575302817"),
            ("refund_account", "REFUND_SOURCE_RECHARGE_FUNDS"),
            ("refund_fee", "3960"),
            ("refund_id", "50000408942018111907145868882"),
            ("refund_recv_accout", "支付用户零钱"),
            ("refund_request_source", "API"),
            ("refund_status", "SUCCESS"),
            ("settlement_refund_fee", "3960"),
            ("settlement_total_fee", "3960"),
            ("success_time", "2018-11-19 16:24:13"),
            ("total_fee", "3960"),
            ("transaction_id", "4200000215201811190261405420"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn req_info_round_trip() {
        let key = "192006250b4c09247ec02edce69f6a2d";
        let fields = realistic_root();
        let req_info = encrypt_req_info(&fields, key).unwrap();
        assert_eq!(decrypt_req_info(&req_info, key).unwrap(), fields);
        let xml_text = decrypt_req_info_xml(&req_info, key).unwrap();
        assert!(xml_text.starts_with("<root><out_refund_no><![CDATA[131811191610442717309]]>"));
    }

    #[test]
    fn req_info_with_whitespace_layout_decrypts() {
        // WeChat's real payloads put each field on its own line.
        let key = "qazwsxedcrfvtgbyhnujmikolp111111";
        let text = "<root>\n<out_refund_no><![CDATA[R1]]></out_refund_no>\n<refund_status><![CDATA[SUCCESS]]></refund_status>\n<success_time><![CDATA[2018-11-19 16:24:13]]></success_time>\n</root>\n";
        let req_info = encrypt_req_info_xml(text, key);
        let m = decrypt_req_info(&req_info, key).unwrap();
        assert_eq!(m["out_refund_no"], "R1");
        assert_eq!(m["success_time"], "2018-11-19 16:24:13");
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn wrong_key_or_garbage_fails_cleanly() {
        let req_info = encrypt_req_info(&realistic_root(), "right-key").unwrap();
        // A wrong key almost always breaks the padding; if by chance it does
        // not, the result is not UTF-8/XML. Either way: an error, no panic.
        assert!(decrypt_req_info(&req_info, "wrong-key").is_err());
        assert!(matches!(
            decrypt_req_info("not base64!", "k"),
            Err(Error::Base64(_))
        ));
        assert!(matches!(decrypt_req_info("", "k"), Err(Error::Decrypt)));
        assert!(matches!(decrypt_req_info("AAAA", "k"), Err(Error::Decrypt)));
        // Valid encryption of something that is not a <root> document.
        let not_root = encrypt_req_info_xml("<xml><a>1</a></xml>", "k");
        assert!(matches!(
            decrypt_req_info(&not_root, "k"),
            Err(Error::XmlUnexpectedRoot { .. })
        ));
    }
}
