//! The workers that react to the log: the subscribe-message worker tells customers what happened
//! to their order; the card-verification worker consumes an order's card once it is paid. Both
//! implement the engine's [`Worker`](paystream_engine::consumers::Worker) and know neither the
//! broker nor HTTP: the binary feeds them from RabbitMQ or straight from the log.

mod card_verification;
mod render;
mod subscribe_message;
pub mod templates;

pub use card_verification::CardVerificationWorker;
pub use subscribe_message::SubscribeMessageWorker;
pub use templates::{TemplateError, Templates};

use paystream_engine::consumers::{EventMessage, HandleError};
use paystream_engine::order::OrderId;
use paystream_engine::orders::STREAM_PREFIX;

/// The order a message is about. Every stream of the log is an order's today; anything else is
/// not for these workers.
fn order_of(message: &EventMessage) -> Result<OrderId, HandleError> {
    message
        .stream_id
        .strip_prefix(STREAM_PREFIX)
        .and_then(|id| uuid::Uuid::parse_str(id).ok())
        .ok_or_else(|| HandleError::Poison(format!("{} is not an order stream", message.stream_id)))
}
