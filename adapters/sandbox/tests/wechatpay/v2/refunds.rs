//! `/secapi/pay/refund` over HTTPS with the merchant API certificate, `/pay/refundquery`, the
//! encrypted refund notification, and the refusals.

use std::time::Duration;

use paystream_sandbox::{MerchantCredentials, PaySandboxConfig, Sandbox, SandboxConfig};
use paystream_wechatpay::v2::refund_notify::decrypt_req_info;
use paystream_wechatpay::v2::sign::SignType;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{call_fields, paid_order, Fields, V2Client, XmlReceiver, NOTIFY};
use crate::support::{eventually, start, Harness, APPID, MCHID};

const REFUND: &str = "/secapi/pay/refund";

/// The sandbox's HTTPS port, until the sender is dropped or used.
struct Secapi {
    base: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Secapi {
    async fn start(sandbox: &Sandbox) -> Secapi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = oneshot::channel::<()>();
        let sandbox = sandbox.clone();
        let task = tokio::spawn(async move {
            sandbox
                .serve_secapi(listener, async {
                    let _ = stopped.await;
                })
                .await
        });
        Secapi {
            base: format!("https://127.0.0.1:{port}"),
            stop: Some(stop),
            task,
        }
    }

    async fn shut_down(mut self) {
        drop(self.stop.take());
        let done = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
        done.expect("serve_secapi returns after shutdown")
            .unwrap()
            .unwrap();
    }
}

