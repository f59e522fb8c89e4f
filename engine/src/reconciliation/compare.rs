//! Lines a day's bill up with the log's payments and refunds of that day. Pure: the caller
//! supplies both sides.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};

use crate::money::Fen;
use crate::order::{OrderId, RefundStatus};
use crate::payments::bills::{BillPayment, BillRefund, BillRefundState, TradeBill};

/// A payment as the log has it: money that arrived on an order (matched or not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerPayment {
    pub order_id: OrderId,
    pub out_trade_no: String,
    pub transaction_id: String,
    pub amount_fen: Fen,
    pub paid_at: DateTime<Utc>,
}

/// A refund as the log has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerRefund {
    pub order_id: OrderId,
    pub out_trade_no: String,
    pub out_refund_no: String,
    pub amount_fen: Fen,
    pub status: RefundStatus,
    pub requested_at: DateTime<Utc>,
}

/// The log's side of one Beijing day: payments whose money arrived that day and refunds asked
/// for that day.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerDay {
    pub date: NaiveDate,
    pub payments: Vec<LedgerPayment>,
    pub refunds: Vec<LedgerRefund>,
}

/// One disagreement between the bill and the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// The bill has a payment the log lacks.
    PaymentMissingInLog(BillPayment),
    /// The log has a payment the bill lacks.
    PaymentMissingAtProvider(LedgerPayment),
    PaymentAmountDiffers {
        ours: LedgerPayment,
        theirs: BillPayment,
    },
    /// The bill has a refund the log lacks.
    RefundMissingInLog(BillRefund),
    /// The log has a refund that succeeded but the bill lacks it.
    RefundMissingAtProvider(LedgerRefund),
    RefundAmountDiffers {
        ours: LedgerRefund,
        theirs: BillRefund,
    },
    /// The bill reports an outcome the log does not have: final and opposite to the log's, or
    /// final while the log still waits for it.
    RefundStatusDiffers {
        ours: LedgerRefund,
        theirs: BillRefund,
    },
}

/// Every disagreement, payments first, each group in the bill's order then the log's.
///
/// Payments match by transaction id, refunds by out_refund_no. A refund of the log missing from
/// the bill counts only once it succeeded (one still processing may reach the provider's bill
/// on a later day); a refund the bill reports as still processing while the log has an outcome
/// is left alone (the bill is a snapshot taken the next morning).
pub fn compare(bill: &TradeBill, ours: &LedgerDay) -> Vec<Finding> {
    let mut findings = Vec::new();

    let our_payments: HashMap<&str, &LedgerPayment> = ours
        .payments
        .iter()
        .map(|p| (p.transaction_id.as_str(), p))
        .collect();
    let their_payments: HashMap<&str, &BillPayment> = bill
        .payments
        .iter()
        .map(|p| (p.transaction_id.as_str(), p))
        .collect();
    // A line the bill repeats is one payment (or refund): acted on once.
    let mut seen = HashSet::new();
    for theirs in &bill.payments {
        if !seen.insert(theirs.transaction_id.as_str()) {
            continue;
        }
        match our_payments.get(theirs.transaction_id.as_str()) {
            None => findings.push(Finding::PaymentMissingInLog(theirs.clone())),
            Some(ours) if ours.amount_fen != theirs.amount_fen => {
                findings.push(Finding::PaymentAmountDiffers {
                    ours: (*ours).clone(),
                    theirs: theirs.clone(),
                })
            }
            Some(_) => {}
        }
    }
    for ours in &ours.payments {
        if !their_payments.contains_key(ours.transaction_id.as_str()) {
            findings.push(Finding::PaymentMissingAtProvider(ours.clone()));
        }
    }

    let our_refunds: HashMap<&str, &LedgerRefund> = ours
        .refunds
        .iter()
        .map(|r| (r.out_refund_no.as_str(), r))
        .collect();
    let their_refunds: HashMap<&str, &BillRefund> = bill
        .refunds
        .iter()
        .map(|r| (r.out_refund_no.as_str(), r))
        .collect();
    let mut seen = HashSet::new();
    for theirs in &bill.refunds {
        if !seen.insert(theirs.out_refund_no.as_str()) {
            continue;
        }
        let Some(ours) = our_refunds.get(theirs.out_refund_no.as_str()) else {
            findings.push(Finding::RefundMissingInLog(theirs.clone()));
            continue;
        };
        if ours.amount_fen != theirs.amount_fen {
            findings.push(Finding::RefundAmountDiffers {
                ours: (*ours).clone(),
                theirs: theirs.clone(),
            });
        } else if outcomes_disagree(ours.status, theirs.state) {
            findings.push(Finding::RefundStatusDiffers {
                ours: (*ours).clone(),
                theirs: theirs.clone(),
            });
        }
    }
    for ours in &ours.refunds {
        if ours.status == RefundStatus::Succeeded
            && !their_refunds.contains_key(ours.out_refund_no.as_str())
        {
            findings.push(Finding::RefundMissingAtProvider(ours.clone()));
        }
    }
    findings
}

