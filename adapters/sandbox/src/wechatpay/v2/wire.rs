//! What every APIv2 call shares: reading the XML request (format, merchant, signature), the
//! injected faults, and WeChat's two answer shapes — `return_code` FAIL (not taken, unsigned)
//! and `return_code` SUCCESS (signed with the request's sign type, `result_code` saying whether
//! the business succeeded). Always HTTP 200, as WeChat's v2 answers are.

use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use paystream_wechatpay::v2::sign::{self, SignType};
use paystream_wechatpay::v2::xml;

use super::state::{put, Fields};
use crate::wechatpay::Pay;

/// A request that passed the checks every call shares.
pub(crate) struct V2Request {
    /// Every field received (the signature covered them all).
    pub fields: Fields,
    /// `sign_type` as sent, MD5 when absent: the answer is signed the same way.
    pub sign_type: SignType,
}

impl V2Request {
    /// A field's value; an empty one counts as absent, as WeChat neither signs nor reads it.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub(crate) fn required(&self, name: &str) -> Result<&str, V2Error> {
        self.get(name)
            .ok_or_else(|| V2Error::param(format!("缺少参数{name}")))
    }
}

/// Why a call did not succeed.
#[derive(Debug)]
pub(crate) enum V2Error {
    /// `return_code` FAIL with this `return_msg`: WeChat did not take the request. Unsigned.
    NotTaken(String),
    /// `return_code` SUCCESS, `result_code` FAIL with WeChat's `err_code`: signed.
    Refused {
        err_code: String,
        err_code_des: String,
    },
}

impl V2Error {
    pub(crate) fn refused(err_code: &str, err_code_des: impl Into<String>) -> V2Error {
        V2Error::Refused {
            err_code: err_code.to_string(),
            err_code_des: err_code_des.into(),
        }
    }

    pub(crate) fn param(err_code_des: impl Into<String>) -> V2Error {
        V2Error::refused("PARAM_ERROR", err_code_des)
    }
}

/// The business fields of a successful call, or why not.
pub(crate) type V2Result = Result<Fields, V2Error>;

/// One call's business logic, run once the shared checks pass. Synchronous: it only touches the
/// books (under the lock) and may spawn the refund timer.
pub(crate) type Op = fn(&Pay, &V2Request) -> V2Result;

pub(crate) fn xml_response(body: String) -> Response {
    ([(CONTENT_TYPE, "text/xml; charset=utf-8")], body).into_response()
}

/// `<xml><return_code>FAIL</return_code><return_msg>…</return_msg></xml>`, WeChat's shape for a
/// request it did not take (a bad signature included): no `sign`.
pub(crate) fn not_taken(return_msg: &str) -> Response {
    let mut fields = Fields::new();
    put(&mut fields, "return_code", "FAIL");
    put(&mut fields, "return_msg", return_msg);
    match xml::render(&fields) {
        Ok(body) => xml_response(body),
        Err(_) => {
            xml_response("<xml><return_code><![CDATA[FAIL]]></return_code></xml>".to_string())
        }
    }
}

/// A `return_code` SUCCESS answer: the envelope, `result_code` (and `err_code`), the business
/// fields, then `sign` over all of them with `sign_type` (left off when `signed` is false).
pub(crate) fn taken(
    pay: &Pay,
    sign_type: SignType,
    result: Result<Fields, (String, String)>,
    signed: bool,
) -> Response {
    let mut fields = Fields::new();
    put(&mut fields, "return_code", "SUCCESS");
    put(&mut fields, "return_msg", "OK");
    put(&mut fields, "appid", &pay.appid);
    put(&mut fields, "mch_id", &pay.mchid);
    put(&mut fields, "nonce_str", paystream_wechatpay::nonce_str());
    match result {
        Ok(business) => {
            put(&mut fields, "result_code", "SUCCESS");
            fields.extend(business);
        }
        Err((err_code, err_code_des)) => {
            put(&mut fields, "result_code", "FAIL");
            put(&mut fields, "err_code", err_code);
            put(&mut fields, "err_code_des", err_code_des);
        }
    }
    if signed {
        let signature = sign::sign(&fields, pay.apiv2_key.expose(), sign_type);
        put(&mut fields, "sign", signature);
    }
    match xml::render(&fields) {
        Ok(body) => xml_response(body),
        // Only a business value XML cannot carry (a control character) gets here.
        Err(_) => not_taken("系统错误"),
    }
}

