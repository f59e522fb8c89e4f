//! What the engine does with a payment provider: ask for payments, believe only verified
//! notices that match the order, close at the provider before closing here, and record every
//! refund before asking for it so that a crash is resolved with the same out_refund_no.

use std::sync::Arc;

use chrono::Utc;
use uuid::Uuid;

use super::bills::{BillOutcome, TradeBill};
use super::gateway::{
    CloseOutcome, GatewayError, Notice, NotifyError, PaidTransaction, PayGateway, PayParams,
    PrepayRequest, RawNotice, RefundCall, RefundState, TradeState,
};
use super::prepays::Prepays;
use crate::db::Db;
use crate::error::{Error, ErrorCode, Kind, Result};
use crate::money::Fen;
use crate::order::{
    CloseReason, Order, OrderCommand, OrderError, OrderId, OrderStatus, PayChannel, Refund,
};
use crate::orders::{Metadata, OrderService, Outcome};

/// Fixed namespace for out_refund_no derived from an Idempotency-Key.
const REFUND_NAMESPACE: Uuid = Uuid::from_u128(0x3b1f_0e6c_8d4a_4f57_a2c9_71e0_5b8d_9c12);

impl From<GatewayError> for Error {
    fn from(e: GatewayError) -> Error {
        match e {
            GatewayError::Rejected { .. } => {
                Error::new(Kind::Upstream, ErrorCode::WechatpayRejected, e.to_string())
            }
            GatewayError::Unavailable(_) | GatewayError::Unverified(_) => Error::new(
                Kind::Unavailable,
                ErrorCode::WechatpayUnavailable,
                e.to_string(),
            ),
        }
    }
}

/// What became of a verified notice; both are acknowledged to the provider.
#[derive(Debug, PartialEq, Eq)]
pub enum NoticeOutcome {
    /// Recorded now.
    Recorded,
    /// Already known (a duplicate), or nothing to record.
    Nothing,
}

/// Why a notice was not acknowledged (the provider sends it again, or gives up).
#[derive(Debug, thiserror::Error)]
pub enum NoticeError {
    /// The signature or the decryption failed: nothing in it is believed.
    #[error("unverifiable notice: {0}")]
    Unverifiable(String),
    /// Verified bytes that do not read as a notice.
    #[error("malformed notice: {0}")]
    Malformed(String),
    /// Genuine, but for another merchant or app, or an order that is not ours.
    #[error("not ours: {0}")]
    NotOurs(String),
    /// Ours and believed, but not recorded now (the database, a conflict): try again.
    #[error(transparent)]
    Failed(#[from] Error),
}

#[derive(Clone)]
pub struct Payments {
    orders: OrderService,
    prepays: Prepays,
    gateways: Vec<Arc<dyn PayGateway>>,
}

/// WeChat's `description` (≤ 127 characters) from the order's items.
fn description(order: &Order) -> String {
    let first = order
        .items
        .first()
        .map(|l| l.name.as_str())
        .unwrap_or("order");
    let text = if order.items.len() > 1 {
        format!("{first} 等{}件商品", order.items.len())
    } else {
        first.to_string()
    };
    text.chars().take(127).collect()
}

/// The order our out_trade_no stands for: the order id in simple form, lowercase. Exactly that
/// form — an uppercase variant is some other system's number, not ours.
pub fn order_id_of(out_trade_no: &str) -> Option<OrderId> {
    let ours = out_trade_no.len() == 32
        && out_trade_no
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    ours.then(|| Uuid::try_parse(out_trade_no).ok()).flatten()
}

/// The order a notice names. out_trade_no is the order id in simple form, so the mapping needs
/// no lookup; for an order that does not exist the command itself fails with not-found (and the
/// notice is not acknowledged), saving a read on the hot path.
fn known_order(out_trade_no: &str) -> std::result::Result<OrderId, NoticeError> {
    order_id_of(out_trade_no).ok_or_else(|| {
        tracing::error!(%out_trade_no, "notice for an out_trade_no that is not ours; not acknowledged");
        NoticeError::NotOurs(format!("no order has out_trade_no {out_trade_no}"))
    })
}

/// A notice for an order id of our form that no order has is not ours either.
fn not_ours_if_unknown<T>(result: Result<T>) -> std::result::Result<T, NoticeError> {
    result.map_err(|e| match e.kind() {
        Kind::NotFound => NoticeError::NotOurs(e.to_string()),
        _ => NoticeError::Failed(e),
    })
}

/// What asking the provider about a quiet payment found.
#[derive(Debug, PartialEq, Eq)]
pub enum PaymentCheck {
    /// Paid, and recorded now (no notice had arrived).
    Recorded,
    /// Nothing recorded: the provider's state as it answered (paid and already known, unpaid,
    /// being paid, failed, closed, unknown).
    Nothing(TradeState),
}

fn payment_in_progress() -> Error {
    Error::new(
        Kind::Conflict,
        ErrorCode::PaymentInProgress,
        "the customer is paying this order right now; try again shortly",
    )
}

impl Payments {
    pub fn new(db: Db, orders: OrderService, gateways: Vec<Arc<dyn PayGateway>>) -> Payments {
        Payments {
            orders,
            prepays: Prepays::new(db),
            gateways,
        }
    }

