//! What the reconciliation pollers should look at next: unpaid orders whose payment request is
//! old enough to ask WeChat Pay about, and refunds still processing — each with its own back-off
//! so that a stuck one is asked less and less often instead of every tick.

use chrono::{DateTime, Duration, Utc};
use paystream_engine::db::{millis, Db};
use paystream_engine::error::Result;
use sqlx::Row;
use uuid::Uuid;

/// The longest wait between two questions about the same thing.
const MAX_BACKOFF: Duration = Duration::hours(1);

#[derive(Clone)]
pub struct Checks {
    db: Db,
}

impl Checks {
    pub fn new(db: Db) -> Checks {
        Checks { db }
    }

    /// Unpaid orders whose payment was requested at least `after` ago and are due a check.
    pub async fn payments_due(
        &self,
        now: DateTime<Utc>,
        after: Duration,
        limit: i64,
    ) -> Result<Vec<Uuid>> {
        let rows = sqlx::query(
            "SELECT o.id FROM orders_view o LEFT JOIN payment_checks c ON c.subject = 'pay:' || o.id \
             WHERE o.status = 'pending_payment' AND o.payment_requested_at IS NOT NULL \
             AND o.payment_requested_at <= $1 AND (c.next_check_at IS NULL OR c.next_check_at <= $2) \
             ORDER BY o.payment_requested_at LIMIT $3",
        )
        .bind(millis(now - after))
        .bind(millis(now))
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        Ok(rows
            .iter()
            .filter_map(|r| r.try_get::<String, _>("id").ok())
            .filter_map(|id| Uuid::parse_str(&id).ok())
            .collect())
    }

    /// Refunds still processing, requested at least `after` ago, due a check: (order, out_refund_no).
    pub async fn refunds_due(
        &self,
        now: DateTime<Utc>,
        after: Duration,
        limit: i64,
    ) -> Result<Vec<(Uuid, String)>> {
        let rows = sqlx::query(
            "SELECT r.order_id, r.out_refund_no FROM refunds_view r \
             LEFT JOIN payment_checks c ON c.subject = 'refund:' || r.out_refund_no \
             WHERE r.status = 'processing' AND r.requested_at <= $1 \
             AND (c.next_check_at IS NULL OR c.next_check_at <= $2) \
             ORDER BY r.requested_at LIMIT $3",
        )
        .bind(millis(now - after))
        .bind(millis(now))
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        let mut due = Vec::with_capacity(rows.len());
        for row in rows {
            let order: String = row.try_get("order_id")?;
            if let Ok(order) = Uuid::parse_str(&order) {
                due.push((order, row.try_get("out_refund_no")?));
            }
        }
        Ok(due)
    }

    /// How many refunds are still processing (requested, no outcome from WeChat Pay yet).
    pub async fn refunds_in_flight(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM refunds_view WHERE status = 'processing'")
                .fetch_one(&self.db.pool)
                .await?,
        )
    }

    /// Drops the back-off of everything settled since it was last asked about (paid or closed
    /// orders — their payment queries and expiry closes —, refunds that succeeded or failed): nothing will ask about them again, and without
    /// this the table would keep a row for every quiet payment ever made.
    pub async fn forget_settled(&self) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM payment_checks WHERE \
             (subject LIKE 'pay:%' AND NOT EXISTS (SELECT 1 FROM orders_view o \
               WHERE o.id = substr(payment_checks.subject, 5) AND o.status = 'pending_payment')) \
             OR (subject LIKE 'close:%' AND NOT EXISTS (SELECT 1 FROM orders_view o \
               WHERE o.id = substr(payment_checks.subject, 7) AND o.status = 'pending_payment')) \
             OR (subject LIKE 'refund:%' AND NOT EXISTS (SELECT 1 FROM refunds_view r \
               WHERE r.out_refund_no = substr(payment_checks.subject, 8) AND r.status = 'processing'))",
        )
        .execute(&self.db.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Checks `subject` again at `at`, without counting this check toward its back-off.
    pub async fn recheck_at(&self, subject: &str, at: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "INSERT INTO payment_checks (subject, attempts, next_check_at) VALUES ($1, 0, $2) \
             ON CONFLICT (subject) DO UPDATE SET next_check_at = excluded.next_check_at",
        )
        .bind(subject)
        .bind(millis(at))
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Notes that `subject` was checked now; the next check waits `base × 2^attempts`.
    pub async fn checked(&self, subject: &str, now: DateTime<Utc>, base: Duration) -> Result<()> {
        let attempts: Option<i64> =
            sqlx::query_scalar("SELECT attempts FROM payment_checks WHERE subject = $1")
                .bind(subject)
                .fetch_optional(&self.db.pool)
                .await?;
        let attempts = attempts.unwrap_or(0) + 1;
        let wait = base
            .checked_mul(1 << attempts.clamp(0, 20))
            .unwrap_or(MAX_BACKOFF)
            .min(MAX_BACKOFF);
        sqlx::query(
            "INSERT INTO payment_checks (subject, attempts, next_check_at) VALUES ($1, $2, $3) \
             ON CONFLICT (subject) DO UPDATE SET attempts = excluded.attempts, \
             next_check_at = excluded.next_check_at",
        )
        .bind(subject)
        .bind(attempts)
        .bind(millis(now + wait))
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }
}
