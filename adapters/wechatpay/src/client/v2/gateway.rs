//! The engine's payment port, spoken as WeChat Pay APIv2.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::Utc;
use paystream_engine::money::Fen;
use paystream_engine::order::PayChannel;
use paystream_engine::payments::gateway::{
    CloseOutcome, GatewayError, Notice, NotifyError, PaidTransaction, PayGateway, PayParams,
    PrepayRequest, RawNotice, RefundCall, RefundState, TradeState,
};

use super::{beijing_compact, beijing_dashed, Host, V2Client};
use crate::v2::answer::V2Answer;
use crate::v2::request::UnifiedOrder;
use crate::v2::sign::pay_sign;

/// A prepay id is valid for two hours at WeChat.
const PREPAY_LIFETIME: chrono::Duration = chrono::Duration::hours(2);

/// WeChat refuses a `time_expire` less than five minutes ahead (`time_expire时间过短，刷卡至少1分钟，
/// 其他5分钟`). It is only WeChat's backstop: the engine's expiry closes the order at WeChat
/// before closing it here, so an order paid for in its last minutes gets this much more.
const MIN_TIME_EXPIRE: chrono::Duration = chrono::Duration::minutes(5);

/// The `time_expire` sent for an order that closes at `expires_at`.
fn time_expire(
    expires_at: chrono::DateTime<Utc>,
    now: chrono::DateTime<Utc>,
) -> chrono::DateTime<Utc> {
    // Half a minute more than the minimum, for the request's time on the way.
    expires_at.max(now + MIN_TIME_EXPIRE + chrono::Duration::seconds(30))
}

/// `body` is at most 128 bytes at WeChat: cut at a character boundary.
fn body_text(description: &str) -> String {
    let mut end = description.len().min(128);
    while !description.is_char_boundary(end) {
        end -= 1;
    }
    description[..end].to_string()
}

fn field<'a>(fields: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    fields
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

fn required<'a>(fields: &'a BTreeMap<String, String>, name: &str) -> Result<&'a str, GatewayError> {
    field(fields, name)
        .ok_or_else(|| GatewayError::Unverified(format!("WeChat Pay v2 answer without {name}")))
}

/// A paid order's facts from `orderquery` or a pay notify (`transaction_id`, `total_fee`,
/// `time_end`). A paid report missing them is not a payment we can record.
pub(super) fn paid(fields: &BTreeMap<String, String>) -> Result<PaidTransaction, String> {
    let transaction_id = field(fields, "transaction_id").ok_or("no transaction_id")?;
    let total = field(fields, "total_fee")
        .and_then(|t| t.parse::<i64>().ok())
        .and_then(Fen::new)
        .ok_or("no usable total_fee")?;
    let paid_at = field(fields, "time_end")
        .and_then(beijing_compact)
        .unwrap_or_else(Utc::now);
    Ok(PaidTransaction {
        transaction_id: transaction_id.to_string(),
        amount_fen: total,
        paid_at,
    })
}

fn trade_state(fields: &BTreeMap<String, String>) -> Result<TradeState, GatewayError> {
    Ok(match required(fields, "trade_state")? {
        // REFUND: paid, and refunded since in part or whole.
        "SUCCESS" | "REFUND" => TradeState::Paid(paid(fields).map_err(GatewayError::Unverified)?),
        "CLOSED" | "REVOKED" => TradeState::Closed,
        "USERPAYING" => TradeState::UserPaying,
        "PAYERROR" => TradeState::PaymentFailed {
            reason: field(fields, "trade_state_desc")
                .unwrap_or("PAYERROR")
                .to_string(),
        },
        // NOTPAY, and any state WeChat adds later: not paid, nothing to record.
        _ => TradeState::Unpaid,
    })
}

/// A refund's state from `refundquery`'s `refund_status_$n`, or the refund notify's
/// `refund_status`. `CHANGE` (the money could not reach the customer) needs a merchant's action
/// and is not final, like v3's `ABNORMAL`.
pub(super) fn refund_state(
    status: &str,
    refund_id: Option<&str>,
    success_time: Option<&str>,
) -> RefundState {
    let refund_id = refund_id.map(str::to_string);
    match status {
        "SUCCESS" => RefundState::Succeeded {
            refund_id,
            at: success_time
                .and_then(beijing_dashed)
                .unwrap_or_else(Utc::now),
        },
        "REFUNDCLOSE" => RefundState::Failed {
            reason: "REFUNDCLOSE".into(),
        },
        _ => RefundState::Processing { refund_id },
    }
}

