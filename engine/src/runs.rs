//! Scheduled runs done once across engine processes on one database: a run key (say
//! `reconcile:2026-12-01`) is claimed with a lease by exactly one process, retaken by another when
//! its holder dies (the lease runs out) before finishing, and never run again once finished.
//!
//! ```text
//! let runs = Runs::new(db.clone());
//! if runs.claim_run("reconcile:2026-12-01", Duration::from_secs(600)).await? {
//!     do_the_work().await?;                          // within the lease (or renew: claim again)
//!     runs.finish_run("reconcile:2026-12-01").await?;
//! }
//! ```
//!
//! Claiming again while holding the run renews the lease (a long run claims again now and then).
//! A run that failed may be given back with [`Runs::release_run`] so that the next try (here or
//! elsewhere) need not wait for the lease, or with [`Runs::release_run_until`] so that no try
//! (here or elsewhere) comes before a pause. Rows live in `job_runs` (migration 0008); the same
//! portable SQL runs on PostgreSQL and SQLite.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::db::{millis, Db};
use crate::error::Result;

#[derive(Clone)]
pub struct Runs {
    db: Db,
    holder: String,
}

impl Runs {
    /// With a fresh holder id: one per process (or per `Runs`; each is a distinct holder).
    pub fn new(db: Db) -> Runs {
        Runs::with_holder(
            db,
            format!("{}-{}", std::process::id(), Uuid::new_v4().simple()),
        )
    }