    pub fn gateway(&self, channel: PayChannel) -> Result<&Arc<dyn PayGateway>> {
        self.gateways
            .iter()
            .find(|g| g.channel() == channel)
            .ok_or_else(|| {
                Error::new(
                    Kind::Rule,
                    ErrorCode::ChannelUnavailable,
                    format!("{} is not configured", channel.as_str()),
                )
            })
    }

    /// `wx.requestPayment` parameters for the customer's order: records the payment request,
    /// then orders at the provider (or reuses a still-valid prepay id).
    pub async fn pay(
        &self,
        order_id: OrderId,
        user_id: Uuid,
        channel: PayChannel,
        payer_ip: std::net::IpAddr,
        meta: &Metadata,
    ) -> Result<PayParams> {
        let gateway = self.gateway(channel)?.clone();
        let order = self.orders.get(order_id).await?;
        if order.user_id != user_id {
            return Err(OrderError::NotFound.into());
        }
        // WeChat keeps one order book per merchant: once ordered through one API, the same
        // out_trade_no is refused through the other (`OUT_TRADE_NO_USED`). Say so plainly.
        if let Some(other) = self
            .prepays
            .other_channel(&order.out_trade_no, channel)
            .await?
        {
            return Err(Error::new(
                Kind::Conflict,
                ErrorCode::PaymentChannelFixed,
                format!(
                    "this order is already being paid through {other}: pay it there, or cancel it and order again"
                ),
            ));
        }
        let now = Utc::now();
        let outcome = self
            .orders
            .execute(
                order_id,
                OrderCommand::RequestPayment { channel, now },
                meta,
            )
            .await?;
        let order = outcome.order;
        let prepay_id = match self
            .prepays
            .valid(&order.out_trade_no, channel, now)
            .await?
        {
            Some(id) => id,
            None => {
                let request = PrepayRequest {
                    out_trade_no: order.out_trade_no.clone(),
                    description: description(&order),
                    total_fen: order.total_fen,
                    openid: order.openid.clone(),
                    time_expire: order.expires_at,
                    payer_ip,
                };
                let id = gateway.prepay(&request).await?;
                let expires_at = now + gateway.prepay_lifetime();
                self.prepays
                    .save(&order.out_trade_no, channel, &id, now, expires_at)
                    .await?;
                tracing::info!(order_id = %order.id, channel = channel.as_str(), "prepay created");
                id
            }
        };
        // A close may have raced this call (it closes at WeChat only what it saw requested):
        // never hand out payment parameters for an order that is no longer payable.
        match self.orders.get(order_id).await?.status {
            OrderStatus::PendingPayment => {}
            OrderStatus::Closed => {
                if let Err(e) = gateway.close(&order.out_trade_no).await {
                    tracing::warn!(order_id = %order_id, error = %e, "could not close a prepay that raced a close");
                }
                return Err(OrderError::NotPayable {
                    status: OrderStatus::Closed,
                }
                .into());
            }
            // Paid meanwhile (a second pay call while the first payment landed): nothing to pay.
            _ => return Err(OrderError::AlreadyPaid.into()),
        }
        Ok(gateway.pay_params(&prepay_id)?)
    }

