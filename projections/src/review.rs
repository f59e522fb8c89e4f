//! `review_queue`: the orders awaiting a staff decision, each with why in words. Kept by the
//! orders projection (same transaction as the append) from the order's own `review` state, so the
//! queue says exactly what the aggregate will let staff resolve.

use serde::Serialize;
use serde_json::{json, Value};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use uuid::Uuid;

use paystream_engine::db::{from_millis, millis, Db};
use paystream_engine::error::Result;
use paystream_engine::order::{Order, OrderStatus};

use crate::orders::{internal, placeholders, rfc3339, Page, Projected};

/// One order in the queue.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReviewEntry {
    pub order_id: Uuid,
    pub out_trade_no: String,
    pub status: OrderStatus,
    /// Every open reason in words, oldest first.
    pub reason: String,
    /// The same, itemised: `{"kind", "text", "at", …details}`.
    pub reasons: Value,
    /// When the oldest open reason arose.
    pub since: String,
    pub paid_fen: i64,
    pub total_fen: i64,
}

/// An order's queue row, if it has anything open.
pub(crate) struct QueueRow<'a> {
    pub(crate) order: &'a Order,
    pub(crate) reasons: String,
    pub(crate) since: i64,
    pub(crate) changed_at: i64,
}

pub(crate) fn row_of(projected: &Projected) -> Result<Option<QueueRow<'_>>, sqlx::Error> {
    let order = &projected.order;
    let Some(since) = order.review.since() else {
        return Ok(None);
    };
    let reasons: Vec<Value> = order
        .review
        .open
        .iter()
        .map(|item| {
            let mut value = serde_json::to_value(item).unwrap_or_else(|_| json!({}));
            value["text"] = Value::String(item.reason.describe());
            value
        })
        .collect();
    let reasons =
        serde_json::to_string(&reasons).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    Ok(Some(QueueRow {
        order,
        reasons,
        since: millis(since),
        changed_at: projected.changed_at,
    }))
}

const VALUES: usize = 9;
/// Rows per statement, far below both databases' limits of bound parameters.
const ROWS_PER_STATEMENT: usize = 1_000;
const UPSERT: &str = "INSERT INTO review_queue (order_id, out_trade_no, status, reason, reasons, \
    since, paid_fen, total_fen, updated_at) VALUES ";
const UPSERT_CONFLICT: &str = " ON CONFLICT (order_id) DO UPDATE SET status = excluded.status, \
    reason = excluded.reason, reasons = excluded.reasons, since = excluded.since, \
    paid_fen = excluded.paid_fen, updated_at = excluded.updated_at";

/// Brings the queue rows of `orders` in line with their review state. `touched` are the orders
/// whose review may have been closed by what was just appended (their rows may have to go);
/// others with nothing open have no row to remove, and are not asked about (one statement fewer
/// on every append).
pub(crate) async fn write(
    conn: &mut AnyConnection,
    orders: &[Projected],
    touched: &[Uuid],
) -> Result<(), sqlx::Error> {
    let mut open = Vec::new();
    for order in orders {
        if let Some(row) = row_of(order)? {
            open.push(row);
        }
    }
    let closed: Vec<String> = touched
        .iter()
        .filter(|id| !open.iter().any(|row| row.order.id == **id))
        .map(Uuid::to_string)
        .collect();
    if !closed.is_empty() {
        let sql = format!(
            "DELETE FROM review_queue WHERE order_id IN ({})",
            (1..=closed.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let query = closed
            .iter()
            .fold(sqlx::query(&sql), |query, id| query.bind(id.as_str()));
        query.execute(&mut *conn).await?;
    }
    for round in open.chunks(ROWS_PER_STATEMENT) {
        upsert(conn, round).await?;
    }
    Ok(())
}

async fn upsert(conn: &mut AnyConnection, rows: &[QueueRow<'_>]) -> Result<(), sqlx::Error> {
    let sql = format!(
        "{UPSERT}{}{UPSERT_CONFLICT}",
        placeholders(rows.len(), VALUES)
    );
    let mut query = sqlx::query(&sql);
    for row in rows {
        query = query
            .bind(row.order.id.to_string())
            .bind(row.order.out_trade_no.clone())
            .bind(row.order.status.as_str())
            .bind(row.order.review.describe())
            .bind(row.reasons.clone())
            .bind(row.since)
            .bind(row.order.paid_fen().get())
            .bind(row.order.total_fen.get())
            .bind(row.changed_at);
    }
    query.execute(&mut *conn).await?;
    Ok(())
}

fn decode(row: &AnyRow) -> Result<ReviewEntry> {
    let id: String = row.try_get("order_id")?;
    let status: String = row.try_get("status")?;
    let reasons: String = row.try_get("reasons")?;
    Ok(ReviewEntry {
        order_id: Uuid::parse_str(&id).map_err(internal)?,
        out_trade_no: row.try_get("out_trade_no")?,
        status: OrderStatus::parse(&status)
            .ok_or_else(|| internal("bad status in review_queue"))?,
        reason: row.try_get("reason")?,
        reasons: serde_json::from_str(&reasons).map_err(internal)?,
        since: rfc3339(from_millis(row.try_get("since")?)),
        paid_fen: row.try_get("paid_fen")?,
        total_fen: row.try_get("total_fen")?,
    })
}

/// The queue as staff read it.
#[derive(Clone)]
pub struct ReviewQueue {
    db: Db,
}

impl ReviewQueue {
    pub fn new(db: Db) -> ReviewQueue {
        ReviewQueue { db }
    }

    /// Orders awaiting a decision, longest waiting first. `page` starts at 1.
    pub async fn list(&self, page: u32, per_page: u32) -> Result<Page<ReviewEntry>> {
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM review_queue")
            .fetch_one(&self.db.pool)
            .await?;
        let page = page.max(1);
        let per_page = per_page.clamp(1, 100);
        let offset = i64::from(page - 1) * i64::from(per_page);
        let rows = sqlx::query(&format!(
            "SELECT order_id, out_trade_no, status, reason, reasons, since, paid_fen, total_fen \
             FROM review_queue ORDER BY since, order_id LIMIT {per_page} OFFSET {offset}"
        ))
        .fetch_all(&self.db.pool)
        .await?;
        Ok(Page {
            page,
            per_page,
            total_items: total,
            total_pages: (total + i64::from(per_page) - 1) / i64::from(per_page),
            items: rows.iter().map(decode).collect::<Result<_>>()?,
        })
    }
}
