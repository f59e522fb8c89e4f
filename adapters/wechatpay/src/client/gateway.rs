//! The engine's payment port, spoken as WeChat Pay APIv3.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use paystream_engine::money::Fen;
use paystream_engine::order::PayChannel;
use paystream_engine::payments::bills::BillOutcome;
use paystream_engine::payments::gateway::{
    CloseOutcome, GatewayError, Notice, NotifyError, PaidTransaction, PayGateway, PayParams,
    PrepayRequest, RawNotice, RefundCall, RefundState, TradeState,
};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{Answer, Signed, V3Client, VerifyError};
use crate::v3::aead::EncryptedResource;
use crate::v3::sign::RequestPayment;

#[derive(Deserialize)]
struct Prepay {
    prepay_id: String,
}

#[derive(Deserialize)]
struct Amount {
    total: i64,
}

#[derive(Deserialize)]
struct Transaction {
    #[serde(default)]
    mchid: String,
    #[serde(default)]
    appid: String,
    out_trade_no: String,
    transaction_id: Option<String>,
    trade_state: String,
    #[serde(default)]
    trade_state_desc: Option<String>,
    success_time: Option<String>,
    amount: Option<Amount>,
}

#[derive(Deserialize)]
struct Refund {
    refund_id: Option<String>,
    #[serde(alias = "refund_status")]
    status: String,
    success_time: Option<String>,
}

#[derive(Deserialize)]
struct RefundResource {
    #[serde(default)]
    mchid: String,
    out_trade_no: String,
    out_refund_no: String,
    refund_id: Option<String>,
    refund_status: String,
    success_time: Option<String>,
    amount: Option<RefundAmount>,
}

#[derive(Deserialize)]
struct RefundAmount {
    refund: i64,
}

#[derive(Deserialize)]
struct Envelope {
    event_type: String,
    resource: EncryptedResource,
}

fn time(value: Option<&str>) -> DateTime<Utc> {
    value
        .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(Utc::now)
}

fn fen(value: i64) -> Result<Fen, String> {
    Fen::new(value).ok_or_else(|| format!("negative amount {value}"))
}

fn paid(t: &Transaction) -> Result<Option<PaidTransaction>, String> {
    if !matches!(t.trade_state.as_str(), "SUCCESS" | "REFUND") {
        return Ok(None);
    }
    let transaction_id = t
        .transaction_id
        .clone()
        .ok_or("a paid transaction without transaction_id")?;
    let amount = t
        .amount
        .as_ref()
        .ok_or("a paid transaction without amount")?;
    Ok(Some(PaidTransaction {
        transaction_id,
        amount_fen: fen(amount.total)?,
        paid_at: time(t.success_time.as_deref()),
    }))
}

fn refund_state(
    status: &str,
    refund_id: Option<String>,
    success_time: Option<&str>,
) -> RefundState {
    match status {
        "SUCCESS" => RefundState::Succeeded {
            refund_id,
            at: time(success_time),
        },
        "CLOSED" => RefundState::Failed {
            reason: "the refund was closed by WeChat Pay".into(),
        },
        // PROCESSING, and ABNORMAL which is not final (the merchant must act, then it completes).
        _ => RefundState::Processing { refund_id },
    }
}

/// A query's trade state when the order is not paid.
fn unpaid_state(t: &Transaction) -> TradeState {
    match t.trade_state.as_str() {
        "CLOSED" | "REVOKED" => TradeState::Closed,
        "USERPAYING" => TradeState::UserPaying,
        "PAYERROR" => TradeState::PaymentFailed {
            reason: t
                .trade_state_desc
                .clone()
                .unwrap_or_else(|| "PAYERROR".into()),
        },
        // NOTPAY, and any state WeChat adds later: not paid, nothing to record.
        _ => TradeState::Unpaid,
    }
}

