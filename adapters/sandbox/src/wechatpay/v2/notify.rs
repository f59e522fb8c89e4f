//! v2 notifications: the pay notification (XML signed with the order's sign type, or the one a
//! fault says) and the refund notification (XML with `req_info` encrypted, unsigned). Delivery,
//! retries and the log are v3's (`wechatpay::notify`); only the acknowledgement differs: an
//! HTTP 200 whose body is XML with `return_code` SUCCESS. A bare `success`, or a 200 saying
//! FAIL, is retried.

use std::time::Duration;

use axum::body::Bytes;
use paystream_wechatpay::v2::refund_notify::encrypt_req_info;
use paystream_wechatpay::v2::sign::{self, SignType};
use paystream_wechatpay::v2::xml;

use super::state::{put, Fields, V2Order};
use crate::wechatpay::notify::{self, refund_event, Outcome, Subject, TRANSACTION_SUCCESS};
use crate::wechatpay::state::{Faults, Notification, RefundStatus};
use crate::wechatpay::{Channel, Pay};

/// The pay notification of a paid order. Signed with the order's sign type unless the
/// `v2_notify_sign_type` fault says otherwise; `sign_type` is only included when the
/// `v2_notify_with_sign_type` fault asks (WeChat's usually lack it).
pub(crate) fn build_pay(
    pay: &Pay,
    order: &V2Order,
    faults: &Faults,
) -> Result<Notification, String> {
    let sign_type = faults
        .v2_notify_sign_type
        .as_deref()
        .and_then(|t| t.parse::<SignType>().ok())
        .unwrap_or(order.sign_type);
    let mut fields = Fields::new();
    put(&mut fields, "return_code", "SUCCESS");
    put(&mut fields, "result_code", "SUCCESS");
    put(&mut fields, "appid", &pay.appid);
    put(&mut fields, "mch_id", &pay.mchid);
    put(&mut fields, "nonce_str", paystream_wechatpay::nonce_str());
    put(&mut fields, "out_trade_no", &order.out_trade_no);
    order.payment_fields(&mut fields);
    if faults.v2_notify_with_sign_type {
        put(&mut fields, "sign_type", sign_type);
    }
    let signature = sign::sign(&fields, pay.apiv2_key.expose(), sign_type);
    put(&mut fields, "sign", signature);
    let body = xml::render(&fields).map_err(|e| e.to_string())?;
    Ok(Notification {
        // v2 notifications carry no id; this one names it in the delivery log.
        id: uuid::Uuid::new_v4().to_string(),
        body: body.into(),
    })
}

pub(crate) fn send_pay(
    pay: &Pay,
    url: &str,
    notification: &Notification,
    out_trade_no: &str,
    delay: Duration,
    copies: usize,
) {
    notify::dispatch(
        pay,
        url,
        notification,
        Subject {
            channel: Channel::V2,
            event_type: TRANSACTION_SUCCESS.event_type,
            out_trade_no,
            out_refund_no: None,
        },
        delay,
        copies,
    );
}

/// The refund notification: `return_code`, `appid`, `mch_id`, `nonce_str` and `req_info` (the
/// `<root>` AES-256-ECB encrypted with MD5 of the APIv2 key), no `sign`.
pub(crate) fn send_refund(
    pay: &Pay,
    url: &str,
    req_info: &Fields,
    status: RefundStatus,
    out_trade_no: &str,
    out_refund_no: &str,
) {
    let built = encrypt_req_info(req_info, pay.apiv2_key.expose()).and_then(|sealed| {
        let mut fields = Fields::new();
        put(&mut fields, "return_code", "SUCCESS");
        put(&mut fields, "appid", &pay.appid);
        put(&mut fields, "mch_id", &pay.mchid);
        put(&mut fields, "nonce_str", paystream_wechatpay::nonce_str());
        put(&mut fields, "req_info", sealed);
        xml::render(&fields)
    });
    let body = match built {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(error = %e, "wechatpay sandbox: cannot build a v2 refund notification");
            return;
        }
    };
    let notification = Notification {
        id: uuid::Uuid::new_v4().to_string(),
        body: body.into(),
    };
    notify::dispatch(
        pay,
        url,
        &notification,
        Subject {
            channel: Channel::V2,
            event_type: refund_event(status).event_type,
            out_trade_no,
            out_refund_no: Some(out_refund_no),
        },
        Duration::ZERO,
        1,
    );
}

/// One POST of the same bytes (a v2 notification is signed once, in its body).
pub(crate) async fn attempt_once(pay: &Pay, url: &str, body: &Bytes) -> Result<Outcome, String> {
    let mut response = pay
        .http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "text/xml")
        .body(body.clone())
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    let status = response.status().as_u16();
    // Read no more than an acknowledgement can be.
    let mut answer = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| e.without_url().to_string())?
    {
        answer.extend_from_slice(&chunk);
        if answer.len() > xml::MAX_XML_BYTES {
            break;
        }
    }
    let acknowledged = status == 200 && is_ack(&answer);
    Ok(Outcome {
        status,
        acknowledged,
        note: (!acknowledged && status == 200)
            .then(|| "the answer is not XML with return_code SUCCESS".to_string()),
    })
}

/// `<xml><return_code>SUCCESS</return_code>…</xml>`, parsed (CDATA or not, `return_msg` or not).
fn is_ack(answer: &[u8]) -> bool {
    xml::parse(answer).is_ok_and(|f| f.get("return_code").map(String::as_str) == Some("SUCCESS"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_xml_success_acknowledges() {
        assert!(is_ack(xml::NOTIFY_ACK_SUCCESS.as_bytes()));
        assert!(is_ack(b"<xml><return_code>SUCCESS</return_code></xml>"));
        assert!(!is_ack(b"success"));
        assert!(!is_ack(b"SUCCESS"));
        assert!(!is_ack(b""));
        assert!(!is_ack(
            b"<xml><return_code><![CDATA[FAIL]]></return_code><return_msg>x</return_msg></xml>"
        ));
        assert!(!is_ack(b"{\"code\":\"SUCCESS\"}"));
    }
}
