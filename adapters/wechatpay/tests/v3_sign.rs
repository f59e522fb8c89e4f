//! APIv3 signing against fixed fixtures (signatures pinned from OpenSSL)
//! and against freshly generated keys.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chrono::{TimeZone, Utc};
use paystream_wechatpay::v3::keys::{
    load_certificate_pem, load_private_key_pem, load_public_key_pem, MerchantPrivateKey,
};
use paystream_wechatpay::v3::sign::*;
use paystream_wechatpay::Error;
use rsa::RsaPrivateKey;

const PKCS8: &str = include_str!("fixtures/merchant_key_pkcs8.pem");
const PKCS1: &str = include_str!("fixtures/merchant_key_pkcs1.pem");
const SPKI: &str = include_str!("fixtures/merchant_pub_spki.pem");
const CERT_ZERO_NIBBLE: &str = include_str!("fixtures/merchant_cert_leading_zero_nibble.pem");
const CERT_HIGH_BIT: &str = include_str!("fixtures/merchant_cert_high_bit.pem");

// Pinned with `openssl dgst -sha256 -sign tests/fixtures/merchant_key_pkcs8.pem | base64 -w0`.
const SIG_GET_CERTIFICATES: &str = "lriGI+LxujbyqakYPCOCFpkhXNw+6HKEw7OdHoTGmmkPhHgF7ZF35F3ZFpWCeUvAcEXHn3SIaj39GhHiqmo+TTW0bmU1+L+ls/8VoO84lJ6NREV3BTeYBO+SHOH0I0bpdVyABV/iVIMEBDUYZqNt+Lc47ekz/zuJ2UHC9C3tuHlYAfsQAx3xPfWU0PjnXSC1nnM9tpbeqC/EyKAGDDLE4W0KuxRu0slQ9NX8NoV/SNonokT4cYNAtm5kcFbpI2pGU+wMOnJNPN1A3LjI2WEDN4umfxB+dsOpWlWv6HS8agrJB586+uylhToioBRkgZKoqthJ8bv/WOAW0MDYoF4caw==";
const SIG_POST_JSAPI: &str = "DXq85mFau0gYZETHdYThbpxA+k9ZsISpzkpn3fnE+qc5P1X9B9RfF9KaoFOin6SRf2J4HYg1jJds59VPgGjouXSK6oPSZK4bFAC2wLvjNaFg1Hbl7N6ZUij85agZJW0+fPT4brkepAIp0KPaKcwzsCv8UIdlnfwi7Pa6AFzAmsARIKmwzPB7O9Je2mB+NSNDSOk5ixfZqHiq9CUYEA8Q0LlF/u+r5PuIW+wrZLWJ2FLf7UqY9v6hPb7JWF1hb5tYYs/ZpRXyxbKz8oVYIvb62WQzs7JKJoiMTRvhr8e0SlHXj9BI/iHyvnmP/VV2hUA42UPqj3lwygcKDlIADM1tig==";
const SIG_PAY_SIGN: &str = "mVhdxnC6KYYIaQ4OHjtgiC3oRynzIOMXAJphNSLVuxtqTHpAH//foAW/88JZj+Od37+x1BtzdiyfcLK8za9DAU+YBWL7J7wOD00IiLAoYR+KoLjy+45hEq2pX3c3zOVMEtGqNlO65W4xgLAeaJJ72Y8VT59+e1fWy6JymdO+Y3fes2uJmdH8EVmzEgfSSHLfYjAPrHo9Bh5qRDmx0E7aDcN5JN1WZa6mx9X8+ESsKiBTjDvJVjhTRz79FRKp2HN7hx2GBnn6eiSVxE508IW/PwNxDdWfZaFCw1yijCkmzXWOul4+OCPKbdASd5KmlrIp5yrg5US5PVdPAo0+MPy9XA==";
const SIG_EMPTY_RESPONSE: &str = "Wns9mqbNmTFCbbf5w0P+oytbryZrpv4NV2rLLrxY9SBnnhjF4C55j/BRHK1LJTcxO+SU9TnUfXjw9Mu0nwZbKQNwXNkxSXbtB/HeX3VVD/QtBSGGFBkGNaK6WvJ5lg5F9iCeTnye+gjr40qgMdr+ehHV001uAZQ7sAHkuGT/iEBg5O9DOhnlx1Lu0tF0xXd0Vqc3CZ8PjTr9RiZ6in/PJBO7m/frCrXgWKghJICI1VkavhCd5I2y6s4qJ8NOAE8BPrKmKg4P8mX0KNMAKkkoKNWSF1LyWhF+lvGj/H4oAjQxMf1DZl2GX9yZlJGVfGHVekLed/FyVyS0KaYU5vmKkw==";

