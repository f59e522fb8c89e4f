//! Read models derived from the event log, and the queries the API and back-office run on them.
//! Every read model can be dropped and rebuilt from the log (`paystream rebuild-projections`).

mod checks;
mod daily;
mod orders;
mod review;

pub use checks::Checks;
pub use daily::{beijing_day, ChannelTotals, DailyTotals, DayTotals, MAX_REPORT_DAYS};
pub use orders::{
    backfill_if_needed, rebuild, OrderFilter, OrderView, OrdersProjection, OrdersView, Page,
};
pub use review::{ReviewEntry, ReviewQueue};