    /// A notice as it arrived on `channel`: verified by the provider's gateway, checked to be
    /// for this merchant and one of our orders, then recorded. Errors mean "do not acknowledge".
    pub async fn receive_notice(
        &self,
        channel: PayChannel,
        raw: &RawNotice<'_>,
    ) -> std::result::Result<NoticeOutcome, NoticeError> {
        let gateway = self.gateway(channel)?.clone();
        let notice = gateway.verify_notify(raw).await.map_err(|e| match e {
            NotifyError::Unverified(reason) => NoticeError::Unverifiable(reason),
            NotifyError::Malformed(reason) => NoticeError::Malformed(reason),
        })?;
        self.on_notice(channel, gateway.as_ref(), notice).await
    }

    /// Records what a verified notice says, after checking it belongs to this merchant and
    /// this order.
    async fn on_notice(
        &self,
        channel: PayChannel,
        gateway: &dyn PayGateway,
        notice: Notice,
    ) -> std::result::Result<NoticeOutcome, NoticeError> {
        let meta = Metadata::actor(format!("{}:notify", channel.as_str()));
        match notice {
            Notice::Payment {
                mchid,
                appid,
                out_trade_no,
                paid,
            } => {
                if mchid != gateway.mchid() || appid != gateway.appid() {
                    tracing::error!(%out_trade_no, %mchid, %appid, "payment notice for another merchant or app; ignored");
                    return Err(NoticeError::NotOurs(
                        "the notice is for another merchant or app".into(),
                    ));
                }
                let order_id = known_order(&out_trade_no)?;
                let Some(paid) = paid else {
                    return Ok(NoticeOutcome::Nothing);
                };
                not_ours_if_unknown(self.record_payment(order_id, channel, paid, &meta).await)
            }
            Notice::Ignored { .. } => Ok(NoticeOutcome::Nothing),
            Notice::Refund {
                mchid,
                out_trade_no,
                out_refund_no,
                amount_fen,
                state,
            } => {
                if mchid != gateway.mchid() {
                    tracing::error!(%out_trade_no, %mchid, "refund notice for another merchant; ignored");
                    return Err(NoticeError::NotOurs(
                        "the notice is for another merchant".into(),
                    ));
                }
                let order_id = known_order(&out_trade_no)?;
                if let Some(amount) = amount_fen {
                    self.check_refund_amount(order_id, &out_refund_no, amount)
                        .await?;
                }
                not_ours_if_unknown(
                    self.record_refund_state(order_id, &out_refund_no, state, &meta)
                        .await,
                )
            }
        }
    }

    /// A refund notice whose amount is not the refund we recorded under that number is not
    /// believed (v2's `req_info` is encrypted without integrity: blocks of genuine notices could
    /// be recombined). An unknown refund is left to the command, which refuses it.
    async fn check_refund_amount(
        &self,
        order_id: OrderId,
        out_refund_no: &str,
        amount: Fen,
    ) -> std::result::Result<(), NoticeError> {
        let order = not_ours_if_unknown(self.orders.get(order_id).await)?;
        match order.refund(out_refund_no) {
            Some(refund) if refund.amount_fen != amount => {
                tracing::error!(order_id = %order_id, %out_refund_no, recorded = refund.amount_fen.get(), notified = amount.get(), "refund notice with another amount than the refund; not believed");
                Err(NoticeError::NotOurs(format!(
                    "refund {out_refund_no} is of {} fen, the notice says {}",
                    refund.amount_fen.get(),
                    amount.get()
                )))
            }
            _ => Ok(()),
        }
    }

