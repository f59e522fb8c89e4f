//! Payments: the port to the provider ([`gateway`]) and the service that drives it from the
//! order's events.

pub mod gateway;
