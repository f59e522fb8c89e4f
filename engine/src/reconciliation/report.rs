//! The stored outcome of reconciling one day: what each side held, and every finding with what
//! was done about it. Serialized as JSON both in the database and in the back-office API.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::money::Fen;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportStatus {
    /// The bill was compared with the log.
    Reconciled,
    /// The provider keeps no bill for the day (nothing was paid or refunded there); the log's
    /// own payments and refunds of the day are then all missing at the provider.
    NoBill,
    /// The bill is not made yet; the day is tried again later.
    NotReady,
}

/// Counts and sums of one side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub payments: u64,
    pub payments_fen: i64,
    pub refunds: u64,
    pub refunds_fen: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    PaymentMissingInLog,
    PaymentMissingAtProvider,
    PaymentAmountDiffers,
    RefundMissingInLog,
    RefundMissingAtProvider,
    RefundAmountDiffers,
    RefundStatusDiffers,
}

/// What reconciliation did about a finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The payment was confirmed by a query and recorded (as a notify would have).
    PaymentRecorded,
    /// The refund's outcome was confirmed by a query and recorded.
    RefundOutcomeRecorded,
    /// Recorded on the order as a `ReconciliationDiscrepancy`; the order is in the review queue.
    FlaggedForReview,
    /// Recorded on the order by an earlier run of the same day.
    AlreadyFlagged,
    /// The bill names an out_trade_no no order of ours has: staff must look at the merchant
    /// account (another system's payment?). Nothing can be recorded on an order.
    UnknownOrder,
    /// Acting on it failed (the provider or the database); the next run tries again.
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportLine {
    pub kind: LineKind,
    pub out_trade_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_refund_no: Option<String>,
    /// In the log, when the log has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ours_fen: Option<Fen>,
    /// In the bill, when the bill has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub theirs_fen: Option<Fen>,
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The Beijing day.
    pub date: NaiveDate,
    pub status: ReportStatus,
    /// When this run finished.
    pub ran_at: DateTime<Utc>,
    /// How many runs of this day there have been, this one included.
    pub runs: u32,
    /// The provider's side (zero when there is no bill).
    pub bill: Totals,
    /// The log's side, as it was before this run recorded anything.
    pub log: Totals,
    pub lines: Vec<ReportLine>,
}

impl Report {
    /// Nothing left for another run of the day: the bill was there and every finding was acted
    /// on. A bill not ready yet, or a line whose action failed (a query or the database did not
    /// answer), wants another run.
    pub fn is_final(&self) -> bool {
        self.status != ReportStatus::NotReady
            && !self.lines.iter().any(|l| l.action == Action::Failed)
    }

    /// Findings still needing a person (anything not settled by recording it).
    pub fn open_lines(&self) -> usize {
        self.lines
            .iter()
            .filter(|l| {
                !matches!(
                    l.action,
                    Action::PaymentRecorded | Action::RefundOutcomeRecorded
                )
            })
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(status: ReportStatus, actions: &[Action]) -> Report {
        Report {
            date: NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
            status,
            ran_at: Utc::now(),
            runs: 1,
            bill: Totals::default(),
            log: Totals::default(),
            lines: actions
                .iter()
                .map(|&action| ReportLine {
                    kind: LineKind::PaymentMissingInLog,
                    out_trade_no: "PS1".into(),
                    order_id: None,
                    transaction_id: Some("T1".into()),
                    out_refund_no: None,
                    ours_fen: None,
                    theirs_fen: None,
                    action,
                    detail: None,
                })
                .collect(),
        }
    }

    #[test]
    fn a_day_is_final_once_its_bill_was_read_and_every_finding_acted_on() {
        use Action::*;
        assert!(report(ReportStatus::Reconciled, &[]).is_final());
        assert!(report(ReportStatus::NoBill, &[FlaggedForReview]).is_final());
        assert!(report(ReportStatus::Reconciled, &[PaymentRecorded, UnknownOrder]).is_final());
        assert!(!report(ReportStatus::NotReady, &[]).is_final());
        assert!(!report(ReportStatus::Reconciled, &[PaymentRecorded, Failed]).is_final());
    }
}
