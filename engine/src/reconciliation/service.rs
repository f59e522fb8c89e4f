//! Runs the reconciliation of one day: bill, log, comparison, action on each finding, report.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use tracing::{info, warn};

use super::compare::{compare, outcomes_disagree, Finding, LedgerDay, LedgerPayment, LedgerRefund};
use super::report::{Action, LineKind, Report, ReportLine, ReportStatus, Totals};
use super::store::Reports;
use crate::error::Result;
use crate::order::{Discrepancy, DiscrepancyKind, Order, OrderCommand, RefundStatus};
use crate::orders::{Metadata, OrderService};
use crate::payments::bills::{BillOutcome, BillPayment, BillRefund, BillRefundState, TradeBill};
use crate::payments::{order_id_of, PaymentCheck, Payments};

/// Who the log names as the actor of what reconciliation records.
const ACTOR: &str = "system:reconciliation";

/// The read side's view of one day of the log.
#[async_trait]
pub trait DayLedger: Send + Sync {
    /// Payments whose money arrived on `date` (Beijing) and refunds asked for that day.
    async fn day(&self, date: NaiveDate) -> Result<LedgerDay>;
}

/// Where a long run reports how far it got (a progress bar, or nothing).
pub trait Progress: Send + Sync {
    /// A new stage begins, with `total` steps (0 when unknown).
    fn stage(&self, what: &str, total: u64);
    fn advance(&self, steps: u64);
}

/// Reports nowhere.
pub struct Quiet;

impl Progress for Quiet {
    fn stage(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
}

#[derive(Clone)]
pub struct Reconciler {
    payments: Payments,
    orders: OrderService,
    ledger: Arc<dyn DayLedger>,
    reports: Reports,
}

impl Reconciler {
    pub fn new(
        payments: Payments,
        orders: OrderService,
        ledger: Arc<dyn DayLedger>,
        reports: Reports,
    ) -> Reconciler {
        Reconciler {
            payments,
            orders,
            ledger,
            reports,
        }
    }

    pub fn reports(&self) -> &Reports {
        &self.reports
    }

    /// Reconciles one Beijing day and stores its report (unless the bill is not ready and the
    /// day already has a report, which is then kept). Errors only when the bill or the log
    /// could not be read; a finding that could not be acted on is a `Failed` line instead.
    #[tracing::instrument(skip_all, fields(bill_date = %date))]
    pub async fn run(
        &self,
        date: NaiveDate,
        now: DateTime<Utc>,
        progress: &dyn Progress,
    ) -> Result<Report> {
        progress.stage("fetching WeChat Pay's bill and reading the log", 0);
        // The log is read while the bill downloads: either may take a while on a busy day.
        let (bill, ours) = tokio::join!(self.payments.trade_bill(date), self.ledger.day(date));
        let (status, bill) = match bill? {
            BillOutcome::Bill(bill) => (ReportStatus::Reconciled, bill),
            BillOutcome::NoBill => (
                ReportStatus::NoBill,
                TradeBill {
                    date,
                    ..TradeBill::default()
                },
            ),
            BillOutcome::NotReady => {
                info!("the bill is not ready yet");
                return self.not_ready(date, now).await;
            }
        };
        let ours = ours?;
        progress.stage(
            "comparing",
            (bill.payments.len() + bill.refunds.len()) as u64,
        );
        let findings = compare(&bill, &ours);
        progress.advance((bill.payments.len() + bill.refunds.len()) as u64);
        progress.stage("acting on what differs", findings.len() as u64);
        let mut lines = Vec::with_capacity(findings.len());
        for finding in findings {
            if let Some(line) = self.act(date, finding, now).await {
                lines.push(line);
            }
            progress.advance(1);
        }
        let report = Report {
            date,
            status,
            ran_at: Utc::now(),
            runs: self.reports.runs(date).await? + 1,
            bill: bill_totals(&bill),
            log: log_totals(&ours),
            lines,
        };
        self.reports.put(&report).await?;
        info!(
            status = ?report.status,
            findings = report.lines.len(),
            open = report.open_lines(),
            "reconciled"
        );
        Ok(report)
    }

