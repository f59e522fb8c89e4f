//! The core of paystream: money, the order aggregate (pure), the event log and the application
//! services that turn requests into events. Nothing here knows HTTP, XML, RabbitMQ or WeChat.

pub mod accounts;
pub mod beijing;
pub mod cards;
pub mod catalogue;
pub mod consumers;
pub mod db;
pub mod error;
pub mod error_code;
pub mod follow;
pub mod money;
pub mod order;
pub mod orders;
pub mod payments;
pub mod reconciliation;
pub mod runs;
pub mod state_cache;
pub mod store;
pub mod subscriptions;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::{Error, ErrorCode, Kind, Result};
