//! The engine's payment port, spoken as WeChat Pay APIv3.

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use paystream_engine::money::Fen;
use paystream_engine::order::PayChannel;
use paystream_engine::payments::gateway::{
    CloseOutcome, GatewayError, Notice, NotifyError, NotifyHeaders, PaidTransaction, PayGateway,
    PayParams, PrepayRequest, RefundCall, RefundState, TradeState,
};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{Signed, V3Client, VerifyError};
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

    async fn prepay(&self, request: &PrepayRequest) -> Result<String, GatewayError> {
        let body = json!({
            "appid": self.config().appid,
            "mchid": self.config().mchid,
            "description": request.description,
            "out_trade_no": request.out_trade_no,
            "time_expire": request.time_expire.to_rfc3339_opts(SecondsFormat::Secs, false),
            "notify_url": request.notify_url,
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
                None if matches!(transaction.trade_state.as_str(), "CLOSED" | "REVOKED") => {
                    TradeState::Closed
                }
                None => TradeState::Unpaid,
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
        if answer.status.is_success() {
            return Ok(CloseOutcome::Closed);
        }
        match answer.error().0.as_str() {
            "ORDERPAID" | "ORDER_PAID" | "TRADE_STATE_ERROR" => Ok(CloseOutcome::AlreadyPaid),
            // Nothing to close at WeChat (never ordered there, or closed already).
            code if is_not_found(code) || code == "ORDER_CLOSED" || code == "ORDERCLOSED" => {
                Ok(CloseOutcome::Closed)
            }
            _ => Err(answer.rejected()),
        }
    }

    async fn refund(&self, call: &RefundCall) -> Result<RefundState, GatewayError> {
        let mut body = json!({
            "out_trade_no": call.out_trade_no,
            "out_refund_no": call.out_refund_no,
            "notify_url": call.notify_url,
            "amount": { "refund": call.amount_fen.get(), "total": call.total_fen.get(), "currency": "CNY" },
        });
        if let Some(reason) = &call.reason {
            body["reason"] = json!(reason);
        }
        let answer = self
            .call(Method::POST, "/v3/refund/domestic/refunds", Some(&body))
            .await?;
        if !answer.status.is_success() {
            return Err(answer.rejected());
        }
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

    async fn verify_notify(
        &self,
        headers: &NotifyHeaders,
        body: &[u8],
    ) -> Result<Notice, NotifyError> {
        let signed = Signed {
            timestamp: headers.timestamp.as_deref(),
            nonce: headers.nonce.as_deref(),
            signature: headers.signature.as_deref(),
            serial: headers.serial.as_deref(),
            signature_type: headers.signature_type.as_deref(),
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
