//! A lease row: at most one holder of a named duty (the outbox relay) across engine processes.
//! The holder renews it well within its lifetime; when the holder dies the lease runs out and
//! another process takes over. Works the same on PostgreSQL and SQLite.

use std::time::Duration;

use chrono::Utc;

use crate::db::{millis, Db};

#[derive(Clone)]
pub struct Lease {
    db: Db,
    name: String,
    holder: String,
    ttl: Duration,
}

impl Lease {
    /// `holder` must be unique per process (a random id).
    pub fn new(db: Db, name: impl Into<String>, holder: impl Into<String>, ttl: Duration) -> Lease {
        Lease {
            db,
            name: name.into(),
            holder: holder.into(),
            ttl,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Takes the lease if it is free or expired, or renews it if this holder has it. `true` when
    /// this holder holds it until `now + ttl`.
    pub async fn try_acquire(&self) -> Result<bool, sqlx::Error> {
        let now = millis(Utc::now());
        let until = now + self.ttl.as_millis() as i64;
        let done = sqlx::query(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at < $4",
        )
        .bind(&self.name)
        .bind(&self.holder)
        .bind(until)
        .bind(now)
        .execute(&self.db.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives the lease up at once (on shutdown), so another process need not wait for it to expire.
    pub async fn release(&self) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(&self.name)
            .bind(&self.holder)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }
}
