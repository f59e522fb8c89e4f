//! Request signature checks, answer signatures, certificates, public-key mode, rotation.

use paystream_wechatpay::v3::keys::MerchantPrivateKey;
use serde_json::json;

use crate::support::{jsapi_body, start, Spoil, MCHID, PREFIX};

fn query_path(out_trade_no: &str) -> String {
    format!("/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid={MCHID}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_decrypt_to_the_signing_certificate() {
    let h = start().await;
    let certs = h.merchant.refresh_certificates().await.unwrap();
    assert_eq!(certs.len(), 1);
    let (serial, pem) = &certs[0];
    assert_eq!(serial.len(), 40, "{serial}");
    assert!(serial
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase()));
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));

    let answer = h.merchant.get("/v3/certificates").await;
    assert_eq!(answer.header("wechatpay-serial"), Some(serial.as_str()));
    assert!(answer.header("request-id").is_some_and(|id| !id.is_empty()));
    let item = &answer.json()["data"][0];
    for field in ["effective_time", "expire_time"] {
        let t = item[field].as_str().unwrap();
        assert!(t.ends_with("+08:00"), "{field}: {t}");
        chrono::DateTime::parse_from_rfc3339(t).unwrap();
    }
    assert_eq!(item["encrypt_certificate"]["algorithm"], "AEAD_AES_256_GCM");
    assert_eq!(h.merchant.verify_answer(&answer).await.unwrap(), *serial);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_verify_including_errors_and_204() {
    let h = start().await;
    let receiver = "https://shop.example.com/wechatpay/notify";
    h.order("SIG0000001", receiver).await;

    let found = h.merchant.get(&query_path("SIG0000001")).await;
    assert_eq!(found.status, 200);
    h.merchant.verify_answer(&found).await.unwrap();

    let missing = h.merchant.get(&query_path("NOSUCHORDER")).await;
    assert_eq!(
        (missing.status, missing.code()),
        (404, "ORDER_NOT_EXIST".into())
    );
    h.merchant.verify_answer(&missing).await.unwrap();

    let closed = h
        .merchant
        .post(
            "/v3/pay/transactions/out-trade-no/SIG0000001/close",
            &json!({ "mchid": MCHID }),
        )
        .await;
    assert_eq!(closed.status, 204);
    assert!(closed.body.is_empty());
    // Signed over `TS\nNONCE\n\n`.
    h.merchant.verify_answer(&closed).await.unwrap();

    let unknown = h.merchant.get("/v3/no/such/api").await;
    assert_eq!(unknown.status, 404);
    h.merchant.verify_answer(&unknown).await.unwrap();

    // One flipped byte in the body and the signature no longer holds.
    let mut tampered = found.body.clone();
    tampered[2] ^= 1;
    assert!(h.merchant.verify(&found.headers, &tampered).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_are_sign_error() {
    let h = start().await;
    let body = jsapi_body("SIG0000002", 100, "https://shop.example.com/n").to_string();
    let jsapi = "/v3/pay/transactions/jsapi";
    let other_key = MerchantPrivateKey::from_rsa(
        rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap(),
    );
    let now = chrono::Utc::now().timestamp();

    let cases = [
        (
            "signed with another key",
            Spoil {
                key: Some(other_key),
                ..Spoil::default()
            },
        ),
        (
            "tampered body",
            Spoil {
                signed_body: Some(body.replace("100", "1")),
                ..Spoil::default()
            },
        ),
        (
            "stale timestamp",
            Spoil {
                timestamp: Some(now - 301),
                ..Spoil::default()
            },
        ),
        (
            "future timestamp",
            Spoil {
                timestamp: Some(now + 301),
                ..Spoil::default()
            },
        ),
        (
            "wrong mchid",
            Spoil {
                mchid: Some("1900000999".into()),
                ..Spoil::default()
            },
        ),
        (
            "wrong serial_no",
            Spoil {
                serial_no: Some("5157F09EFDC096DE15EBE81A47057A7232F1B8E1".into()),
                ..Spoil::default()
            },
        ),
        (
            "no Authorization",
            Spoil {
                no_authorization: true,
                ..Spoil::default()
            },
        ),
    ];
    for (what, spoil) in cases {
        let answer = h.merchant.send("POST", jsapi, &body, spoil).await;
        assert_eq!(
            (answer.status, answer.code()),
            (401, "SIGN_ERROR".into()),
            "{what}: {}",
            answer.text()
        );
        assert!(answer.json()["message"].is_string());
        // WeChat never signs a SIGN_ERROR: it does not know whom it answers.
        assert!(
            answer.header("wechatpay-signature").is_none()
                && answer.header("wechatpay-serial").is_none(),
            "{what}: a 401 is unsigned"
        );
    }
    // Nothing was ordered by the refused requests.
    let (status, _) = h
        .control("GET", "transactions/SIG0000002", json!(null))
        .await;
    assert_eq!(status, 404);

    // A timestamp 200 s old is still inside the window.
    let ok = h
        .merchant
        .send(
            "POST",
            jsapi,
            &body,
            Spoil {
                timestamp: Some(now - 200),
                ..Spoil::default()
            },
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text());

    // The query string is part of what is signed.
    let spoiled_query = Spoil {
        signed_path: Some(format!(
            "{PREFIX}/v3/pay/transactions/out-trade-no/SIG0000002?mchid=1"
        )),
        ..Spoil::default()
    };
    let answer = h
        .merchant
        .send("GET", &query_path("SIG0000002"), "", spoiled_query)
        .await;
    assert_eq!(answer.code(), "SIGN_ERROR");
    // And so is the prefix the sandbox is mounted under: the client signs the path it sends.
    let without_prefix = Spoil {
        signed_path: Some(query_path("SIG0000002")),
        ..Spoil::default()
    };
    let answer = h
        .merchant
        .send("GET", &query_path("SIG0000002"), "", without_prefix)
        .await;
    assert_eq!(answer.code(), "SIGN_ERROR");
    let answer = h.merchant.get(&query_path("SIG0000002")).await;
    assert_eq!(answer.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_key_mode() {
    let h = start().await;
    let pub_id = h.merchant.creds.public_key_id.clone();
    assert!(pub_id.starts_with("PUB_KEY_ID_") && pub_id.len() == "PUB_KEY_ID_".len() + 32);

    // Migration period (the default): the merchant names the key it has.
    *h.merchant.wechatpay_serial.lock().unwrap() = Some(pub_id.clone());
    let answer = h.merchant.get(&query_path("NOSUCHORDER")).await;
    assert_eq!(answer.header("wechatpay-serial"), Some(pub_id.as_str()));
    h.merchant.verify_answer(&answer).await.unwrap();
    *h.merchant.wechatpay_serial.lock().unwrap() = None;
    let answer = h.merchant.get(&query_path("NOSUCHORDER")).await;
    assert!(!answer
        .header("wechatpay-serial")
        .unwrap()
        .starts_with("PUB_KEY_ID_"));

    // Certificates only: the public key is never used.
    h.control_ok("mode", json!({ "mode": "certificates" }))
        .await;
    *h.merchant.wechatpay_serial.lock().unwrap() = Some(pub_id.clone());
    let answer = h.merchant.get(&query_path("NOSUCHORDER")).await;
    assert_ne!(answer.header("wechatpay-serial"), Some(pub_id.as_str()));
    h.merchant.verify_answer(&answer).await.unwrap();

    // Public key only: no certificates at all, everything signed with the public key.
    assert_eq!(
        h.control_ok("mode", json!({ "mode": "public_key" })).await["mode"],
        "public_key"
    );
    *h.merchant.wechatpay_serial.lock().unwrap() = None;
    let certs = h.merchant.get("/v3/certificates").await;
    assert_eq!(
        (certs.status, certs.code()),
        (404, "RESOURCE_NOT_EXISTS".into())
    );
    assert_eq!(certs.header("wechatpay-serial"), Some(pub_id.as_str()));
    h.merchant.verify_answer(&certs).await.unwrap();
    let answer = h.merchant.get(&query_path("NOSUCHORDER")).await;
    assert_eq!(answer.header("wechatpay-serial"), Some(pub_id.as_str()));
    // Verified without a certificate (a refetch would have met the 404 above and failed).
    h.merchant.verify_answer(&answer).await.unwrap();

    let (status, _) = h
        .control("POST", "mode", json!({ "mode": "sometimes" }))
        .await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_serves_both_and_the_new_one_signs() {
    let h = start().await;
    let old = h.merchant.refresh_certificates().await.unwrap();
    let old_serial = old[0].0.clone();

    let rotated = h.control_ok("rotate-certificate", json!({})).await;
    let new_serial = rotated["serial_no"].as_str().unwrap().to_string();
    assert_ne!(new_serial, old_serial);

    // The merchant still knows only the old certificate: the unknown serial makes it refetch.
    let answer = h.merchant.get(&query_path("NOSUCHORDER")).await;
    assert_eq!(answer.header("wechatpay-serial"), Some(new_serial.as_str()));
    assert_eq!(h.merchant.known_certificates(), 1);
    assert_eq!(h.merchant.verify_answer(&answer).await.unwrap(), new_serial);
    assert_eq!(h.merchant.known_certificates(), 2);

    let served: Vec<String> = h
        .merchant
        .refresh_certificates()
        .await
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert!(
        served.contains(&old_serial) && served.contains(&new_serial),
        "{served:?}"
    );

    // Asking for the old serial still gets the newest certificate's signature.
    *h.merchant.wechatpay_serial.lock().unwrap() = Some(old_serial);
    let answer = h.merchant.get(&query_path("NOSUCHORDER")).await;
    assert_eq!(answer.header("wechatpay-serial"), Some(new_serial.as_str()));
}