fn rejected(err_code: &str, err_code_des: &str) -> GatewayError {
    GatewayError::Rejected {
        code: err_code.to_string(),
        message: err_code_des.to_string(),
    }
}

/// What a close answer means: closed; `ORDERPAID` → the caller queries and records the payment;
/// `USERPAYING` → not closed, ask again later; `ORDERCLOSED` / `ORDERNOTEXIST` → nothing left to
/// close at WeChat.
fn close_outcome(answer: V2Answer) -> Result<CloseOutcome, GatewayError> {
    match answer {
        V2Answer::Success(_) => Ok(CloseOutcome::Closed),
        V2Answer::Refused {
            err_code,
            err_code_des,
            ..
        } => match err_code.as_str() {
            "ORDERPAID" => Ok(CloseOutcome::AlreadyPaid),
            "USERPAYING" => Ok(CloseOutcome::UserPaying),
            "ORDERCLOSED" | "ORDERNOTEXIST" => Ok(CloseOutcome::Closed),
            _ => Err(rejected(&err_code, &err_code_des)),
        },
        V2Answer::NotTaken { return_msg } => Err(GatewayError::Unavailable(return_msg)),
    }
}

/// A refused refund: "not now" (`Unavailable`: the refund poller asks again with the same
/// out_refund_no) or "never" (`Rejected`). The balance (`NOTENOUGH`) and rate limits pass; right
/// after a payment WeChat's refund system may not know the order yet (`ORDERNOTEXIST`).
fn refund_refusal(
    err_code: &str,
    err_code_des: &str,
    since_payment: chrono::Duration,
    grace: std::time::Duration,
) -> GatewayError {
    let lagging =
        err_code == "ORDERNOTEXIST" && since_payment.to_std().is_ok_and(|since| since < grace);
    match err_code {
        _ if lagging => GatewayError::Unavailable(format!(
            "{err_code}: {err_code_des} (WeChat's refund system has not seen the payment yet)"
        )),
        "NOTENOUGH" | "FREQUENCY_LIMITED" | "INVALID_REQ_TOO_MUCH" => {
            GatewayError::Unavailable(format!("{err_code}: {err_code_des}"))
        }
        _ => rejected(err_code, err_code_des),
    }
}

#[async_trait]
impl PayGateway for V2Client {
    fn channel(&self) -> PayChannel {
        PayChannel::WechatpayV2
    }

    fn mchid(&self) -> &str {
        &self.config().mchid
    }

    fn appid(&self) -> &str {
        &self.config().appid
    }

    fn prepay_lifetime(&self) -> chrono::Duration {
        PREPAY_LIFETIME
    }

    async fn prepay(&self, request: &PrepayRequest) -> Result<String, GatewayError> {
        let config = self.config();
        let nonce = crate::nonce_str();
        let body = body_text(&request.description);
        let ip = request.payer_ip.to_string();
        let order = UnifiedOrder {
            appid: &config.appid,
            mch_id: &config.mchid,
            nonce_str: &nonce,
            body: &body,
            out_trade_no: &request.out_trade_no,
            total_fee: request.total_fen.get(),
            spbill_create_ip: &ip,
            notify_url: &config.notify_url,
            openid: &request.openid,
            time_expire: Some(time_expire(request.time_expire, Utc::now())),
        };
        match self
            .call(Host::Api, "/pay/unifiedorder", order.fields())
            .await?
        {
            V2Answer::Success(fields) => Ok(required(&fields, "prepay_id")?.to_string()),
            V2Answer::Refused {
                err_code,
                err_code_des,
                ..
            } => Err(rejected(&err_code, &err_code_des)),
            V2Answer::NotTaken { return_msg } => Err(GatewayError::Unavailable(return_msg)),
        }
    }

    fn pay_params(&self, prepay_id: &str) -> Result<PayParams, GatewayError> {
        let config = self.config();
        let time_stamp = Utc::now().timestamp().to_string();
        let nonce_str = crate::nonce_str();
        let package = format!("prepay_id={prepay_id}");
        let pay_sign = pay_sign(
            &config.appid,
            &nonce_str,
            &package,
            config.sign_type,
            &time_stamp,
            config.api_key.expose(),
        );
        Ok(PayParams {
            time_stamp,
            nonce_str,
            package,
            sign_type: config.sign_type.to_string(),
            pay_sign,
        })
    }

