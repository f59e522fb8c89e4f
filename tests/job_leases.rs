//! The pollers share their work across engine processes on one database: every due payment
//! query, refund follow-up and expiry close is a job claimed with a lease, so two processes ask
//! WeChat once per due time, not twice; a job whose holder died is retaken after the lease.
//!
//! "Two processes" here are two sets of pollers over one engine's database, each with its own
//! connection pool and its own `Payments` (sharing the engine's WeChat Pay client, wrapped to
//! count the calls each makes). The simulator's own count of queries per order
//! (`GET /control/wechatpay/transactions/{out_trade_no}` → `queries`) is checked as well.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{NaiveDate, Utc};
use common::{count, spawn_app, TestApp};
use paystream::jobs::{self, ReconcileTiming};
use paystream_engine::db::{Backend, Db};
use paystream_engine::order::PayChannel;
use paystream_engine::orders::OrderService;
use paystream_engine::payments::bills::BillOutcome;
use paystream_engine::payments::gateway::{
    CloseOutcome, GatewayError, Notice, NotifyError, PayGateway, PayParams, PrepayRequest,
    RawNotice, RefundCall, RefundState, TradeState,
};
use paystream_engine::payments::Payments;
use paystream_projections::{Checks, OrdersView};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

/// The engine's WeChat Pay gateway, counting the queries and closes one instance makes.
struct Counting {
    inner: Arc<dyn PayGateway>,
    queries: Mutex<HashMap<String, usize>>,
    closes: Mutex<HashMap<String, usize>>,
}

impl Counting {
    fn queries(&self, out_trade_no: &str) -> usize {
        self.queries
            .lock()
            .unwrap()
            .get(out_trade_no)
            .copied()
            .unwrap_or(0)
    }

    fn closes(&self, out_trade_no: &str) -> usize {
        self.closes
            .lock()
            .unwrap()
            .get(out_trade_no)
            .copied()
            .unwrap_or(0)
    }

    fn total_queries(&self) -> usize {
        self.queries.lock().unwrap().values().sum()
    }
}

#[async_trait]
impl PayGateway for Counting {
    fn channel(&self) -> PayChannel {
        self.inner.channel()
    }
    fn mchid(&self) -> &str {
        self.inner.mchid()
    }
    fn appid(&self) -> &str {
        self.inner.appid()
    }
    fn prepay_lifetime(&self) -> chrono::Duration {
        self.inner.prepay_lifetime()
    }
    async fn prepay(&self, request: &PrepayRequest) -> Result<String, GatewayError> {
        self.inner.prepay(request).await
    }
    fn pay_params(&self, prepay_id: &str) -> Result<PayParams, GatewayError> {
        self.inner.pay_params(prepay_id)
    }
    async fn query(&self, out_trade_no: &str) -> Result<TradeState, GatewayError> {
        *self
            .queries
            .lock()
            .unwrap()
            .entry(out_trade_no.to_string())
            .or_default() += 1;
        self.inner.query(out_trade_no).await
    }
    async fn close(&self, out_trade_no: &str) -> Result<CloseOutcome, GatewayError> {
        *self
            .closes
            .lock()
            .unwrap()
            .entry(out_trade_no.to_string())
            .or_default() += 1;
        self.inner.close(out_trade_no).await
    }
    async fn refund(&self, call: &RefundCall) -> Result<RefundState, GatewayError> {
        self.inner.refund(call).await
    }
    async fn query_refund(&self, out_refund_no: &str) -> Result<RefundState, GatewayError> {
        self.inner.query_refund(out_refund_no).await
    }
    async fn verify_notify(&self, notice: &RawNotice<'_>) -> Result<Notice, NotifyError> {
        self.inner.verify_notify(notice).await
    }
    async fn trade_bill(&self, date: NaiveDate) -> Result<BillOutcome, GatewayError> {
        self.inner.trade_bill(date).await
    }
}

/// One "engine process" of pollers: its own pool (on PostgreSQL; SQLite has one writer, so the
/// engine's), its own `Payments` and its own job holder.
#[derive(Clone)]
struct Instance {
    db: Db,
    payments: Payments,
    checks: Checks,
    view: OrdersView,
    gateway: Arc<Counting>,
}

async fn instance(app: &TestApp) -> Instance {
    let db = match app.db.backend {
        Backend::Postgres => Db::connect(&app.db.url).await.expect("second pool"),
        Backend::Sqlite => app.running().db.clone(),
    };
    let inner = app
        .running()
        .payments
        .gateway(PayChannel::WechatpayV3)
        .expect("WeChat Pay v3")
        .clone();
    let gateway = Arc::new(Counting {
        inner,
        queries: Mutex::default(),
        closes: Mutex::default(),
    });
    let payments = Payments::new(
        db.clone(),
        OrderService::new(paystream::event_store(&db)),
        vec![gateway.clone() as Arc<dyn PayGateway>],
    );
    Instance {
        checks: Checks::new(db.clone()),
        view: OrdersView::new(db.clone()),
        db,
        payments,
        gateway,
    }
}

