//! What a reconciliation against the provider's bill found wrong with one order. Each finding is
//! recorded once per (bill day, kind, reference) — re-running a day, or finding the same thing
//! again after staff settled it, adds nothing — and opens a review item.

use std::fmt;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::money::Fen;

/// The kinds of disagreement between the log and the provider's bill that land on an order.
/// (A payment the bill has and the log lacks is not one of them when a query confirms it: that
/// payment is simply recorded.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscrepancyKind {
    /// The log has a payment the bill of its day lacks.
    PaymentMissingAtProvider,
    /// The bill lists a payment the log lacks, and asking the provider did not confirm it.
    PaymentUnconfirmed,
    /// Both have the payment, for different amounts.
    PaymentAmountDiffers,
    /// The log has a refund the bill of its day lacks.
    RefundMissingAtProvider,
    /// The bill lists a refund of this order the log never asked for.
    RefundMissingInLog,
    /// Both have the refund, for different amounts.
    RefundAmountDiffers,
    /// Both have the refund; one says it succeeded and the other does not.
    RefundStatusDiffers,
}

impl DiscrepancyKind {
    pub const ALL: [DiscrepancyKind; 7] = [
        DiscrepancyKind::PaymentMissingAtProvider,
        DiscrepancyKind::PaymentUnconfirmed,
        DiscrepancyKind::PaymentAmountDiffers,
        DiscrepancyKind::RefundMissingAtProvider,
        DiscrepancyKind::RefundMissingInLog,
        DiscrepancyKind::RefundAmountDiffers,
        DiscrepancyKind::RefundStatusDiffers,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            DiscrepancyKind::PaymentMissingAtProvider => "payment_missing_at_provider",
            DiscrepancyKind::PaymentUnconfirmed => "payment_unconfirmed",
            DiscrepancyKind::PaymentAmountDiffers => "payment_amount_differs",
            DiscrepancyKind::RefundMissingAtProvider => "refund_missing_at_provider",
            DiscrepancyKind::RefundMissingInLog => "refund_missing_in_log",
            DiscrepancyKind::RefundAmountDiffers => "refund_amount_differs",
            DiscrepancyKind::RefundStatusDiffers => "refund_status_differs",
        }
    }
}

impl fmt::Display for DiscrepancyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finding on an order, as the event records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discrepancy {
    /// The Beijing day of the bill.
    pub date: NaiveDate,
    pub kind: DiscrepancyKind,
    /// What it is about: the transaction id for a payment, the out_refund_no for a refund.
    pub reference: String,
    /// The amount in the log, when the log has the thing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ours_fen: Option<Fen>,
    /// The amount in the bill, when the bill has the thing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub theirs_fen: Option<Fen>,
    /// Anything else staff should read (the provider's status, what the query said).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Discrepancy {
    /// What makes two findings the same finding.
    pub fn key(&self) -> (NaiveDate, DiscrepancyKind, &str) {
        (self.date, self.kind, &self.reference)
    }

    /// In words staff understand; money in yuan.
    pub fn describe(&self) -> String {
        let money = |fen: Option<Fen>| fen.map(|f| format!("{f} yuan")).unwrap_or("—".into());
        let (ours, theirs) = (money(self.ours_fen), money(self.theirs_fen));
        let Discrepancy {
            date, reference, ..
        } = self;
        let what = match self.kind {
            DiscrepancyKind::PaymentMissingAtProvider => {
                format!("payment {reference} of {ours} is missing from WeChat Pay's bill of {date}")
            }
            DiscrepancyKind::PaymentUnconfirmed => format!(
                "WeChat Pay's bill of {date} lists payment {reference} of {theirs} that was not \
                 recorded here and could not be confirmed"
            ),
            DiscrepancyKind::PaymentAmountDiffers => {
                format!("payment {reference}: {ours} here, {theirs} in WeChat Pay's bill of {date}")
            }
            DiscrepancyKind::RefundMissingAtProvider => {
                format!("refund {reference} of {ours} is missing from WeChat Pay's bill of {date}")
            }
            DiscrepancyKind::RefundMissingInLog => format!(
                "WeChat Pay's bill of {date} lists refund {reference} of {theirs} that was \
                 never asked for here"
            ),
            DiscrepancyKind::RefundAmountDiffers => {
                format!("refund {reference}: {ours} here, {theirs} in WeChat Pay's bill of {date}")
            }
            DiscrepancyKind::RefundStatusDiffers => {
                format!("refund {reference} has a different outcome in WeChat Pay's bill of {date}")
            }
        };
        match &self.detail {
            Some(detail) => format!("reconciliation: {what} ({detail})"),
            None => format!("reconciliation: {what}"),
        }
    }
}
