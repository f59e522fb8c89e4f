//! The back-office beyond plain order search: the review queue and staff resolutions, the daily
//! report, the CSV export — through the real engine over HTTP, on both backends.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use common::{assert_error, count, spawn_app, spawn_app_with, TestApp};
use paystream_engine::db::Backend;
use paystream_engine::money::Fen;
use paystream_engine::order::{OrderCommand, OrderLine, PayChannel, ReviewResolution};
use paystream_engine::orders::{Metadata, OrderService, PlaceOrder};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

const PRICE: i64 = 1250;
const TOTAL: i64 = 2 * PRICE;

/// A logged-in customer with a fresh order of 2 × 12.50 (the product is created once).
async fn customer_with_order(app: &TestApp, user: &str) -> (String, Value) {
    let admin = app.admin_token().await;
    let (_, products) = app.get("/admin/products", Some(&admin)).await;
    if products["items"].as_array().is_none_or(|p| p.is_empty()) {
        app.add_product("tea", PRICE, true).await;
    }
    let (token, _) = app.login(user).await;
    let (status, order) = app
        .post(
            "/api/orders",
            Some(&token),
            json!({ "items": [{ "sku": "tea", "quantity": 2 }] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    (token, order)
}

fn id(order: &Value) -> &str {
    order["id"].as_str().unwrap()
}

fn out_trade_no(order: &Value) -> &str {
    order["out_trade_no"].as_str().unwrap()
}

/// The customer asks to pay, and WeChat Pay (the simulator) takes `amount_fen` from them.
async fn pay_at_wechat(app: &TestApp, token: &str, order: &Value, amount_fen: i64) {
    let (status, body) = app
        .post(
            &format!("/api/orders/{}/pay", id(order)),
            Some(token),
            json!({ "channel": "wechatpay_v3" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.sandbox(
        "/wechatpay/pay",
        json!({ "out_trade_no": out_trade_no(order), "amount_fen": amount_fen }),
    )
    .await;
}

async fn wait_for_status(app: &TestApp, token: &str, order: &Value, status: &str) -> Value {
    let path = format!("/api/orders/{}", id(order));
    let mut last = Value::Null;
    for _ in 0..200 {
        last = app.get(&path, Some(token)).await.1;
        if last["status"] == status {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("order never reached {status}: {last}");
}

async fn queue(app: &TestApp, token: &str) -> Vec<Value> {
    let (status, body) = app.get("/admin/review", Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["items"].as_array().unwrap().clone()
}

async fn resolve(app: &TestApp, token: &str, order: &Value, body: Value) -> (StatusCode, Value) {
    app.post(
        &format!("/admin/orders/{}/review", id(order)),
        Some(token),
        body,
    )
    .await
}

async fn review_queue_and_resolution(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin_token().await;
    let support = app.support_token().await;
    assert!(queue(&app, &admin).await.is_empty());

    // One order paid right, one with a fen too little.
    let (good_token, good) = customer_with_order(&app, "good").await;
    pay_at_wechat(&app, &good_token, &good, TOTAL).await;
    wait_for_status(&app, &good_token, &good, "paid").await;
    let (token, order) = customer_with_order(&app, "short").await;
    pay_at_wechat(&app, &token, &order, TOTAL - 1).await;
    wait_for_status(&app, &token, &order, "needs_review").await;

    // Support staff may read the queue; only the odd order is in it, with why.
    let items = queue(&app, &support).await;
    assert_eq!(items.len(), 1, "{items:?}");
    let item = &items[0];
    assert_eq!(item["order_id"], order["id"]);
    assert_eq!(item["out_trade_no"], order["out_trade_no"]);
    assert_eq!(item["status"], "needs_review");
    assert_eq!(
        (item["paid_fen"].clone(), item["total_fen"].clone()),
        (json!(TOTAL - 1), json!(TOTAL))
    );
    let reason = item["reason"].as_str().unwrap();
    assert!(reason.contains("wrong amount"), "{reason}");
    assert!(
        reason.contains("25.00") && reason.contains("24.99"),
        "{reason}"
    );
    assert_eq!(item["reasons"][0]["kind"], "amount_mismatch");
    assert_eq!(item["reasons"][0]["expected_fen"], TOTAL);
    assert_eq!(item["reasons"][0]["received_fen"], TOTAL - 1);
    assert!(item["since"].as_str().unwrap().ends_with('Z'), "{item}");

    // Support cannot resolve; bad input is refused; nothing is written.
    let (status, body) = resolve(&app, &support, &order, json!({ "resolution": "accepted" })).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "admin_only");
    let (status, body) = resolve(&app, &admin, &order, json!({ "resolution": "ignored" })).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_resolution");
    let (status, body) = resolve(&app, &admin, &order, json!({ "resolution": "other" })).await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "review_note_required",
    );
    let (status, body) = resolve(&app, &admin, &order, json!({ "resolution": "refunded" })).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "nothing_refunded",
    );
    let (status, body) = resolve(&app, &admin, &good, json!({ "resolution": "accepted" })).await;
    assert_error(status, &body, StatusCode::CONFLICT, "nothing_to_review");
    let missing = json!({ "id": uuid::Uuid::new_v4().to_string() });
    let (status, body) = resolve(&app, &admin, &missing, json!({ "resolution": "accepted" })).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "order_not_found");
    assert_eq!(count(&app.order_events(&order).await, "ReviewResolved"), 0);

    // The admin accepts the short payment: the order is paid, and leaves the queue.
    let resolution = json!({ "resolution": "accepted", "note": "one fen short, waived" });
    let (status, resolved) = resolve(&app, &admin, &order, resolution.clone()).await;
    assert_eq!(status, StatusCode::OK, "{resolved}");
    assert_eq!(resolved["status"], "paid");
    assert_eq!(resolved["review"]["open"], json!([]));
    assert_eq!(resolved["review"]["resolved"][0]["resolution"], "accepted");
    assert!(queue(&app, &admin).await.is_empty());
    let (_, seen) = app
        .get(&format!("/api/orders/{}", id(&order)), Some(&token))
        .await;
    assert_eq!(seen["status"], "paid");

    // A repeat answers the same and writes nothing; a different answer is a conflict.
    let (status, again) = resolve(&app, &admin, &order, resolution).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["status"], "paid");
    let (status, body) = resolve(
        &app,
        &admin,
        &order,
        json!({ "resolution": "other", "note": "x" }),
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::CONFLICT,
        "review_already_resolved",
    );

    // The history holds the resolution once, by the admin who made it.
    let history = app.order_events(&order).await;
    assert_eq!(count(&history, "ReviewResolved"), 1);
    let event = history
        .iter()
        .find(|e| e["type"] == "ReviewResolved")
        .unwrap();
    assert_eq!(event["data"]["resolution"], "accepted");
    assert_eq!(event["data"]["note"], "one fen short, waived");
    let actor = event["metadata"]["actor"].as_str().unwrap();
    assert!(actor.starts_with("staff:"), "{actor}");

    // The queue is a read model: rebuilt from the log, it says the same.
    sqlx::query("INSERT INTO review_queue (order_id, out_trade_no, status, reason, reasons, since, paid_fen, total_fen, updated_at) VALUES ('stale', 'x', 'needs_review', 'x', '[]', 0, 0, 0, 0)")
        .execute(&app.running().db.pool)
        .await
        .unwrap();
    let store = paystream::event_store(&app.running().db);
    paystream_projections::rebuild(store.as_ref())
        .await
        .unwrap();
    assert!(queue(&app, &admin).await.is_empty());
}

/// Money going back and forth puts an order in the queue again; resolving as refunded needs a
/// refund, and leaves the order with the status its money says.
async fn a_second_payment_refunded_then_resolved(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin_token().await;
    let (token, order) = customer_with_order(&app, "twice").await;
    pay_at_wechat(&app, &token, &order, TOTAL + 100).await;
    wait_for_status(&app, &token, &order, "needs_review").await;
    let (status, refund) = app
        .post(
            &format!("/admin/orders/{}/refunds", id(&order)),
            Some(&admin),
            json!({ "amount_fen": 100, "reason": "overpaid" }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{refund}");
    app.wait_for_event(&order, "RefundSucceeded").await;
    let items = queue(&app, &admin).await;
    assert_eq!(
        items.len(),
        1,
        "still in review after the refund: {items:?}"
    );
    assert_eq!(items[0]["paid_fen"], TOTAL + 100);

    let (status, resolved) = resolve(
        &app,
        &admin,
        &order,
        json!({ "resolution": "refunded", "note": "the extra 1.00 went back" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{resolved}");
    assert_eq!(resolved["status"], "partially_refunded");
    assert_eq!(resolved["refunded_fen"], 100);
    assert!(queue(&app, &admin).await.is_empty());

    // Rebuilt from the log, the order and the queue are the same.
    let store = paystream::event_store(&app.running().db);
    paystream_projections::rebuild(store.as_ref())
        .await
        .unwrap();
    assert!(queue(&app, &admin).await.is_empty());
    let (_, after) = app
        .get(
            &format!("/admin/orders?out_trade_no={}", out_trade_no(&order)),
            Some(&admin),
        )
        .await;
    assert_eq!(after["items"][0]["status"], "partially_refunded");
}

// ---- The daily report ----

fn fen(v: i64) -> Fen {
    Fen::new(v).unwrap()
}

/// An instant given in Beijing time.
fn beijing(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    FixedOffset::east_opt(8 * 3600)
        .unwrap()
        .with_ymd_and_hms(2024, 5, day, hour, minute, 0)
        .unwrap()
        .with_timezone(&Utc)
}

/// Drives orders straight through the engine's command handling (on the same log and
/// projections as the server), with chosen timestamps.
struct Shop {
    orders: OrderService,
    meta: Metadata,
}

impl Shop {
    fn new(app: &TestApp) -> Shop {
        Shop {
            orders: OrderService::new(paystream::event_store(&app.running().db)),
            meta: Metadata::actor("test"),
        }
    }

    /// An order of 30.00 placed at `at`.
    async fn order(&self, at: DateTime<Utc>) -> Uuid {
        self.place(at, "o-report", "Tea", None).await
    }

    /// An order of 2 × 15.00 of a product called `name`, placed at `at`.
    async fn place(&self, at: DateTime<Utc>, openid: &str, name: &str, note: Option<&str>) -> Uuid {
        let request = PlaceOrder {
            user_id: Uuid::new_v4(),
            openid: openid.into(),
            lines: vec![OrderLine::priced("tea", name, 2, fen(1500)).unwrap()],
            note: note.map(String::from),
            ttl: chrono::Duration::minutes(30),
            idempotency_key: None,
            request_hash: "h".into(),
            card: None,
        };
        self.orders
            .place(request, self.meta.clone(), at)
            .await
            .unwrap()
            .id
    }

    async fn run(&self, id: Uuid, command: OrderCommand) {
        self.orders.execute(id, command, &self.meta).await.unwrap();
    }

    async fn pay(&self, id: Uuid, channel: PayChannel, txn: &str, amount: i64, at: DateTime<Utc>) {
        let command = OrderCommand::RecordPayment {
            channel,
            transaction_id: txn.into(),
            amount_fen: fen(amount),
            paid_at: at,
        };
        self.run(id, command).await;
    }

    async fn request_refund(&self, id: Uuid, no: &str, amount: i64, at: DateTime<Utc>) {
        let command = OrderCommand::RequestRefund {
            out_refund_no: no.into(),
            amount_fen: fen(amount),
            reason: None,
            now: at,
        };
        self.run(id, command).await;
    }

    async fn refund(
        &self,
        id: Uuid,
        no: &str,
        amount: i64,
        asked: DateTime<Utc>,
        done: DateTime<Utc>,
    ) {
        self.request_refund(id, no, amount, asked).await;
        let command = OrderCommand::RecordRefundSuccess {
            out_refund_no: no.into(),
            refund_id: Some(format!("wx-{no}")),
            at: done,
        };
        self.run(id, command).await;
    }
}

/// (day, channel) -> [orders_paid, gross, refunded], recomputed from the whole log on its own
/// terms: every payment on the Beijing day of its paid_at, every confirmed refund on the day it
/// succeeded, on the channel of the order's first payment.
async fn recompute_from_the_log(app: &TestApp) -> BTreeMap<(String, String), [i64; 3]> {
    // Stream by stream: following the whole log on PostgreSQL waits for every transaction of
    // the server (other tests' databases included) and may stop short.
    let store = paystream::event_store(&app.running().db);
    let streams: Vec<String> =
        sqlx::query_scalar("SELECT stream_id FROM events GROUP BY stream_id ORDER BY stream_id")
            .fetch_all(&app.running().db.pool)
            .await
            .unwrap();
    let mut events = Vec::new();
    for stream in &streams {
        events.extend(store.read_stream(stream).await.unwrap());
    }
    let day = |at: &Value| {
        let at: DateTime<Utc> = serde_json::from_value(at.clone()).unwrap();
        paystream_projections::beijing_day(at).to_string()
    };
    let mut first_channel: HashMap<String, String> = HashMap::new();
    let mut refund_amounts: HashMap<String, i64> = HashMap::new();
    let mut totals: BTreeMap<(String, String), [i64; 3]> = BTreeMap::new();
    for e in &events {
        let data = &e.data;
        match e.event_type.as_str() {
            "PaymentSucceeded" | "PaymentAmountMismatch" => {
                let amount = data["amount_fen"]
                    .as_i64()
                    .or(data["received_fen"].as_i64())
                    .unwrap();
                let channel = data["channel"].as_str().unwrap().to_string();
                let first = !first_channel.contains_key(&e.stream_id);
                first_channel
                    .entry(e.stream_id.clone())
                    .or_insert(channel.clone());
                let entry = totals.entry((day(&data["paid_at"]), channel)).or_default();
                entry[0] += i64::from(first);
                entry[1] += amount;
            }
            "RefundRequested" => {
                refund_amounts.insert(
                    data["out_refund_no"].as_str().unwrap().to_string(),
                    data["amount_fen"].as_i64().unwrap(),
                );
            }
            "RefundSucceeded" => {
                let amount = refund_amounts[data["out_refund_no"].as_str().unwrap()];
                let channel = first_channel[&e.stream_id].clone();
                totals
                    .entry((day(&data["succeeded_at"]), channel))
                    .or_default()[2] += amount;
            }
            _ => {}
        }
    }
    totals
}

async fn report(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    let (status, body) = app
        .get(&format!("/admin/reports/daily{query}"), Some(token))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["items"].as_array().unwrap().clone()
}

fn totals_of(item: &Value) -> [i64; 5] {
    [
        "orders_paid",
        "gross_fen",
        "refunded_fen",
        "net_fen",
        "unmatched_fen",
    ]
    .map(|k| item[k].as_i64().unwrap_or_else(|| panic!("{k} in {item}")))
}

async fn daily_report_counts_beijing_days(backend: Backend) {
    // No pollers: they would ask the simulator about these made-up refunds.
    let app = spawn_app_with(backend, |s| s.no_background_jobs = true).await;
    let support = app.support_token().await;
    let shop = Shop::new(&app);

    // 07:30 in Beijing on the 2nd is still the 1st in UTC: it counts on the 2nd.
    let early = shop.order(beijing(2, 7, 0)).await;
    shop.pay(
        early,
        PayChannel::WechatpayV3,
        "T-early",
        3000,
        beijing(2, 7, 30),
    )
    .await;
    // 23:30 in Beijing on the 2nd counts on the 2nd, not the 3rd; refunded 10.00 just after
    // midnight Beijing (still the 3rd in UTC): that counts on the 4th, on the payment's channel.
    let late = shop.order(beijing(2, 23, 0)).await;
    shop.pay(
        late,
        PayChannel::WechatpayV2,
        "T-late",
        3000,
        beijing(2, 23, 30),
    )
    .await;
    shop.refund(late, "R-late", 1000, beijing(3, 10, 0), beijing(4, 0, 10))
        .await;
    // The wrong amount, then paid again: both are money on the account (gross, and unmatched),
    // one order paid; the wrong amount refunded.
    let odd = shop.order(beijing(3, 11, 0)).await;
    shop.pay(
        odd,
        PayChannel::WechatpayV3,
        "T-odd-1",
        2999,
        beijing(3, 12, 0),
    )
    .await;
    shop.pay(
        odd,
        PayChannel::WechatpayV3,
        "T-odd-2",
        3000,
        beijing(3, 13, 0),
    )
    .await;
    shop.refund(odd, "R-odd", 2999, beijing(3, 13, 30), beijing(3, 14, 0))
        .await;
    let resolve = OrderCommand::ResolveReview {
        resolution: ReviewResolution::Refunded,
        note: None,
        now: beijing(3, 15, 0),
    };
    shop.run(odd, resolve).await;
    // A refund that failed and one still processing move no money.
    let unrefunded = shop.order(beijing(5, 9, 0)).await;
    shop.pay(
        unrefunded,
        PayChannel::WechatpayV3,
        "T-5",
        3000,
        beijing(5, 9, 30),
    )
    .await;
    shop.request_refund(unrefunded, "R-failed", 500, beijing(5, 10, 0))
        .await;
    let failed = OrderCommand::RecordRefundFailure {
        out_refund_no: "R-failed".into(),
        reason: "CLOSED".into(),
        at: beijing(5, 10, 5),
    };
    shop.run(unrefunded, failed).await;
    shop.request_refund(unrefunded, "R-processing", 700, beijing(5, 11, 0))
        .await;
    // Placed, never paid.
    shop.order(beijing(5, 12, 0)).await;

    let items = report(&app, &support, "?from=2024-05-01&to=2024-05-06").await;
    let dates: Vec<_> = items.iter().map(|i| i["date"].as_str().unwrap()).collect();
    assert_eq!(
        dates,
        [
            "2024-05-01",
            "2024-05-02",
            "2024-05-03",
            "2024-05-04",
            "2024-05-05",
            "2024-05-06"
        ]
    );
    let totals: Vec<_> = items.iter().map(totals_of).collect();
    assert_eq!(
        totals,
        [
            [0, 0, 0, 0, 0],
            [2, 6000, 0, 6000, 0],
            [1, 5999, 2999, 3000, 5999],
            [0, 0, 1000, -1000, 0],
            [1, 3000, 0, 3000, 0],
            [0, 0, 0, 0, 0],
        ]
    );
    let v3 = |i: usize| totals_of(&items[i]["by_channel"]["wechatpay_v3"]);
    let v2 = |i: usize| totals_of(&items[i]["by_channel"]["wechatpay_v2"]);
    assert_eq!(
        (v3(1), v2(1)),
        ([1, 3000, 0, 3000, 0], [1, 3000, 0, 3000, 0])
    );
    assert_eq!((v3(3), v2(3)), ([0, 0, 0, 0, 0], [0, 0, 1000, -1000, 0]));
    assert_eq!(v2(0), [0, 0, 0, 0, 0], "every channel, zero or not");

    // The report is what the log says, day by day and channel by channel.
    let from_log = recompute_from_the_log(&app).await;
    let mut from_report = BTreeMap::new();
    for item in &items {
        for (channel, totals) in item["by_channel"].as_object().unwrap() {
            let t = totals_of(totals);
            if t != [0; 5] {
                from_report.insert(
                    (item["date"].as_str().unwrap().to_string(), channel.clone()),
                    [t[0], t[1], t[2]],
                );
            }
        }
    }
    assert_eq!(from_report, from_log);

    // A read model: rebuilt from the log, the same report.
    sqlx::query("DELETE FROM daily_totals")
        .execute(&app.running().db.pool)
        .await
        .unwrap();
    let store = paystream::event_store(&app.running().db);
    paystream_projections::rebuild(store.as_ref())
        .await
        .unwrap();
    assert_eq!(
        report(&app, &support, "?from=2024-05-01&to=2024-05-06").await,
        items
    );

    // Defaults: the last 30 Beijing days, ending today.
    let recent = report(&app, &support, "").await;
    assert_eq!(recent.len(), 30);
    let today = paystream_projections::beijing_day(Utc::now()).to_string();
    assert_eq!(recent[29]["date"], today.as_str());
    assert_eq!(report(&app, &support, "?from=&to=").await.len(), 30);

    for query in [
        "?from=2024-13-01",
        "?to=yesterday",
        "?from=2024-05-02&to=2024-05-01",
        "?from=2023-01-01&to=2024-12-31",
    ] {
        let (status, body) = app
            .get(&format!("/admin/reports/daily{query}"), Some(&support))
            .await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_query");
    }
    let (status, body) = app.get("/admin/reports/daily", None).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "missing_token");
}

// ---- The CSV export ----

/// `GET /admin/orders.csv…`: status, headers, body.
async fn download(
    app: &TestApp,
    token: Option<&str>,
    query: &str,
) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
    let mut request = app.http.get(app.url(&format!("/admin/orders.csv{query}")));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.bytes().await.unwrap().to_vec())
}

/// The rows of an export (after its BOM), header first.
fn csv_rows(body: &[u8]) -> Vec<Vec<String>> {
    assert!(body.starts_with(&[0xEF, 0xBB, 0xBF]), "UTF-8 BOM first");
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(&body[3..])
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect()
}

async fn export_rows(app: &TestApp, token: &str, query: &str) -> Vec<Vec<String>> {
    let (status, _, body) = download(app, Some(token), query).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let mut rows = csv_rows(&body);
    rows.remove(0);
    rows
}

async fn csv_export_is_the_whole_search(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.no_background_jobs = true).await;
    let support = app.support_token().await;
    let shop = Shop::new(&app);
    // Text that needs quoting, and a note a spreadsheet would run as a formula.
    let odd = shop
        .place(
            beijing(2, 7, 0),
            "o-odd",
            "Tea, \"large\"",
            Some("=HYPERLINK(\"http://x\")"),
        )
        .await;
    shop.pay(
        odd,
        PayChannel::WechatpayV3,
        "T-csv",
        3000,
        beijing(2, 7, 30),
    )
    .await;
    shop.refund(odd, "R-csv", 1005, beijing(2, 8, 0), beijing(2, 8, 5))
        .await;
    // More orders than one batch of the export, all placed at the same moment.
    let mut bulk = Vec::new();
    for _ in 0..130 {
        bulk.push(shop.place(beijing(3, 9, 0), "o-bulk", "Tea", None).await);
    }

    // Support staff may export (it is the search, as a file).
    let (status, headers, body) = download(&app, Some(&support), "").await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
    let today = paystream_projections::beijing_day(Utc::now()).format("%Y%m%d");
    assert_eq!(
        headers["content-disposition"],
        format!("attachment; filename=\"orders-{today}.csv\"").as_str()
    );
    let text = String::from_utf8(body[3..].to_vec()).unwrap();
    assert!(
        text.contains("\"Tea, \"\"large\"\" x 2\""),
        "quoted by the csv rules: {text}"
    );
    let rows = csv_rows(&body);
    assert_eq!(
        rows[0],
        [
            "id",
            "out_trade_no",
            "status",
            "created_at",
            "paid_at",
            "total_yuan",
            "paid_yuan",
            "refunded_yuan",
            "channel",
            "transaction_id",
            "openid",
            "items",
            "note"
        ]
    );
    assert_eq!(rows.len(), 1 + 131, "every order, not one page");
    let ids: std::collections::HashSet<_> = rows[1..].iter().map(|r| r[0].clone()).collect();
    assert_eq!(ids.len(), 131, "no order twice");
    assert!(bulk.iter().all(|id| ids.contains(&id.to_string())));
    // Newest first: the odd order, placed a day earlier, is last.
    let last = rows.last().unwrap();
    assert_eq!(
        last[..],
        [
            odd.to_string().as_str(),
            odd.simple().to_string().as_str(),
            "partially_refunded",
            "2024-05-02 07:00:00",
            "2024-05-02 07:30:00",
            "30.00",
            "30.00",
            "10.05",
            "wechatpay_v3",
            "T-csv",
            "o-odd",
            "Tea, \"large\" x 2",
            "'=HYPERLINK(\"http://x\")",
        ]
    );
    let unpaid = &rows[1];
    assert_eq!(
        (
            unpaid[2].as_str(),
            unpaid[4].as_str(),
            unpaid[6].as_str(),
            unpaid[8].as_str()
        ),
        ("pending_payment", "", "0.00", "")
    );

    // The filters of /admin/orders, with the same answers.
    for (query, expected) in [
        ("?status=partially_refunded", 1),
        ("?openid=o-odd", 1),
        ("?transaction_id=T-csv", 1),
        ("?from=2024-05-03&to=2024-05-03", 130),
        ("?to=2024-05-02", 1),
        ("?status=pending_payment&per_page=1&page=3", 130),
        ("?out_trade_no=nothing", 0),
    ] {
        let rows = export_rows(&app, &support, query).await;
        assert_eq!(rows.len(), expected, "{query}");
        let (_, page) = app
            .get(&format!("/admin/orders{query}"), Some(&support))
            .await;
        assert_eq!(page["total_items"], expected, "{query}");
    }
    let filtered = export_rows(&app, &support, "?status=partially_refunded").await;
    assert_eq!(filtered[0][0], odd.to_string());

    let (status, _, body) = download(&app, Some(&support), "?status=bogus").await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_status");
    let (status, _, body) = download(&app, Some(&support), "?from=yesterday").await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_query");
    let (status, _, body) = download(&app, None, "").await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "missing_token");
}

/// An engine upgraded onto a database that already holds orders fills the new read models from
/// the log at start (the migration leaves a marker), without anyone running a rebuild.
async fn read_models_added_later_are_filled_at_start(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let (token, order) = customer_with_order(&app, "early").await;
    pay_at_wechat(&app, &token, &order, 1).await;
    wait_for_status(&app, &token, &order, "needs_review").await;
    let admin = app.admin_token().await;
    assert_eq!(queue(&app, &admin).await.len(), 1);
    // As if the read models had been added after this order: empty, with the migration's marker.
    let pool = &app.running().db.pool;
    for statement in [
        "DELETE FROM review_queue",
        "DELETE FROM daily_totals",
        "INSERT INTO projection_backfills (name) VALUES ('backoffice')",
    ] {
        sqlx::query(statement).execute(pool).await.unwrap();
    }
    assert!(queue(&app, &admin).await.is_empty());
    app.restart().await;
    let admin = app.admin_token().await;
    let items = queue(&app, &admin).await;
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["order_id"], id(&order));
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM projection_backfills")
        .fetch_one(&app.running().db.pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "done once");
}

on_both_backends!(
    read_models_added_later_are_filled_at_start,
    review_queue_and_resolution,
    a_second_payment_refunded_then_resolved,
    daily_report_counts_beijing_days,
    csv_export_is_the_whole_search,
);
