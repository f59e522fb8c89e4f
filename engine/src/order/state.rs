//! What an order looks like after its events have been applied.
//! Only `evolve` builds or changes these; everything else reads them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    CloseReason, OrderError, OrderId, OrderStatus, PayChannel, RefundStatus, Review, MAX_QUANTITY,
};
use crate::money::Fen;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: String,
    pub name: String,
    pub quantity: u32,
    pub unit_price_fen: Fen,
    /// Always `unit_price_fen * quantity`; stored so receipts and the event
    /// log show exactly what the customer was charged per line.
    pub line_total_fen: Fen,
}

impl OrderLine {
    /// The only sanctioned way to build a line: validates the quantity and
    /// price and computes the line total, so callers cannot get it wrong.
    pub fn priced(
        sku: impl Into<String>,
        name: impl Into<String>,
        quantity: u32,
        unit_price_fen: Fen,
    ) -> Result<OrderLine, OrderError> {
        let sku = sku.into();
        if !(1..=MAX_QUANTITY).contains(&quantity) {
            return Err(OrderError::InvalidQuantity { sku });
        }
        if unit_price_fen == Fen::ZERO {
            return Err(OrderError::InvalidPrice);
        }
        // An overflowing line can only mean an absurd total.
        let line_total_fen = unit_price_fen
            .checked_mul(quantity)
            .ok_or(OrderError::TotalTooLarge)?;
        Ok(OrderLine {
            sku,
            name: name.into(),
            quantity,
            unit_price_fen,
            line_total_fen,
        })
    }
}

/// Money that arrived, as reported by WeChat Pay. Recorded even when it is
/// wrong (`matched == false`), because it has to be paid back or reconciled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Payment {
    pub transaction_id: String,
    pub channel: PayChannel,
    pub amount_fen: Fen,
    pub paid_at: DateTime<Utc>,
    /// The amount equalled the order total.
    pub matched: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Refund {
    /// Our refund number, sent to WeChat Pay as the idempotency key.
    pub out_refund_no: String,
    pub amount_fen: Fen,
    pub reason: Option<String>,
    pub status: RefundStatus,
    pub requested_at: DateTime<Utc>,
    /// WeChat Pay's refund id, known once it reports success.
    pub refund_id: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
    pub failure_reason: Option<String>,
}

/// A user's WeChat card (coupon): the card and this copy's code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardRef {
    pub card_id: String,
    pub code: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CardStatus {
    /// Checked at placement; consumed once the order is paid.
    Pending,
    Consumed,
    /// Will not be consumed by us; see `failure_reason`.
    ConsumeFailed,
}

/// The card redeemed with an order and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCard {
    pub card_id: String,
    pub code: String,
    pub status: CardStatus,
    pub consumed_at: Option<DateTime<Utc>>,
    pub failure_reason: Option<String>,
    /// Money went back after the card was consumed: staff must look.
    pub refund_flagged: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Order {
    pub id: OrderId,
    pub user_id: Uuid,
    pub openid: String,
    pub out_trade_no: String,
    pub items: Vec<OrderLine>,
    pub total_fen: Fen,
    pub note: Option<String>,
    pub status: OrderStatus,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The channel of the most recent payment request.
    pub channel: Option<PayChannel>,
    /// Every channel a payment was ever requested through, first first: each may hold an order
    /// at the provider that can still be paid, so closing closes at all of them.
    pub requested_channels: Vec<PayChannel>,
    /// When the most recent payment request was made (the pollers ask WeChat after a while).
    pub payment_requested_at: Option<DateTime<Utc>>,
    pub payments: Vec<Payment>,
    pub refunds: Vec<Refund>,
    /// Of the first payment, even if it needs review.
    pub paid_at: Option<DateTime<Utc>>,
    /// Of the first payment, even if it needs review.
    pub transaction_id: Option<String>,
    pub closed_at: Option<DateTime<Utc>>,
    pub close_reason: Option<CloseReason>,
    pub card: Option<OrderCard>,
    /// What awaits staff's decision, and how earlier reviews were resolved.
    pub review: Review,
}

impl Order {
    /// All money that arrived, matched or not: that is what could be owed back.
    /// Saturates rather than overflows, since it is only compared.
    pub fn paid_fen(&self) -> Fen {
        self.payments
            .iter()
            .fold(Fen::ZERO, |sum, p| sum.saturating_add(p.amount_fen))
    }

    /// Money WeChat Pay confirmed it returned.
    pub fn refunded_fen(&self) -> Fen {
        self.refund_sum(RefundStatus::Succeeded)
    }

    /// Money promised back but not yet confirmed. It is reserved, so two
    /// concurrent refunds cannot both spend the same yuan.
    pub fn refunding_fen(&self) -> Fen {
        self.refund_sum(RefundStatus::Processing)
    }

    /// The status the order's money alone gives, once a first payment arrived and nothing is
    /// in review: paid, partially refunded or refunded by confirmed refunds. In-flight refunds
    /// do not count: until WeChat Pay confirms, the customer has not got money back.
    pub fn money_status(&self) -> OrderStatus {
        let refunded = self.refunded_fen();
        if refunded == Fen::ZERO {
            OrderStatus::Paid
        } else if refunded >= self.paid_fen() {
            OrderStatus::Refunded
        } else {
            OrderStatus::PartiallyRefunded
        }
    }

    /// What a new refund may still take: paid minus refunded minus in flight.
    pub fn refundable_fen(&self) -> Fen {
        self.paid_fen()
            .checked_sub(self.refunded_fen())
            .and_then(|rest| rest.checked_sub(self.refunding_fen()))
            .unwrap_or(Fen::ZERO)
    }

    pub fn refund(&self, out_refund_no: &str) -> Option<&Refund> {
        self.refunds
            .iter()
            .find(|r| r.out_refund_no == out_refund_no)
    }

    pub(super) fn refund_mut(&mut self, out_refund_no: &str) -> Option<&mut Refund> {
        self.refunds
            .iter_mut()
            .find(|r| r.out_refund_no == out_refund_no)
    }

    pub(super) fn has_payment(&self, transaction_id: &str) -> bool {
        self.payments
            .iter()
            .any(|p| p.transaction_id == transaction_id)
    }

    /// The card was consumed and a refund (not failed) exists: staff must be told once.
    pub(super) fn card_needs_refund_flag(&self) -> bool {
        self.card
            .as_ref()
            .is_some_and(|c| c.status == CardStatus::Consumed && !c.refund_flagged)
            && self.live_refund().is_some()
    }

    /// The latest refund that has not failed.
    pub(super) fn live_refund(&self) -> Option<&Refund> {
        self.refunds
            .iter()
            .rev()
            .find(|r| r.status != RefundStatus::Failed)
    }

    fn refund_sum(&self, status: RefundStatus) -> Fen {
        self.refunds
            .iter()
            .filter(|r| r.status == status)
            .fold(Fen::ZERO, |sum, r| sum.saturating_add(r.amount_fen))
    }
}
