//! `pay` with `"wait": true`: the control call returns only once the merchant answered the first
//! delivery attempt, and says what it answered; without it the call returns at once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::Router;
use paystream_wechatpay::v2::sign::SignType;
use paystream_wechatpay::v2::xml;
use serde_json::{json, Value};

use crate::support::{serve, start};
use crate::v2::V2Client;

/// How long the slow merchant takes to answer.
const SLOW: Duration = Duration::from_millis(400);

/// A merchant endpoint that takes [`SLOW`] to answer `status` with `body`, and records when
/// each answer was given.
#[derive(Clone)]
struct SlowMerchant {
    url: String,
    answered: Arc<Mutex<Vec<Instant>>>,
}

impl SlowMerchant {
    async fn start(status: u16, body: &'static str) -> SlowMerchant {
        let answered: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let log = answered.clone();
        let app = Router::new().route(
            "/notify",
            axum::routing::post(move |_body: Bytes| async move {
                tokio::time::sleep(SLOW).await;
                log.lock().unwrap().push(Instant::now());
                (StatusCode::from_u16(status).unwrap(), body)
            }),
        );
        SlowMerchant {
            url: format!("{}/notify", serve(app).await),
            answered,
        }
    }

    fn answers(&self) -> usize {
        self.answered.lock().unwrap().len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_returns_after_the_merchant_answered_with_its_answer() {
    let h = start().await;
    let merchant = SlowMerchant::start(200, "").await;
    h.order("WAIT000001", &merchant.url).await;

    let asked = Instant::now();
    let paid = h
        .control_ok("pay", json!({ "out_trade_no": "WAIT000001", "wait": true }))
        .await;
    let took = asked.elapsed();

    assert!(
        took >= SLOW,
        "returned after {took:?}, before the merchant answered"
    );
    assert_eq!(
        merchant.answers(),
        1,
        "the merchant answered before the call returned"
    );
    assert!(paid["transaction_id"].is_string(), "{paid}");
    assert_eq!(
        paid["notified"],
        json!({ "status": 200, "acknowledged": true }),
        "{paid}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_wait_the_call_returns_at_once() {
    let h = start().await;
    let merchant = SlowMerchant::start(200, "").await;
    h.order("WAIT000002", &merchant.url).await;

    let asked = Instant::now();
    let paid = h
        .control_ok("pay", json!({ "out_trade_no": "WAIT000002" }))
        .await;
    assert!(asked.elapsed() < SLOW, "{:?}", asked.elapsed());
    assert_eq!(merchant.answers(), 0);
    assert!(paid.get("notified").is_none(), "{paid}");
    // The notification still goes out and is answered.
    for _ in 0..200 {
        if merchant.answers() == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the notification never arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_reports_a_refusal_and_an_unreachable_merchant() {
    let h = start().await;
    // A 500 is an answer: not acknowledged (WeChat retries), and `wait` says so.
    let refusing = SlowMerchant::start(500, r#"{"code":"FAIL","message":"失败"}"#).await;
    h.order("WAIT000003", &refusing.url).await;
    let paid = h
        .control_ok("pay", json!({ "out_trade_no": "WAIT000003", "wait": true }))
        .await;
    assert_eq!(
        paid["notified"],
        json!({ "status": 500, "acknowledged": false }),
        "{paid}"
    );

    // Nobody listens: no status, the transport error instead.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/notify", closed.local_addr().unwrap());
    drop(closed);
    h.order("WAIT000004", &url).await;
    let paid = h
        .control_ok("pay", json!({ "out_trade_no": "WAIT000004", "wait": true }))
        .await;
    assert_eq!(paid["notified"]["status"], Value::Null, "{paid}");
    assert_eq!(paid["notified"]["acknowledged"], false, "{paid}");
    assert!(paid["notified"]["error"].is_string(), "{paid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_includes_the_delay_and_refuses_a_lost_notification() {
    let h = start().await;
    let merchant = SlowMerchant::start(204, "").await;
    h.order("WAIT000005", &merchant.url).await;
    let asked = Instant::now();
    let paid = h
        .control_ok(
            "pay",
            json!({ "out_trade_no": "WAIT000005", "wait": true, "delay_ms": 300 }),
        )
        .await;
    assert!(asked.elapsed() >= SLOW + Duration::from_millis(300));
    assert_eq!(paid["notified"]["status"], 204, "{paid}");
    assert_eq!(paid["notified"]["acknowledged"], true, "{paid}");

    h.order("WAIT000006", &merchant.url).await;
    let (status, answer) = h
        .control(
            "POST",
            "pay",
            json!({ "out_trade_no": "WAIT000006", "wait": true, "notify": false }),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    // Refused before anything happened: the order can still be paid.
    let (status, answer) = h
        .control("GET", "transactions/WAIT000006", Value::Null)
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer["transaction"]["trade_state"], "NOTPAY", "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_works_for_apiv2_and_tells_a_bare_success_from_the_xml_ack() {
    let h = start().await;
    let v2 = V2Client::over_http(&h);

    let merchant = SlowMerchant::start(200, xml::NOTIFY_ACK_SUCCESS).await;
    v2.order("WAITV20001", &merchant.url, SignType::HmacSha256)
        .await;
    let asked = Instant::now();
    let paid = h
        .control_ok(
            "pay",
            json!({ "out_trade_no": "WAITV20001", "channel": "wechatpay_v2", "wait": true }),
        )
        .await;
    assert!(asked.elapsed() >= SLOW);
    assert_eq!(merchant.answers(), 1);
    assert_eq!(
        paid["notified"],
        json!({ "status": 200, "acknowledged": true }),
        "{paid}"
    );

    // A 200 whose body is not the XML acknowledgement is no acknowledgement (WeChat retries).
    let sloppy = SlowMerchant::start(200, "success").await;
    v2.order("WAITV20002", &sloppy.url, SignType::HmacSha256)
        .await;
    let paid = h
        .control_ok(
            "pay",
            json!({ "out_trade_no": "WAITV20002", "channel": "wechatpay_v2", "wait": true }),
        )
        .await;
    assert_eq!(paid["notified"]["status"], 200, "{paid}");
    assert_eq!(paid["notified"]["acknowledged"], false, "{paid}");
    assert!(paid["notified"]["error"].is_string(), "{paid}");
}
