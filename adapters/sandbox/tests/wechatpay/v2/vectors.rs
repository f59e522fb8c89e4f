//! WeChat's official APIv2 vectors (wechat-protocols.md), checked against the primitives the
//! sandbox signs and verifies with.

use paystream_wechatpay::v2::sign::{canonical_string, pay_sign, sign, verify, SignType};

use super::fields;

const KEY: &str = "192006250b4c09247ec02edce69f6a2d";

fn official() -> super::Fields {
    fields(&[
        ("appid", "wxd930ea5d5a258f4f"),
        ("mch_id", "10000100"),
        ("device_info", "1000"),
        ("body", "test"),
        ("nonce_str", "ibuaiVcKdpRxkhJA"),
    ])
}

#[test]
fn official_sign_vectors() {
    let f = official();
    assert_eq!(
        canonical_string(&f),
        "appid=wxd930ea5d5a258f4f&body=test&device_info=1000&mch_id=10000100&nonce_str=ibuaiVcKdpRxkhJA"
    );
    assert_eq!(
        sign(&f, KEY, SignType::Md5),
        "9A0A8659F005D6984697E2CA0A9CF3B7"
    );
    assert_eq!(
        sign(&f, KEY, SignType::HmacSha256),
        "6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6"
    );
    let mut signed = f.clone();
    signed.insert("sign".into(), "9A0A8659F005D6984697E2CA0A9CF3B7".into());
    assert!(verify(&signed, KEY, SignType::Md5));
    assert!(!verify(&signed, KEY, SignType::HmacSha256));
}

#[test]
fn official_pay_sign_vector() {
    assert_eq!(
        pay_sign(
            "wxd678efh567hg6787",
            "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
            "prepay_id=wx2017033010242291fcfe0db70013231072",
            SignType::Md5,
            "1490840662",
            "qazwsxedcrfvtgbyhnujmikolp111111",
        ),
        "22D9B4E54AB1950F51E0649E8810ACD6"
    );
}