    async fn not_ready(&self, date: NaiveDate, now: DateTime<Utc>) -> Result<Report> {
        // A day reconciled earlier keeps its report (a later "not ready" says nothing new).
        if let Some(earlier) = self.reports.get(date).await? {
            if earlier.status != ReportStatus::NotReady {
                return Ok(earlier);
            }
        }
        let report = Report {
            date,
            status: ReportStatus::NotReady,
            ran_at: now,
            runs: 0,
            bill: Totals::default(),
            log: Totals::default(),
            lines: Vec::new(),
        };
        self.reports.put(&report).await?;
        Ok(report)
    }

    /// Acts on one finding; `None` when a closer look shows there is nothing to report (the
    /// log has the thing on an order after all, only on another day).
    async fn act(
        &self,
        date: NaiveDate,
        finding: Finding,
        now: DateTime<Utc>,
    ) -> Option<ReportLine> {
        let (kind, line) = match finding {
            Finding::PaymentMissingInLog(theirs) => {
                return self.payment_missing_in_log(date, theirs, now).await
            }
            Finding::RefundMissingInLog(theirs) => {
                return self.refund_missing_in_log(date, theirs, now).await
            }
            Finding::RefundStatusDiffers { ours, theirs } => {
                return self.refund_status_differs(date, ours, theirs, now).await
            }
            Finding::PaymentMissingAtProvider(ours) => (
                DiscrepancyKind::PaymentMissingAtProvider,
                payment_line(LineKind::PaymentMissingAtProvider, Some(&ours), None),
            ),
            Finding::PaymentAmountDiffers { ours, theirs } => (
                DiscrepancyKind::PaymentAmountDiffers,
                payment_line(LineKind::PaymentAmountDiffers, Some(&ours), Some(&theirs)),
            ),
            Finding::RefundMissingAtProvider(ours) => (
                DiscrepancyKind::RefundMissingAtProvider,
                refund_line(LineKind::RefundMissingAtProvider, Some(&ours), None),
            ),
            Finding::RefundAmountDiffers { ours, theirs } => (
                DiscrepancyKind::RefundAmountDiffers,
                refund_line(LineKind::RefundAmountDiffers, Some(&ours), Some(&theirs)),
            ),
        };
        Some(self.flag(date, kind, line, now).await)
    }

    /// The bill is the evidence, a query the confirmation: recorded exactly as a notify would
    /// have been (amount checked against the order, paid-after-close and paid-twice to review).
    async fn payment_missing_in_log(
        &self,
        date: NaiveDate,
        theirs: BillPayment,
        now: DateTime<Utc>,
    ) -> Option<ReportLine> {
        let mut line = payment_line(LineKind::PaymentMissingInLog, None, Some(&theirs));
        let Some(order) = self.our_order(&mut line).await else {
            if line.action == Action::UnknownOrder {
                warn!(out_trade_no = %theirs.out_trade_no, transaction_id = %theirs.transaction_id,
                    "WeChat Pay's bill lists a payment for an order that is not ours");
            }
            return Some(line);
        };
        let order_id = order.id;
        line.order_id = Some(order_id);
        // Already recorded, its money on another Beijing day than the bill's line: agreeing, or
        // an amount that differs (a query would only say "known").
        if let Some(known) = order
            .payments
            .iter()
            .find(|p| p.transaction_id == theirs.transaction_id)
        {
            if known.amount_fen == theirs.amount_fen {
                return None;
            }
            line.kind = LineKind::PaymentAmountDiffers;
            line.ours_fen = Some(known.amount_fen);
            return Some(
                self.flag(date, DiscrepancyKind::PaymentAmountDiffers, line, now)
                    .await,
            );
        }
        match self.payments.reconcile_payment(order_id).await {
            Ok(PaymentCheck::Recorded) => {
                info!(order_id = %order_id, transaction_id = %theirs.transaction_id,
                    "payment found in WeChat Pay's bill, confirmed by query and recorded");
                line.action = Action::PaymentRecorded;
                Some(line)
            }
            Ok(PaymentCheck::Nothing(state)) => {
                line.detail = Some(format!("WeChat Pay's query answered {state:?}"));
                Some(
                    self.flag(date, DiscrepancyKind::PaymentUnconfirmed, line, now)
                        .await,
                )
            }
            Err(e) => {
                warn!(order_id = %order_id, error = %e, "could not confirm a payment of the bill");
                line.action = Action::Failed;
                line.detail = Some(e.to_string());
                Some(line)
            }
        }
    }

