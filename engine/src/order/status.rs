//! Small closed vocabularies that are stored and sent as snake_case strings.
//! `as_str` exists so SQL columns and logs use the same spelling as serde.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Placed, waiting for money.
    PendingPayment,
    /// Exactly one payment of exactly the total arrived.
    Paid,
    /// Some, not all, of the payment has been refunded.
    PartiallyRefunded,
    /// All of the payment has been refunded.
    Refunded,
    /// Closed before any money arrived.
    Closed,
    /// Money arrived in a way the happy path cannot explain (wrong amount,
    /// after close, twice). Sticky: only a human can decide what to do.
    NeedsReview,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 6] = [
        OrderStatus::PendingPayment,
        OrderStatus::Paid,
        OrderStatus::PartiallyRefunded,
        OrderStatus::Refunded,
        OrderStatus::Closed,
        OrderStatus::NeedsReview,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            OrderStatus::PendingPayment => "pending_payment",
            OrderStatus::Paid => "paid",
            OrderStatus::PartiallyRefunded => "partially_refunded",
            OrderStatus::Refunded => "refunded",
            OrderStatus::Closed => "closed",
            OrderStatus::NeedsReview => "needs_review",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// No further customer-facing transition is expected. Note that money
    /// can still arrive late for a closed order; that moves it to
    /// `NeedsReview`, because arrived money is never ignored.
    pub fn is_terminal(&self) -> bool {
        matches!(self, OrderStatus::Closed | OrderStatus::Refunded)
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayChannel {
    WechatpayV3,
    WechatpayV2,
}

impl PayChannel {
    pub fn as_str(&self) -> &'static str {
        match self {
            PayChannel::WechatpayV3 => "wechatpay_v3",
            PayChannel::WechatpayV2 => "wechatpay_v2",
        }
    }
}

impl fmt::Display for PayChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    Expired,
    CancelledByCustomer,
    ClosedByStaff,
}

impl CloseReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            CloseReason::Expired => "expired",
            CloseReason::CancelledByCustomer => "cancelled_by_customer",
            CloseReason::ClosedByStaff => "closed_by_staff",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    /// Sent to WeChat Pay, outcome unknown; the amount is reserved.
    Processing,
    Succeeded,
    /// The amount is released and may be refunded again under a new number.
    Failed,
}

impl RefundStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            RefundStatus::Processing => "processing",
            RefundStatus::Succeeded => "succeeded",
            RefundStatus::Failed => "failed",
        }
    }
}
