//! Reading an APIv2 answer: the XML parsed flat, `return_code` (did WeChat take the request at
//! all) before `result_code` (did the business succeed), and the `sign` checked over every field
//! received — with the sign type the request was made with.
//!
//! A `return_code` FAIL often carries no `sign` (a bad signature of ours, a malformed request):
//! it is understood without one, and it never says anything happened. Anything that does say so
//! (`return_code` SUCCESS) must verify.

use std::collections::BTreeMap;

use super::sign::{self, SignType};
use super::xml;

/// What an APIv2 answer says, once it is known to be WeChat's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum V2Answer {
    /// `return_code` and `result_code` SUCCESS, signature verified: the fields.
    Success(BTreeMap<String, String>),
    /// `result_code` FAIL with WeChat's `err_code` (verified: signed like a success).
    Refused {
        /// WeChat's business error code (`ORDERPAID`, `SYSTEMERROR`, …).
        err_code: String,
        /// Its description, for people.
        err_code_des: String,
        /// Every field received.
        fields: BTreeMap<String, String>,
    },
    /// `return_code` FAIL: WeChat did not take the request (signature, parameters, its own
    /// trouble). Unsigned, so only ever read as "nothing happened".
    NotTaken {
        /// Why, in WeChat's words.
        return_msg: String,
    },
}

impl V2Answer {
    /// Whether the same request (same parameters, same `out_trade_no` / `out_refund_no`) should
    /// simply be sent again: WeChat's `SYSTEMERROR` and `BIZERR_NEED_RETRY`.
    pub fn worth_retrying(&self) -> bool {
        match self {
            V2Answer::Refused { err_code, .. } => {
                matches!(err_code.as_str(), "SYSTEMERROR" | "BIZERR_NEED_RETRY")
            }
            // Not taken is the request's fault (signature, parameters) as often as WeChat's:
            // the caller treats it as "outcome unknown", and its own back-off decides.
            V2Answer::NotTaken { .. } | V2Answer::Success(_) => false,
        }
    }
}

/// Why an answer is not believed at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum V2AnswerError {
    /// Not well-formed flat XML (or a DTD, an entity, an oversized body).
    #[error("unreadable APIv2 answer: {0}")]
    Unreadable(String),
    /// No `return_code`: not an APIv2 answer.
    #[error("APIv2 answer without return_code")]
    NoReturnCode,
    /// A SUCCESS whose `sign` does not verify: forged, altered, or signed another way.
    #[error("APIv2 answer signature does not verify")]
    BadSignature,
}

/// Reads an answer to a request signed with `sign_type` under `key`.
pub fn read(body: &[u8], key: &str, sign_type: SignType) -> Result<V2Answer, V2AnswerError> {
    let fields = xml::parse(body).map_err(|e| V2AnswerError::Unreadable(e.to_string()))?;
    let return_code = fields
        .get("return_code")
        .ok_or(V2AnswerError::NoReturnCode)?;
    if return_code != "SUCCESS" {
        return Ok(V2Answer::NotTaken {
            return_msg: fields.get("return_msg").cloned().unwrap_or_default(),
        });
    }
    if !sign::verify(&fields, key, sign_type) {
        return Err(V2AnswerError::BadSignature);
    }
    if fields.get("result_code").map(String::as_str) == Some("SUCCESS") {
        return Ok(V2Answer::Success(fields));
    }
    Ok(V2Answer::Refused {
        err_code: fields.get("err_code").cloned().unwrap_or_default(),
        err_code_des: fields.get("err_code_des").cloned().unwrap_or_default(),
        fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "192006250b4c09247ec02edce69f6a2d";

    fn signed(pairs: &[(&str, &str)], t: SignType) -> Vec<u8> {
        let mut fields: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let signature = sign::sign(&fields, KEY, t);
        fields.insert("sign".into(), signature);
        xml::render(&fields).unwrap().into_bytes()
    }

    #[test]
    fn a_signed_success_is_read_and_a_tampered_one_refused() {
        let body = signed(
            &[
                ("return_code", "SUCCESS"),
                ("result_code", "SUCCESS"),
                ("prepay_id", "wx201410272009395522657a690389285100"),
            ],
            SignType::HmacSha256,
        );
        match read(&body, KEY, SignType::HmacSha256).unwrap() {
            V2Answer::Success(fields) => {
                assert_eq!(fields["prepay_id"], "wx201410272009395522657a690389285100")
            }
            other => panic!("{other:?}"),
        }
        let tampered = String::from_utf8(body.clone())
            .unwrap()
            .replace("wx2014", "wx2015");
        assert_eq!(
            read(tampered.as_bytes(), KEY, SignType::HmacSha256),
            Err(V2AnswerError::BadSignature)
        );
        // Signed with HMAC, checked as MD5: not believed.
        assert_eq!(
            read(&body, KEY, SignType::Md5),
            Err(V2AnswerError::BadSignature)
        );
    }

    #[test]
    fn business_refusals_are_signed_and_some_are_worth_retrying() {
        let body = signed(
            &[
                ("return_code", "SUCCESS"),
                ("result_code", "FAIL"),
                ("err_code", "SYSTEMERROR"),
                ("err_code_des", "系统错误"),
            ],
            SignType::Md5,
        );
        let answer = read(&body, KEY, SignType::Md5).unwrap();
        assert!(matches!(&answer, V2Answer::Refused { err_code, .. } if err_code == "SYSTEMERROR"));
        assert!(answer.worth_retrying());
        let paid = signed(
            &[
                ("return_code", "SUCCESS"),
                ("result_code", "FAIL"),
                ("err_code", "ORDERPAID"),
            ],
            SignType::Md5,
        );
        let answer = read(&paid, KEY, SignType::Md5).unwrap();
        assert!(!answer.worth_retrying());
        // A refusal that does not verify is not WeChat's.
        let unsigned = b"<xml><return_code>SUCCESS</return_code><result_code>FAIL</result_code>\
            <err_code>ORDERPAID</err_code></xml>";
        assert_eq!(
            read(unsigned, KEY, SignType::Md5),
            Err(V2AnswerError::BadSignature)
        );
    }

    #[test]
    fn a_fail_without_sign_is_understood_as_not_taken() {
        let body = "<xml><return_code><![CDATA[FAIL]]></return_code>\
            <return_msg><![CDATA[签名错误]]></return_msg></xml>";
        assert_eq!(
            read(body.as_bytes(), KEY, SignType::HmacSha256),
            Ok(V2Answer::NotTaken {
                return_msg: "签名错误".into()
            })
        );
        assert_eq!(
            read(b"<xml><return_msg>x</return_msg></xml>", KEY, SignType::Md5),
            Err(V2AnswerError::NoReturnCode)
        );
        assert!(matches!(
            read(b"<xml><return_code>", KEY, SignType::Md5),
            Err(V2AnswerError::Unreadable(_))
        ));
        assert!(matches!(
            read(
                b"<!DOCTYPE x [<!ENTITY e \"FAIL\">]><xml><return_code>&e;</return_code></xml>",
                KEY,
                SignType::Md5
            ),
            Err(V2AnswerError::Unreadable(_))
        ));
    }
}
