//! Reading an APIv2 notification: a pay notify (XML signed over every field) or a refund notify
//! (unsigned XML whose `req_info` is encrypted with a key derived from the APIv2 key; that it
//! decrypts is its proof).

use std::collections::BTreeMap;

use paystream_engine::money::Fen;
use paystream_engine::payments::gateway::{Notice, NotifyError};

use super::gateway::{paid, refund_state};
use super::V2Config;
use crate::v2::refund_notify::decrypt_req_info;
use crate::v2::sign::{self, SignType};
use crate::v2::xml;

fn field<'a>(fields: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    fields
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// Verifies and reads a notification as it arrived (the raw body).
pub(super) fn read(config: &V2Config, body: &[u8]) -> Result<Notice, NotifyError> {
    // Size, DTDs, entities and nesting are refused by the parser before anything is read.
    let fields = xml::parse(body).map_err(|e| NotifyError::Malformed(e.to_string()))?;
    if fields.contains_key("req_info") {
        refund(config, &fields)
    } else {
        payment(config, &fields)
    }
}

/// The sign types a pay notify is checked with, in order: the one it names, else the one our
/// orders are placed with; then the other. WeChat has been seen signing MD5 for an order placed
/// with HMAC-SHA256: either proves the sender holds the APIv2 key, so either is believed — and
/// only because it verifies.
fn sign_types(
    fields: &BTreeMap<String, String>,
    ours: SignType,
) -> Result<[SignType; 2], NotifyError> {
    // An empty value is no value, in the sign rules and here.
    let first = match field(fields, "sign_type") {
        Some(named) => named
            .parse::<SignType>()
            .map_err(|e| NotifyError::Unverified(e.to_string()))?,
        None => ours,
    };
    let other = match first {
        SignType::Md5 => SignType::HmacSha256,
        SignType::HmacSha256 => SignType::Md5,
    };
    Ok([first, other])
}

fn payment(config: &V2Config, fields: &BTreeMap<String, String>) -> Result<Notice, NotifyError> {
    if !fields.contains_key(sign::SIGN_FIELD) {
        return Err(NotifyError::Unverified("pay notify without sign".into()));
    }
    let key = config.api_key.expose();
    let verified = sign_types(fields, config.sign_type)?
        .into_iter()
        .find(|t| sign::verify(fields, key, *t));
    let Some(sign_type) = verified else {
        return Err(NotifyError::Unverified(
            "pay notify sign does not verify with the APIv2 key".into(),
        ));
    };
    if sign_type != config.sign_type {
        tracing::info!(
            sign_type = %sign_type,
            "pay notify signed with the other sign type; believed because it verifies"
        );
    }
    if field(fields, "return_code") != Some("SUCCESS") {
        return Err(NotifyError::Malformed(
            "pay notify without return_code SUCCESS".into(),
        ));
    }
    let out_trade_no = field(fields, "out_trade_no")
        .ok_or_else(|| NotifyError::Malformed("pay notify without out_trade_no".into()))?;
    let paid = match field(fields, "result_code") {
        Some("SUCCESS") => Some(paid(fields).map_err(NotifyError::Malformed)?),
        _ => None,
    };
    Ok(Notice::Payment {
        mchid: field(fields, "mch_id").unwrap_or_default().to_string(),
        appid: field(fields, "appid").unwrap_or_default().to_string(),
        out_trade_no: out_trade_no.to_string(),
        paid,
    })
}