/// What a close answer means: 204 closed; 202 `USERPAYING` the customer is entering the password
/// (not closed: ask again later); `ORDER_CLOSED` (or no such order) closed already; paid → the
/// caller queries and records the payment.
fn close_outcome(answer: &Answer) -> Result<CloseOutcome, GatewayError> {
    let code = answer.error().0;
    if code == "USERPAYING" {
        return Ok(CloseOutcome::UserPaying);
    }
    if answer.status == StatusCode::ACCEPTED {
        // A 202 says the close did not happen yet, whatever the code.
        return Ok(CloseOutcome::UserPaying);
    }
    if answer.status.is_success() {
        return Ok(CloseOutcome::Closed);
    }
    match code.as_str() {
        "ORDERPAID" | "ORDER_PAID" | "TRADE_STATE_ERROR" => Ok(CloseOutcome::AlreadyPaid),
        // Nothing to close at WeChat (never ordered there, or closed already).
        code if is_not_found(code) || code == "ORDER_CLOSED" || code == "ORDERCLOSED" => {
            Ok(CloseOutcome::Closed)
        }
        _ => Err(answer.rejected()),
    }
}

/// A refused refund, read.
struct RefundRefusal {
    /// "Not now" (`Unavailable`, retried with the same out_refund_no) or "never" (`Rejected`).
    error: GatewayError,
    /// WeChat's refund system has not seen the payment yet: worth asking again in seconds.
    lagging: bool,
}

/// Right after a payment WeChat's refund system may not know it yet and answers
/// `RESOURCE_NOT_EXISTS` ("订单不存在") for a while; the merchant's balance (`NOT_ENOUGH`) and
/// rate limits pass. Over-refunds and a wrong `amount.total` (`INVALID_REQUEST`, `PARAM_ERROR`)
/// are final.
fn refund_refusal(
    answer: &Answer,
    since_payment: chrono::Duration,
    grace: std::time::Duration,
) -> RefundRefusal {
    let (code, message) = answer.error();
    let lagging = is_not_found(&code) && since_payment.to_std().is_ok_and(|since| since < grace);
    let error = match code.as_str() {
        _ if lagging => GatewayError::Unavailable(format!(
            "{code}: {message} (WeChat's refund system has not seen the payment yet)"
        )),
        "NOT_ENOUGH" | "FREQUENCY_LIMITED" | "SYSTEM_ERROR" | "SYSTEMERROR" => {
            GatewayError::Unavailable(format!("{code}: {message}"))
        }
        _ => GatewayError::Rejected { code, message },
    };
    RefundRefusal { error, lagging }
}

/// `/v3/bill/tradebill`'s answer.
#[derive(Deserialize)]
struct BillDownload {
    download_url: String,
    hash_type: String,
    hash_value: String,
}

/// `/v3/bill/tradebill` refused: no bill for a day without trade (`NO_STATEMENT_EXIST`), not
/// yet (`STATEMENT_CREATING`: WeChat makes the bill the next morning); anything else, such as
/// a date too far back or in the future (`INVALID_REQUEST`) or `NO_AUTH`, is final.
fn bill_refusal(answer: &Answer) -> Result<BillOutcome, GatewayError> {
    match answer.error().0.as_str() {
        "NO_STATEMENT_EXIST" => Ok(BillOutcome::NoBill),
        "STATEMENT_CREATING" => Ok(BillOutcome::NotReady),
        _ => Err(answer.rejected()),
    }
}

/// A prepay id is valid for two hours at WeChat.
const PREPAY_LIFETIME: chrono::Duration = chrono::Duration::hours(2);

/// Waits between refund attempts while WeChat's refund system has not seen the payment yet.
const REFUND_LAG_WAITS: [std::time::Duration; 3] = [
    std::time::Duration::from_millis(500),
    std::time::Duration::from_secs(1),
    std::time::Duration::from_secs(2),
];

fn is_not_found(code: &str) -> bool {
    matches!(
        code,
        "ORDER_NOT_EXIST" | "ORDERNOTEXIST" | "RESOURCE_NOT_EXISTS" | "NOT_FOUND"
    )
}

fn unavailable(e: impl std::fmt::Display) -> GatewayError {
    GatewayError::Unavailable(e.to_string())
}

