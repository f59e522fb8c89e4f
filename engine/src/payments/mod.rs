//! Payments: the port to the provider ([`gateway`]) and the service that drives it from the
//! order's events ([`service`]).

pub mod bills;
pub mod gateway;
mod prepays;
pub mod service;

pub use service::{order_id_of, NoticeError, NoticeOutcome, PaymentCheck, Payments};