/// The checks WeChat makes before any business rule, in its order: method, body, XML,
/// `sign_type`, merchant, signature, appid, `nonce_str`.
pub(crate) fn read(pay: &Pay, method: &Method, body: &[u8]) -> Result<V2Request, V2Error> {
    let fail = |msg: &str| Err(V2Error::NotTaken(msg.to_string()));
    if method != Method::POST {
        return fail("请使用post方法");
    }
    if body.is_empty() {
        return fail("post数据为空");
    }
    let Ok(fields) = xml::parse(body) else {
        return fail("XML格式错误");
    };
    let sign_type = match fields.get("sign_type").filter(|t| !t.is_empty()) {
        None => SignType::Md5,
        Some(t) => match t.parse::<SignType>() {
            Ok(t) => t,
            Err(_) => return fail("sign_type参数错误"),
        },
    };
    match fields.get("mch_id").filter(|m| !m.is_empty()) {
        None => return fail("mch_id参数格式错误"),
        Some(m) if *m != pay.mchid => return fail("商户号mch_id与appid不匹配"),
        Some(_) => {}
    }
    if !sign::verify(&fields, pay.apiv2_key.expose(), sign_type) {
        return fail("签名错误");
    }
    match fields.get("appid").filter(|a| !a.is_empty()) {
        None => return fail("appid参数长度有误"),
        Some(a) if *a != pay.appid => return fail("appid和mch_id不匹配"),
        Some(_) => {}
    }
    let request = V2Request { fields, sign_type };
    let nonce = request.required("nonce_str")?;
    if nonce.len() > 32 {
        return Err(V2Error::param("nonce_str参数长度有误：不超过32位"));
    }
    Ok(request)
}

/// v3 spellings of an injected `code` (the faults are shared) in v2's: `SYSTEM_ERROR` is v2's
/// `SYSTEMERROR`, and so on. Codes v2 spells the same (or only v2 has) pass through.
fn v2_code(code: &str) -> &str {
    match code {
        "SYSTEM_ERROR" => "SYSTEMERROR",
        "NOT_ENOUGH" => "NOTENOUGH",
        "ORDER_NOT_EXIST" | "RESOURCE_NOT_EXISTS" => "ORDERNOTEXIST",
        "ORDER_CLOSED" => "ORDERCLOSED",
        "NO_AUTH" => "NOAUTH",
        other => other,
    }
}

/// Run one APIv2 call: shared checks, injected faults, `op`, the answer (after `delay_ms`).
pub(crate) async fn handle(
    pay: &Pay,
    method: &Method,
    path: &str,
    body: &[u8],
    op: Op,
) -> Response {
    let answer = match read(pay, method, body) {
        Err(V2Error::NotTaken(msg)) => {
            tracing::info!(path, return_msg = %msg, "wechatpay sandbox: v2 request not taken");
            Err(not_taken(&msg))
        }
        Err(V2Error::Refused {
            err_code,
            err_code_des,
        }) => {
            // Only checks after the signature refuse this way: the sign type is known.
            let sign_type = xml::parse(body)
                .ok()
                .and_then(|f| f.get("sign_type").and_then(|t| t.parse().ok()))
                .unwrap_or(SignType::Md5);
            Ok((sign_type, Err((err_code, err_code_des))))
        }
        Ok(request) => {
            let failure = pay.lock().faults.take_failure(path);
            let injected = |code: &str| {
                Err((
                    v2_code(code).to_string(),
                    "系统错误（由沙箱注入）".to_string(),
                ))
            };
            let result = match failure {
                Some((_, code, false)) => injected(&code),
                Some((_, code, true)) => {
                    let _ = op(pay, &request);
                    injected(&code)
                }
                None => match op(pay, &request) {
                    Ok(fields) => Ok(fields),
                    Err(V2Error::Refused {
                        err_code,
                        err_code_des,
                    }) => {
                        tracing::info!(path, %err_code, %err_code_des, "wechatpay sandbox: v2 request refused");
                        Err((err_code, err_code_des))
                    }
                    Err(V2Error::NotTaken(msg)) => {
                        return delayed(pay, not_taken(&msg)).await;
                    }
                },
            };
            Ok((request.sign_type, result))
        }
    };
    let response = match answer {
        Err(response) => response,
        Ok((sign_type, result)) => {
            let unsigned = pay.lock().faults.take_unsigned(path);
            taken(pay, sign_type, result, !unsigned)
        }
    };
    delayed(pay, response).await
}

async fn delayed(pay: &Pay, response: Response) -> Response {
    let delay_ms = pay.lock().faults.delay_ms;
    if delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injected_codes_are_spelled_the_v2_way() {
        assert_eq!(v2_code("SYSTEM_ERROR"), "SYSTEMERROR");
        assert_eq!(v2_code("NOT_ENOUGH"), "NOTENOUGH");
        assert_eq!(v2_code("BIZERR_NEED_RETRY"), "BIZERR_NEED_RETRY");
    }
}
