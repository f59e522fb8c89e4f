//! The order aggregate: one order from placement to its last refund.
//!
//! Event-sourced in the decide/evolve style:
//! - [`decide`] looks at the current state and a command and either rejects
//!   it with an [`OrderError`] or returns the events that record what happened;
//! - [`evolve`] folds one event into the state; [`replay`] folds a whole stream.
//!
//! Everything here is pure (no I/O, no clock): time arrives inside commands.
//! Start reading at `decide.rs`; the other files are the nouns it talks about.

mod decide;
mod discrepancy;
mod error;
mod events;
mod review;
mod state;
mod status;

#[cfg(test)]
mod tests;

pub use decide::{decide, evolve, replay, OrderCommand};
pub use discrepancy::{Discrepancy, DiscrepancyKind};
pub use error::{ErrorKind, OrderError};
pub use events::OrderEvent;
pub use review::{Review, ReviewItem, ReviewOutcome, ReviewReason, ReviewResolution};
pub use state::{CardRef, CardStatus, Order, OrderCard, OrderLine, Payment, Refund};
pub use status::{CloseReason, OrderStatus, PayChannel, RefundStatus};

/// Orders are keyed by a random UUID, chosen by the caller so a retried
/// `Place` command with the same id is recognised as a duplicate.
pub type OrderId = uuid::Uuid;

/// 1,000,000 yuan. Kept as raw fen so it can be a plain `const`; compare
/// with `Fen::get`. Caps the damage of a pricing bug or a forged cart.
pub const MAX_ORDER_TOTAL_FEN: i64 = 100_000_000;
/// Per line. Large enough for any real basket, small enough that
/// `unit_price * quantity` stays far away from overflow in practice.
pub const MAX_QUANTITY: u32 = 9_999;
/// Lines per order; bounds the size of the `OrderPlaced` event.
pub const MAX_LINES: usize = 100;
/// Refunds per order, not counting failed ones. WeChat Pay accepts at most
/// 50 partial refunds per transaction, so a 51st could never succeed.
pub const MAX_REFUNDS: usize = 50;