    async fn query(&self, out_trade_no: &str) -> Result<TradeState, GatewayError> {
        let fields = self.fields(&[("out_trade_no", out_trade_no)]);
        match self.call(Host::Api, "/pay/orderquery", fields).await? {
            V2Answer::Success(fields) => {
                if field(&fields, "out_trade_no") != Some(out_trade_no) {
                    return Err(GatewayError::Unverified(
                        "orderquery answered for another out_trade_no".into(),
                    ));
                }
                trade_state(&fields)
            }
            V2Answer::Refused { err_code, .. } if err_code == "ORDERNOTEXIST" => {
                Ok(TradeState::NotFound)
            }
            V2Answer::Refused {
                err_code,
                err_code_des,
                ..
            } => Err(rejected(&err_code, &err_code_des)),
            V2Answer::NotTaken { return_msg } => Err(GatewayError::Unavailable(return_msg)),
        }
    }

    async fn close(&self, out_trade_no: &str) -> Result<CloseOutcome, GatewayError> {
        let fields = self.fields(&[("out_trade_no", out_trade_no)]);
        close_outcome(self.call(Host::Api, "/pay/closeorder", fields).await?)
    }

    async fn refund(&self, call: &RefundCall) -> Result<RefundState, GatewayError> {
        let config = self.config();
        let refund_fee = call.amount_fen.get().to_string();
        let total_fee = call.total_fen.get().to_string();
        let fields = self.fields(&[
            ("out_trade_no", &call.out_trade_no),
            ("out_refund_no", &call.out_refund_no),
            ("total_fee", &total_fee),
            ("refund_fee", &refund_fee),
            ("refund_desc", call.reason.as_deref().unwrap_or_default()),
            ("notify_url", &config.refund_notify_url),
        ]);
        match self
            .call(Host::Secapi, "/secapi/pay/refund", fields)
            .await?
        {
            // Accepted: the money moves later (refundquery or the refund notify say when).
            V2Answer::Success(fields) => Ok(RefundState::Processing {
                refund_id: field(&fields, "refund_id").map(str::to_string),
            }),
            V2Answer::Refused {
                err_code,
                err_code_des,
                ..
            } => Err(refund_refusal(
                &err_code,
                &err_code_des,
                Utc::now() - call.paid_at,
                config.refund_lag_grace,
            )),
            V2Answer::NotTaken { return_msg } => Err(GatewayError::Unavailable(return_msg)),
        }
    }

    async fn query_refund(&self, out_refund_no: &str) -> Result<RefundState, GatewayError> {
        let fields = self.fields(&[("out_refund_no", out_refund_no)]);
        match self.call(Host::Api, "/pay/refundquery", fields).await? {
            V2Answer::Success(fields) => {
                // Asked by out_refund_no, the answer lists that one refund as `_0` (look it up
                // by number all the same).
                let count: usize = field(&fields, "refund_count")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                let n = (0..count)
                    .find(|n| field(&fields, &format!("out_refund_no_{n}")) == Some(out_refund_no))
                    .ok_or_else(|| {
                        GatewayError::Unverified(
                            "refundquery answered without the refund asked about".into(),
                        )
                    })?;
                Ok(refund_state(
                    required(&fields, &format!("refund_status_{n}"))?,
                    field(&fields, &format!("refund_id_{n}")),
                    field(&fields, &format!("refund_success_time_{n}")),
                ))
            }
            V2Answer::Refused { err_code, .. } if err_code == "REFUNDNOTEXIST" => {
                Ok(RefundState::NotFound)
            }
            V2Answer::Refused {
                err_code,
                err_code_des,
                ..
            } => Err(rejected(&err_code, &err_code_des)),
            V2Answer::NotTaken { return_msg } => Err(GatewayError::Unavailable(return_msg)),
        }
    }

    /// `/pay/downloadbill` (see `bill.rs`): the bill, checked against its own summary.
    async fn trade_bill(
        &self,
        date: chrono::NaiveDate,
    ) -> Result<paystream_engine::payments::bills::BillOutcome, GatewayError> {
        self.download_bill(date).await
    }