/// `n` orders with a payment requested at the simulator and no notice (the customer has not
/// paid, or — every `late`-th one — has paid and the notice is a minute away).
async fn quiet_orders(app: &TestApp, n: usize, late: usize) -> Vec<Value> {
    app.add_product("tea", 1250, true).await;
    let (token, _) = app.login("payer").await;
    let mut orders = Vec::with_capacity(n);
    for i in 0..n {
        let order = app.place_order(&token, "tea", 1).await;
        let path = format!("/api/orders/{}/pay", order["id"].as_str().unwrap());
        let (status, body) = app
            .post(&path, Some(&token), json!({ "channel": "wechatpay_v3" }))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if late > 0 && i % late == 0 {
            app.sandbox(
                "/wechatpay/pay",
                json!({ "out_trade_no": out_trade_no(&order), "delay_ms": 60_000 }),
            )
            .await;
        }
        orders.push(order);
    }
    orders
}

fn out_trade_no(order: &Value) -> &str {
    order["out_trade_no"].as_str().unwrap()
}

/// What the simulator says about the order: (queries it answered, trade_state).
async fn at_wechat(app: &TestApp, order: &Value) -> (u64, String) {
    let path = format!(
        "/sandbox/control/wechatpay/transactions/{}",
        out_trade_no(order)
    );
    let (status, body) = app.get(&path, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (
        body["queries"]
            .as_u64()
            .expect("the simulator counts queries"),
        body["transaction"]["trade_state"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

const ONE_SECOND: ReconcileTiming = ReconcileTiming {
    payment_after: chrono::Duration::seconds(1),
    refund_after: chrono::Duration::seconds(1),
};

/// Both instances run one pass of the payment poller at the same time, as of `now`.
async fn reconcile_both(a: &Instance, b: &Instance, now: chrono::DateTime<Utc>) -> (usize, usize) {
    let pass = |i: Instance| {
        tokio::spawn(async move {
            jobs::reconcile(&i.payments, &i.checks, ONE_SECOND, now)
                .await
                .unwrap()
        })
    };
    let (a, b) = tokio::join!(pass(a.clone()), pass(b.clone()));
    (a.unwrap(), b.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn two_instances_query_each_quiet_payment_once() {
    let app = spawn_app(Backend::Postgres).await;
    let orders = quiet_orders(&app, 50, 5).await;
    let (a, b) = (instance(&app).await, instance(&app).await);
    let now = Utc::now() + chrono::Duration::seconds(2);

    let (by_a, by_b) = reconcile_both(&a, &b, now).await;
    println!("first pass: instance a checked {by_a}, instance b {by_b}");
    assert_eq!(by_a + by_b, 50, "every quiet payment checked once in all");
    for order in &orders {
        let otn = out_trade_no(order);
        assert_eq!(
            a.gateway.queries(otn) + b.gateway.queries(otn),
            1,
            "{otn} queried once by the two instances"
        );
        assert_eq!(
            at_wechat(&app, order).await.0,
            1,
            "{otn}: one query at WeChat"
        );
    }
    // The late-notice ones were found paid, once each.
    for order in orders.iter().step_by(5) {
        let history = app.order_events(order).await;
        assert_eq!(count(&history, "PaymentSucceeded"), 1, "{history:?}");
    }

    // Nothing is due again until the back-off has passed...
    assert_eq!(reconcile_both(&a, &b, now).await, (0, 0));
    // ...then each unpaid one is asked once more, the paid ones never again.
    let later = now + chrono::Duration::seconds(3);
    let (by_a, by_b) = reconcile_both(&a, &b, later).await;
    assert_eq!(by_a + by_b, 40);
    for (i, order) in orders.iter().enumerate() {
        let want = if i % 5 == 0 { 1 } else { 2 };
        assert_eq!(at_wechat(&app, order).await.0, want, "order {i}");
    }
    assert_eq!(a.gateway.total_queries() + b.gateway.total_queries(), 90);
    let leased: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM payment_checks WHERE leased_by IS NOT NULL")
            .fetch_one(&a.db.pool)
            .await
            .unwrap();
    assert_eq!(leased, 0, "every claim was released");
    a.db.pool.close().await;
    b.db.pool.close().await;
}

/// A process claimed a payment job and died before releasing it: nobody asks about that
/// payment until the lease has run out, then another process does, once.
async fn a_crashed_holders_job_is_retaken_after_its_lease(backend: Backend) {
    let app = spawn_app(backend).await;
    let orders = quiet_orders(&app, 1, 0).await;
    let order_id: Uuid = orders[0]["id"].as_str().unwrap().parse().unwrap();
    let (dead, alive) = (instance(&app).await, instance(&app).await);
    let lease = chrono::Duration::seconds(30);
    let dead_checks = dead.checks.clone().with_lease(lease);
    let now = Utc::now() + chrono::Duration::seconds(2);

    dead_checks
        .add_payment_jobs(now, ONE_SECOND.payment_after)
        .await
        .unwrap();
    assert_eq!(
        dead_checks.claim_payment(now, now + lease).await.unwrap(),
        Some(order_id)
    );
    // ... and the holder is gone.
    let pass = |at| jobs::reconcile(&alive.payments, &alive.checks, ONE_SECOND, at);
    assert_eq!(pass(now).await.unwrap(), 0, "held");
    assert_eq!(
        pass(now + chrono::Duration::seconds(29)).await.unwrap(),
        0,
        "still held"
    );
    assert_eq!(at_wechat(&app, &orders[0]).await.0, 0);
    assert_eq!(
        pass(now + chrono::Duration::seconds(30)).await.unwrap(),
        1,
        "retaken once the lease ran out"
    );
    assert_eq!(at_wechat(&app, &orders[0]).await.0, 1);
    assert_eq!(alive.gateway.queries(out_trade_no(&orders[0])), 1);
    // Back-off as usual after that (attempt 1: 2 s).
    assert_eq!(pass(now + chrono::Duration::seconds(31)).await.unwrap(), 0);
    assert_eq!(pass(now + chrono::Duration::seconds(33)).await.unwrap(), 1);
    assert_eq!(at_wechat(&app, &orders[0]).await.0, 2);
    assert_eq!(dead.gateway.total_queries(), 0);
}

/// Two instances sweep the same expired orders at once: each is closed (at WeChat and in the
/// log) by exactly one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn expiry_closes_once_across_two_instances() {
    let app = spawn_app(Backend::Postgres).await;
    let orders = quiet_orders(&app, 20, 0).await;
    let (a, b) = (instance(&app).await, instance(&app).await);
    let later = Utc::now() + chrono::Duration::seconds(1801);
    let sweep = |i: Instance| {
        tokio::spawn(async move {
            jobs::expire_due_orders(&i.payments, &i.view, &i.checks, later)
                .await
                .unwrap()
        })
    };
    let (by_a, by_b) = tokio::join!(sweep(a.clone()), sweep(b.clone()));
    let (by_a, by_b) = (by_a.unwrap(), by_b.unwrap());
    println!("expiry: instance a closed {by_a}, instance b {by_b}");
    assert_eq!(by_a + by_b, 20);
    for order in &orders {
        let otn = out_trade_no(order);
        assert_eq!(
            a.gateway.closes(otn) + b.gateway.closes(otn),
            1,
            "{otn} closed at WeChat once"
        );
        assert_eq!(at_wechat(&app, order).await.1, "CLOSED");
        let history = app.order_events(order).await;
        assert_eq!(count(&history, "OrderClosed"), 1);
    }
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payment_checks")
        .fetch_one(&a.db.pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "a closed order's job is gone");
    a.db.pool.close().await;
    b.db.pool.close().await;
}

/// The embedded store, one process: the pollers claim, check and release as on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_single_instance_polls_and_expires() {
    let app = spawn_app(Backend::Sqlite).await;
    let orders = quiet_orders(&app, 6, 3).await;
    let one = instance(&app).await;
    let now = Utc::now() + chrono::Duration::seconds(2);
    let pass = |at| jobs::reconcile(&one.payments, &one.checks, ONE_SECOND, at);
    assert_eq!(pass(now).await.unwrap(), 6);
    assert_eq!(pass(now).await.unwrap(), 0);
    for order in &orders {
        assert_eq!(at_wechat(&app, order).await.0, 1);
    }
    assert_eq!(
        pass(now + chrono::Duration::seconds(3)).await.unwrap(),
        4,
        "the unpaid ones, again after their back-off"
    );
    let later = Utc::now() + chrono::Duration::seconds(1801);
    assert_eq!(
        jobs::expire_due_orders(&one.payments, &one.view, &one.checks, later)
            .await
            .unwrap(),
        4
    );
    assert_eq!(
        jobs::expire_due_orders(&one.payments, &one.view, &one.checks, later)
            .await
            .unwrap(),
        0
    );
    for (i, order) in orders.iter().enumerate() {
        let history = app.order_events(order).await;
        let (closed, paid) = (
            count(&history, "OrderClosed"),
            count(&history, "PaymentSucceeded"),
        );
        assert_eq!((closed, paid), if i % 3 == 0 { (0, 1) } else { (1, 0) });
    }
}

mod postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_crashed_holders_job_is_retaken_after_its_lease() {
        super::a_crashed_holders_job_is_retaken_after_its_lease(
            paystream_engine::db::Backend::Postgres,
        )
        .await
    }
}

mod sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_crashed_holders_job_is_retaken_after_its_lease() {
        super::a_crashed_holders_job_is_retaken_after_its_lease(
            paystream_engine::db::Backend::Sqlite,
        )
        .await
    }
}
