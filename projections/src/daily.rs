//! `daily_totals`: money per Beijing day (UTC+8) and channel, for the daily report. Kept by the
//! orders projection in the append's transaction, from what each appended event did to the order
//! (the domain's own `evolve`), so the totals count exactly the money the aggregate saw:
//!
//! - every payment that arrived adds to `gross_fen` on the Beijing day of its `paid_at` — also
//!   the ones that went to review (wrong amount, after close, twice): that money is on the
//!   merchant's account and in WeChat Pay's bill, and refunding it must lower net, not push it
//!   below zero. That part is also counted in `unmatched_fen`;
//! - `orders_paid` counts orders whose first money arrived that day;
//! - a refund adds to `refunded_fen` on the Beijing day WeChat Pay confirmed it
//!   (`RefundSucceeded`), on the channel of the order's first payment (where refunds go).
//!
//! Each event is projected once (in the transaction that stores it), so the increments are
//! exactly once; a rebuild clears the table and replays every stream.

use std::collections::BTreeMap;

use chrono::{Days, NaiveDate};
use serde::Serialize;
use sqlx::{AnyConnection, Row};

use paystream_engine::db::Db;
use paystream_engine::error::Result;
use paystream_engine::order::{Order, PayChannel, RefundStatus};

use crate::orders::placeholders;
use crate::rebuild::CopyText;

pub use paystream_engine::beijing::day as beijing_day;

/// Money of one day on one channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ChannelTotals {
    pub orders_paid: i64,
    pub gross_fen: i64,
    pub refunded_fen: i64,
    /// `gross_fen - refunded_fen`.
    pub net_fen: i64,
    /// The part of `gross_fen` that arrived outside the happy path (in review).
    pub unmatched_fen: i64,
}

impl ChannelTotals {
    pub(crate) fn add(&mut self, other: &ChannelTotals) {
        self.orders_paid += other.orders_paid;
        self.gross_fen += other.gross_fen;
        self.refunded_fen += other.refunded_fen;
        self.unmatched_fen += other.unmatched_fen;
        self.net_fen = self.gross_fen - self.refunded_fen;
    }
}

/// One day of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DayTotals {
    /// `YYYY-MM-DD`, a Beijing day.
    pub date: String,
    pub orders_paid: i64,
    pub gross_fen: i64,
    pub refunded_fen: i64,
    pub net_fen: i64,
    pub unmatched_fen: i64,
    /// Every channel, zero or not.
    pub by_channel: BTreeMap<&'static str, ChannelTotals>,
}