    async fn record_payment(
        &self,
        order_id: OrderId,
        channel: PayChannel,
        paid: PaidTransaction,
        meta: &Metadata,
    ) -> Result<NoticeOutcome> {
        let command = OrderCommand::RecordPayment {
            channel,
            transaction_id: paid.transaction_id,
            amount_fen: paid.amount_fen,
            paid_at: paid.paid_at,
        };
        let outcome = self.orders.execute(order_id, command, meta).await?;
        Ok(if outcome.appended.is_empty() {
            NoticeOutcome::Nothing
        } else {
            NoticeOutcome::Recorded
        })
    }

    async fn record_refund_state(
        &self,
        order_id: OrderId,
        out_refund_no: &str,
        state: RefundState,
        meta: &Metadata,
    ) -> Result<NoticeOutcome> {
        let recorded = self
            .apply_refund_state(order_id, out_refund_no, state, meta)
            .await?;
        Ok(match recorded {
            Some(outcome) if !outcome.appended.is_empty() => NoticeOutcome::Recorded,
            _ => NoticeOutcome::Nothing,
        })
    }

    /// Records a definite refund outcome; `None` when the state is not one (still processing,
    /// unknown at the provider).
    async fn apply_refund_state(
        &self,
        order_id: OrderId,
        out_refund_no: &str,
        state: RefundState,
        meta: &Metadata,
    ) -> Result<Option<Outcome>> {
        let command = match state {
            RefundState::Succeeded { refund_id, at } => OrderCommand::RecordRefundSuccess {
                out_refund_no: out_refund_no.to_string(),
                refund_id,
                at,
            },
            RefundState::Failed { reason } => OrderCommand::RecordRefundFailure {
                out_refund_no: out_refund_no.to_string(),
                reason,
                at: Utc::now(),
            },
            RefundState::Processing { .. } | RefundState::NotFound => return Ok(None),
        };
        Ok(Some(self.orders.execute(order_id, command, meta).await?))
    }

    /// Closes an unpaid order. If a payment was ever requested, the provider closes it first —
    /// otherwise the customer could still pay a closed order. When the provider says it was
    /// paid meanwhile, the payment is recorded instead and the close refused. The close is
    /// recorded only if the order did not change while the provider was asked (a payment request
    /// racing the close sends us round again, to close that one at WeChat too).
    pub async fn close(
        &self,
        order_id: OrderId,
        reason: CloseReason,
        meta: &Metadata,
    ) -> Result<Outcome> {
        for _ in 0..8 {
            let (order, version) = self
                .orders
                .load(order_id)
                .await?
                .ok_or(OrderError::NotFound)?;
            let close = OrderCommand::Close {
                reason,
                now: Utc::now(),
            };
            // Every channel a payment was requested through may hold a payable order at its
            // provider (a customer who switched channels): close at each of them.
            let at_provider = if order.status == OrderStatus::PendingPayment {
                order.requested_channels.clone()
            } else {
                Vec::new()
            };
            for channel in at_provider {
                let gateway = self.gateway(channel)?.clone();
                match gateway.close(&order.out_trade_no).await? {
                    CloseOutcome::Closed => {}
                    CloseOutcome::AlreadyPaid => {
                        return Err(self
                            .paid_instead_of_closed(
                                order_id,
                                &order.out_trade_no,
                                channel,
                                gateway.as_ref(),
                                meta,
                            )
                            .await)
                    }
                    CloseOutcome::UserPaying => return Err(payment_in_progress()),
                }
            }
            if let Some(outcome) = self
                .orders
                .execute_at(order_id, version, close, meta)
                .await?
            {
                return Ok(outcome);
            }
        }
        Err(Error::new(
            Kind::Conflict,
            ErrorCode::ConcurrentUpdate,
            "the order kept changing; try again",
        ))
    }

