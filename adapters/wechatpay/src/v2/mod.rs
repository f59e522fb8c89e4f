//! APIv2: XML bodies signed with MD5 or HMAC-SHA256.

pub mod answer;
pub mod refund_notify;
pub mod request;
pub mod sign;
pub mod xml;
