//! The WeChat Pay simulator over real HTTP: a merchant client signs requests and verifies every
//! answer and notification with what WeChat would give it.

mod bills;
mod faults;
mod notifications;
mod orders;
mod pay_wait;
mod refunds;
mod signatures;
mod support;
mod v2;
