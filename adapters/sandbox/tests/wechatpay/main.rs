//! The WeChat Pay simulator over real HTTP: a merchant client signs requests and verifies every
//! answer and notification with what WeChat would give it.

mod faults;
mod notifications;
mod orders;
mod refunds;
mod signatures;
mod support;
mod v2;