fn refund(config: &V2Config, fields: &BTreeMap<String, String>) -> Result<Notice, NotifyError> {
    if field(fields, "return_code") != Some("SUCCESS") {
        return Err(NotifyError::Malformed(
            "refund notify without return_code SUCCESS".into(),
        ));
    }
    let req_info = field(fields, "req_info").unwrap_or_default();
    let inner = decrypt_req_info(req_info, config.api_key.expose()).map_err(|_| {
        NotifyError::Unverified("req_info does not decrypt with the APIv2 key".into())
    })?;
    let get = |name: &str| {
        field(&inner, name)
            .map(str::to_string)
            .ok_or_else(|| NotifyError::Malformed(format!("req_info without {name}")))
    };
    let state = refund_state(
        &get("refund_status")?,
        field(&inner, "refund_id"),
        field(&inner, "success_time"),
    );
    // ECB has no integrity of its own: the amount is handed on so the engine can check it
    // against the refund it recorded.
    let amount_fen = match field(&inner, "refund_fee") {
        Some(fee) => Some(
            fee.parse::<i64>()
                .ok()
                .and_then(Fen::new)
                .ok_or_else(|| NotifyError::Malformed("req_info refund_fee".into()))?,
        ),
        None => None,
    };
    // The outer mch_id is not encrypted; the key that decrypted req_info is this merchant's,
    // so a genuine notice for another merchant cannot reach here. It is checked all the same.
    Ok(Notice::Refund {
        mchid: field(fields, "mch_id").unwrap_or_default().to_string(),
        out_trade_no: get("out_trade_no")?,
        out_refund_no: get("out_refund_no")?,
        amount_fen,
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v2::refund_notify::encrypt_req_info;
    use crate::ApiV2Key;
    use paystream_engine::payments::gateway::RefundState;

    const KEY: &str = "192006250b4c09247ec02edce69f6a2d";

    fn config(sign_type: SignType) -> V2Config {
        V2Config {
            api_base: "http://127.0.0.1:1".into(),
            secapi_base: None,
            mchid: "10000100".into(),
            appid: "wxd930ea5d5a258f4f".into(),
            api_key: ApiV2Key::new(KEY),
            sign_type,
            client_certificate: None,
            extra_root_ca_pem: None,
            notify_url: "https://shop.example/notify/wechatpay/v2".into(),
            refund_notify_url: "https://shop.example/notify/wechatpay/v2/refund".into(),
            refund_lag_grace: std::time::Duration::from_secs(600),
        }
    }

    fn pay_notify() -> BTreeMap<String, String> {
        [
            ("return_code", "SUCCESS"),
            ("result_code", "SUCCESS"),
            ("appid", "wxd930ea5d5a258f4f"),
            ("mch_id", "10000100"),
            ("nonce_str", "5d2b6c2a8db53831f7eda20af46e531c"),
            ("openid", "oUpF8uMEb4qRXf22hE3X68TekukE"),
            ("trade_type", "JSAPI"),
            ("bank_type", "CFT"),
            ("total_fee", "2500"),
            ("cash_fee", "2500"),
            ("fee_type", "CNY"),
            ("transaction_id", "1004400740201409030005092168"),
            ("out_trade_no", "01a23596329772698c72aa1ae1e35b87"),
            ("time_end", "20140903131540"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn signed(mut fields: BTreeMap<String, String>, t: SignType) -> Vec<u8> {
        let s = sign::sign(&fields, KEY, t);
        fields.insert("sign".into(), s);
        xml::render(&fields).unwrap().into_bytes()
    }

    #[test]
    fn a_signed_pay_notify_reads_as_a_payment() {
        let notice = read(
            &config(SignType::HmacSha256),
            &signed(pay_notify(), SignType::HmacSha256),
        )
        .unwrap();
        match notice {
            Notice::Payment {
                mchid,
                appid,
                out_trade_no,
                paid: Some(paid),
            } => {
                assert_eq!(mchid, "10000100");
                assert_eq!(appid, "wxd930ea5d5a258f4f");
                assert_eq!(out_trade_no, "01a23596329772698c72aa1ae1e35b87");
                assert_eq!(paid.amount_fen.get(), 2500);
                assert_eq!(paid.paid_at.to_rfc3339(), "2014-09-03T05:15:40+00:00");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_md5_notify_for_an_hmac_merchant_is_believed_only_because_it_verifies() {
        let body = signed(pay_notify(), SignType::Md5);
        assert!(read(&config(SignType::HmacSha256), &body).is_ok());
        // Signed with another key: neither type verifies.
        let mut fields = pay_notify();
        let forged = sign::sign(&fields, "another-key", SignType::Md5);
        fields.insert("sign".into(), forged);
        let forged = xml::render(&fields).unwrap();
        assert!(matches!(
            read(&config(SignType::HmacSha256), forged.as_bytes()),
            Err(NotifyError::Unverified(_))
        ));
    }

    #[test]
    fn altered_unsigned_and_hostile_notifies_are_refused() {
        let body = String::from_utf8(signed(pay_notify(), SignType::Md5)).unwrap();
        let altered = body.replace("2500", "1");
        assert!(matches!(
            read(&config(SignType::Md5), altered.as_bytes()),
            Err(NotifyError::Unverified(_))
        ));
        let unsigned = xml::render(&pay_notify()).unwrap();
        assert!(matches!(
            read(&config(SignType::Md5), unsigned.as_bytes()),
            Err(NotifyError::Unverified(_))
        ));
        let entity = b"<!DOCTYPE xml [<!ENTITY e \"1\">]><xml><total_fee>&e;</total_fee></xml>";
        assert!(matches!(
            read(&config(SignType::Md5), entity),
            Err(NotifyError::Malformed(_))
        ));
        assert!(matches!(
            read(&config(SignType::Md5), &body.as_bytes()[..body.len() / 2]),
            Err(NotifyError::Malformed(_))
        ));
        // An empty sign_type is no sign_type: the notify is checked with ours.
        let mut empty = pay_notify();
        empty.insert("sign_type".into(), String::new());
        assert!(read(
            &config(SignType::HmacSha256),
            &signed(empty, SignType::HmacSha256)
        )
        .is_ok());
        // A sign_type WeChat does not have is not a notice of WeChat's.
        let mut odd = pay_notify();
        odd.insert("sign_type".into(), "SHA1".into());
        assert!(matches!(
            read(&config(SignType::Md5), &signed(odd, SignType::Md5)),
            Err(NotifyError::Unverified(_))
        ));
    }

    #[test]
    fn a_refund_notify_is_believed_because_req_info_decrypts() {
        let inner: BTreeMap<String, String> = [
            ("out_trade_no", "01a23596329772698c72aa1ae1e35b87"),
            ("out_refund_no", "R1"),
            ("refund_id", "50000408942018111907145868882"),
            ("refund_status", "SUCCESS"),
            ("success_time", "2018-11-19 16:24:13"),
            ("refund_fee", "100"),
            ("total_fee", "2500"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let outer = |key: &str| {
            let fields: BTreeMap<String, String> = [
                ("return_code", "SUCCESS".to_string()),
                ("appid", "wxd930ea5d5a258f4f".into()),
                ("mch_id", "10000100".into()),
                ("nonce_str", "n".into()),
                ("req_info", encrypt_req_info(&inner, key).unwrap()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            xml::render(&fields).unwrap().into_bytes()
        };
        match read(&config(SignType::Md5), &outer(KEY)).unwrap() {
            Notice::Refund {
                out_refund_no,
                amount_fen,
                state: RefundState::Succeeded { refund_id, .. },
                ..
            } => {
                assert_eq!(out_refund_no, "R1");
                assert_eq!(amount_fen.map(Fen::get), Some(100));
                assert_eq!(refund_id.as_deref(), Some("50000408942018111907145868882"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            read(&config(SignType::Md5), &outer("a-wrong-key")),
            Err(NotifyError::Unverified(_))
        ));
    }
}