    async fn refund_missing_in_log(
        &self,
        date: NaiveDate,
        theirs: BillRefund,
        now: DateTime<Utc>,
    ) -> Option<ReportLine> {
        let mut line = refund_line(LineKind::RefundMissingInLog, None, Some(&theirs));
        let Some(order) = self.our_order(&mut line).await else {
            if line.action == Action::UnknownOrder {
                warn!(out_trade_no = %theirs.out_trade_no, out_refund_no = %theirs.out_refund_no,
                    "WeChat Pay's bill lists a refund for an order that is not ours");
            }
            return Some(line);
        };
        line.order_id = Some(order.id);
        // The refund asked for on another Beijing day than the bill's line: compare it there.
        if let Some(known) = order.refund(&theirs.out_refund_no) {
            let ours = LedgerRefund {
                order_id: order.id,
                out_trade_no: order.out_trade_no.clone(),
                out_refund_no: known.out_refund_no.clone(),
                amount_fen: known.amount_fen,
                status: known.status,
                requested_at: known.requested_at,
            };
            if ours.amount_fen != theirs.amount_fen {
                let line = refund_line(LineKind::RefundAmountDiffers, Some(&ours), Some(&theirs));
                return Some(
                    self.flag(date, DiscrepancyKind::RefundAmountDiffers, line, now)
                        .await,
                );
            }
            return if outcomes_disagree(ours.status, theirs.state) {
                self.refund_status_differs(date, ours, theirs, now).await
            } else {
                None
            };
        }
        Some(
            self.flag(date, DiscrepancyKind::RefundMissingInLog, line, now)
                .await,
        )
    }

    /// The bill has an outcome the log lacks: if the log still waits for it, ask the provider
    /// and record what it says; a final outcome opposite to the log's goes to staff.
    async fn refund_status_differs(
        &self,
        date: NaiveDate,
        ours: LedgerRefund,
        theirs: BillRefund,
        now: DateTime<Utc>,
    ) -> Option<ReportLine> {
        let mut line = refund_line(LineKind::RefundStatusDiffers, Some(&ours), Some(&theirs));
        let detail = format!(
            "here {}, in the bill {}",
            ours.status.as_str(),
            bill_refund_state(theirs.state)
        );
        if ours.status == RefundStatus::Processing {
            let asked = self
                .payments
                .reconcile_refund(ours.order_id, &ours.out_refund_no)
                .await;
            let now_status = self
                .orders
                .get(ours.order_id)
                .await
                .ok()
                .and_then(|o| o.refund(&ours.out_refund_no).map(|r| r.status));
            match (asked, now_status) {
                (Ok(()), Some(status)) if status != RefundStatus::Processing => {
                    line.action = Action::RefundOutcomeRecorded;
                    line.detail = Some(format!(
                        "{detail}; recorded {} after a query",
                        status.as_str()
                    ));
                    return Some(line);
                }
                (Err(e), _) => warn!(order_id = %ours.order_id, error = %e, "refund query failed"),
                _ => {}
            }
        }
        line.detail = Some(detail);
        Some(
            self.flag(date, DiscrepancyKind::RefundStatusDiffers, line, now)
                .await,
        )
    }

    /// The order the out_trade_no stands for, when it is ours and exists.
    /// `line` settled by what the bill's `out_trade_no` names: our order (to act on), or no
    /// order of ours (`UnknownOrder`) — or, when the log cannot be read, a `Failed` line for the
    /// next run, never a real order reported as someone else's.
    async fn our_order(&self, line: &mut ReportLine) -> Option<Order> {
        let Some(id) = order_id_of(&line.out_trade_no) else {
            line.action = Action::UnknownOrder;
            return None;
        };
        match self.orders.load(id).await {
            Ok(Some((order, _))) => Some(order),
            Ok(None) => {
                line.action = Action::UnknownOrder;
                None
            }
            Err(e) => {
                warn!(order_id = %id, error = %e, "could not read an order the bill names");
                line.action = Action::Failed;
                line.detail = Some(e.to_string());
                None
            }
        }
    }

