//! WeChat-shaped identifiers and timestamps.

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use rand::Rng;

/// WeChat Pay speaks Beijing time (+08:00) in every timestamp it sends.
pub(crate) const BEIJING: FixedOffset = match FixedOffset::east_opt(8 * 3600) {
    Some(offset) => offset,
    None => panic!("constant offset"),
};

/// RFC 3339 in Beijing time, to the second: `2024-05-01T12:00:00+08:00`.
pub(crate) fn wechat_time(t: DateTime<Utc>) -> String {
    t.with_timezone(&BEIJING)
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

fn digits(n: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| char::from(b'0' + rng.gen_range(0..10)))
        .collect()
}

fn lower_hex(n: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| char::from(b"0123456789abcdef"[rng.gen_range(0..16)]))
        .collect()
}

fn beijing_stamp(now: DateTime<Utc>, format: &str) -> String {
    now.with_timezone(&BEIJING).format(format).to_string()
}

/// `wx` + Beijing `yyyyMMddHHmmss` + 14 hex digits (30 characters).
pub(crate) fn prepay_id(now: DateTime<Utc>) -> String {
    format!("wx{}{}", beijing_stamp(now, "%Y%m%d%H%M%S"), lower_hex(14))
}

/// 28 digits starting `4200`, with the Beijing date inside as WeChat's have.
pub(crate) fn transaction_id(now: DateTime<Utc>) -> String {
    format!(
        "4200{}{}{}",
        digits(6),
        beijing_stamp(now, "%Y%m%d"),
        digits(10)
    )
}

/// 29 digits starting `50`, as WeChat's refund ids.
pub(crate) fn refund_id(now: DateTime<Utc>) -> String {
    format!("503{}{}", beijing_stamp(now, "%Y%m%d"), digits(18))
}

/// WeChat's `Request-ID` answer header.
pub(crate) fn request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string().to_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let now = DateTime::parse_from_rfc3339("2024-05-01T23:30:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap();
        assert_eq!(wechat_time(now), "2024-05-02T07:30:00+08:00");
        let p = prepay_id(now);
        assert_eq!(p.len(), 30);
        assert!(p.starts_with("wx20240502073000"));
        let t = transaction_id(now);
        assert_eq!(t.len(), 28);
        assert!(t.starts_with("4200") && t.bytes().all(|b| b.is_ascii_digit()));
        assert!(t.contains("20240502"));
        let r = refund_id(now);
        assert_eq!(r.len(), 29);
        assert!(r.starts_with("50") && r.bytes().all(|b| b.is_ascii_digit()));
    }
}