/// A merchant's HTTPS client: trusts the sandbox's CA, presents `identity` (cert, key) if any.
fn https_client(creds: &MerchantCredentials, identity: Option<(&str, &str)>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(creds.secapi_ca_pem.as_bytes()).unwrap(),
        );
    if let Some((cert, key)) = identity {
        let pem = format!("{cert}\n{key}");
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

fn merchant_tls(h: &Harness, secapi: &Secapi) -> V2Client {
    let creds = h.sandbox.merchant();
    V2Client {
        base: secapi.base.clone(),
        key: creds.apiv2_key.clone(),
        http: https_client(
            &creds,
            Some((&creds.apiv2_client_cert_pem, &creds.apiv2_client_key_pem)),
        ),
    }
}

fn refund_fields(
    out_trade_no: &str,
    out_refund_no: &str,
    refund_fee: i64,
    notify: Option<&str>,
) -> Fields {
    let refund_fee = refund_fee.to_string();
    let mut f = call_fields(&[
        ("out_trade_no", out_trade_no),
        ("out_refund_no", out_refund_no),
        ("total_fee", "100"),
        ("refund_fee", &refund_fee),
        ("refund_desc", "商品已售完"),
    ]);
    if let Some(url) = notify {
        f.insert("notify_url".into(), url.into());
    }
    f
}

async fn refundquery(v2: &V2Client, by: &str, value: &str) -> Fields {
    v2.success(
        "/pay/refundquery",
        call_fields(&[(by, value)]),
        SignType::Md5,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refund_over_mutual_tls_settles_and_notifies_encrypted() {
    let h = start().await;
    let secapi = Secapi::start(&h.sandbox).await;
    let plain = V2Client::over_http(&h);
    let tls = merchant_tls(&h, &secapi);
    let receiver = XmlReceiver::start(&[]).await;
    let transaction_id = paid_order(&h, &plain, "V2REF00001", &receiver.url).await;
    receiver.wait_for(1).await; // the pay notification

    let r = tls
        .success(
            REFUND,
            refund_fields("V2REF00001", "V2R1", 30, Some(&receiver.url)),
            SignType::HmacSha256,
        )
        .await;
    assert_eq!(r["out_refund_no"], "V2R1");
    assert_eq!(r["out_trade_no"], "V2REF00001");
    assert_eq!(r["transaction_id"], transaction_id);
    assert_eq!(
        (r["refund_fee"].as_str(), r["total_fee"].as_str()),
        ("30", "100")
    );
    assert_eq!(r["cash_fee"], "100");
    let refund_id = r["refund_id"].clone();
    assert!(refund_id.len() >= 28 && refund_id.bytes().all(|b| b.is_ascii_digit()));

    // Idempotent: the same request again is the same refund, nothing more refunded.
    let again = tls
        .success(
            REFUND,
            refund_fields("V2REF00001", "V2R1", 30, Some(&receiver.url)),
            SignType::Md5,
        )
        .await;
    assert_eq!(again["refund_id"], refund_id);
    let (code, _) = tls
        .refused(
            REFUND,
            refund_fields("V2REF00001", "V2R1", 31, None),
            SignType::Md5,
        )
        .await;
    assert_eq!(code, "REFUND_FEE_MISMATCH");

    assert!(
        eventually(async || {
            refundquery(&plain, "out_refund_no", "V2R1").await["refund_status_0"] == "SUCCESS"
        })
        .await
    );
    let q = refundquery(&plain, "out_trade_no", "V2REF00001").await;
    assert_eq!(q["refund_count"], "1");
    assert_eq!(q["refund_id_0"], refund_id);
    assert_eq!(q["refund_fee_0"], "30");
    assert_eq!(q["total_fee"], "100");
    assert_eq!(q["transaction_id"], transaction_id);
    let success_time = &q["refund_success_time_0"];
    assert!(
        chrono::NaiveDateTime::parse_from_str(success_time, "%Y-%m-%d %H:%M:%S").is_ok(),
        "{success_time}"
    );
    assert_eq!(plain.query("V2REF00001").await["trade_state"], "REFUND");

    // The refund notification: unsigned, req_info decrypts with MD5 of the APIv2 key.
    let got = receiver.wait_for(2).await;
    let (content_type, n, _) = &got[1];
    assert!(content_type.starts_with("text/xml"));
    assert!(!n.contains_key("sign"), "{n:?}");
    assert_eq!(n["return_code"], "SUCCESS");
    assert_eq!((n["appid"].as_str(), n["mch_id"].as_str()), (APPID, MCHID));
    assert!(!n["nonce_str"].is_empty());
    let info = decrypt_req_info(&n["req_info"], &tls.key).unwrap();
    assert_eq!(info["out_refund_no"], "V2R1");
    assert_eq!(info["refund_id"], refund_id);
    assert_eq!(info["out_trade_no"], "V2REF00001");
    assert_eq!(info["transaction_id"], transaction_id);
    assert_eq!(info["refund_status"], "SUCCESS");
    assert_eq!(
        (info["total_fee"].as_str(), info["refund_fee"].as_str()),
        ("100", "30")
    );
    assert_eq!(info["settlement_refund_fee"], "30");
    assert_eq!(info["refund_request_source"], "API");
    assert_eq!(info["success_time"], *success_time);
    assert!(decrypt_req_info(&n["req_info"], &"0".repeat(32)).is_err());

    // What is left can be refunded, not more.
    let (code, des) = tls
        .refused(
            REFUND,
            refund_fields("V2REF00001", "V2R2", 71, None),
            SignType::Md5,
        )
        .await;
    assert_eq!(code, "ERROR");
    assert!(des.contains("超过"), "{des}");
    tls.success(
        REFUND,
        refund_fields("V2REF00001", "V2R3", 70, None),
        SignType::Md5,
    )
    .await;

    // The HTTPS port serves the other v2 calls too.
    assert_eq!(
        tls.query("V2REF00001").await["transaction_id"],
        transaction_id
    );
    secapi.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refund_without_the_merchant_certificate_refunds_nothing() {
    let h = start().await;
    let secapi = Secapi::start(&h.sandbox).await;
    let plain = V2Client::over_http(&h);
    paid_order(&h, &plain, "V2REF00002", NOTIFY).await;
    let creds = h.sandbox.merchant();

    let no_cert = V2Client {
        base: secapi.base.clone(),
        key: creds.apiv2_key.clone(),
        http: https_client(&creds, None),
    };
    let raw = no_cert
        .post(
            REFUND,
            refund_fields("V2REF00002", "V2R9", 10, None),
            SignType::Md5,
        )
        .await;
    assert_eq!(raw.status, 400, "{}", raw.text());
    assert!(raw.content_type.starts_with("text/html"));
    assert!(raw.text().contains("No required SSL certificate was sent"));
    // The plain-HTTP route cannot carry a certificate.
    let raw = plain
        .post(
            REFUND,
            refund_fields("V2REF00002", "V2R9", 10, None),
            SignType::Md5,
        )
        .await;
    assert_eq!(raw.status, 400);
    assert!(raw.text().contains("No required SSL certificate was sent"));

    // A certificate WeChat did not issue (another sandbox's "WeChat CA").
    let other = Sandbox::new(SandboxConfig {
        appid: APPID.to_string(),
        secret: "s".to_string(),
        pay: PaySandboxConfig {
            mchid: MCHID.to_string(),
            notify_time_scale: 0.001,
        },
    })
    .merchant();
    let foreign = V2Client {
        base: secapi.base.clone(),
        key: creds.apiv2_key.clone(),
        http: https_client(
            &creds,
            Some((&other.apiv2_client_cert_pem, &other.apiv2_client_key_pem)),
        ),
    };
    let raw = foreign
        .post(
            REFUND,
            refund_fields("V2REF00002", "V2R9", 10, None),
            SignType::Md5,
        )
        .await;
    assert_eq!(raw.status, 400);
    assert!(
        raw.text().contains("The SSL certificate error"),
        "{}",
        raw.text()
    );

    let (code, _) = plain
        .refused(
            "/pay/refundquery",
            call_fields(&[("out_trade_no", "V2REF00002")]),
            SignType::Md5,
        )
        .await;
    assert_eq!(code, "REFUNDNOTEXIST");
    assert_eq!(plain.query("V2REF00002").await["trade_state"], "SUCCESS");
    secapi.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refund_refusals_and_settling_through_control() {
    let h = start().await;
    let secapi = Secapi::start(&h.sandbox).await;
    let plain = V2Client::over_http(&h);
    let tls = merchant_tls(&h, &secapi);
    let receiver = XmlReceiver::start(&[]).await;

    plain.order("V2REF00003", NOTIFY, SignType::Md5).await;
    let (code, _) = tls
        .refused(
            REFUND,
            refund_fields("V2REF00003", "V2R10", 10, None),
            SignType::Md5,
        )
        .await;
    assert_eq!(code, "ORDERNOTEXIST", "unpaid");
    let (code, _) = tls
        .refused(
            REFUND,
            refund_fields("V2NOSUCH03", "V2R10", 10, None),
            SignType::Md5,
        )
        .await;
    assert_eq!(code, "ORDERNOTEXIST");

    paid_order(&h, &plain, "V2REF00004", &receiver.url).await;
    let mut wrong_total = refund_fields("V2REF00004", "V2R11", 10, None);
    wrong_total.insert("total_fee".into(), "99".into());
    let (code, des) = tls.refused(REFUND, wrong_total, SignType::Md5).await;
    assert_eq!(code, "PARAM_ERROR");
    assert!(des.contains("total_fee"), "{des}");

    h.control_ok("faults", json!({ "balance_fen": 5 })).await;
    let (code, _) = tls
        .refused(
            REFUND,
            refund_fields("V2REF00004", "V2R12", 10, None),
            SignType::Md5,
        )
        .await;
    assert_eq!(code, "NOTENOUGH");
    h.control_ok(
        "faults",
        json!({ "balance_fen": null, "hold_refunds": true }),
    )
    .await;

    tls.success(
        REFUND,
        refund_fields("V2REF00004", "V2R13", 10, Some(&receiver.url)),
        SignType::Md5,
    )
    .await;
    tls.success(
        REFUND,
        refund_fields("V2REF00004", "V2R14", 10, Some(&receiver.url)),
        SignType::Md5,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        refundquery(&plain, "out_refund_no", "V2R13").await["refund_status_0"],
        "PROCESSING",
        "held"
    );
    let settled = h
        .control_ok(
            "refunds/V2R13/settle",
            json!({ "status": "CLOSED", "channel": "wechatpay_v2" }),
        )
        .await;
    assert_eq!(settled["refund_status_0"], "REFUNDCLOSE");
    h.control_ok(
        "refunds/V2R14/settle",
        json!({ "status": "ABNORMAL", "channel": "wechatpay_v2" }),
    )
    .await;
    let q = refundquery(&plain, "out_trade_no", "V2REF00004").await;
    assert_eq!(q["refund_count"], "2");
    let statuses = [q["refund_status_0"].as_str(), q["refund_status_1"].as_str()];
    assert!(
        statuses.contains(&"REFUNDCLOSE") && statuses.contains(&"CHANGE"),
        "{q:?}"
    );
    let (status, _) = h
        .control(
            "POST",
            "refunds/V2R13/settle",
            json!({ "status": "SUCCESS", "channel": "wechatpay_v2" }),
        )
        .await;
    assert_eq!(status, 409, "REFUNDCLOSE is final");
    let (status, _) = h
        .control(
            "POST",
            "refunds/V2R13/settle",
            json!({ "status": "SUCCESS" }),
        )
        .await;
    assert_eq!(status, 404, "not on the v3 books");

    // Both were notified (after the pay notification), with their v2 statuses.
    let got = receiver.wait_for(3).await;
    let mut notified: Vec<String> = got[1..]
        .iter()
        .map(|(_, n, _)| {
            decrypt_req_info(&n["req_info"], &tls.key).unwrap()["refund_status"].clone()
        })
        .collect();
    notified.sort();
    assert_eq!(notified, ["CHANGE", "REFUNDCLOSE"]);
    // A closed refund gives its amount back: 100 − 10 (CHANGE) can still be refunded.
    h.control_ok("faults", json!({ "hold_refunds": false }))
        .await;
    tls.success(
        REFUND,
        refund_fields("V2REF00004", "V2R15", 90, None),
        SignType::Md5,
    )
    .await;
    secapi.shut_down().await;
}