#[async_trait]
impl PayGateway for V3Client {
    fn channel(&self) -> PayChannel {
        PayChannel::WechatpayV3
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
        let body = json!({
            "appid": self.config().appid,
            "mchid": self.config().mchid,
            "description": request.description,
            "out_trade_no": request.out_trade_no,
            "time_expire": request.time_expire.to_rfc3339_opts(SecondsFormat::Secs, false),
            "notify_url": self.config().notify_url,
            "amount": { "total": request.total_fen.get(), "currency": "CNY" },
            "payer": { "openid": request.openid },
        });
        let answer = self
            .call(Method::POST, "/v3/pay/transactions/jsapi", Some(&body))
            .await?;
        if !answer.status.is_success() {
            return Err(answer.rejected());
        }
        Ok(answer.json::<Prepay>()?.prepay_id)
    }

    fn pay_params(&self, prepay_id: &str) -> Result<PayParams, GatewayError> {
        let signed = RequestPayment::sign(
            &self.config().appid,
            prepay_id,
            &Utc::now().timestamp().to_string(),
            &crate::nonce_str(),
            self.config().merchant_key.expose_rsa(),
        )
        .map_err(unavailable)?;
        Ok(PayParams {
            time_stamp: signed.time_stamp,
            nonce_str: signed.nonce_str,
            package: signed.package,
            sign_type: signed.sign_type,
            pay_sign: signed.pay_sign,
        })
    }

    async fn query(&self, out_trade_no: &str) -> Result<TradeState, GatewayError> {
        let path = format!(
            "/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid={}",
            self.config().mchid
        );
        let answer = self.call(Method::GET, &path, None).await?;
        if answer.status == StatusCode::NOT_FOUND
            || is_not_found(&answer.error().0) && !answer.status.is_success()
        {
            return Ok(TradeState::NotFound);
        }
        if !answer.status.is_success() {
            return Err(answer.rejected());
        }
        let transaction: Transaction = answer.json()?;
        if transaction.out_trade_no != out_trade_no {
            return Err(GatewayError::Unverified(
                "query answered for another out_trade_no".into(),
            ));
        }
        Ok(
            match paid(&transaction).map_err(GatewayError::Unverified)? {
                Some(paid) => TradeState::Paid(paid),
                None => unpaid_state(&transaction),
            },
        )
    }

    async fn close(&self, out_trade_no: &str) -> Result<CloseOutcome, GatewayError> {
        let path = format!("/v3/pay/transactions/out-trade-no/{out_trade_no}/close");
        let answer = self
            .call(
                Method::POST,
                &path,
                Some(&json!({ "mchid": self.config().mchid })),
            )
            .await?;
        close_outcome(&answer)
    }

    async fn refund(&self, call: &RefundCall) -> Result<RefundState, GatewayError> {
        let mut body = json!({
            "out_trade_no": call.out_trade_no,
            "out_refund_no": call.out_refund_no,
            "notify_url": self.config().notify_url,
            "amount": { "refund": call.amount_fen.get(), "total": call.total_fen.get(), "currency": "CNY" },
        });
        if let Some(reason) = &call.reason {
            body["reason"] = json!(reason);
        }
        let mut lag_waits = REFUND_LAG_WAITS.iter();
        let answer = loop {
            let answer = self
                .call(Method::POST, "/v3/refund/domestic/refunds", Some(&body))
                .await?;
            if answer.status.is_success() {
                break answer;
            }
            let refusal = refund_refusal(
                &answer,
                Utc::now() - call.paid_at,
                self.config().refund_lag_grace,
            );
            // WeChat's refund system usually catches up within seconds: wait here a little
            // (same out_refund_no, same body) before leaving it to the refund poller.
            match lag_waits.next() {
                Some(wait) if refusal.lagging => {
                    tracing::info!(out_refund_no = %call.out_refund_no, reason = %refusal.error, ?wait, "refund: WeChat does not know the payment yet; asking again");
                    tokio::time::sleep(*wait).await;
                }
                _ => return Err(refusal.error),
            }
        };
        let refund: Refund = answer.json()?;
        Ok(refund_state(
            &refund.status,
            refund.refund_id,
            refund.success_time.as_deref(),
        ))
    }