const JSAPI_BODY: &str = r#"{"appid":"wxd678efh567hg6787","mchid":"1900000001","description":"测试商品-月卡","out_trade_no":"PS20240101000001","notify_url":"https://pay.example.com/notify/wechat","amount":{"total":100,"currency":"CNY"},"payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}}"#;

fn key() -> MerchantPrivateKey {
    load_private_key_pem(PKCS8).unwrap()
}

#[test]
fn pinned_get_signature_matches_openssl() {
    let msg = request_message(
        "GET",
        "/v3/certificates",
        1554208460,
        "593BEC0C930BF1AFEB40B4A08C8FB242",
        "",
    );
    assert_eq!(
        sign_sha256_rsa(key().expose_rsa(), &msg).unwrap(),
        SIG_GET_CERTIFICATES
    );
}

#[test]
fn pinned_post_signature_matches_openssl() {
    let msg = request_message(
        "POST",
        "/v3/pay/transactions/jsapi",
        "1700000000",
        "B5Vd0Lr7tCRcqnH5p8WQ3ZyJXj2sNu6a",
        JSAPI_BODY,
    );
    assert_eq!(key().sign_sha256_rsa(&msg).unwrap(), SIG_POST_JSAPI);
    let public = load_public_key_pem(SPKI).unwrap();
    assert!(verify_sha256_rsa(&public, &msg, SIG_POST_JSAPI));
}

#[test]
fn pinned_pay_sign_v3_matches_openssl() {
    let sig = pay_sign_v3(
        "wxd678efh567hg6787",
        "1700000000",
        "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
        "prepay_id=wx201410272009395522657a690389285100",
        key().expose_rsa(),
    )
    .unwrap();
    assert_eq!(sig, SIG_PAY_SIGN);

    let rp = RequestPayment::sign(
        "wxd678efh567hg6787",
        "wx201410272009395522657a690389285100",
        "1700000000",
        "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
        key().expose_rsa(),
    )
    .unwrap();
    assert_eq!(rp.pay_sign, SIG_PAY_SIGN);
    assert_eq!(
        serde_json::to_string(&rp).unwrap(),
        format!(
            r#"{{"timeStamp":"1700000000","nonceStr":"5K8264ILTKCH16CQ2502SI8ZNMTM67VS","package":"prepay_id=wx201410272009395522657a690389285100","signType":"RSA","paySign":"{SIG_PAY_SIGN}"}}"#
        )
    );
}

#[test]
fn pinned_empty_body_response_verifies() {
    let public = load_public_key_pem(SPKI).unwrap();
    assert_eq!(
        response_message("1700000000", "WECHATNONCE0001", b""),
        b"1700000000\nWECHATNONCE0001\n\n"
    );
    assert!(verify_response(
        &public,
        "1700000000",
        "WECHATNONCE0001",
        b"",
        SIG_EMPTY_RESPONSE
    ));
    // The same signature must not verify over a body of "{}" or a changed nonce.
    assert!(!verify_response(
        &public,
        "1700000000",
        "WECHATNONCE0001",
        b"{}",
        SIG_EMPTY_RESPONSE
    ));
    assert!(!verify_response(
        &public,
        "1700000000",
        "WECHATNONCE0002",
        b"",
        SIG_EMPTY_RESPONSE
    ));
    assert!(!verify_response(
        &public,
        "1700000001",
        "WECHATNONCE0001",
        b"",
        SIG_EMPTY_RESPONSE
    ));
}

#[test]
fn pkcs1_and_pkcs8_load_the_same_key() {
    let a = load_private_key_pem(PKCS8).unwrap();
    let b = load_private_key_pem(PKCS1).unwrap();
    assert_eq!(a.expose_rsa(), b.expose_rsa());
    assert_eq!(a.bits(), 2048);
    // Windows line ends and surrounding whitespace are tolerated.
    let crlf = format!("\n  {}\n", PKCS1.replace('\n', "\r\n"));
    assert_eq!(
        load_private_key_pem(&crlf).unwrap().expose_rsa(),
        a.expose_rsa()
    );
    assert_eq!(load_public_key_pem(SPKI).unwrap(), a.public_key());
}

#[test]
fn private_key_debug_is_redacted() {
    let shown = format!("{:?}", key());
    assert_eq!(shown, "MerchantPrivateKey(RSA-2048, <redacted>)");
}