/// The bill reports a final outcome the log does not have (a processing line is a snapshot).
pub(super) fn outcomes_disagree(ours: RefundStatus, theirs: BillRefundState) -> bool {
    match theirs {
        BillRefundState::Processing => false,
        BillRefundState::Succeeded => ours != RefundStatus::Succeeded,
        BillRefundState::Failed => ours != RefundStatus::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use uuid::Uuid;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 3, 0, 0).unwrap()
    }

    fn date() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, 1).unwrap()
    }

    fn fen(n: i64) -> Fen {
        Fen::new(n).unwrap()
    }

    fn ours(tx: &str, amount: i64) -> LedgerPayment {
        LedgerPayment {
            order_id: Uuid::now_v7(),
            out_trade_no: format!("o-{tx}"),
            transaction_id: tx.into(),
            amount_fen: fen(amount),
            paid_at: at(),
        }
    }

    fn theirs(tx: &str, amount: i64) -> BillPayment {
        BillPayment {
            out_trade_no: format!("o-{tx}"),
            transaction_id: tx.into(),
            amount_fen: fen(amount),
            paid_at: at(),
        }
    }

    fn our_refund(no: &str, amount: i64, status: RefundStatus) -> LedgerRefund {
        LedgerRefund {
            order_id: Uuid::now_v7(),
            out_trade_no: "o".into(),
            out_refund_no: no.into(),
            amount_fen: fen(amount),
            status,
            requested_at: at(),
        }
    }

    fn their_refund(no: &str, amount: i64, state: BillRefundState) -> BillRefund {
        BillRefund {
            out_trade_no: "o".into(),
            transaction_id: "t".into(),
            out_refund_no: no.into(),
            refund_id: format!("r-{no}"),
            amount_fen: fen(amount),
            state,
            at: at(),
        }
    }

    #[test]
    fn agreeing_sides_find_nothing() {
        let bill = TradeBill {
            date: date(),
            payments: vec![theirs("t1", 100), theirs("t2", 250)],
            refunds: vec![their_refund("r1", 50, BillRefundState::Succeeded)],
        };
        let log = LedgerDay {
            date: date(),
            payments: vec![ours("t2", 250), ours("t1", 100)],
            refunds: vec![our_refund("r1", 50, RefundStatus::Succeeded)],
        };
        assert_eq!(compare(&bill, &log), vec![]);
    }

    #[test]
    fn an_extra_a_missing_a_different_payment_and_a_missing_refund_are_four_findings() {
        let bill = TradeBill {
            date: date(),
            payments: vec![
                theirs("same", 100),
                theirs("extra", 300),
                theirs("diff", 99),
            ],
            refunds: vec![],
        };
        let log = LedgerDay {
            date: date(),
            payments: vec![ours("same", 100), ours("missing", 200), ours("diff", 100)],
            refunds: vec![our_refund("r1", 50, RefundStatus::Succeeded)],
        };
        let found = compare(&bill, &log);
        assert_eq!(found.len(), 4, "{found:#?}");
        assert_eq!(found[0], Finding::PaymentMissingInLog(theirs("extra", 300)));
        assert!(
            matches!(&found[1], Finding::PaymentAmountDiffers { ours, theirs }
            if ours.amount_fen == fen(100) && theirs.amount_fen == fen(99))
        );
        assert!(
            matches!(&found[2], Finding::PaymentMissingAtProvider(p) if p.transaction_id == "missing")
        );
        assert!(
            matches!(&found[3], Finding::RefundMissingAtProvider(r) if r.out_refund_no == "r1")
        );
    }

    #[test]
    fn a_line_the_bill_repeats_is_one_finding() {
        let bill = TradeBill {
            date: date(),
            payments: vec![theirs("twice", 300), theirs("twice", 300)],
            refunds: vec![
                their_refund("r", 50, BillRefundState::Succeeded),
                their_refund("r", 50, BillRefundState::Succeeded),
            ],
        };
        let found = compare(&bill, &LedgerDay::default());
        assert_eq!(found.len(), 2, "{found:#?}");
    }

    #[test]
    fn refunds_in_flight_are_not_missing_yet() {
        let bill = TradeBill {
            date: date(),
            ..TradeBill::default()
        };
        let log = LedgerDay {
            date: date(),
            payments: vec![],
            refunds: vec![
                our_refund("processing", 50, RefundStatus::Processing),
                our_refund("failed", 50, RefundStatus::Failed),
            ],
        };
        assert_eq!(compare(&bill, &log), vec![]);
    }

    #[test]
    fn refund_outcomes_that_disagree_are_found() {
        let bill = TradeBill {
            date: date(),
            payments: vec![],
            refunds: vec![
                their_refund("succeeded-there", 50, BillRefundState::Succeeded),
                their_refund("snapshot", 50, BillRefundState::Processing),
                their_refund("unknown", 70, BillRefundState::Succeeded),
                their_refund("amount", 80, BillRefundState::Succeeded),
            ],
        };
        let log = LedgerDay {
            date: date(),
            payments: vec![],
            refunds: vec![
                our_refund("succeeded-there", 50, RefundStatus::Failed),
                our_refund("snapshot", 50, RefundStatus::Succeeded),
                our_refund("amount", 60, RefundStatus::Succeeded),
            ],
        };
        let found = compare(&bill, &log);
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(
            matches!(&found[0], Finding::RefundStatusDiffers { ours, .. } if ours.out_refund_no == "succeeded-there")
        );
        assert!(
            matches!(&found[1], Finding::RefundMissingInLog(r) if r.out_refund_no == "unknown")
        );
        assert!(
            matches!(&found[2], Finding::RefundAmountDiffers { ours, theirs }
            if ours.amount_fen == fen(60) && theirs.amount_fen == fen(80))
        );
    }
}
