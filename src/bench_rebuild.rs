//! `paystream bench rebuild`: `rebuild-projections` on a log of `--events` events (1,000,000 by
//! default), beside PostgreSQL's own `COPY events TO STDOUT` of the same rows, in the same run.
//!
//! A fresh database (created beside the one `--database-url` names, dropped afterwards) is filled
//! with a realistic history — orders placed, asked to pay, paid (a fifth on APIv2), some refunded
//! in part or in full, some closed unpaid, some paid the wrong amount and resolved or left in
//! review — built from the domain's own event types and loaded in bulk with `COPY FROM STDIN` in
//! the order a live log would hold it (by time, orders interleaved), in the real `events` table.
//!
//! The baseline is `COPY events TO STDOUT`, read to the end by this client: the fastest way
//! PostgreSQL hands the whole log to anyone, and the least any rebuild has to do. Then the
//! rebuild is timed twice: onto empty read models (as the backfill after a migration) and onto
//! full ones (as `rebuild-projections` on a live database).

use std::time::Instant;

use anyhow::{ensure, Context};
use chrono::{DateTime, Duration, TimeZone, Utc};
use futures::TryStreamExt;
use paystream_engine::db::Db;
use paystream_engine::money::Fen;
use paystream_engine::order::{CloseReason, OrderEvent, OrderLine, PayChannel, ReviewResolution};
use serde_json::json;
use sqlx::postgres::PgConnection;
use sqlx::Connection;
use uuid::Uuid;

use crate::bench::BenchArgs;
use crate::bench_relay::FreshDatabase;

pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    ensure!(
        args.database_url.starts_with("postgres"),
        "bench rebuild compares with PostgreSQL's COPY: --database-url must be PostgreSQL"
    );
    let database = FreshDatabase::create(&args.database_url).await?;
    let result = bench(&database.url, args.events).await;
    database.drop().await;
    result
}

async fn bench(url: &str, wanted: u64) -> anyhow::Result<()> {
    let db = paystream::connect(url).await?;
    let loaded = Instant::now();
    let (events, orders) = fill(url, wanted).await?;
    // Fresh statistics, as a database that has been running for a while has them.
    sqlx::query("VACUUM ANALYZE events")
        .execute(&db.pool)
        .await?;
    println!(
        "rebuild bench: {events} events of {orders} orders loaded in {:.1} s",
        loaded.elapsed().as_secs_f64()
    );

    let copy = copy_out(url).await?;
    let copy_rate = events as f64 / copy.seconds;
    println!(
        "COPY events TO STDOUT: {:.2} s, {copy_rate:.0} events/s ({:.0} MB)",
        copy.seconds,
        copy.bytes as f64 / 1e6
    );
    for what in ["onto empty read models", "onto full read models"] {
        let rate = rebuild_rate(&db, events, orders).await?;
        println!(
            "rebuild {what}: {rate:.0} events/s, ratio to COPY {:.2}",
            rate / copy_rate
        );
    }
    db.pool.close().await;
    Ok(())
}

/// One timed rebuild; checks that it replayed every event and wrote every order's row.
async fn rebuild_rate(db: &Db, events: u64, orders: u64) -> anyhow::Result<f64> {
    let store = paystream::event_store(db);
    let started = Instant::now();
    let rebuilt = paystream_projections::rebuild(store.as_ref()).await?;
    let seconds = started.elapsed().as_secs_f64();
    ensure!(
        rebuilt.events == events,
        "the rebuild replayed {} events of {events}",
        rebuilt.events
    );
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders_view")
        .fetch_one(&db.pool)
        .await?;
    ensure!(
        u64::try_from(rows) == Ok(orders),
        "the rebuild wrote {rows} orders of {orders}"
    );
    Ok(events as f64 / seconds)
}

struct Copied {
    seconds: f64,
    bytes: u64,
}

/// The baseline: every row of the log, as PostgreSQL's COPY hands it out, read to the end.
async fn copy_out(url: &str) -> anyhow::Result<Copied> {
    let mut conn = PgConnection::connect(url).await?;
    let started = Instant::now();
    let mut stream = conn.copy_out_raw("COPY events TO STDOUT").await?;
    let mut bytes = 0_u64;
    while let Some(chunk) = stream.try_next().await? {
        bytes += chunk.len() as u64;
    }
    drop(stream);
    let seconds = started.elapsed().as_secs_f64();
    conn.close().await?;
    Ok(Copied { seconds, bytes })
}

/// One event of the generated history.
struct Row {
    at: DateTime<Utc>,
    stream: String,
    version: i64,
    event: OrderEvent,
    actor: &'static str,
}