#[test]
fn certificate_serial_and_validity() {
    let c = load_certificate_pem(CERT_ZERO_NIBBLE).unwrap();
    assert_eq!(c.serial_no, "0A1B2C3D4E5F60718293A4B5C6D7E8F901234567");
    assert_eq!(
        c.not_before,
        Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()
    );
    assert_eq!(
        c.not_after,
        Utc.with_ymd_and_hms(2029, 1, 1, 0, 0, 0).unwrap()
    );
    assert_eq!(c.public_key, key().public_key());
    assert!(c.is_valid_at(Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap()));
    assert!(!c.is_valid_at(Utc.with_ymd_and_hms(2023, 12, 31, 23, 59, 59).unwrap()));
    assert!(!c.is_valid_at(Utc.with_ymd_and_hms(2029, 1, 1, 0, 0, 1).unwrap()));

    let h = load_certificate_pem(CERT_HIGH_BIT).unwrap();
    assert_eq!(h.serial_no, "D7CE59D1F522D701");

    // Signatures verify with the certificate's key.
    assert!(verify_sha256_rsa(
        &c.public_key,
        request_message(
            "GET",
            "/v3/certificates",
            1554208460,
            "593BEC0C930BF1AFEB40B4A08C8FB242",
            ""
        ),
        SIG_GET_CERTIFICATES
    ));
}

#[test]
fn wrong_pem_kinds_are_refused() {
    assert!(matches!(
        load_public_key_pem(CERT_HIGH_BIT),
        Err(Error::PublicKey(_))
    ));
    assert!(matches!(
        load_private_key_pem(SPKI),
        Err(Error::PrivateKey(_))
    ));
    assert!(matches!(
        load_certificate_pem(SPKI),
        Err(Error::Certificate(_))
    ));
    assert!(matches!(
        load_certificate_pem(PKCS8),
        Err(Error::Certificate(_))
    ));
}

#[test]
fn tampering_fails() {
    let public = key().public_key();
    let msg = request_message(
        "POST",
        "/v3/pay/transactions/jsapi",
        "1700000000",
        "B5Vd0Lr7tCRcqnH5p8WQ3ZyJXj2sNu6a",
        JSAPI_BODY,
    );
    assert!(verify_sha256_rsa(&public, &msg, SIG_POST_JSAPI));
    // One byte of the body changed (total 100 -> 101).
    let tampered = msg.replace("\"total\":100", "\"total\":101");
    assert!(!verify_sha256_rsa(&public, &tampered, SIG_POST_JSAPI));
    // Re-serialised JSON (whitespace) is a different message.
    let pretty = msg.replace("\",\"", "\", \"");
    assert!(!verify_sha256_rsa(&public, &pretty, SIG_POST_JSAPI));
    // Missing final newline.
    assert!(!verify_sha256_rsa(&public, msg.trim_end(), SIG_POST_JSAPI));
    // Signature bit flip, truncation, garbage.
    let mut raw = B64.decode(SIG_POST_JSAPI).unwrap();
    raw[100] ^= 1;
    assert!(!verify_sha256_rsa(&public, &msg, &B64.encode(&raw)));
    assert!(!verify_sha256_rsa(
        &public,
        &msg,
        &SIG_POST_JSAPI[..SIG_POST_JSAPI.len() - 4]
    ));
    assert!(!verify_sha256_rsa(&public, &msg, "not base64!"));
    assert!(!verify_sha256_rsa(&public, &msg, ""));
}

#[test]
fn signtest_probes_always_fail() {
    let public = key().public_key();
    let msg = response_message("1700000000", "N", b"{}");
    let good = sign_sha256_rsa(key().expose_rsa(), &msg).unwrap();
    assert!(verify_sha256_rsa(&public, &msg, &good));
    for probe in [
        "WECHATPAY/SIGNTEST/".to_owned(),
        format!("WECHATPAY/SIGNTEST/{good}"),
        "WECHATPAY/SIGNTEST/abcdefg==".to_owned(),
    ] {
        assert!(!verify_sha256_rsa(&public, &msg, &probe));
    }
}

#[test]
fn generated_key_sign_verify_round_trip() {
    let mut rng = rand::thread_rng();
    let sk = RsaPrivateKey::new(&mut rng, 2048).unwrap();
    let pk = sk.to_public_key();
    let msg = request_message(
        "GET",
        "/v3/pay/transactions/out-trade-no/PS1?mchid=1900000001",
        1700000000,
        "N",
        "",
    );
    let sig = sign_sha256_rsa(&sk, &msg).unwrap();
    assert_eq!(B64.decode(&sig).unwrap().len(), 256);
    assert!(verify_sha256_rsa(&pk, &msg, &sig));
    // Deterministic: PKCS#1 v1.5 with blinding gives the same bytes.
    assert_eq!(sign_sha256_rsa(&sk, &msg).unwrap(), sig);
    // Query string is part of the message.
    let no_query = request_message(
        "GET",
        "/v3/pay/transactions/out-trade-no/PS1",
        1700000000,
        "N",
        "",
    );
    assert!(!verify_sha256_rsa(&pk, &no_query, &sig));
    // Another key's public half does not verify.
    assert!(!verify_sha256_rsa(&key().public_key(), &msg, &sig));
}

