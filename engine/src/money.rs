//! Money as a whole number of fen (1/100 yuan).
//!
//! WeChat Pay speaks integer fen on the wire, so we do too: no floats, no
//! rounding, and a refund sum can be compared to a payment sum exactly.
//! A `Fen` can never be negative; direction (paid vs refunded) is carried
//! by the event that mentions the amount, never by a sign.

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize};

/// A non-negative amount of money in fen.
///
/// The inner value is private so the only ways in are [`Fen::new`] and
/// deserialization, both of which reject negatives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Fen(i64);

impl Fen {
    pub const ZERO: Fen = Fen(0);
    /// Largest representable amount; used to saturate sums that are only
    /// ever compared, never paid out (see `saturating_add`).
    pub const MAX: Fen = Fen(i64::MAX);

    /// `None` for negative input: a negative amount is always a bug upstream.
    pub const fn new(v: i64) -> Option<Fen> {
        if v < 0 {
            None
        } else {
            Some(Fen(v))
        }
    }

    pub const fn get(self) -> i64 {
        self.0
    }

    pub fn checked_add(self, other: Fen) -> Option<Fen> {
        self.0.checked_add(other.0).map(Fen)
    }

    /// `None` when the result would be negative, not just on overflow.
    pub fn checked_sub(self, other: Fen) -> Option<Fen> {
        self.0.checked_sub(other.0).and_then(Fen::new)
    }

    /// Caps at [`Fen::MAX`] instead of failing. Only for totals that are
    /// compared against limits (e.g. how much money arrived), where an
    /// absurd sum must still compare as "a lot" rather than abort.
    pub fn saturating_add(self, other: Fen) -> Fen {
        Fen(self.0.saturating_add(other.0))
    }

    pub fn checked_mul(self, n: u32) -> Option<Fen> {
        // Both factors are non-negative, so the only failure is overflow.
        self.0.checked_mul(i64::from(n)).map(Fen)
    }

    /// `None` on overflow; an empty iterator sums to [`Fen::ZERO`].
    pub fn checked_sum<I: IntoIterator<Item = Fen>>(it: I) -> Option<Fen> {
        it.into_iter()
            .try_fold(Fen::ZERO, |acc, x| acc.checked_add(x))
    }

    /// The amount in yuan, always with scale 2 so "1.50" stays "1.50".
    pub fn to_yuan(self) -> Decimal {
        Decimal::new(self.0, 2)
    }
}

impl fmt::Display for Fen {
    /// Yuan with two decimals ("12.34"), the way a receipt shows it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.to_yuan(), f)
    }
}

impl<'de> Deserialize<'de> for Fen {
    /// Hand-written because `#[serde(transparent)]` would happily accept a
    /// negative number from a tampered event store or request body.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let v = i64::deserialize(deserializer)?;
        Fen::new(v).ok_or_else(|| {
            serde::de::Error::invalid_value(
                serde::de::Unexpected::Signed(v),
                &"a non-negative amount in fen",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fen(v: i64) -> Fen {
        Fen::new(v).unwrap()
    }

    #[test]
    fn new_rejects_negative_and_accepts_zero() {
        assert_eq!(Fen::new(-1), None);
        assert_eq!(Fen::new(i64::MIN), None);
        assert_eq!(Fen::new(0), Some(Fen::ZERO));
        assert_eq!(Fen::new(1234).map(Fen::get), Some(1234));
        assert_eq!(Fen::default(), Fen::ZERO);
    }

    #[test]
    fn checked_add_detects_overflow() {
        assert_eq!(fen(100).checked_add(fen(23)), Some(fen(123)));
        assert_eq!(Fen::MAX.checked_add(fen(1)), None);
    }

    #[test]
    fn checked_sub_refuses_to_go_negative() {
        assert_eq!(fen(100).checked_sub(fen(40)), Some(fen(60)));
        assert_eq!(fen(100).checked_sub(fen(100)), Some(Fen::ZERO));
        assert_eq!(fen(100).checked_sub(fen(101)), None);
    }

    #[test]
    fn saturating_add_caps_at_max() {
        assert_eq!(fen(1).saturating_add(fen(2)), fen(3));
        assert_eq!(Fen::MAX.saturating_add(fen(5)), Fen::MAX);
    }

    #[test]
    fn checked_mul_detects_overflow() {
        assert_eq!(fen(250).checked_mul(4), Some(fen(1000)));
        assert_eq!(fen(250).checked_mul(0), Some(Fen::ZERO));
        assert_eq!(fen(i64::MAX / 2 + 1).checked_mul(2), None);
        assert_eq!(Fen::MAX.checked_mul(u32::MAX), None);
    }

    #[test]
    fn checked_sum_adds_everything_or_reports_overflow() {
        assert_eq!(Fen::checked_sum([]), Some(Fen::ZERO));
        assert_eq!(Fen::checked_sum([fen(1), fen(2), fen(3)]), Some(fen(6)));
        assert_eq!(Fen::checked_sum([Fen::MAX, fen(1)]), None);
    }

    #[test]
    fn to_yuan_always_has_scale_two() {
        assert_eq!(fen(1234).to_yuan(), Decimal::new(1234, 2));
        assert_eq!(fen(1234).to_yuan().scale(), 2);
        assert_eq!(fen(100).to_yuan().to_string(), "1.00");
    }

    #[test]
    fn display_prints_yuan_with_two_decimals() {
        assert_eq!(fen(1234).to_string(), "12.34");
        assert_eq!(fen(5).to_string(), "0.05");
        assert_eq!(fen(50).to_string(), "0.50");
        assert_eq!(Fen::ZERO.to_string(), "0.00");
        assert_eq!(fen(100_000_000).to_string(), "1000000.00");
    }

    #[test]
    fn ordering_follows_the_amount() {
        assert!(fen(1) < fen(2));
        assert_eq!(fen(7).max(fen(3)), fen(7));
    }

    #[test]
    fn serializes_as_a_bare_integer() {
        assert_eq!(serde_json::to_string(&fen(1234)).unwrap(), "1234");
        assert_eq!(serde_json::from_str::<Fen>("1234").unwrap(), fen(1234));
        assert_eq!(serde_json::from_str::<Fen>("0").unwrap(), Fen::ZERO);
    }

    #[test]
    fn deserializing_a_negative_or_fractional_amount_fails() {
        let err = serde_json::from_str::<Fen>("-1").unwrap_err();
        assert!(err.to_string().contains("non-negative"), "{err}");
        assert!(serde_json::from_str::<Fen>("12.5").is_err());
        assert!(serde_json::from_str::<Fen>("\"100\"").is_err());
    }
}
