//! The public event catalogue: the only thing ever written to the store.
//!
//! Events are facts in the past tense and are kept forever, so variant
//! names (= stored event type) and field names are a compatibility
//! contract. Add fields as `Option` or with serde defaults; never rename.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{CardRef, CloseReason, Discrepancy, OrderId, OrderLine, PayChannel, ReviewResolution};
use crate::money::Fen;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum OrderEvent {
    OrderPlaced {
        order_id: OrderId,
        user_id: Uuid,
        openid: String,
        out_trade_no: String,
        items: Vec<OrderLine>,
        total_fen: Fen,
        note: Option<String>,
        placed_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        /// The customer's card (coupon) to redeem once the order is paid.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        card: Option<CardRef>,
    },
    PaymentRequested {
        channel: PayChannel,
        requested_at: DateTime<Utc>,
    },
    /// Exactly the order total arrived.
    PaymentSucceeded {
        channel: PayChannel,
        transaction_id: String,
        amount_fen: Fen,
        paid_at: DateTime<Utc>,
    },
    /// Money arrived, but not the amount we asked for.
    PaymentAmountMismatch {
        channel: PayChannel,
        transaction_id: String,
        expected_fen: Fen,
        received_fen: Fen,
        paid_at: DateTime<Utc>,
    },
    OrderClosed {
        reason: CloseReason,
        closed_at: DateTime<Utc>,
    },
    RefundRequested {
        out_refund_no: String,
        amount_fen: Fen,
        reason: Option<String>,
        requested_at: DateTime<Utc>,
    },
    RefundSucceeded {
        out_refund_no: String,
        refund_id: Option<String>,
        succeeded_at: DateTime<Utc>,
    },
    RefundFailed {
        out_refund_no: String,
        reason: String,
        failed_at: DateTime<Utc>,
    },
    /// The order's card was consumed at WeChat (after payment).
    CardConsumed {
        card_id: String,
        code: String,
        consumed_at: DateTime<Utc>,
    },
    /// The order's card could not be consumed and never will be by us (used elsewhere meanwhile,
    /// expired, the order refunded first): staff decide what the customer is owed.
    CardConsumeFailed {
        card_id: String,
        code: String,
        reason: String,
        failed_at: DateTime<Utc>,
    },
    /// Money is going back on an order whose card was consumed. A consumed card cannot be given
    /// back at WeChat, so staff must decide (a new card, a smaller refund).
    CardRefundFlagged {
        card_id: String,
        code: String,
        out_refund_no: String,
        flagged_at: DateTime<Utc>,
    },
    /// Staff settled everything the order had in review (who: the event's metadata actor).
    ReviewResolved {
        resolution: ReviewResolution,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
        resolved_at: DateTime<Utc>,
    },
    /// Reconciliation against the provider's bill found the log and the bill disagreeing about
    /// this order: staff must look (the order's status is left alone).
    ReconciliationDiscrepancy {
        #[serde(flatten)]
        discrepancy: Discrepancy,
        found_at: DateTime<Utc>,
    },
}

impl OrderEvent {
    /// The name stored next to the data; equal to the variant name.
    pub fn event_type(&self) -> &'static str {
        match self {
            OrderEvent::OrderPlaced { .. } => "OrderPlaced",
            OrderEvent::PaymentRequested { .. } => "PaymentRequested",
            OrderEvent::PaymentSucceeded { .. } => "PaymentSucceeded",
            OrderEvent::PaymentAmountMismatch { .. } => "PaymentAmountMismatch",
            OrderEvent::OrderClosed { .. } => "OrderClosed",
            OrderEvent::RefundRequested { .. } => "RefundRequested",
            OrderEvent::RefundSucceeded { .. } => "RefundSucceeded",
            OrderEvent::RefundFailed { .. } => "RefundFailed",
            OrderEvent::CardConsumed { .. } => "CardConsumed",
            OrderEvent::CardConsumeFailed { .. } => "CardConsumeFailed",
            OrderEvent::CardRefundFlagged { .. } => "CardRefundFlagged",
            OrderEvent::ReviewResolved { .. } => "ReviewResolved",
            OrderEvent::ReconciliationDiscrepancy { .. } => "ReconciliationDiscrepancy",
        }
    }

    /// The event's fields as a JSON object, without the type tag, so the
    /// store can keep type and data in separate columns.
    pub fn to_data(&self) -> Value {
        // Cannot fail: every field is a string, integer, uuid, timestamp or
        // a struct of those; `to_value` only errors on non-string map keys
        // or on custom `Serialize` impls that error, and we have neither.
        let tagged = serde_json::to_value(self).expect("order events always serialize");
        match tagged {
            Value::Object(mut map) => map.remove("data").unwrap_or(Value::Null),
            other => other,
        }
    }

    /// Inverse of `event_type` + `to_data`. Fails on an unknown type or data
    /// that does not fit it (including negative amounts).
    pub fn from_stored(event_type: &str, data: Value) -> Result<OrderEvent, serde_json::Error> {
        let mut tagged = serde_json::Map::with_capacity(2);
        tagged.insert("type".to_owned(), Value::String(event_type.to_owned()));
        tagged.insert("data".to_owned(), data);
        serde_json::from_value(Value::Object(tagged))
    }

    /// [`OrderEvent::from_stored`] from the data's JSON text, as the store holds it, without
    /// building a `Value` on the way: a rebuild decodes every event of the log. The tag goes
    /// first, so serde reads the data straight into its variant instead of buffering it.
    pub fn from_stored_json(event_type: &str, data: &str) -> Result<OrderEvent, serde_json::Error> {
        let mut tagged = String::with_capacity(data.len() + event_type.len() + 20);
        tagged.push_str("{\"type\":");
        tagged.push_str(&serde_json::to_string(event_type)?);
        tagged.push_str(",\"data\":");
        tagged.push_str(data);
        tagged.push('}');
        serde_json::from_str(&tagged)
    }
}