    /// WeChat refused to close because the order is (being) paid: record the payment if it is
    /// there, and explain the refusal.
    async fn paid_instead_of_closed(
        &self,
        order_id: OrderId,
        out_trade_no: &str,
        channel: PayChannel,
        gateway: &dyn PayGateway,
        meta: &Metadata,
    ) -> Error {
        match gateway.query(out_trade_no).await {
            Ok(TradeState::Paid(paid)) => {
                // Learnt from WeChat's answer, whoever asked for the close.
                let source = Metadata::actor(format!("{}:query", channel.as_str()))
                    .with_request_id(meta.request_id.clone());
                match self.record_payment(order_id, channel, paid, &source).await {
                    Ok(_) => OrderError::AlreadyPaid.into(),
                    Err(e) => e,
                }
            }
            Ok(_) => payment_in_progress(),
            Err(e) => e.into(),
        }
    }

    /// Asks the provider about an unpaid order with a payment request and records a payment
    /// that arrived without (or before) its notice — on every channel a payment was requested
    /// through, so money paid through an earlier choice is found too.
    pub async fn reconcile_payment(&self, order_id: OrderId) -> Result<PaymentCheck> {
        let order = self.orders.get(order_id).await?;
        let Some(latest) = order.channel else {
            return Ok(PaymentCheck::Nothing(TradeState::NotFound));
        };
        let mut recorded = false;
        let mut latest_state = TradeState::NotFound;
        for channel in order.requested_channels.iter().copied() {
            let gateway = self.gateway(channel)?.clone();
            let state = gateway.query(&order.out_trade_no).await?;
            if let TradeState::Paid(paid) = &state {
                let meta = Metadata::actor(format!("{}:query", channel.as_str()));
                let outcome = self
                    .record_payment(order_id, channel, paid.clone(), &meta)
                    .await?;
                recorded |= outcome == NoticeOutcome::Recorded;
            }
            if channel == latest {
                latest_state = state;
            }
        }
        Ok(if recorded {
            PaymentCheck::Recorded
        } else {
            PaymentCheck::Nothing(latest_state)
        })
    }

    /// The provider's bill of one Beijing day: one per merchant account (two channels of one
    /// merchant share a bill), merged. Not ready if any is not ready; no bill if none has one.
    pub async fn trade_bill(&self, date: chrono::NaiveDate) -> Result<BillOutcome> {
        let mut merchants: Vec<&str> = Vec::new();
        let mut merged: Option<TradeBill> = None;
        for gateway in &self.gateways {
            if merchants.contains(&gateway.mchid()) {
                continue;
            }
            merchants.push(gateway.mchid());
            match gateway.trade_bill(date).await? {
                BillOutcome::NotReady => return Ok(BillOutcome::NotReady),
                BillOutcome::NoBill => {}
                BillOutcome::Bill(bill) => {
                    let all = merged.get_or_insert_with(|| TradeBill {
                        date,
                        ..TradeBill::default()
                    });
                    all.payments.extend(bill.payments);
                    all.refunds.extend(bill.refunds);
                }
            }
        }
        Ok(merged.map_or(BillOutcome::NoBill, BillOutcome::Bill))
    }

    /// Staff refund: recorded (RefundRequested with its out_refund_no) before the provider is
    /// asked, so a crash in between is finished later with the same out_refund_no.
    pub async fn refund(
        &self,
        order_id: OrderId,
        amount: Fen,
        reason: Option<String>,
        key: Option<&str>,
        meta: &Metadata,
    ) -> Result<Refund> {
        let out_refund_no = match key {
            Some(key) => format!(
                "R{}",
                Uuid::new_v5(&REFUND_NAMESPACE, format!("{order_id}:{key}").as_bytes()).simple()
            ),
            None => format!("R{}", Uuid::now_v7().simple()),
        };
        let command = OrderCommand::RequestRefund {
            out_refund_no: out_refund_no.clone(),
            amount_fen: amount,
            reason,
            now: Utc::now(),
        };
        let outcome = self.orders.execute(order_id, command, meta).await?;
        let refund = outcome
            .order
            .refund(&out_refund_no)
            .cloned()
            .ok_or_else(|| {
                Error::new(
                    Kind::Internal,
                    ErrorCode::InternalError,
                    "refund not recorded",
                )
            })?;
        if refund.status != crate::order::RefundStatus::Processing {
            return Ok(refund);
        }
        match self.submit_refund(&outcome.order, &out_refund_no).await {
            Ok(order) => order.refund(&out_refund_no).cloned().ok_or_else(|| {
                Error::new(Kind::Internal, ErrorCode::InternalError, "refund vanished")
            }),
            Err(e) => {
                // Recorded and will be retried by the poller with the same out_refund_no.
                tracing::warn!(order_id = %order_id, %out_refund_no, error = %e, "refund outcome unknown; will retry");
                Ok(refund)
            }
        }
    }

