//! The log's side of a reconciliation: one Beijing day's payments and refunds, read from the
//! payments and refunds read models (kept in each append's own transaction, so they hold
//! exactly what the log holds).

use async_trait::async_trait;
use chrono::NaiveDate;
use paystream_engine::beijing;
use paystream_engine::db::{from_millis, millis, Db};
use paystream_engine::error::{Error, ErrorCode, Kind, Result};
use paystream_engine::money::Fen;
use paystream_engine::reconciliation::{DayLedger, LedgerDay, LedgerPayment, LedgerRefund};
use sqlx::Row;
use uuid::Uuid;

use crate::refunds::refund_status;

#[derive(Clone)]
pub struct Ledger {
    db: Db,
}

impl Ledger {
    pub fn new(db: Db) -> Ledger {
        Ledger { db }
    }
}

/// [start, end) of a Beijing day, in the read models' milliseconds.
fn day_range(date: NaiveDate) -> (i64, i64) {
    (
        millis(beijing::day_start(date)),
        millis(beijing::day_start(date + chrono::Days::new(1))),
    )
}

fn corrupt(what: &str) -> Error {
    Error::new(
        Kind::Internal,
        ErrorCode::InternalError,
        format!("read model holds an unreadable {what}"),
    )
}

#[async_trait]
impl DayLedger for Ledger {
    async fn day(&self, date: NaiveDate) -> Result<LedgerDay> {
        let (from, to) = day_range(date);
        // Every arrival of money, matched or not (a wrong amount is still money WeChat has).
        let rows = sqlx::query(
            "SELECT order_id, out_trade_no, transaction_id, amount_fen, paid_at FROM payments_view \
             WHERE happened_at >= $1 AND happened_at < $2 AND paid_at IS NOT NULL \
             AND transaction_id IS NOT NULL ORDER BY happened_at, order_id, attempt",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.db.pool)
        .await?;
        let mut payments = Vec::with_capacity(rows.len());
        for row in rows {
            let order_id: String = row.try_get("order_id")?;
            payments.push(LedgerPayment {
                order_id: Uuid::parse_str(&order_id).map_err(|_| corrupt("order id"))?,
                out_trade_no: row.try_get("out_trade_no")?,
                transaction_id: row.try_get("transaction_id")?,
                amount_fen: Fen::new(row.try_get("amount_fen")?)
                    .ok_or_else(|| corrupt("amount"))?,
                paid_at: from_millis(row.try_get("paid_at")?),
            });
        }
        let rows = sqlx::query(
            "SELECT out_refund_no, order_id, out_trade_no, amount_fen, status, requested_at \
             FROM refunds_view WHERE requested_at >= $1 AND requested_at < $2 \
             ORDER BY requested_at, out_refund_no",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.db.pool)
        .await?;
        let mut refunds = Vec::with_capacity(rows.len());
        for row in rows {
            let order_id: String = row.try_get("order_id")?;
            let status: String = row.try_get("status")?;
            refunds.push(LedgerRefund {
                order_id: Uuid::parse_str(&order_id).map_err(|_| corrupt("order id"))?,
                out_trade_no: row.try_get("out_trade_no")?,
                out_refund_no: row.try_get("out_refund_no")?,
                amount_fen: Fen::new(row.try_get("amount_fen")?)
                    .ok_or_else(|| corrupt("amount"))?,
                status: refund_status(&status).ok_or_else(|| corrupt("refund status"))?,
                requested_at: from_millis(row.try_get("requested_at")?),
            });
        }
        Ok(LedgerDay {
            date,
            payments,
            refunds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn a_beijing_day_starts_at_four_pm_utc_the_day_before() {
        let (from, to) = day_range(NaiveDate::from_ymd_opt(2026, 12, 2).unwrap());
        assert_eq!(
            from_millis(from),
            Utc.with_ymd_and_hms(2026, 12, 1, 16, 0, 0).unwrap()
        );
        assert_eq!(to - from, 86_400_000);
    }
}
