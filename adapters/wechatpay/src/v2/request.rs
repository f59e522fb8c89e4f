//! Building APIv2 requests: the fields as a map, `sign_type` and `sign` added, rendered through
//! the XML module (never by string building).

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, Utc};

use super::sign::{self, SignType};
use super::xml;
use crate::Result;

/// Beijing time (UTC+8, no daylight saving): APIv2's `time_expire` and `time_start` are local.
pub(crate) fn beijing() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset")
}

/// APIv2's `yyyyMMddHHmmss` in Beijing time.
pub fn beijing_time(t: DateTime<Utc>) -> String {
    t.with_timezone(&beijing())
        .format("%Y%m%d%H%M%S")
        .to_string()
}

/// A JSAPI order (`/pay/unifiedorder`) for one of our orders.
#[derive(Clone, Debug)]
pub struct UnifiedOrder<'a> {
    /// The mini-program's appid.
    pub appid: &'a str,
    /// The merchant id.
    pub mch_id: &'a str,
    /// 32 characters at most; fresh per request.
    pub nonce_str: &'a str,
    /// What the customer sees (≤ 128 bytes).
    pub body: &'a str,
    /// Our order number.
    pub out_trade_no: &'a str,
    /// In fen.
    pub total_fee: i64,
    /// The payer's IP address.
    pub spbill_create_ip: &'a str,
    /// Where WeChat sends the pay notification.
    pub notify_url: &'a str,
    /// The payer.
    pub openid: &'a str,
    /// When the order can no longer be paid.
    pub time_expire: Option<DateTime<Utc>>,
}

impl UnifiedOrder<'_> {
    /// The fields, unsigned.
    pub fn fields(&self) -> BTreeMap<String, String> {
        let mut fields: BTreeMap<String, String> = [
            ("appid", self.appid.to_string()),
            ("mch_id", self.mch_id.to_string()),
            ("nonce_str", self.nonce_str.to_string()),
            ("body", self.body.to_string()),
            ("out_trade_no", self.out_trade_no.to_string()),
            ("total_fee", self.total_fee.to_string()),
            ("spbill_create_ip", self.spbill_create_ip.to_string()),
            ("notify_url", self.notify_url.to_string()),
            ("trade_type", "JSAPI".to_string()),
            ("openid", self.openid.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if let Some(t) = self.time_expire {
            fields.insert("time_expire".into(), beijing_time(t));
        }
        fields
    }
}

/// `fields` with `sign_type` (always sent: WeChat assumes MD5 without it) and `sign`, as XML.
pub fn signed_xml(
    mut fields: BTreeMap<String, String>,
    key: &str,
    sign_type: SignType,
) -> Result<String> {
    fields.insert("sign_type".into(), sign_type.to_string());
    let signature = sign::sign(&fields, key, sign_type);
    fields.insert("sign".into(), signature);
    xml::render(&fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn time_expire_is_beijing_time() {
        let t = Utc.with_ymd_and_hms(2026, 12, 1, 16, 30, 5).unwrap();
        assert_eq!(
            beijing_time(t),
            "20261202003005",
            "past midnight in Beijing"
        );
    }

    #[test]
    fn a_unified_order_is_signed_over_every_field_and_reads_back() {
        let order = UnifiedOrder {
            appid: "wxd930ea5d5a258f4f",
            mch_id: "10000100",
            nonce_str: "ibuaiVcKdpRxkhJA",
            body: "咖啡 <大杯> & 奶",
            out_trade_no: "01a23596329772698c72aa1ae1e35b87",
            total_fee: 2500,
            spbill_create_ip: "203.0.113.7",
            notify_url: "https://shop.example.com/notify/wechatpay/v2",
            openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
            time_expire: Some(Utc.with_ymd_and_hms(2026, 12, 2, 8, 0, 0).unwrap()),
        };
        let key = "192006250b4c09247ec02edce69f6a2d";
        for sign_type in [SignType::Md5, SignType::HmacSha256] {
            let body = signed_xml(order.fields(), key, sign_type).unwrap();
            let back = xml::parse(body.as_bytes()).unwrap();
            assert_eq!(back["body"], "咖啡 <大杯> & 奶", "escaped, not mangled");
            assert_eq!(back["trade_type"], "JSAPI");
            assert_eq!(back["total_fee"], "2500");
            assert_eq!(back["time_expire"], "20261202160000");
            assert_eq!(back["sign_type"], sign_type.to_string());
            assert!(sign::verify(&back, key, sign_type), "{body}");
            let mut altered = back.clone();
            altered.insert("total_fee".into(), "1".into());
            assert!(!sign::verify(&altered, key, sign_type));
        }
        let without_expiry = UnifiedOrder {
            time_expire: None,
            ..order
        };
        assert!(!without_expiry.fields().contains_key("time_expire"));
    }
}