    /// Records the finding of `line` (one of our orders') on the order, once; fills in the
    /// line's action.
    async fn flag(
        &self,
        date: NaiveDate,
        kind: DiscrepancyKind,
        mut line: ReportLine,
        now: DateTime<Utc>,
    ) -> ReportLine {
        let Some(order_id) = line.order_id else {
            line.action = Action::UnknownOrder;
            return line;
        };
        let discrepancy = Discrepancy {
            date,
            kind,
            reference: line
                .out_refund_no
                .clone()
                .or_else(|| line.transaction_id.clone())
                .unwrap_or_default(),
            ours_fen: line.ours_fen,
            theirs_fen: line.theirs_fen,
            detail: line.detail.clone(),
        };
        let command = OrderCommand::RecordDiscrepancy { discrepancy, now };
        line.action = match self
            .orders
            .execute(order_id, command, &Metadata::actor(ACTOR))
            .await
        {
            Ok(outcome) if outcome.appended.is_empty() => Action::AlreadyFlagged,
            Ok(_) => {
                warn!(order_id = %order_id, %kind, "reconciliation discrepancy recorded; the order is in review");
                Action::FlaggedForReview
            }
            Err(e) => {
                warn!(order_id = %order_id, %kind, error = %e, "could not record a reconciliation discrepancy");
                line.detail = Some(e.to_string());
                Action::Failed
            }
        };
        line
    }
}

/// A payment finding's line (its action still to be decided), from whichever sides have it.
fn payment_line(
    kind: LineKind,
    ours: Option<&LedgerPayment>,
    theirs: Option<&BillPayment>,
) -> ReportLine {
    let (out_trade_no, transaction_id) = match (ours, theirs) {
        (Some(p), _) => (p.out_trade_no.clone(), p.transaction_id.clone()),
        (None, Some(p)) => (p.out_trade_no.clone(), p.transaction_id.clone()),
        (None, None) => (String::new(), String::new()),
    };
    ReportLine {
        kind,
        out_trade_no,
        order_id: ours.map(|p| p.order_id),
        transaction_id: Some(transaction_id),
        out_refund_no: None,
        ours_fen: ours.map(|p| p.amount_fen),
        theirs_fen: theirs.map(|p| p.amount_fen),
        action: Action::Failed,
        detail: None,
    }
}

/// A refund finding's line (its action still to be decided), from whichever sides have it.
fn refund_line(
    kind: LineKind,
    ours: Option<&LedgerRefund>,
    theirs: Option<&BillRefund>,
) -> ReportLine {
    let (out_trade_no, out_refund_no) = match (ours, theirs) {
        (Some(r), _) => (r.out_trade_no.clone(), r.out_refund_no.clone()),
        (None, Some(r)) => (r.out_trade_no.clone(), r.out_refund_no.clone()),
        (None, None) => (String::new(), String::new()),
    };
    ReportLine {
        kind,
        out_trade_no,
        order_id: ours.map(|r| r.order_id),
        transaction_id: theirs.map(|r| r.transaction_id.clone()),
        out_refund_no: Some(out_refund_no),
        ours_fen: ours.map(|r| r.amount_fen),
        theirs_fen: theirs.map(|r| r.amount_fen),
        action: Action::Failed,
        detail: None,
    }
}

fn bill_refund_state(state: BillRefundState) -> &'static str {
    match state {
        BillRefundState::Succeeded => "succeeded",
        BillRefundState::Processing => "processing",
        BillRefundState::Failed => "failed",
    }
}

fn bill_totals(bill: &TradeBill) -> Totals {
    Totals {
        payments: bill.payments.len() as u64,
        payments_fen: bill.payments.iter().map(|p| p.amount_fen.get()).sum(),
        refunds: bill.refunds.len() as u64,
        refunds_fen: bill.refunds.iter().map(|r| r.amount_fen.get()).sum(),
    }
}

fn log_totals(day: &LedgerDay) -> Totals {
    Totals {
        payments: day.payments.len() as u64,
        payments_fen: day.payments.iter().map(|p| p.amount_fen.get()).sum(),
        refunds: day.refunds.len() as u64,
        refunds_fen: day.refunds.iter().map(|r| r.amount_fen.get()).sum(),
    }
}