    /// Sends (or re-sends — same out_refund_no, same amounts) a refund recorded on `order` to
    /// the provider and records a definite answer. Returns the order afterwards.
    async fn submit_refund(&self, order: &Order, out_refund_no: &str) -> Result<Order> {
        let refund = order
            .refund(out_refund_no)
            .ok_or_else(|| Error::not_found(ErrorCode::UnknownRefund, "no such refund"))?;
        let payment = order.payments.first().ok_or_else(|| {
            Error::new(
                Kind::Internal,
                ErrorCode::InternalError,
                "refund without payment",
            )
        })?;
        let channel = payment.channel;
        let gateway = self.gateway(channel)?.clone();
        let call = RefundCall {
            out_trade_no: order.out_trade_no.clone(),
            out_refund_no: out_refund_no.to_string(),
            amount_fen: refund.amount_fen,
            total_fen: payment.amount_fen,
            paid_at: payment.paid_at,
            reason: refund.reason.clone(),
        };
        let meta = Metadata::actor(format!("{}:refund", channel.as_str()));
        let state = match gateway.refund(&call).await {
            Ok(state) => state,
            // Any refusal (the gateway answers "try later" ones as `Unavailable`) may follow an
            // earlier attempt that WeChat did accept (a lost answer, then a retry refused): only
            // WeChat's own record of the refund is final.
            Err(GatewayError::Rejected { code, message }) => {
                match gateway.query_refund(out_refund_no).await? {
                    RefundState::NotFound => RefundState::Failed {
                        reason: format!("{code}: {message}"),
                    },
                    state => state,
                }
            }
            Err(e) => return Err(e.into()),
        };
        let recorded = self
            .apply_refund_state(order.id, out_refund_no, state, &meta)
            .await?;
        Ok(recorded.map_or_else(|| order.clone(), |outcome| outcome.order))
    }

    /// Asks the provider about a refund still processing; if it never arrived there (a crash
    /// between recording and calling, or a lost request), sends it again with the same number.
    pub async fn reconcile_refund(&self, order_id: OrderId, out_refund_no: &str) -> Result<()> {
        let order = self.orders.get(order_id).await?;
        let channel = order
            .payments
            .first()
            .map(|p| p.channel)
            .unwrap_or(PayChannel::WechatpayV3);
        let gateway = self.gateway(channel)?.clone();
        match gateway.query_refund(out_refund_no).await? {
            RefundState::NotFound => self.submit_refund(&order, out_refund_no).await.map(|_| ()),
            state => {
                let meta = Metadata::actor(format!("{}:query", channel.as_str()));
                self.record_refund_state(order_id, out_refund_no, state, &meta)
                    .await
                    .map(|_| ())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_trade_no_maps_back_to_the_order() {
        let id = Uuid::now_v7();
        assert_eq!(order_id_of(&id.simple().to_string()), Some(id));
        assert_eq!(
            order_id_of(&id.to_string()),
            None,
            "only the 32-character form is ours"
        );
        assert_eq!(order_id_of("not-ours"), None);
        let upper = id.simple().to_string().to_uppercase();
        assert_eq!(
            order_id_of(&upper),
            None,
            "an uppercase variant is not ours"
        );
    }
}