    /// `holder` must be unique per process.
    pub fn with_holder(db: Db, holder: impl Into<String>) -> Runs {
        Runs {
            db,
            holder: holder.into(),
        }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Takes the run `key` for `lease` from now; `true` when this holder now holds it (and should
    /// do it). `false` when it is finished, or held by another holder whose lease has not run out.
    pub async fn claim_run(&self, key: &str, lease: Duration) -> Result<bool> {
        self.claim_run_at(key, lease, Utc::now()).await
    }

    /// [`Runs::claim_run`] as of `now`.
    pub async fn claim_run_at(
        &self,
        key: &str,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let lease = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        let until = now
            .checked_add_signed(lease)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        // One statement: on PostgreSQL two claimers of one key queue on the row for an instant
        // and the second sees the first's lease; SQLite has one writer anyway.
        let done = sqlx::query(
            "INSERT INTO job_runs (run_key, leased_by, leased_until, claims, claimed_at) \
             VALUES ($1, $2, $3, 1, $4) \
             ON CONFLICT (run_key) DO UPDATE SET leased_by = excluded.leased_by, \
             leased_until = excluded.leased_until, claimed_at = excluded.claimed_at, \
             claims = job_runs.claims + (CASE WHEN job_runs.leased_by = excluded.leased_by THEN 0 ELSE 1 END) \
             WHERE job_runs.finished_at IS NULL \
             AND (job_runs.leased_by = excluded.leased_by OR job_runs.leased_until <= $4)",
        )
        .bind(key)
        .bind(&self.holder)
        .bind(millis(until))
        .bind(millis(now))
        .execute(&self.db.pool)
        .await?;
        let claimed = done.rows_affected() == 1;
        if claimed {
            tracing::debug!(run = key, holder = %self.holder, "run claimed");
        }
        Ok(claimed)
    }

    /// Marks the run done: nobody claims it again. `false` when this holder no longer held it
    /// (its lease ran out and another took it: the run may have been done twice).
    pub async fn finish_run(&self, key: &str) -> Result<bool> {
        self.finish_run_at(key, Utc::now()).await
    }

    /// [`Runs::finish_run`] as of `now`.
    pub async fn finish_run_at(&self, key: &str, now: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE job_runs SET finished_at = $1 \
             WHERE run_key = $2 AND leased_by = $3 AND finished_at IS NULL",
        )
        .bind(millis(now))
        .bind(key)
        .bind(&self.holder)
        .execute(&self.db.pool)
        .await?;
        let finished = done.rows_affected() == 1;
        if finished {
            tracing::info!(run = key, "run finished");
        } else {
            tracing::warn!(run = key, holder = %self.holder, "run finished after its lease passed to another holder");
        }
        Ok(finished)
    }

    /// Gives an unfinished run back (it failed; try again soon): the next claim, by anyone,
    /// takes it at once instead of waiting for the lease.
    pub async fn release_run(&self, key: &str) -> Result<()> {
        self.release_at(key, 0, &self.holder).await
    }

    /// Gives an unfinished run back to be tried again from `until` on, by anyone — this holder
    /// too, which holding the lease would otherwise let claim it again at once (a back-off
    /// after a failure, shared by every process).
    pub async fn release_run_until(&self, key: &str, until: DateTime<Utc>) -> Result<()> {
        // Held by nobody until then: no claimer's id matches the empty one.
        self.release_at(key, millis(until), "").await
    }

    async fn release_at(&self, key: &str, until: i64, held_by: &str) -> Result<()> {
        sqlx::query(
            "UPDATE job_runs SET leased_until = $1, leased_by = $2 \
             WHERE run_key = $3 AND leased_by = $4 AND finished_at IS NULL",
        )
        .bind(until)
        .bind(held_by)
        .bind(key)
        .bind(&self.holder)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// When the run was finished, if it was.
    pub async fn finished_at(&self, key: &str) -> Result<Option<DateTime<Utc>>> {
        let at: Option<Option<i64>> =
            sqlx::query_scalar("SELECT finished_at FROM job_runs WHERE run_key = $1")
                .bind(key)
                .fetch_optional(&self.db.pool)
                .await?;
        Ok(at.flatten().map(crate::db::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Backend;
    use crate::testing::TestDb;

    const LEASE: Duration = Duration::from_secs(60);

    async fn exactly_one_claims_and_a_finished_run_stays_done(backend: Backend) {
        let test_db = TestDb::new(backend).await;
        let db = test_db.db().await;
        let a = Runs::new(db.clone());
        let b = Runs::new(db.clone());
        let now = Utc::now();
        let key = "reconcile:2026-12-01";

        assert!(a.claim_run_at(key, LEASE, now).await.unwrap());
        assert!(!b.claim_run_at(key, LEASE, now).await.unwrap(), "held by a");
        assert!(
            a.claim_run_at(key, LEASE, now + chrono::Duration::seconds(30))
                .await
                .unwrap(),
            "the holder renews"
        );
        assert!(
            !b.claim_run_at(key, LEASE, now + chrono::Duration::seconds(61))
                .await
                .unwrap(),
            "renewed until 90 s"
        );
        assert!(b
            .claim_run_at("reconcile:2026-12-02", LEASE, now)
            .await
            .unwrap());
        assert_eq!(a.finished_at(key).await.unwrap(), None);
        assert!(a.finish_run_at(key, now).await.unwrap());
        assert!(a.finished_at(key).await.unwrap().is_some());
        for claimer in [&a, &b] {
            assert!(
                !claimer
                    .claim_run_at(key, LEASE, now + chrono::Duration::days(2))
                    .await
                    .unwrap(),
                "finished: never again"
            );
        }
        db.pool.close().await;
    }

    async fn a_dead_holders_run_is_retaken_after_its_lease(backend: Backend) {
        let test_db = TestDb::new(backend).await;
        let db = test_db.db().await;
        let dead = Runs::new(db.clone());
        let b = Runs::new(db.clone());
        let now = Utc::now();
        let key = "reconcile:2026-12-01";
        assert!(dead.claim_run_at(key, LEASE, now).await.unwrap());
        assert!(!b
            .claim_run_at(key, LEASE, now + chrono::Duration::seconds(59))
            .await
            .unwrap());
        assert!(b
            .claim_run_at(key, LEASE, now + chrono::Duration::seconds(60))
            .await
            .unwrap());
        assert!(
            !dead.finish_run_at(key, now).await.unwrap(),
            "the dead holder lost it"
        );
        assert!(b.finish_run_at(key, now).await.unwrap());
        let claims: i64 = sqlx::query_scalar("SELECT claims FROM job_runs WHERE run_key = $1")
            .bind(key)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(claims, 2);

        // A failed run given back is taken at once.
        let other = "reconcile:2026-12-02";
        assert!(b.claim_run_at(other, LEASE, now).await.unwrap());
        b.release_run(other).await.unwrap();
        assert!(dead.claim_run_at(other, LEASE, now).await.unwrap());

        // A failed run given back for a pause is taken by nobody before it ends, the holder
        // that gave it back included.
        let paused = "reconcile:2026-12-03";
        let until = now + chrono::Duration::minutes(5);
        assert!(b.claim_run_at(paused, LEASE, now).await.unwrap());
        b.release_run_until(paused, until).await.unwrap();
        let before = until - chrono::Duration::seconds(1);
        assert!(!b.claim_run_at(paused, LEASE, before).await.unwrap());
        assert!(!dead.claim_run_at(paused, LEASE, before).await.unwrap());
        assert!(dead.claim_run_at(paused, LEASE, until).await.unwrap());
        db.pool.close().await;
    }

    async fn concurrent_claimers_take_it_once(backend: Backend) {
        let test_db = TestDb::new(backend).await;
        let db = test_db.db().await;
        let now = Utc::now();
        let mut tasks = Vec::new();
        for _ in 0..16 {
            // Each its own pool where the backend allows several writers.
            let db = match backend {
                Backend::Postgres => test_db.db().await,
                Backend::Sqlite => db.clone(),
            };
            tasks.push(tokio::spawn(async move {
                let runs = Runs::new(db.clone());
                let got = runs
                    .claim_run_at("reconcile:2026-12-01", LEASE, now)
                    .await
                    .unwrap();
                if backend == Backend::Postgres {
                    db.pool.close().await;
                }
                got
            }));
        }
        let mut winners = 0;
        for task in tasks {
            winners += usize::from(task.await.unwrap());
        }
        assert_eq!(winners, 1);
        db.pool.close().await;
    }

    macro_rules! on_both {
        ($($name:ident),*) => {
            mod postgres { $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() { super::$name(crate::db::Backend::Postgres).await }
            )* }
            mod sqlite { $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() { super::$name(crate::db::Backend::Sqlite).await }
            )* }
        };
    }

    on_both!(
        exactly_one_claims_and_a_finished_run_stays_done,
        a_dead_holders_run_is_retaken_after_its_lease,
        concurrent_claimers_take_it_once
    );
}
