//! `rebuild-projections` gives back exactly the read models the appends wrote: a varied history
//! made through the real API and the simulator, every read-model table snapshotted (all columns,
//! by key), the read models damaged, rebuilt, snapshotted again — equal, and so are the API's
//! answers. The tables come from `paystream_projections::READ_MODEL_TABLES`: a read model
//! registered there is compared here without touching this file.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use common::{spawn_app, TestApp};
use paystream_engine::db::Backend;
use paystream_engine::money::Fen;
use paystream_engine::order::{OrderCommand, OrderLine, PayChannel};
use paystream_engine::orders::{Metadata, OrderService, PlaceOrder};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::{Column, Row};
use uuid::Uuid;

const PRICE: i64 = 1250;
const TOTAL: i64 = 2 * PRICE;

// ---- A varied history, through the API and the simulator ----

fn id(order: &Value) -> &str {
    order["id"].as_str().unwrap()
}

/// The customer asks to pay on `channel` and the simulator takes `amount_fen` from them.
async fn pay(app: &TestApp, token: &str, order: &Value, channel: &str, amount_fen: i64) {
    let (status, body) = app
        .post(
            &format!("/api/orders/{}/pay", id(order)),
            Some(token),
            json!({ "channel": channel }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.sandbox(
        "/wechatpay/pay",
        json!({ "out_trade_no": order["out_trade_no"], "amount_fen": amount_fen, "channel": channel }),
    )
    .await;
}

async fn wait_for_status(app: &TestApp, token: &str, order: &Value, status: &str) {
    let path = format!("/api/orders/{}", id(order));
    let mut last = Value::Null;
    for _ in 0..200 {
        last = app.get(&path, Some(token)).await.1;
        if last["status"] == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("order never reached {status}: {last}");
}

async fn refund(app: &TestApp, admin: &str, order: &Value, amount_fen: i64) {
    let (status, body) = app
        .post(
            &format!("/admin/orders/{}/refunds", id(order)),
            Some(admin),
            json!({ "amount_fen": amount_fen, "reason": "asked" }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

async fn resolve(app: &TestApp, admin: &str, order: &Value) {
    let (status, body) = app
        .post(
            &format!("/admin/orders/{}/review", id(order)),
            Some(admin),
            json!({ "resolution": "accepted", "note": "fine" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Orders in every state the API can bring them to: paid on v3 and v2, partially and fully
/// refunded, paid the wrong amount (left in review, and resolved), expired, and unpaid.
async fn history_through_the_api(app: &TestApp) {
    app.add_product("tea", PRICE, true).await;
    let admin = app.admin_token().await;
    let (token, _) = app.login("rebuild-customer").await;

    // Closed by expiry first: the sweep closes every unpaid order, so the others come after.
    let expired = app.place_order(&token, "tea", 2).await;
    let prepaid_then_expired = app.place_order(&token, "tea", 2).await;
    let (status, body) = app
        .post(
            &format!("/api/orders/{}/pay", id(&prepaid_then_expired)),
            Some(&token),
            json!({ "channel": "wechatpay_v3" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(app.expire_all_now().await, 2);
    wait_for_status(app, &token, &expired, "closed").await;

    let paid_v3 = app.place_order(&token, "tea", 2).await;
    pay(app, &token, &paid_v3, "wechatpay_v3", TOTAL).await;
    let paid_v2 = app.place_order(&token, "tea", 2).await;
    pay(app, &token, &paid_v2, "wechatpay_v2", TOTAL).await;
    let partly = app.place_order(&token, "tea", 2).await;
    pay(app, &token, &partly, "wechatpay_v3", TOTAL).await;
    let fully = app.place_order(&token, "tea", 2).await;
    pay(app, &token, &fully, "wechatpay_v3", TOTAL).await;
    let in_review = app.place_order(&token, "tea", 2).await;
    pay(app, &token, &in_review, "wechatpay_v3", TOTAL - 1).await;
    let resolved = app.place_order(&token, "tea", 2).await;
    pay(app, &token, &resolved, "wechatpay_v3", TOTAL + 100).await;
    app.place_order(&token, "tea", 2).await;

    for order in [&paid_v3, &paid_v2, &partly, &fully] {
        wait_for_status(app, &token, order, "paid").await;
    }
    for order in [&in_review, &resolved] {
        wait_for_status(app, &token, order, "needs_review").await;
    }
    refund(app, &admin, &partly, 500).await;
    refund(app, &admin, &fully, TOTAL).await;
    wait_for_status(app, &token, &partly, "partially_refunded").await;
    wait_for_status(app, &token, &fully, "refunded").await;
    resolve(app, &admin, &resolved).await;
}

fn fen(v: i64) -> Fen {
    Fen::new(v).unwrap()
}

fn beijing(day: u32, hour: u32) -> DateTime<Utc> {
    FixedOffset::east_opt(8 * 3600)
        .unwrap()
        .with_ymd_and_hms(2024, 5, day, hour, 0, 0)
        .unwrap()
        .with_timezone(&Utc)
}

/// Money on several past days and both channels, through the engine's commands with chosen
/// times (the API stamps everything now): the daily report has more than one row to rebuild.
async fn history_on_past_days(app: &TestApp) {
    let orders = OrderService::new(paystream::event_store(&app.running().db));
    let meta = Metadata::actor("test");
    for (day, channel) in [
        (1, PayChannel::WechatpayV3),
        (2, PayChannel::WechatpayV2),
        (2, PayChannel::WechatpayV3),
        (4, PayChannel::WechatpayV2),
    ] {
        let request = PlaceOrder {
            user_id: Uuid::new_v4(),
            openid: "o-past".into(),
            lines: vec![OrderLine::priced("tea", "Tea", 2, fen(1500)).unwrap()],
            note: Some(format!("day {day}")),
            ttl: chrono::Duration::minutes(30),
            idempotency_key: None,
            request_hash: "h".into(),
            card: None,
        };
        let order = orders
            .place(request, meta.clone(), beijing(day, 9))
            .await
            .unwrap()
            .id;
        let pay = OrderCommand::RecordPayment {
            channel,
            transaction_id: format!("T-{order}"),
            amount_fen: fen(3000),
            paid_at: beijing(day, 10),
        };
        orders.execute(order, pay, &meta).await.unwrap();
        let no = format!("R-{}", order.simple());
        let ask = OrderCommand::RequestRefund {
            out_refund_no: no.clone(),
            amount_fen: fen(1000),
            reason: None,
            now: beijing(day, 11),
        };
        orders.execute(order, ask, &meta).await.unwrap();
        let done = OrderCommand::RecordRefundSuccess {
            out_refund_no: no,
            refund_id: Some(format!("wx-{order}")),
            at: beijing(day + 1, 1),
        };
        orders.execute(order, done, &meta).await.unwrap();
    }
}

// ---- Snapshots ----

/// Every row of every read-model table, ordered by key: table → rows → column → value.
type Snapshot = BTreeMap<&'static str, Vec<BTreeMap<String, Value>>>;

/// One column's value as JSON: the read models hold only integers and text (or NULL).
fn value(row: &sqlx::any::AnyRow, index: usize) -> Value {
    if let Ok(number) = row.try_get::<Option<i64>, _>(index) {
        return json!(number);
    }
    if let Ok(text) = row.try_get::<Option<String>, _>(index) {
        return json!(text);
    }
    if let Ok(real) = row.try_get::<Option<f64>, _>(index) {
        return json!(real);
    }
    panic!(
        "column {} has a type the snapshot cannot read",
        row.column(index).name()
    );
}

async fn snapshot(app: &TestApp) -> Snapshot {
    let pool = &app.running().db.pool;
    let mut tables = Snapshot::new();
    for table in paystream_projections::READ_MODEL_TABLES {
        let sql = format!(
            "SELECT * FROM {} ORDER BY {}",
            table.name,
            table.key.join(", ")
        );
        let rows = sqlx::query(&sql).fetch_all(pool).await.unwrap();
        let rows = rows
            .iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| (row.column(i).name().to_string(), value(row, i)))
                    .collect()
            })
            .collect();
        tables.insert(table.name, rows);
    }
    tables
}

/// What staff see of the read models: every order, the review queue, the daily report.
async fn api_answers(app: &TestApp) -> Vec<Value> {
    let admin = app.admin_token().await;
    let mut answers = Vec::new();
    for path in [
        "/admin/orders?per_page=100",
        "/admin/orders?status=needs_review",
        "/admin/orders?status=refunded",
        "/admin/review",
        "/admin/reports/daily?from=2024-04-30&to=2024-05-06",
        "/admin/reports/daily",
    ] {
        let (status, body) = app.get(path, Some(&admin)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        answers.push(json!({ "path": path, "body": body }));
    }
    answers
}

/// Damage every read model: a row missing, a row that should not be there, a value changed.
async fn damage(app: &TestApp, snapshot: &Snapshot) {
    let pool = &app.running().db.pool;
    for table in paystream_projections::READ_MODEL_TABLES {
        sqlx::query(&format!(
            "DELETE FROM {} WHERE {} = (SELECT MIN({1}) FROM {0})",
            table.name, table.key[0]
        ))
        .execute(pool)
        .await
        .unwrap();
    }
    sqlx::query("UPDATE orders_view SET status = 'paid', paid_fen = 1")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO review_queue (order_id, out_trade_no, status, reason, reasons, since, \
         paid_fen, total_fen, updated_at) VALUES ('stale', 'x', 'needs_review', 'x', '[]', 0, 0, 0, 0)",
    )
    .execute(pool)
    .await
    .unwrap();
    assert_ne!(&self::snapshot(app).await, snapshot, "the damage shows");
}

/// Every index and key of the read models, as the database describes them: a rebuild drops
/// them to fill the tables faster and must leave them as it found them.
async fn read_model_indexes(app: &TestApp) -> Vec<String> {
    let names = paystream_projections::READ_MODEL_TABLES
        .iter()
        .map(|t| format!("'{}'", t.name))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = match app.running().db.backend {
        Backend::Postgres => format!(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() \
             AND tablename IN ({names}) \
             UNION ALL SELECT k.conname || ' ' || pg_get_constraintdef(k.oid) \
             FROM pg_constraint k JOIN pg_class t ON t.oid = k.conrelid \
             WHERE t.relnamespace = to_regnamespace(current_schema())::oid \
             AND t.relname IN ({names}) ORDER BY 1"
        ),
        Backend::Sqlite => format!(
            "SELECT name || ' ' || coalesce(sql, '') FROM sqlite_master \
             WHERE type = 'index' AND tbl_name IN ({names}) ORDER BY 1"
        ),
    };
    sqlx::query_scalar(&sql)
        .fetch_all(&app.running().db.pool)
        .await
        .unwrap()
}

async fn distinct_streams(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT COUNT(DISTINCT stream_id) FROM events")
        .fetch_one(&app.running().db.pool)
        .await
        .unwrap()
}

/// Every read-model table of `after` equals the same table of `expected`.
fn assert_same_read_models(after: &Snapshot, expected: &Snapshot, what: &str) {
    for table in paystream_projections::READ_MODEL_TABLES {
        assert_eq!(
            after[table.name], expected[table.name],
            "{} {what}",
            table.name
        );
    }
}

// ---- The tests ----

async fn a_rebuild_gives_back_the_live_read_models(backend: Backend) {
    let app = spawn_app(backend).await;
    history_through_the_api(&app).await;
    history_on_past_days(&app).await;
    let live = snapshot(&app).await;
    for table in paystream_projections::READ_MODEL_TABLES {
        assert!(
            !live[table.name].is_empty(),
            "{} is empty: the history does not exercise it",
            table.name
        );
    }
    assert!(
        live["daily_totals"].len() >= 5,
        "several days and channels: {:?}",
        live["daily_totals"]
    );
    let answers = api_answers(&app).await;
    let indexes = read_model_indexes(&app).await;
    assert!(indexes.len() >= 10, "{indexes:#?}");

    damage(&app, &live).await;
    let store = paystream::event_store(&app.running().db);
    let rebuilt = paystream_projections::rebuild(store.as_ref())
        .await
        .unwrap();
    assert_eq!(rebuilt.events as i64, app.event_count().await);
    assert_eq!(rebuilt.streams as i64, distinct_streams(&app).await);
    let orders = live["orders_view"].len() as u64;
    assert!(rebuilt.streams >= orders, "{rebuilt:?}, {orders} orders");
    assert_eq!(
        read_model_indexes(&app).await,
        indexes,
        "a rebuild leaves the read models' indexes and keys as it found them"
    );

    let after = snapshot(&app).await;
    assert_same_read_models(&after, &live, "rebuilt differs from live");
    assert_eq!(api_answers(&app).await, answers);
}

/// The command itself: exit status, the summary on stdout, the plain progress on stderr (not a
/// terminal here), and the same read models.
async fn the_command_rebuilds_and_says_how_much(backend: Backend) {
    let app = spawn_app(backend).await;
    history_through_the_api(&app).await;
    let live = snapshot(&app).await;
    damage(&app, &live).await;

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_paystream"))
        .arg("rebuild-projections")
        .env("DATABASE_URL", &app.db.url)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let events = app.event_count().await;
    assert!(
        stdout.starts_with(&format!("rebuilt read models: {events} events, ")),
        "{stdout}"
    );
    assert!(
        stdout.contains(" streams in ") && stdout.contains(" events/s)"),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!("rebuilding read models from {events} events")),
        "{stderr}"
    );
    assert_eq!(snapshot(&app).await, live);
}

/// Text a PostgreSQL rebuild has to escape for COPY's text format (tab, newline, carriage
/// return, backslash, and what would read as `\N` or `\.` unescaped), quotes, and Chinese.
const AWKWARD: &str = "茉莉花茶\t\"大杯\"\n'少冰' C:\\tea\\new \\N \\.\r\n备注 end";

/// Orders whose every free-text column holds [`AWKWARD`]: a product name (in `items`), a note,
/// an openid, transaction ids, a refund's reason, refund id and failure reason, the staff member
/// who asked, and a review queue row (whose reasons name the transaction).
async fn history_with_awkward_text(app: &TestApp) -> Uuid {
    let orders = OrderService::new(paystream::event_store(&app.running().db));
    let staff = Metadata::actor(format!("staff:{}", Uuid::new_v4()));
    let place = |day: u32| PlaceOrder {
        user_id: Uuid::new_v4(),
        openid: format!("o-{AWKWARD}"),
        lines: vec![OrderLine::priced("tea", AWKWARD, 2, fen(1500)).unwrap()],
        note: Some(AWKWARD.to_string()),
        ttl: chrono::Duration::minutes(30),
        idempotency_key: None,
        request_hash: format!("h{day}"),
        card: None,
    };
    let refunded = orders
        .place(place(10), staff.clone(), beijing(10, 9))
        .await
        .unwrap()
        .id;
    let pay = |transaction_id: String, amount: i64, day: u32| OrderCommand::RecordPayment {
        channel: PayChannel::WechatpayV3,
        transaction_id,
        amount_fen: fen(amount),
        paid_at: beijing(day, 9) + chrono::Duration::minutes(5),
    };
    orders
        .execute(refunded, pay(format!("T1-{AWKWARD}"), 3000, 10), &staff)
        .await
        .unwrap();
    for (no, amount) in [("R1", 1000), ("R2", 500)] {
        let ask = OrderCommand::RequestRefund {
            out_refund_no: format!("{no}-{AWKWARD}"),
            amount_fen: fen(amount),
            reason: Some(AWKWARD.to_string()),
            now: beijing(10, 11),
        };
        orders.execute(refunded, ask, &staff).await.unwrap();
    }
    let done = OrderCommand::RecordRefundSuccess {
        out_refund_no: format!("R1-{AWKWARD}"),
        refund_id: Some(AWKWARD.to_string()),
        at: beijing(10, 12),
    };
    orders.execute(refunded, done, &staff).await.unwrap();
    let refused = OrderCommand::RecordRefundFailure {
        out_refund_no: format!("R2-{AWKWARD}"),
        reason: AWKWARD.to_string(),
        at: beijing(10, 12),
    };
    orders.execute(refunded, refused, &staff).await.unwrap();

    let in_review = orders
        .place(place(11), staff.clone(), beijing(11, 9))
        .await
        .unwrap()
        .id;
    orders
        .execute(in_review, pay(format!("T2-{AWKWARD}"), 2999, 11), &staff)
        .await
        .unwrap();
    refunded
}

/// A rebuild writes text exactly as the appends did — on PostgreSQL it goes through COPY's text
/// format, escaped by the rebuild — and exactly as it was given.
async fn awkward_text_survives_a_rebuild(backend: Backend) {
    let app = spawn_app(backend).await;
    let refunded = history_with_awkward_text(&app).await;
    let live = snapshot(&app).await;
    for table in paystream_projections::READ_MODEL_TABLES {
        assert!(!live[table.name].is_empty(), "{} is empty", table.name);
    }
    let order = live["orders_view"]
        .iter()
        .find(|row| row["id"] == json!(refunded.to_string()))
        .expect("the refunded order");
    assert_eq!(order["note"], json!(AWKWARD));
    assert_eq!(order["openid"], json!(format!("o-{AWKWARD}")));
    let items: Value = serde_json::from_str(order["items"].as_str().unwrap()).unwrap();
    assert_eq!(items[0]["name"], json!(AWKWARD));
    let refunds = &live["refunds_view"];
    assert_eq!(refunds.len(), 2, "{refunds:?}");
    assert!(refunds.iter().all(|r| r["reason"] == json!(AWKWARD)));
    assert!(refunds.iter().all(|r| !r["requested_by"].is_null()));
    assert!(refunds.iter().any(|r| r["refund_id"] == json!(AWKWARD)));
    assert!(refunds
        .iter()
        .any(|r| r["failure_reason"] == json!(AWKWARD)));
    // The refund refused and the money short: both orders in review, their reasons in words.
    let reasons: Vec<Value> = live["review_queue"]
        .iter()
        .map(|row| serde_json::from_str(row["reasons"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.to_string().contains("T2-")),
        "the reasons name the transaction: {reasons:?}"
    );

    damage(&app, &live).await;
    let store = paystream::event_store(&app.running().db);
    paystream_projections::rebuild(store.as_ref())
        .await
        .unwrap();
    let after = snapshot(&app).await;
    assert_same_read_models(&after, &live, "rebuilt differs from live");
}

on_both_backends!(
    a_rebuild_gives_back_the_live_read_models,
    the_command_rebuilds_and_says_how_much,
    awkward_text_survives_a_rebuild,
);

/// A rebuild while a running engine takes orders and payments (PostgreSQL, where engines share
/// one database): the appends wait for the rebuild and then project themselves onto the rebuilt
/// tables — nothing lost, nothing counted twice. The truth is a rebuild with nothing running.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_beside_live_appends_counts_each_event_once() {
    let app = std::sync::Arc::new(spawn_app(Backend::Postgres).await);
    history_through_the_api(&app).await;
    let (token, _) = app.login("busy-customer").await;

    let writer = {
        let (app, token) = (app.clone(), token.clone());
        tokio::spawn(async move {
            let mut orders = Vec::new();
            for _ in 0..30 {
                let order = app.place_order(&token, "tea", 2).await;
                pay(&app, &token, &order, "wechatpay_v3", TOTAL).await;
                orders.push(order);
            }
            orders
        })
    };
    let store = paystream::event_store(&app.running().db);
    let mut rebuilds = 0;
    while !writer.is_finished() {
        paystream_projections::rebuild(store.as_ref())
            .await
            .expect("a rebuild beside live appends");
        rebuilds += 1;
    }
    let orders = writer.await.unwrap();
    for order in &orders {
        wait_for_status(&app, &token, order, "paid").await;
    }
    assert!(
        rebuilds >= 2,
        "the rebuilds overlapped the appends: {rebuilds}"
    );

    let live = snapshot(&app).await;
    paystream_projections::rebuild(store.as_ref())
        .await
        .unwrap();
    let truth = snapshot(&app).await;
    assert_same_read_models(
        &live,
        &truth,
        "after rebuilds beside appends differs from a quiet rebuild",
    );
}