/// What the sandbox simulator will do with a merchant request: parse the
/// Authorization header, rebuild the message from the request as received,
/// check the serial, the timestamp window and the signature.
#[test]
fn simulator_verifies_a_merchant_request() {
    let merchant = key();
    let cert = load_certificate_pem(CERT_ZERO_NIBBLE).unwrap();
    let (method, path, body) = ("POST", "/v3/pay/transactions/jsapi", JSAPI_BODY);
    let (ts, nonce) = (1_700_000_000i64, paystream_wechatpay::nonce_str());

    // Merchant side.
    let sig = merchant
        .sign_sha256_rsa(request_message(method, path, ts, &nonce, body))
        .unwrap();
    let header = authorization("1900000001", &cert.serial_no, &nonce, ts, &sig);

    // Simulator side.
    let auth = parse_authorization(&header).unwrap();
    assert_eq!(auth.serial_no, cert.serial_no);
    assert_eq!(check_timestamp(&auth.timestamp, ts + 10).unwrap(), ts);
    assert!(check_timestamp(&auth.timestamp, ts + 300).is_err());
    let received = request_message_bytes(
        method,
        path,
        &auth.timestamp,
        &auth.nonce_str,
        body.as_bytes(),
    );
    assert!(verify_sha256_rsa(
        &cert.public_key,
        &received,
        &auth.signature
    ));
    // A body altered in transit fails.
    let altered = request_message_bytes(
        method,
        path,
        &auth.timestamp,
        &auth.nonce_str,
        body.replace("100", "1").as_bytes(),
    );
    assert!(!verify_sha256_rsa(
        &cert.public_key,
        &altered,
        &auth.signature
    ));
}

/// Signatures are checked through ring while keys are `rsa` keys: both must give the same answer
/// as the rsa crate's own RSASSA-PKCS1-v1_5 check, for good signatures and for every kind of
/// damage to the message or the signature.
#[test]
fn checking_agrees_with_the_rsa_crate() {
    use rand::Rng as _;
    use rsa::Pkcs1v15Sign;
    use sha2::{Digest as _, Sha256};

    let public = key().public_key();
    let rsa_says = |message: &[u8], signature: &str| {
        let Ok(raw) = B64.decode(signature) else {
            return false;
        };
        public
            .verify(
                Pkcs1v15Sign::new::<Sha256>(),
                &Sha256::digest(message),
                &raw,
            )
            .is_ok()
    };
    let mut rng = rand::thread_rng();
    let (mut accepted, mut refused) = (0, 0);
    for round in 0..40 {
        let body: Vec<u8> = (0..rng.gen_range(0..300)).map(|_| rng.gen()).collect();
        let mut message = response_message(1700000000 + round, "nonce", &body);
        let mut signature = sign_sha256_rsa(key().expose_rsa(), &message).unwrap();
        match round % 4 {
            0 => {}
            1 => {
                let at = rng.gen_range(0..message.len());
                message[at] ^= 1 << rng.gen_range(0..8);
            }
            2 => {
                let mut raw = B64.decode(&signature).unwrap();
                let at = rng.gen_range(0..raw.len());
                raw[at] ^= 1 << rng.gen_range(0..8);
                signature = B64.encode(raw);
            }
            _ => {
                let mut raw = B64.decode(&signature).unwrap();
                raw.truncate(rng.gen_range(0..raw.len()));
                signature = B64.encode(raw);
            }
        }
        let ours = verify_sha256_rsa(&public, &message, &signature);
        assert_eq!(ours, rsa_says(&message, &signature), "round {round}");
        if ours {
            accepted += 1
        } else {
            refused += 1
        }
    }
    assert_eq!((accepted, refused), (10, 30));
}

/// The scheme is `WECHATPAY2-SHA256-RSA2048`: a key shorter than 2048 bits proves nothing, even
/// with a mathematically valid signature.
#[test]
fn keys_shorter_than_2048_bits_are_refused() {
    let short = RsaPrivateKey::new(&mut rand::thread_rng(), 1024).unwrap();
    let message = response_message(1700000000, "nonce", b"{}");
    let signature = sign_sha256_rsa(&short, &message).unwrap();
    assert!(!verify_sha256_rsa(
        &short.to_public_key(),
        &message,
        &signature
    ));
}
