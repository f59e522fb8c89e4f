//! Read models derived from the event log, and the queries the API and back-office run on them.
//! Every read model can be dropped and rebuilt from the log (`paystream rebuild-projections`).

mod checks;
mod daily;
mod ledger;
mod orders;
mod payments;
mod rebuild;
mod refunds;
mod review;
mod search;

pub use checks::Checks;
pub use daily::{beijing_day, ChannelTotals, DailyTotals, DayTotals, MAX_REPORT_DAYS};
pub use ledger::Ledger;
pub use orders::{OrderFilter, OrderView, OrdersProjection, OrdersView, Page};
pub use payments::{PaymentFilter, PaymentStatus, PaymentView, PaymentsView};
pub use rebuild::{
    backfill_if_needed, rebuild, rebuild_with, Progress, ReadModelTable, Rebuilt, Silent,
};
pub use refunds::{refund_status, RefundFilter, RefundView, RefundsView};
pub use review::{ReviewEntry, ReviewQueue};

use std::sync::Arc;

use paystream_engine::store::InlineProjection;

/// The inline projections, in the order each append applies them (`paystream::event_store`
/// attaches them); [`rebuild`] replays the log through the same list. A new inline read model is
/// registered here, and its tables in [`READ_MODEL_TABLES`].
pub fn inline_projections() -> Vec<Arc<dyn InlineProjection>> {
    vec![Arc::new(OrdersProjection)]
}

/// Every table the inline projections keep, with its key: [`rebuild`] clears each of them before
/// replaying the log, and `tests/rebuild.rs` compares each of them, row by row, before and after.
pub const READ_MODEL_TABLES: &[ReadModelTable] = &[
    ReadModelTable {
        name: "orders_view",
        key: &["id"],
    },
    ReadModelTable {
        name: "refunds_view",
        key: &["out_refund_no"],
    },
    ReadModelTable {
        name: "review_queue",
        key: &["order_id"],
    },
    ReadModelTable {
        name: "daily_totals",
        key: &["day", "channel"],
    },
    ReadModelTable {
        name: "payments_view",
        key: &["order_id", "attempt"],
    },
];
