//! Read models derived from the event log, and the queries the API and back-office run on them.
//! Every read model can be dropped and rebuilt from the log (`paystream rebuild-projections`).

mod checks;
mod orders;

pub use checks::Checks;
pub use orders::{rebuild, OrderFilter, OrderView, OrdersProjection, OrdersView, Page};