    async fn verify_notify(&self, notice: &RawNotice<'_>) -> Result<Notice, NotifyError> {
        super::notice::read(self.config(), notice.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(code: &str) -> V2Answer {
        V2Answer::Refused {
            err_code: code.into(),
            err_code_des: "des".into(),
            fields: BTreeMap::new(),
        }
    }

    #[test]
    fn close_answers() {
        assert_eq!(
            close_outcome(V2Answer::Success(BTreeMap::new())).unwrap(),
            CloseOutcome::Closed
        );
        assert_eq!(
            close_outcome(refused("ORDERPAID")).unwrap(),
            CloseOutcome::AlreadyPaid
        );
        assert_eq!(
            close_outcome(refused("USERPAYING")).unwrap(),
            CloseOutcome::UserPaying
        );
        assert_eq!(
            close_outcome(refused("ORDERCLOSED")).unwrap(),
            CloseOutcome::Closed
        );
        assert!(matches!(
            close_outcome(refused("SIGNERROR")),
            Err(GatewayError::Rejected { .. })
        ));
        assert!(matches!(
            close_outcome(V2Answer::NotTaken {
                return_msg: "签名错误".into()
            }),
            Err(GatewayError::Unavailable(_))
        ));
    }

    #[test]
    fn refund_refusals() {
        let grace = std::time::Duration::from_secs(600);
        let just_paid = chrono::Duration::seconds(5);
        let long_ago = chrono::Duration::hours(1);
        let transient = |code, since| {
            matches!(
                refund_refusal(code, "", since, grace),
                GatewayError::Unavailable(_)
            )
        };
        assert!(transient("ORDERNOTEXIST", just_paid));
        assert!(!transient("ORDERNOTEXIST", long_ago));
        assert!(transient("NOTENOUGH", long_ago));
        assert!(!transient("PARAM_ERROR", just_paid));
        assert!(!transient("ERROR", just_paid));
    }

    #[test]
    fn trade_states_and_payments() {
        let fields = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let paid_fields = fields(&[
            ("trade_state", "SUCCESS"),
            ("transaction_id", "4200000001"),
            ("total_fee", "2500"),
            ("time_end", "20261202003005"),
        ]);
        match trade_state(&paid_fields).unwrap() {
            TradeState::Paid(p) => {
                assert_eq!(p.transaction_id, "4200000001");
                assert_eq!(p.amount_fen.get(), 2500);
                assert_eq!(p.paid_at.to_rfc3339(), "2026-12-01T16:30:05+00:00");
            }
            other => panic!("{other:?}"),
        }
        let mut refunded = paid_fields.clone();
        refunded.insert("trade_state".into(), "REFUND".into());
        assert!(matches!(trade_state(&refunded), Ok(TradeState::Paid(_))));
        let mut no_id = paid_fields.clone();
        no_id.remove("transaction_id");
        assert!(matches!(
            trade_state(&no_id),
            Err(GatewayError::Unverified(_))
        ));
        assert_eq!(
            trade_state(&fields(&[("trade_state", "NOTPAY")])).unwrap(),
            TradeState::Unpaid
        );
        assert_eq!(
            trade_state(&fields(&[("trade_state", "USERPAYING")])).unwrap(),
            TradeState::UserPaying
        );
        assert_eq!(
            trade_state(&fields(&[("trade_state", "CLOSED")])).unwrap(),
            TradeState::Closed
        );
    }

    #[test]
    fn refund_states() {
        assert!(matches!(
            refund_state("SUCCESS", Some("5000"), Some("2018-11-19 16:24:13")),
            RefundState::Succeeded { refund_id: Some(id), at } if id == "5000" && at.to_rfc3339() == "2018-11-19T08:24:13+00:00"
        ));
        assert!(matches!(
            refund_state("REFUNDCLOSE", None, None),
            RefundState::Failed { .. }
        ));
        assert!(matches!(
            refund_state("CHANGE", None, None),
            RefundState::Processing { .. }
        ));
        assert!(matches!(
            refund_state("PROCESSING", None, None),
            RefundState::Processing { .. }
        ));
    }

    #[test]
    fn time_expire_is_never_closer_than_wechat_takes() {
        let now = Utc::now();
        let later = now + chrono::Duration::minutes(30);
        assert_eq!(time_expire(later, now), later);
        let soon = now + chrono::Duration::minutes(1);
        assert!(time_expire(soon, now) - now > MIN_TIME_EXPIRE);
    }

    #[test]
    fn body_is_cut_at_128_bytes_on_a_character_boundary() {
        let long = "咖".repeat(100);
        let cut = body_text(&long);
        assert!(cut.len() <= 128);
        assert_eq!(cut.chars().count(), 42);
        assert_eq!(body_text("short"), "short");
    }
}
