//! WeChat's card signature (`cardExt` of `wx.addCard`, `cardSign`, `wx.chooseCard`).

use sha1::{Digest, Sha1};

/// Lowercase hex SHA1 of the values sorted lexicographically as strings and concatenated with no
/// separator — WeChat's rule for card signatures. For a `cardExt` the values are the api_ticket,
/// the card_id, the timestamp and the nonce_str (plus `code` and `openid` when the ext has them).
pub fn card_signature(values: &[&str]) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    hex::encode(Sha1::digest(sorted.concat().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of WeChat's card documentation (附录4): code 1434008071, timestamp 1404896688,
    /// card_id pjZ8Yt1XGILfi-FUsewpnnolGgZk, api_ticket ojZ8YtyVyr30HheH3CM73y7h4jJE,
    /// nonce_str 123.
    #[test]
    fn matches_wechats_documented_example() {
        let values = [
            "1434008071",
            "1404896688",
            "pjZ8Yt1XGILfi-FUsewpnnolGgZk",
            "ojZ8YtyVyr30HheH3CM73y7h4jJE",
            "123",
        ];
        assert_eq!(
            card_signature(&values),
            "f137ab68b7f8112d20ee528ab6074564e2796250"
        );
    }

    /// wechatpy's signer test: the order values arrive in does not matter, "123456789" is hashed.
    #[test]
    fn sorts_before_hashing() {
        assert_eq!(
            card_signature(&["789", "456", "123"]),
            "f7c3bc1d808e04732adf679965ccc34ca7ae3441"
        );
        assert_eq!(
            card_signature(&["ticket", "card", "1700000000", "nonce"]),
            card_signature(&["nonce", "1700000000", "card", "ticket"])
        );
    }

    /// Sorted as strings, not as numbers: "10" comes before "9".
    #[test]
    fn sorts_as_strings() {
        assert_eq!(card_signature(&["9", "10"]), card_signature(&["109"]));
    }
}
