//! WeChat's error answers and the field checks it applies before any business rule.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

/// An APIv3 error: `{"code","message","detail"?}` with an HTTP status. Signed on the way out like
/// every other answer.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub detail: Option<Value>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code.to_string(),
            message: message.into(),
            detail: None,
        }
    }

    pub(crate) fn param(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "PARAM_ERROR", message)
    }

    pub(crate) fn invalid_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
    }

    /// A field that breaks its format rule, in WeChat's wording and with its `detail`.
    pub(crate) fn field(field: &str, issue: &str) -> ApiError {
        ApiError {
            detail: Some(json!({ "location": "body", "field": field, "issue": issue })),
            ..ApiError::param(format!(
                "输入源“/body/{field}”映射到值字段校验失败：{issue}"
            ))
        }
    }

    pub(crate) fn missing(field: &str) -> ApiError {
        ApiError {
            detail: Some(json!({ "location": "body", "field": field })),
            ..ApiError::param(format!(
                "输入源“/body/{field}”映射到字段“{field}”必填性规则校验失败，此字段为必填项"
            ))
        }
    }

    pub(crate) fn sign_error(issue: impl Into<String>) -> ApiError {
        ApiError {
            detail: Some(json!({ "location": "authorization", "issue": issue.into() })),
            ..ApiError::new(
                StatusCode::UNAUTHORIZED,
                "SIGN_ERROR",
                "错误的签名，验签失败",
            )
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "code": self.code, "message": self.message });
        if let Some(detail) = self.detail {
            body["detail"] = detail;
        }
        (self.status, Json(body)).into_response()
    }
}

/// Parse a request body; anything that is not the expected JSON is `PARAM_ERROR`.
pub(crate) fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::param(format!("请求体格式错误: {e}")))
}

pub(crate) fn required<T>(value: Option<T>, field: &str) -> Result<T, ApiError> {
    value.ok_or_else(|| ApiError::missing(field))
}

/// A text field of `min..=max` characters. APIv3 only accepts characters of one to three UTF-8
/// bytes: emoji and other supplementary-plane characters are refused, as WeChat does.
pub(crate) fn text(value: &str, field: &str, min: usize, max: usize) -> Result<(), ApiError> {
    let count = value.chars().count();
    if count < min || count > max {
        return Err(ApiError::field(
            field,
            &format!("长度应在{min}到{max}个字符之间"),
        ));
    }
    if value.chars().any(|c| c.len_utf8() > 3) {
        return Err(ApiError::field(
            field,
            "包含不支持的字符（四字节UTF-8字符）",
        ));
    }
    Ok(())
}

/// `len_min..=len_max` characters of `[0-9A-Za-z]` and `extra`.
pub(crate) fn token(
    value: &str,
    field: &str,
    len_min: usize,
    len_max: usize,
    extra: &str,
) -> Result<(), ApiError> {
    let ok_len = (len_min..=len_max).contains(&value.len());
    let ok_chars = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || extra.contains(c));
    if ok_len && ok_chars {
        Ok(())
    } else {
        Err(ApiError::field(
            field,
            &format!("应为{len_min}到{len_max}位数字、大小写字母或{extra}"),
        ))
    }
}

/// `out_trade_no`: 6–32 of `[0-9A-Za-z_-|*]`.
pub(crate) fn out_trade_no(value: &str) -> Result<(), ApiError> {
    token(value, "out_trade_no", 6, 32, "_-|*")
}

/// `out_refund_no`: 1–64 of `[0-9A-Za-z_-|*@]`.
pub(crate) fn out_refund_no(value: &str) -> Result<(), ApiError> {
    token(value, "out_refund_no", 1, 64, "_-|*@")
}

/// `notify_url`: an absolute `https://` URL without a query string, at most 256 characters.
/// Deviation: `http://` is accepted for loopback hosts so that a local engine can be notified.
pub(crate) fn notify_url(value: &str, field: &str) -> Result<(), ApiError> {
    let bad = |issue: &str| Err(ApiError::field(field, issue));
    if value.len() > 256 {
        return bad("长度不能超过256");
    }
    let Ok(url) = reqwest::Url::parse(value) else {
        return bad("不是有效的URL");
    };
    if url.query().is_some() || url.fragment().is_some() {
        return bad("不能携带参数");
    }
    let Some(host) = url.host_str() else {
        return bad("不是有效的URL");
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => bad("必须以https://开头"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_trade_no_rules() {
        for ok in ["123456", "A_b-c|d*9", &"x".repeat(32)] {
            assert!(out_trade_no(ok).is_ok(), "{ok}");
        }
        for bad in ["12345", &"x".repeat(33), "abc def", "订单123456", "abc.def"] {
            assert!(out_trade_no(bad).is_err(), "{bad}");
        }
        assert!(out_refund_no("r@1").is_ok());
        assert!(out_refund_no("").is_err());
    }

    #[test]
    fn text_rules() {
        assert!(text("咖啡", "description", 1, 127).is_ok());
        assert!(text(&"字".repeat(127), "description", 1, 127).is_ok());
        assert!(text(&"字".repeat(128), "description", 1, 127).is_err());
        assert!(text("", "description", 1, 127).is_err());
        assert!(text("coffee ☕", "description", 1, 127).is_ok());
        assert!(text("coffee 🍵", "description", 1, 127).is_err());
    }

    #[test]
    fn notify_url_rules() {
        for ok in [
            "https://shop.example.com/wechatpay/notify",
            "http://127.0.0.1:8080/notify",
            "http://localhost/notify",
            "http://[::1]:9/n",
        ] {
            assert!(notify_url(ok, "notify_url").is_ok(), "{ok}");
        }
        for bad in [
            "http://shop.example.com/notify",
            "https://shop.example.com/notify?order=1",
            "ftp://127.0.0.1/x",
            "/relative",
            "",
        ] {
            assert!(notify_url(bad, "notify_url").is_err(), "{bad}");
        }
    }
}
