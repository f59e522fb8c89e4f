//! Notifications: encrypted, signed POSTs to the merchant's `notify_url`, retried on WeChat's
//! schedule until acknowledged: v3 by a 200 or 204, v2 by a 200 whose body is the XML
//! `return_code` SUCCESS (the v2 bodies themselves are built in `v2::notify`).

use std::time::Duration;

use axum::body::Bytes;
use chrono::Utc;
use paystream_wechatpay::v3::aead::EncryptedResource;
use serde_json::json;

use super::ids::wechat_time;
use super::keys::alphanumeric;
use super::signing::{probe, signature_headers};
use super::state::{Delivery, Notification};
use super::{Channel, Pay};

/// WeChat's intervals between attempts (15 retries, 24 h 4 min in all), before scaling.
const RETRY_SCHEDULE: [Duration; 15] = {
    const fn m(minutes: u64) -> Duration {
        Duration::from_secs(minutes * 60)
    }
    [
        Duration::from_secs(15),
        Duration::from_secs(15),
        Duration::from_secs(30),
        m(3),
        m(10),
        m(20),
        m(30),
        m(30),
        m(30),
        m(60),
        m(180),
        m(180),
        m(180),
        m(360),
        m(360),
    ]
};

#[derive(Clone, Copy)]
pub(crate) struct Event {
    pub event_type: &'static str,
    summary: &'static str,
    /// `original_type` and `associated_data` of the resource.
    resource: &'static str,
}

pub(crate) const TRANSACTION_SUCCESS: Event = Event {
    event_type: "TRANSACTION.SUCCESS",
    summary: "支付成功",
    resource: "transaction",
};

pub(crate) fn refund_event(status: super::state::RefundStatus) -> Event {
    use super::state::RefundStatus::*;
    let (event_type, summary) = match status {
        Success => ("REFUND.SUCCESS", "退款成功"),
        Closed => ("REFUND.CLOSED", "退款关闭"),
        // PROCESSING is never notified; treat it like the other non-final state.
        Abnormal | Processing => ("REFUND.ABNORMAL", "退款异常"),
    };
    Event {
        event_type,
        summary,
        resource: "refund",
    }
}

/// Build a notification: the envelope around `resource` sealed with the APIv3 key.
pub(crate) fn build(
    pay: &Pay,
    event: Event,
    resource: &serde_json::Value,
) -> Result<Notification, String> {
    let plaintext = serde_json::to_vec(resource).map_err(|e| e.to_string())?;
    let sealed = EncryptedResource::seal(
        &pay.apiv3_key,
        &alphanumeric(12),
        event.resource,
        Some(event.resource),
        &plaintext,
    )
    .map_err(|e| e.to_string())?;
    let id = uuid::Uuid::new_v4().to_string();
    let envelope = json!({
        "id": id,
        "create_time": wechat_time(Utc::now()),
        "resource_type": "encrypt-resource",
        "event_type": event.event_type,
        "summary": event.summary,
        "resource": sealed,
    });
    let body = serde_json::to_vec(&envelope).map_err(|e| e.to_string())?;
    Ok(Notification {
        id,
        body: body.into(),
    })
}

/// What a delivery is about, for the log, and which API's rules it follows.
pub(crate) struct Subject<'a> {
    pub channel: Channel,
    pub event_type: &'a str,
    pub out_trade_no: &'a str,
    pub out_refund_no: Option<&'a str>,
}

/// Start `copies` independent deliveries of `notification` after `delay` (concurrently: WeChat
/// does deliver duplicates within the same second).
pub(crate) fn dispatch(
    pay: &Pay,
    url: &str,
    notification: &Notification,
    subject: Subject<'_>,
    delay: Duration,
    copies: usize,
) {
    for _ in 0..copies {
        let index = {
            let mut state = pay.lock();
            state.deliveries.push(Delivery {
                channel: subject.channel,
                notification_id: notification.id.clone(),
                event_type: subject.event_type.to_string(),
                url: url.to_string(),
                out_trade_no: subject.out_trade_no.to_string(),
                out_refund_no: subject.out_refund_no.map(str::to_string),
                attempts: 0,
                last_status: None,
                last_error: None,
                delivered: false,
                gave_up: false,
            });
            state.deliveries.len() - 1
        };
        tokio::spawn(deliver(
            pay.clone(),
            subject.channel,
            index,
            url.to_string(),
            notification.body.clone(),
            delay,
        ));
    }
}

/// What one attempt got back: the HTTP status, whether that counts as received, and why not.
pub(crate) struct Outcome {
    pub status: u16,
    pub acknowledged: bool,
    pub note: Option<String>,
}

async fn deliver(
    pay: Pay,
    channel: Channel,
    index: usize,
    url: String,
    body: Bytes,
    delay: Duration,
) {
    tokio::time::sleep(delay).await;
    for attempt in 0..=RETRY_SCHEDULE.len() {
        let outcome = match channel {
            Channel::V3 => attempt_once(&pay, &url, &body).await,
            Channel::V2 => super::v2::attempt_once(&pay, &url, &body).await,
        };
        let delivered = outcome.as_ref().is_ok_and(|o| o.acknowledged);
        let gave_up = !delivered && attempt == RETRY_SCHEDULE.len();
        tracing::info!(url = %url, attempt = attempt + 1, status = ?outcome.as_ref().map(|o| o.status), delivered, "wechatpay sandbox: notification");
        if let Some(entry) = pay.lock().deliveries.get_mut(index) {
            entry.attempts += 1;
            entry.delivered = delivered;
            entry.gave_up = gave_up;
            match outcome {
                Ok(o) => {
                    entry.last_status = Some(o.status);
                    entry.last_error = o.note;
                }
                Err(e) => {
                    entry.last_status = None;
                    entry.last_error = Some(e);
                }
            }
        }
        if delivered || gave_up {
            return;
        }
        if let Some(wait) = RETRY_SCHEDULE.get(attempt) {
            tokio::time::sleep(pay.scaled(*wait)).await;
        }
    }
}

/// One POST, signed afresh: a retry hours later must carry a current timestamp to verify.
/// WeChat documents 200 and 204 as the acknowledgement; anything else is retried.
async fn attempt_once(pay: &Pay, url: &str, body: &Bytes) -> Result<Outcome, String> {
    let signer = pay.notification_signer().ok_or("no signing key")?;
    let mut headers = signature_headers(&signer, body)?;
    if pay.lock().faults.probe_now() {
        headers = probe(headers);
    }
    let response = pay
        .http
        .post(url)
        .headers(headers)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.clone())
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    let status = response.status().as_u16();
    Ok(Outcome {
        status,
        acknowledged: matches!(status, 200 | 204),
        note: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_wechats_24h_4m() {
        let total: Duration = RETRY_SCHEDULE.iter().sum();
        assert_eq!(total, Duration::from_secs(24 * 3600 + 4 * 60));
    }
}
