//! Beijing time (UTC+8, no daylight saving): the merchant's day. Reports, back-office times and
//! subscribe messages are in it; the log keeps UTC.

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};

/// UTC+8.
pub const OFFSET: FixedOffset = match FixedOffset::east_opt(8 * 3600) {
    Some(offset) => offset,
    None => panic!("UTC+8 is a valid offset"),
};

/// `yyyy-MM-dd HH:mm:ss` in Beijing time, as staff read times.
pub fn datetime(at: DateTime<Utc>) -> String {
    at.with_timezone(&OFFSET)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// When a Beijing day begins (00:00 Beijing time), in UTC.
pub fn day_start(date: NaiveDate) -> DateTime<Utc> {
    date.and_time(chrono::NaiveTime::MIN)
        .and_local_timezone(OFFSET)
        .single()
        .expect("a fixed offset has neither gaps nor folds")
        .to_utc()
}

/// The Beijing day an instant falls on.
pub fn day(at: DateTime<Utc>) -> NaiveDate {
    at.with_timezone(&OFFSET).date_naive()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn late_utc_evening_is_the_next_beijing_day() {
        let at = Utc.with_ymd_and_hms(2026, 12, 1, 16, 30, 0).unwrap();
        assert_eq!(day(at), NaiveDate::from_ymd_opt(2026, 12, 2).unwrap());
    }
}