    async fn query_refund(&self, out_refund_no: &str) -> Result<RefundState, GatewayError> {
        let path = format!("/v3/refund/domestic/refunds/{out_refund_no}");
        let answer = self.call(Method::GET, &path, None).await?;
        if !answer.status.is_success() {
            return if is_not_found(&answer.error().0) || answer.status == StatusCode::NOT_FOUND {
                Ok(RefundState::NotFound)
            } else {
                Err(answer.rejected())
            };
        }
        let refund: Refund = answer.json()?;
        Ok(refund_state(
            &refund.status,
            refund.refund_id,
            refund.success_time.as_deref(),
        ))
    }

    /// `GET /v3/bill/tradebill` (signed and verified like any call) for the download URL and
    /// the bill's SHA1, then the download (signed, answer unsigned), un-gzipped, hashed, read.
    async fn trade_bill(&self, date: NaiveDate) -> Result<BillOutcome, GatewayError> {
        let path = format!(
            "/v3/bill/tradebill?bill_date={}&bill_type=ALL&tar_type=GZIP",
            date.format("%Y-%m-%d")
        );
        let answer = self.call(Method::GET, &path, None).await?;
        if !answer.status.is_success() {
            return bill_refusal(&answer);
        }
        let meta: BillDownload = answer.json()?;
        let body = self.download(&meta.download_url).await?;
        super::bill::read_blocking(date, body, Some((meta.hash_type, meta.hash_value))).await
    }