/// Loads orders until the log holds at least `wanted` events; returns (events, orders).
async fn fill(url: &str, wanted: u64) -> anyhow::Result<(u64, u64)> {
    let mut rows = Vec::with_capacity(wanted as usize + 8);
    let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let mut orders = 0_u64;
    while (rows.len() as u64) < wanted {
        // One order placed every 2 s: about a week of a busy shop per million events.
        let placed = start + Duration::seconds(2 * orders as i64);
        history(&mut rows, orders, placed);
        orders += 1;
    }
    // A live log holds events by time, the orders interleaved.
    rows.sort_by_key(|row| row.at);

    let mut data = Vec::with_capacity(rows.len() * 400);
    for row in &rows {
        let line = format!(
            "{}\t{}\t{}\t{}\t1\t{}\t{}\t{}\n",
            row.stream,
            row.version,
            Uuid::new_v4(),
            row.event.event_type(),
            row.event.to_data(),
            json!({ "actor": row.actor }),
            row.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        );
        // COPY's text format: a backslash starts an escape.
        data.extend_from_slice(line.replace('\\', "\\\\").as_bytes());
    }
    let mut conn = PgConnection::connect(url).await?;
    let mut copy = conn
        .copy_in_raw(
            "COPY events (stream_id, version, event_id, event_type, schema_version, data, \
             metadata, recorded_at) FROM STDIN",
        )
        .await?;
    for chunk in data.chunks(1 << 20) {
        copy.send(chunk).await?;
    }
    copy.finish().await.context("loading the events")?;
    conn.close().await?;
    Ok((rows.len() as u64, orders))
}

/// The events of order number `n`, placed at `placed`: a deterministic mix of outcomes.
fn history(rows: &mut Vec<Row>, n: u64, placed: DateTime<Utc>) {
    let id = Uuid::new_v4();
    let stream = format!("order-{id}");
    let fen = |v: i64| Fen::new(v).expect("a valid amount");
    let price = 500 + (n % 37) as i64 * 100;
    let quantity = 1 + (n % 3) as u32;
    let total = price * i64::from(quantity);
    let channel = if n % 5 == 0 {
        PayChannel::WechatpayV2
    } else {
        PayChannel::WechatpayV3
    };
    let mut events: Vec<(DateTime<Utc>, OrderEvent, &'static str)> = vec![(
        placed,
        OrderEvent::OrderPlaced {
            order_id: id,
            user_id: Uuid::from_u64_pair(0, n % 50_000),
            openid: format!("o-customer-{}", n % 50_000),
            out_trade_no: id.simple().to_string(),
            items: vec![
                OrderLine::priced("tea", "Jasmine tea", quantity, fen(price))
                    .expect("a valid line"),
            ],
            total_fen: fen(total),
            note: (n % 4 == 0).then(|| "less ice".to_string()),
            placed_at: placed,
            expires_at: placed + Duration::minutes(30),
            card: None,
        },
        "customer",
    )];
    let requested = placed + Duration::seconds(5);
    let paid_at = placed + Duration::seconds(40);
    let txn = format!("4200{n:016}");
    let outcome = n % 100;
    if outcome < 92 {
        events.push((
            requested,
            OrderEvent::PaymentRequested {
                channel,
                requested_at: requested,
            },
            "customer",
        ));
    }
    match outcome {
        // Paid, and perhaps refunded.
        0..=79 => {
            events.push((
                paid_at,
                OrderEvent::PaymentSucceeded {
                    channel,
                    transaction_id: txn,
                    amount_fen: fen(total),
                    paid_at,
                },
                "wechatpay:notify",
            ));
            let refund = match outcome {
                0..=9 => Some(total),
                10..=19 => Some(total / 2),
                _ => None,
            };
            if let Some(amount) = refund {
                let asked = paid_at + Duration::hours(2);
                let no = format!("R{}", id.simple());
                events.push((
                    asked,
                    OrderEvent::RefundRequested {
                        out_refund_no: no.clone(),
                        amount_fen: fen(amount),
                        reason: Some("customer asked".into()),
                        requested_at: asked,
                    },
                    "staff",
                ));
                events.push((
                    asked + Duration::minutes(3),
                    OrderEvent::RefundSucceeded {
                        out_refund_no: no,
                        refund_id: Some(format!("5030{n:016}")),
                        succeeded_at: asked + Duration::minutes(3),
                    },
                    "wechatpay:notify",
                ));
            }
        }
        // Paid the wrong amount: in review, half of them resolved by staff.
        80..=83 => {
            events.push((
                paid_at,
                OrderEvent::PaymentAmountMismatch {
                    channel,
                    transaction_id: txn,
                    expected_fen: fen(total),
                    received_fen: fen(total - 1),
                    paid_at,
                },
                "wechatpay:notify",
            ));
            if outcome % 2 == 0 {
                let at = paid_at + Duration::hours(1);
                events.push((
                    at,
                    OrderEvent::ReviewResolved {
                        resolution: ReviewResolution::Accepted,
                        note: Some("one fen short, waived".into()),
                        resolved_at: at,
                    },
                    "staff",
                ));
            }
        }
        // Closed unpaid: expired, or cancelled.
        84..=95 => {
            let at = placed + Duration::minutes(30);
            let reason = if outcome < 92 {
                CloseReason::Expired
            } else {
                CloseReason::CancelledByCustomer
            };
            events.push((
                at,
                OrderEvent::OrderClosed {
                    reason,
                    closed_at: at,
                },
                "expiry",
            ));
        }
        // Still open.
        _ => {}
    }
    for (version, (at, event, actor)) in (1..).zip(events) {
        rows.push(Row {
            at,
            stream: stream.clone(),
            version,
            event,
            actor,
        });
    }
}