/// Increments per (Beijing day, channel), sorted: rows are always locked in the same order, so
/// two transactions adding to the same days wait for each other instead of deadlocking.
pub(crate) type Movements = BTreeMap<(NaiveDate, &'static str), ChannelTotals>;

/// Adds the money one event moved: the payments and confirmed refunds `after` has that `before`
/// had not.
pub(crate) fn record(moves: &mut Movements, before: Option<&Order>, after: &Order) {
    let earlier_payments = before.map_or(0, |o| o.payments.len());
    let earlier_open = before.map_or(0, |o| o.review.open.len());
    let flagged = after.review.open.len() > earlier_open;
    for (index, payment) in after.payments.iter().enumerate().skip(earlier_payments) {
        let entry = moves
            .entry((beijing_day(payment.paid_at), payment.channel.as_str()))
            .or_default();
        entry.gross_fen += payment.amount_fen.get();
        if index == 0 {
            entry.orders_paid += 1;
        }
        if flagged {
            entry.unmatched_fen += payment.amount_fen.get();
        }
    }
    let Some(channel) = after.payments.first().map(|p| p.channel) else {
        return;
    };
    for refund in &after.refunds {
        let was_done = before
            .and_then(|o| o.refund(&refund.out_refund_no))
            .is_some_and(|r| r.status == RefundStatus::Succeeded);
        if refund.status != RefundStatus::Succeeded || was_done {
            continue;
        }
        let at = refund.finished_at.unwrap_or(refund.requested_at);
        moves
            .entry((beijing_day(at), channel.as_str()))
            .or_default()
            .refunded_fen += refund.amount_fen.get();
    }
}

const VALUES: usize = 6;
/// Rows per statement, far below PostgreSQL's limit of bound parameters.
const ROWS_PER_STATEMENT: usize = 1_000;
const UPSERT: &str = "INSERT INTO daily_totals (day, channel, orders_paid, gross_fen, \
    refunded_fen, unmatched_fen) VALUES ";
const UPSERT_CONFLICT: &str = " ON CONFLICT (day, channel) DO UPDATE SET \
    orders_paid = daily_totals.orders_paid + excluded.orders_paid, \
    gross_fen = daily_totals.gross_fen + excluded.gross_fen, \
    refunded_fen = daily_totals.refunded_fen + excluded.refunded_fen, \
    unmatched_fen = daily_totals.unmatched_fen + excluded.unmatched_fen";

/// Adds `moves` to the totals (nothing to do, no statement).
pub(crate) async fn add(conn: &mut AnyConnection, moves: &Movements) -> Result<(), sqlx::Error> {
    let rows: Vec<_> = moves.iter().collect();
    for round in rows.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "{UPSERT}{}{UPSERT_CONFLICT}",
            placeholders(round.len(), VALUES)
        );
        let mut query = sqlx::query(&sql);
        for ((day, channel), totals) in round {
            query = query
                .bind(day.format("%Y-%m-%d").to_string())
                .bind(*channel)
                .bind(totals.orders_paid)
                .bind(totals.gross_fen)
                .bind(totals.refunded_fen)
                .bind(totals.unmatched_fen);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// `COPY` of `daily_totals` rows, in the column order [`copy_rows`] writes them.
pub(crate) const COPY_TOTALS: &str = "COPY daily_totals (day, channel, orders_paid, gross_fen, \
    refunded_fen, unmatched_fen) FROM STDIN";

/// A PostgreSQL rebuild: the totals of all the money it replayed, for [`COPY_TOTALS`] into the
/// emptied table — what [`add`] would have summed into it page by page.
pub(crate) fn copy_rows(moves: &Movements, out: &mut CopyText) {
    for ((day, channel), totals) in moves {
        out.text(&day.format("%Y-%m-%d").to_string());
        out.text(channel);
        out.int(totals.orders_paid);
        out.int(totals.gross_fen);
        out.int(totals.refunded_fen);
        out.int(totals.unmatched_fen);
        out.end_row();
    }
}

/// The most days one report covers.
pub const MAX_REPORT_DAYS: u64 = 366;

/// The daily report as staff read it.
#[derive(Clone)]
pub struct DailyTotals {
    db: Db,
}

impl DailyTotals {
    pub fn new(db: Db) -> DailyTotals {
        DailyTotals { db }
    }

    /// One item per Beijing day from `from` to `to` (both included, oldest first), days without
    /// money included as zeros, every channel listed. The caller bounds the range.
    pub async fn report(&self, from: NaiveDate, to: NaiveDate) -> Result<Vec<DayTotals>> {
        let (start, end) = (
            from.format("%Y-%m-%d").to_string(),
            to.format("%Y-%m-%d").to_string(),
        );
        let rows = sqlx::query(
            "SELECT day, channel, orders_paid, gross_fen, refunded_fen, unmatched_fen \
             FROM daily_totals WHERE day >= $1 AND day <= $2",
        )
        .bind(start)
        .bind(end)
        .fetch_all(&self.db.pool)
        .await?;
        let mut stored: BTreeMap<(String, String), ChannelTotals> = BTreeMap::new();
        for row in rows {
            let (gross, refunded): (i64, i64) =
                (row.try_get("gross_fen")?, row.try_get("refunded_fen")?);
            stored.insert(
                (row.try_get("day")?, row.try_get("channel")?),
                ChannelTotals {
                    orders_paid: row.try_get("orders_paid")?,
                    gross_fen: gross,
                    refunded_fen: refunded,
                    net_fen: gross - refunded,
                    unmatched_fen: row.try_get("unmatched_fen")?,
                },
            );
        }
        let mut items = Vec::new();
        let mut day = from;
        while day <= to {
            let date = day.format("%Y-%m-%d").to_string();
            let mut total = ChannelTotals::default();
            let mut by_channel = BTreeMap::new();
            for channel in [PayChannel::WechatpayV3, PayChannel::WechatpayV2] {
                let totals = stored
                    .get(&(date.clone(), channel.as_str().to_string()))
                    .copied()
                    .unwrap_or_default();
                total.add(&totals);
                by_channel.insert(channel.as_str(), totals);
            }
            items.push(DayTotals {
                date,
                orders_paid: total.orders_paid,
                gross_fen: total.gross_fen,
                refunded_fen: total.refunded_fen,
                net_fen: total.net_fen,
                unmatched_fen: total.unmatched_fen,
                by_channel,
            });
            let Some(next) = day.checked_add_days(Days::new(1)) else {
                break;
            };
            day = next;
        }
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn a_beijing_day_starts_at_16_utc() {
        let late = Utc.with_ymd_and_hms(2024, 5, 1, 15, 30, 0).unwrap();
        assert_eq!(
            beijing_day(late).to_string(),
            "2024-05-01",
            "23:30 in Beijing"
        );
        let next = Utc.with_ymd_and_hms(2024, 5, 1, 16, 0, 0).unwrap();
        assert_eq!(
            beijing_day(next).to_string(),
            "2024-05-02",
            "midnight in Beijing"
        );
    }
}
