//! Staff review: what on an order needs a person's decision, and how staff settled it.
//!
//! Two kinds of things land an order in review:
//! - money that does not fit the happy path (wrong amount, paid after close, paid twice): the
//!   order moves to `NeedsReview` and stays there until staff resolve it;
//! - flags that leave the status alone but still need a decision (money going back on an order
//!   whose card was consumed, a card that could not be consumed on an order that kept its money,
//!   a refund that failed).
//!
//! `evolve` keeps the list of open [`ReviewItem`]s; a `ReviewResolved` event closes all of them
//! at once and, for an order in `NeedsReview`, gives it back the status its money says.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Discrepancy;
use crate::money::Fen;

/// How staff settled an order's review. A small closed set, so reports can count them; the note
/// says the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewResolution {
    /// The money that did not belong was paid back, through refunds on this order (at least one
    /// refund that has not failed must exist).
    Refunded,
    /// The money is kept as it arrived and the order stands (a small difference waived, a late
    /// payment honoured, a flag seen and nothing owed).
    Accepted,
    /// Settled some other way, outside the engine; the note (required) says how.
    Other,
}

impl ReviewResolution {
    pub const ALL: [ReviewResolution; 3] = [
        ReviewResolution::Refunded,
        ReviewResolution::Accepted,
        ReviewResolution::Other,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            ReviewResolution::Refunded => "refunded",
            ReviewResolution::Accepted => "accepted",
            ReviewResolution::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for ReviewResolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing on an order that a person must decide about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReviewReason {
    /// The first payment did not match the order total.
    AmountMismatch {
        transaction_id: String,
        expected_fen: Fen,
        received_fen: Fen,
    },
    /// Money arrived for an order that was already closed.
    PaidAfterClose {
        transaction_id: String,
        expected_fen: Fen,
        received_fen: Fen,
    },
    /// Money arrived for an order that already had a payment.
    PaidTwice {
        transaction_id: String,
        expected_fen: Fen,
        received_fen: Fen,
    },
    /// Money is going back on an order whose card (coupon) was consumed: the card cannot be
    /// given back at WeChat.
    CardRefunded {
        card_id: String,
        out_refund_no: String,
    },
    /// The order's card could not be consumed while the order kept its money: the customer may
    /// have had a discount they did not pay for with a card, or be owed one.
    CardNotConsumed { card_id: String, reason: String },
    /// WeChat Pay refused or closed a refund: money meant to go back did not.
    RefundFailed {
        out_refund_no: String,
        amount_fen: Fen,
        reason: String,
    },
    /// The provider's bill disagrees with the log about this order.
    ReconciliationDiscrepancy { discrepancy: Discrepancy },
}

impl ReviewReason {
    /// The stable name of the reason (`amount_mismatch`, …), as serialized in `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            ReviewReason::AmountMismatch { .. } => "amount_mismatch",
            ReviewReason::PaidAfterClose { .. } => "paid_after_close",
            ReviewReason::PaidTwice { .. } => "paid_twice",
            ReviewReason::CardRefunded { .. } => "card_refunded",
            ReviewReason::CardNotConsumed { .. } => "card_not_consumed",
            ReviewReason::RefundFailed { .. } => "refund_failed",
            ReviewReason::ReconciliationDiscrepancy { .. } => "reconciliation_discrepancy",
        }
    }

    /// The reason in words staff understand; money in yuan.
    pub fn describe(&self) -> String {
        match self {
            ReviewReason::AmountMismatch {
                transaction_id,
                expected_fen,
                received_fen,
            } => format!(
                "wrong amount: the order is {expected_fen} yuan but {received_fen} yuan arrived \
                 (transaction {transaction_id})"
            ),
            ReviewReason::PaidAfterClose {
                transaction_id,
                expected_fen,
                received_fen,
            } => format!(
                "paid after close: {received_fen} yuan arrived for an order that was already \
                 closed (order total {expected_fen} yuan, transaction {transaction_id})"
            ),
            ReviewReason::PaidTwice {
                transaction_id,
                expected_fen,
                received_fen,
            } => format!(
                "paid twice: another {received_fen} yuan arrived for an order that was already \
                 paid (order total {expected_fen} yuan, transaction {transaction_id})"
            ),
            ReviewReason::CardRefunded {
                card_id,
                out_refund_no,
            } => format!(
                "refund {out_refund_no} on an order whose card {card_id} was already used: \
                 the card cannot be given back"
            ),
            ReviewReason::CardNotConsumed { card_id, reason } => {
                format!("card {card_id} could not be used for this paid order: {reason}")
            }
            ReviewReason::RefundFailed {
                out_refund_no,
                amount_fen,
                reason,
            } => format!(
                "refund {out_refund_no} of {amount_fen} yuan failed ({reason}): the money did \
                 not go back"
            ),
            ReviewReason::ReconciliationDiscrepancy { discrepancy } => discrepancy.describe(),
        }
    }
}

/// A reason and when it arose (the time in the event that raised it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReviewItem {
    #[serde(flatten)]
    pub reason: ReviewReason,
    pub at: DateTime<Utc>,
}

/// How staff settled the items that were open at the time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReviewOutcome {
    pub resolution: ReviewResolution,
    pub note: Option<String>,
    pub resolved_at: DateTime<Utc>,
    pub items: Vec<ReviewItem>,
}

/// An order's review: what is open now and every earlier resolution, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Review {
    pub open: Vec<ReviewItem>,
    pub resolved: Vec<ReviewOutcome>,
}

impl Review {
    /// Something awaits a person's decision.
    pub fn is_open(&self) -> bool {
        !self.open.is_empty()
    }

    /// When the oldest open item arose.
    pub fn since(&self) -> Option<DateTime<Utc>> {
        self.open.iter().map(|item| item.at).min()
    }

    /// The same reconciliation finding was recorded before, open or settled by staff since.
    pub fn has_discrepancy(&self, finding: &Discrepancy) -> bool {
        self.open
            .iter()
            .chain(self.resolved.iter().flat_map(|outcome| &outcome.items))
            .any(|item| {
                matches!(&item.reason, ReviewReason::ReconciliationDiscrepancy { discrepancy }
                    if discrepancy.key() == finding.key())
            })
    }

    /// Every open reason in words, oldest first, separated by "; ".
    pub fn describe(&self) -> String {
        self.open
            .iter()
            .map(|item| item.reason.describe())
            .collect::<Vec<_>>()
            .join("; ")
    }
}
