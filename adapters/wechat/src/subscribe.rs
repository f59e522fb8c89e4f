//! `/cgi-bin/message/subscribe/send`.

use async_trait::async_trait;
use paystream_engine::subscriptions::{SendError, SubscribeMessage, SubscribeMessages};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::{errcode_of, errmsg_of, string_or_number, token, MiniProgramClient};

/// What the caller must do about a send WeChat did not accept.
pub(crate) fn send_error(errcode: i64, errmsg: &str) -> SendError {
    match errcode {
        43101 => SendError::NoAcceptance,
        // Busy, rate limited (daily quota, per-minute), or a token still refused after renewal:
        // the same message may go through later.
        -1 | 45009 | 45011 => {
            SendError::Unavailable(format!("WeChat answered errcode {errcode}: {errmsg}"))
        }
        e if token::is_token_error(e) => SendError::Unavailable(format!(
            "access token refused after renewal (errcode {errcode})"
        )),
        // 40003 openid, 47003 data, 40037 template, 41030 page, …: sending again will not help.
        _ => SendError::Refused {
            errcode,
            errmsg: errmsg.to_string(),
        },
    }
}

/// The request body WeChat takes. `miniprogram_state` is left out (WeChat's default: the
/// released version).
pub(crate) fn send_body(message: &SubscribeMessage) -> Value {
    let data: Map<String, Value> = message
        .data
        .iter()
        .map(|(field, text)| (field.clone(), json!({ "value": text })))
        .collect();
    let mut body = json!({
        "touser": message.openid,
        "template_id": message.template_id,
        "lang": "zh_CN",
        "data": data,
    });
    if let Some(page) = &message.page {
        body["page"] = json!(page);
    }
    body
}

#[derive(Deserialize)]
struct SendReply {
    /// A number in most answers (beyond what a JavaScript number holds exactly), a string in some.
    #[serde(default, deserialize_with = "optional_string_or_number")]
    msgid: Option<String>,
}

fn optional_string_or_number<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    string_or_number(d).map(Some)
}

#[async_trait]
impl SubscribeMessages for MiniProgramClient {
    async fn send(&self, message: &SubscribeMessage) -> Result<String, SendError> {
        let answer = self
            .post_json("/cgi-bin/message/subscribe/send", &send_body(message))
            .await
            .map_err(|e| SendError::Unavailable(e.to_string()))?;
        match errcode_of(&answer) {
            0 => {
                let reply: SendReply = serde_json::from_value(answer)
                    .map_err(|e| SendError::Unavailable(format!("unreadable send answer: {e}")))?;
                // Sent: a missing msgid must not make the caller send it again.
                Ok(reply.msgid.unwrap_or_default())
            }
            errcode => Err(send_error(errcode, &errmsg_of(&answer))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn errcodes_map_to_what_the_sender_must_do() {
        assert!(matches!(send_error(43101, ""), SendError::NoAcceptance));
        for errcode in [40003, 47003, 40037, 41030] {
            assert!(matches!(
                send_error(errcode, "no"),
                SendError::Refused { errcode: e, .. } if e == errcode
            ));
        }
        for errcode in [-1, 45009, 45011, 40001, 42001, 40014] {
            assert!(matches!(send_error(errcode, ""), SendError::Unavailable(_)));
        }
    }

    #[test]
    fn the_body_wraps_each_field_and_omits_what_is_not_set() {
        let message = SubscribeMessage {
            openid: "o1".into(),
            template_id: "T1".into(),
            page: None,
            data: BTreeMap::from([("thing1".to_string(), "咖啡".to_string())]),
        };
        let body = send_body(&message);
        assert_eq!(
            body,
            json!({ "touser": "o1", "template_id": "T1", "lang": "zh_CN",
                    "data": { "thing1": { "value": "咖啡" } } })
        );
        let body = send_body(&SubscribeMessage {
            page: Some("pages/order/detail?id=1".into()),
            ..message
        });
        assert_eq!(body["page"], "pages/order/detail?id=1");
        assert!(body.get("miniprogram_state").is_none());
    }

    #[test]
    fn msgids_are_read_as_numbers_or_strings() {
        for (answer, expected) in [
            (
                json!({ "msgid": 1_700_000_000_000_000_001u64 }),
                Some("1700000000000000001"),
            ),
            (
                json!({ "msgid": "1700000000000000001" }),
                Some("1700000000000000001"),
            ),
            (json!({}), None),
        ] {
            let reply: SendReply = serde_json::from_value(answer).unwrap();
            assert_eq!(reply.msgid.as_deref(), expected);
        }
    }
}
