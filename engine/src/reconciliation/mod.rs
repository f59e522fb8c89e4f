//! Reconciliation of one Beijing day against the provider's own record of it (WeChat Pay's
//! trade bill), so that a lost notify or a missed poll never goes unnoticed.
//!
//! - [`compare`] (pure) lines the bill up with what the log holds for the day;
//! - [`Reconciler`] fetches the bill, asks the read side for the day ([`DayLedger`]), acts on
//!   each finding — a payment the bill has and the log lacks is recorded through the same checks
//!   as a notify (the bill is the evidence, a query the confirmation); every other finding on one
//!   of our orders becomes a `ReconciliationDiscrepancy` on it (and a review item) — and stores the
//!   day's [`Report`]. Running a day again records nothing twice.

mod compare;
mod report;
mod service;
mod store;

pub use compare::{compare, Finding, LedgerDay, LedgerPayment, LedgerRefund};
pub use report::{Action, LineKind, Report, ReportLine, ReportStatus, Totals};
pub use service::{DayLedger, Progress, Quiet, Reconciler};
pub use store::Reports;
