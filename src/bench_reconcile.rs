//! `paystream bench reconcile`: reconciling one Beijing day of `--payments` payments against
//! WeChat Pay's bill of it, beside reading the same rows of the log alone, in the same run.
//!
//! The log's side is `--payments` paid orders' rows of one day in the payments read model (what
//! the reconciler reads; loaded with `COPY`, as a day of a busy shop). WeChat's side is the same
//! payments as WeChat's trade bill (CSV in its format: backquoted fields, yuan, the summary),
//! gzipped as WeChat sends it with `tar_type=GZIP`. Each run times:
//! - **plain read**: the day's payments read from the read model (`Ledger::day`), nothing else;
//! - **reconcile**: what `Reconciler::run` does once the bill is downloaded — un-gzip, SHA1,
//!   parse and check the bill (off the runtime) while the day is read from the log, then compare
//!   — with no difference to act on.

use std::io::Write;
use std::time::Instant;

use anyhow::{ensure, Context};
use chrono::{Duration, NaiveDate, Utc};
use paystream_engine::beijing;
use paystream_engine::reconciliation::{compare, DayLedger};
use paystream_projections::Ledger;
use sha1::{Digest, Sha1};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::bench::BenchArgs;
use crate::bench_relay::FreshDatabase;

const RUNS: usize = 3;

pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    ensure!(
        args.database_url.starts_with("postgres"),
        "bench reconcile: --database-url must be PostgreSQL"
    );
    let database = FreshDatabase::create(&args.database_url).await?;
    let result = bench(&database.url, args.payments).await;
    database.drop().await;
    result
}

/// One generated payment: (out_trade_no, transaction_id, amount in fen, paid at).
struct Paid {
    out_trade_no: String,
    transaction_id: String,
    amount_fen: i64,
    paid_at: chrono::DateTime<Utc>,
}

async fn bench(url: &str, n: usize) -> anyhow::Result<()> {
    let db = paystream::connect(url).await?;
    let date = NaiveDate::from_ymd_opt(2026, 12, 1).expect("a date");
    let midnight = beijing::day_start(date);
    let paid: Vec<Paid> = (0..n)
        .map(|i| {
            let id = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + i as u128);
            Paid {
                out_trade_no: id.simple().to_string(),
                transaction_id: format!("42000{:023}", i),
                amount_fen: 100 + (i as i64 * 37) % 99_900,
                paid_at: midnight + Duration::milliseconds((i as i64 * 86_400_000) / n as i64),
            }
        })
        .collect();

    let loaded = Instant::now();
    load_payments(url, &paid).await?;
    sqlx::query("VACUUM ANALYZE payments_view")
        .execute(&db.pool)
        .await?;
    let raw = bill_csv(&paid);
    let hash = hex::encode(Sha1::digest(&raw));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw)?;
    let download = gz.finish()?;
    println!(
        "reconcile bench: {n} payments of {date} loaded in {:.1} s; the bill is {:.1} MB ({:.1} MB gzipped)",
        loaded.elapsed().as_secs_f64(),
        raw.len() as f64 / 1e6,
        download.len() as f64 / 1e6
    );

    let ledger = Ledger::new(db.clone());
    for run in 1..=RUNS {
        let started = Instant::now();
        let day = ledger.day(date).await?;
        let plain = started.elapsed().as_secs_f64();
        ensure!(
            day.payments.len() == n,
            "read {} of {n}",
            day.payments.len()
        );
        drop(day);

        // As `Reconciler::run`: the bill read off the runtime while the log is read.
        let started = Instant::now();
        let (bytes, sha1) = (download.clone(), hash.clone());
        let parse = tokio::task::spawn_blocking(move || {
            let bill = paystream_wechatpay::client::read_trade_bill(date, bytes, Some(&sha1));
            (bill, started.elapsed().as_secs_f64())
        });
        let (parsed, day) = tokio::join!(parse, ledger.day(date));
        let (bill, parsed) = parsed?;
        let (bill, day) = (bill.context("the generated bill")?, day?);
        let findings = compare(&bill, &day);
        let reconcile = started.elapsed().as_secs_f64();
        ensure!(
            bill.payments.len() == n && findings.is_empty(),
            "{} payments in the bill, {} findings",
            bill.payments.len(),
            findings.len()
        );
        println!(
            "run {run}: plain read {plain:.3} s; reconcile {reconcile:.3} s (bill {parsed:.3} s); \
             ratio {:.2}",
            reconcile / plain
        );
    }
    db.pool.close().await;
    Ok(())
}

/// The log's rows of the day, as the payments projection keeps them for paid orders.
async fn load_payments(url: &str, paid: &[Paid]) -> anyhow::Result<()> {
    let mut data = Vec::with_capacity(paid.len() * 200);
    for p in paid {
        let at = p.paid_at.timestamp_millis();
        writeln!(
            data,
            "{}\t1\t{}\topenid-{}\twechatpay_v3\tsucceeded\t{}\t{}\t{}\t{at}\t\\N\t{at}",
            Uuid::parse_str(&p.out_trade_no)?,
            p.out_trade_no,
            &p.out_trade_no[..8],
            p.transaction_id,
            p.amount_fen,
            at - 60_000,
        )?;
    }
    let mut conn = PgConnection::connect(url).await?;
    let mut copy = conn
        .copy_in_raw(
            "COPY payments_view (order_id, attempt, out_trade_no, openid, channel, status, \
             transaction_id, amount_fen, requested_at, paid_at, closed_at, happened_at) FROM STDIN",
        )
        .await?;
    for chunk in data.chunks(1 << 20) {
        copy.send(chunk).await?;
    }
    copy.finish().await.context("loading the payments")?;
    conn.close().await?;
    Ok(())
}

fn yuan(fen: i64) -> String {
    format!("{}.{:02}", fen / 100, fen % 100)
}

/// The payments as WeChat's trade bill (bill_type=ALL): every field after a backquote, the
/// summary after the rows.
fn bill_csv(paid: &[Paid]) -> Vec<u8> {
    let mut out = Vec::with_capacity(paid.len() * 260);
    out.extend_from_slice(
        "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,\
         交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,\
         充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,\
         费率备注\r\n"
            .as_bytes(),
    );
    let (mut total, mut fees) = (0_i64, 0_i64);
    for p in paid {
        // 0.6 %, to the fen, half up; written with five decimals as WeChat does.
        let fee = (p.amount_fen * 6 + 500) / 1000;
        total += p.amount_fen;
        fees += fee;
        let amount = yuan(p.amount_fen);
        let _ = write!(
            out,
            "`{},`wx2421b1c4370ec43b,`1900000109,`0,`,`{},`{},`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`JSAPI,\
             `SUCCESS,`OTHERS,`CNY,`{amount},`0.00,`0,`0,`0.00,`0.00,`,`,`茶叶,`,`{}.{:03}00,\
             `0.60%,`{amount},`0.00,`\r\n",
            beijing::datetime(p.paid_at),
            p.transaction_id,
            p.out_trade_no,
            fee / 100,
            (fee % 100) * 10,
        );
    }
    let _ = write!(
        out,
        "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\r\n\
         `{},`{},`0.00,`0.00,`{}.{:03}00,`{},`0.00\r\n",
        paid.len(),
        yuan(total),
        fees / 100,
        (fees % 100) * 10,
        yuan(total),
    );
    out
}