    async fn verify_notify(&self, notice: &RawNotice<'_>) -> Result<Notice, NotifyError> {
        let body = notice.body;
        let signed = Signed {
            timestamp: notice.header("Wechatpay-Timestamp"),
            nonce: notice.header("Wechatpay-Nonce"),
            signature: notice.header("Wechatpay-Signature"),
            serial: notice.header("Wechatpay-Serial"),
            signature_type: notice.header("Wechatpay-Signature-Type"),
            body,
        };
        self.verify_signed(&signed, true)
            .await
            .map_err(|e: VerifyError| NotifyError::Unverified(e.to_string()))?;
        let envelope: Envelope = serde_json::from_slice(body)
            .map_err(|e| NotifyError::Malformed(format!("not a notification: {e}")))?;
        let plain = envelope
            .resource
            .open(&self.config().apiv3_key)
            .map_err(|_| {
                NotifyError::Unverified("the resource did not decrypt with the APIv3 key".into())
            })?;
        match envelope.event_type.as_str() {
            event if event.starts_with("TRANSACTION.") => {
                let t: Transaction = serde_json::from_slice(&plain)
                    .map_err(|e| NotifyError::Malformed(format!("transaction: {e}")))?;
                let paid = paid(&t).map_err(NotifyError::Malformed)?;
                Ok(Notice::Payment {
                    mchid: t.mchid.clone(),
                    appid: t.appid.clone(),
                    out_trade_no: t.out_trade_no.clone(),
                    paid,
                })
            }
            event if event.starts_with("REFUND.") => {
                let r: RefundResource = serde_json::from_slice(&plain)
                    .map_err(|e| NotifyError::Malformed(format!("refund: {e}")))?;
                Ok(Notice::Refund {
                    mchid: r.mchid,
                    out_trade_no: r.out_trade_no,
                    out_refund_no: r.out_refund_no,
                    amount_fen: r
                        .amount
                        .map(|a| {
                            Fen::new(a.refund).ok_or_else(|| {
                                NotifyError::Malformed("refund amount out of range".into())
                            })
                        })
                        .transpose()?,
                    state: refund_state(&r.refund_status, r.refund_id, r.success_time.as_deref()),
                })
            }
            // A kind of notification we do not act on: acknowledged (else WeChat retries it
            // for a day) and logged.
            other => {
                tracing::warn!(
                    event_type = other,
                    "ignoring a WeChat Pay notification of an unknown type"
                );
                Ok(Notice::Ignored {
                    event_type: other.to_string(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            body: body.as_bytes().to_vec(),
        }
    }

    fn error(status: u16, code: &str) -> Answer {
        answer(
            status,
            &json!({ "code": code, "message": "message" }).to_string(),
        )
    }

    #[test]
    fn close_answers_are_read_as_wechat_means_them() {
        let outcome = |a: Answer| close_outcome(&a).unwrap();
        assert_eq!(outcome(answer(204, "")), CloseOutcome::Closed);
        assert_eq!(outcome(error(202, "USERPAYING")), CloseOutcome::UserPaying);
        assert_eq!(outcome(answer(202, "")), CloseOutcome::UserPaying);
        assert_eq!(outcome(error(400, "USERPAYING")), CloseOutcome::UserPaying);
        assert_eq!(outcome(error(400, "ORDER_CLOSED")), CloseOutcome::Closed);
        assert_eq!(outcome(error(404, "ORDER_NOT_EXIST")), CloseOutcome::Closed);
        assert_eq!(outcome(error(400, "ORDERPAID")), CloseOutcome::AlreadyPaid);
        assert!(matches!(
            close_outcome(&error(403, "NO_AUTH")),
            Err(GatewayError::Rejected { code, .. }) if code == "NO_AUTH"
        ));
    }

    #[test]
    fn refund_refusals_pass_or_are_final() {
        let grace = std::time::Duration::from_secs(600);
        let just_paid = chrono::Duration::seconds(5);
        let long_ago = chrono::Duration::hours(1);
        let transient = |a: Answer, since| {
            matches!(
                refund_refusal(&a, since, grace).error,
                GatewayError::Unavailable(_)
            )
        };
        // WeChat's refund system lags just after the payment; an hour later the payment really
        // is unknown.
        assert!(transient(error(404, "RESOURCE_NOT_EXISTS"), just_paid));
        assert!(!transient(error(404, "RESOURCE_NOT_EXISTS"), long_ago));
        // The balance and rate limits pass; over-refunds and a wrong total never do.
        assert!(transient(error(403, "NOT_ENOUGH"), long_ago));
        assert!(transient(error(429, "FREQUENCY_LIMITED"), long_ago));
        assert!(!transient(error(400, "INVALID_REQUEST"), just_paid));
        assert!(!transient(error(400, "PARAM_ERROR"), just_paid));
        // An unreadable error body is not a lag.
        assert!(!transient(answer(404, "<html>"), just_paid));
    }

    #[test]
    fn bill_refusals() {
        assert_eq!(
            bill_refusal(&error(400, "NO_STATEMENT_EXIST")).unwrap(),
            BillOutcome::NoBill
        );
        assert_eq!(
            bill_refusal(&error(400, "STATEMENT_CREATING")).unwrap(),
            BillOutcome::NotReady
        );
        assert!(matches!(
            bill_refusal(&error(400, "INVALID_REQUEST")),
            Err(GatewayError::Rejected { code, .. }) if code == "INVALID_REQUEST"
        ));
    }

    #[test]
    fn unpaid_trade_states() {
        let t = |state: &str, desc: Option<&str>| Transaction {
            mchid: String::new(),
            appid: String::new(),
            out_trade_no: "T1".into(),
            transaction_id: None,
            trade_state: state.into(),
            trade_state_desc: desc.map(str::to_string),
            success_time: None,
            amount: None,
        };
        assert_eq!(unpaid_state(&t("NOTPAY", None)), TradeState::Unpaid);
        assert_eq!(unpaid_state(&t("USERPAYING", None)), TradeState::UserPaying);
        assert_eq!(unpaid_state(&t("CLOSED", None)), TradeState::Closed);
        assert_eq!(unpaid_state(&t("REVOKED", None)), TradeState::Closed);
        assert_eq!(
            unpaid_state(&t("PAYERROR", Some("银行返回失败"))),
            TradeState::PaymentFailed {
                reason: "银行返回失败".into()
            }
        );
    }
}
