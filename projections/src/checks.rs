//! What the reconciliation pollers should look at next: unpaid orders whose payment request is
//! old enough to ask WeChat Pay about, refunds still processing, expired orders to close — each
//! with its own back-off so that a stuck one is asked less and less often instead of every tick,
//! and each a job claimed with a lease, so that engine processes sharing a database do each one
//! once per due time (`src/jobs.rs` has the life of a job).

use chrono::{DateTime, Duration, Utc};
use paystream_engine::db::{millis, Backend, Db};
use paystream_engine::error::Result;
use uuid::Uuid;

/// The longest wait between two questions about the same thing.
const MAX_BACKOFF: Duration = Duration::hours(1);

/// How long a claimed job stays its holder's unless released sooner. Longer than one job's work
/// can take — a query at WeChat Pay per channel asked through (each up to four tries of 10 s,
/// `adapters/wechatpay/src/client`), then an append — so that no second process takes a job
/// still being worked on; a holder that dies delays its jobs by at most this much.
pub const JOB_LEASE: Duration = Duration::minutes(5);

/// What a job asks about, by the prefix of its subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Job {
    /// `pay:<order id>`: a payment with no notice, queried at WeChat Pay.
    Payment,
    /// `refund:<out_refund_no>`: a refund still processing, queried (or sent again).
    Refund,
    /// `close:<order id>`: an expired unpaid order, closed (at WeChat Pay first).
    Close,
}

impl Job {
    fn prefix(self) -> &'static str {
        match self {
            Job::Payment => "pay:%",
            Job::Refund => "refund:%",
            Job::Close => "close:%",
        }
    }

    /// Still worth doing, by the read models (a settled subject's row waits for `forget_settled`).
    fn open(self) -> &'static str {
        match self {
            Job::Payment => {
                "EXISTS (SELECT 1 FROM orders_view o WHERE o.id = substr(c.subject, 5) \
                 AND o.status = 'pending_payment' AND o.payment_requested_at IS NOT NULL)"
            }
            Job::Refund => {
                "EXISTS (SELECT 1 FROM refunds_view r WHERE r.out_refund_no = substr(c.subject, 8) \
                 AND r.status = 'processing')"
            }
            Job::Close => {
                "EXISTS (SELECT 1 FROM orders_view o WHERE o.id = substr(c.subject, 7) \
                 AND o.status = 'pending_payment')"
            }
        }
    }
}

/// The pollers' jobs, one `payment_checks` row per subject (`pay:<order id>`,
/// `refund:<out_refund_no>`, `close:<order id>`): created from the read models when due, claimed
/// with a lease by one process at a time, released with the next due time (the back-off) or
/// deleted once settled. Each `Checks` is one holder (a random id): give every process its own.
#[derive(Clone)]
pub struct Checks {
    db: Db,
    holder: String,
    lease: Duration,
}

impl Checks {
    pub fn new(db: Db) -> Checks {
        Checks {
            db,
            holder: format!("{}-{}", std::process::id(), Uuid::new_v4().simple()),
            lease: JOB_LEASE,
        }
    }

    /// The same with this holder id (unique per process).
    pub fn with_holder(self, holder: impl Into<String>) -> Checks {
        Checks {
            holder: holder.into(),
            ..self
        }
    }

    /// The same with claims held this long (at least as long as one job's work can take).
    pub fn with_lease(self, lease: Duration) -> Checks {
        Checks { lease, ..self }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Makes a job of every unpaid order whose payment was requested at least `after` ago and
    /// has none yet, due at once. Returns how many were made.
    pub async fn add_payment_jobs(&self, now: DateTime<Utc>, after: Duration) -> Result<u64> {
        let done = sqlx::query(
            "INSERT INTO payment_checks (subject, attempts, next_check_at) \
             SELECT 'pay:' || o.id, 0, o.payment_requested_at + $1 FROM orders_view o \
             WHERE o.status = 'pending_payment' AND o.payment_requested_at IS NOT NULL \
             AND o.payment_requested_at <= $2 \
             AND NOT EXISTS (SELECT 1 FROM payment_checks c WHERE c.subject = 'pay:' || o.id) \
             ON CONFLICT (subject) DO NOTHING",
        )
        .bind(after.num_milliseconds())
        .bind(millis(now - after))
        .execute(&self.db.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Makes a job of every refund still processing, requested at least `after` ago, that has none.
    pub async fn add_refund_jobs(&self, now: DateTime<Utc>, after: Duration) -> Result<u64> {
        let done = sqlx::query(
            "INSERT INTO payment_checks (subject, attempts, next_check_at) \
             SELECT 'refund:' || r.out_refund_no, 0, r.requested_at + $1 FROM refunds_view r \
             WHERE r.status = 'processing' AND r.requested_at <= $2 \
             AND NOT EXISTS (SELECT 1 FROM payment_checks c WHERE c.subject = 'refund:' || r.out_refund_no) \
             ON CONFLICT (subject) DO NOTHING",
        )
        .bind(after.num_milliseconds())
        .bind(millis(now - after))
        .execute(&self.db.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Claims the unpaid order due a payment query longest ago, if any, until `until`. Due and
    /// lease are judged as of `now`.
    pub async fn claim_payment(
        &self,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<Uuid>> {
        Ok(self
            .claim_next(Job::Payment, now, until)
            .await?
            .and_then(|subject| Uuid::parse_str(&subject["pay:".len()..]).ok()))
    }

    /// Claims the refund due a check longest ago, if any: (order, out_refund_no).
    pub async fn claim_refund(
        &self,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<(Uuid, String)>> {
        loop {
            let Some(subject) = self.claim_next(Job::Refund, now, until).await? else {
                return Ok(None);
            };
            let out_refund_no = subject["refund:".len()..].to_string();
            let order: Option<String> =
                sqlx::query_scalar("SELECT order_id FROM refunds_view WHERE out_refund_no = $1")
                    .bind(&out_refund_no)
                    .fetch_optional(&self.db.pool)
                    .await?;
            match order.and_then(|order| Uuid::parse_str(&order).ok()) {
                Some(order) => return Ok(Some((order, out_refund_no))),
                // Gone from the read model meanwhile (a rebuild): the next pass decides; the
                // other due refunds are still this pass's.
                None => self.done(&subject).await?,
            }
        }
    }

    /// One due, unleased, still open job of this kind, leased to this holder until `until`.
    /// PostgreSQL: `FOR UPDATE SKIP LOCKED`, so concurrent claimers neither wait on nor take the
    /// same row; SQLite has one writer, so one conditional UPDATE is atomic.
    async fn claim_next(
        &self,
        job: Job,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<String>> {
        let free = "c.subject LIKE $1 AND c.next_check_at <= $2 \
                    AND (c.leased_until IS NULL OR c.leased_until <= $2)";
        let sql = match self.db.backend {
            Backend::Postgres => format!(
                "WITH job AS MATERIALIZED (SELECT c.subject FROM payment_checks c \
                 WHERE {free} AND {open} ORDER BY c.next_check_at LIMIT 1 FOR UPDATE OF c SKIP LOCKED) \
                 UPDATE payment_checks SET leased_until = $3, leased_by = $4 FROM job \
                 WHERE payment_checks.subject = job.subject RETURNING payment_checks.subject",
                open = job.open()
            ),
            Backend::Sqlite => format!(
                "UPDATE payment_checks SET leased_until = $3, leased_by = $4 WHERE subject = \
                 (SELECT c.subject FROM payment_checks c WHERE {free} AND {open} \
                 ORDER BY c.next_check_at LIMIT 1) RETURNING subject",
                open = job.open()
            ),
        };
        let subject: Option<String> = sqlx::query_scalar(&sql)
            .bind(job.prefix())
            .bind(millis(now))
            .bind(millis(until))
            .bind(&self.holder)
            .fetch_optional(&self.db.pool)
            .await?;
        Ok(subject)
    }

    /// Claims the expiry close of `order_id` until `until` if the order is still unpaid and its
    /// close is due (it has no job yet: one is made, due `now`) and nobody holds it as of `now`.
    /// `true` when this holder now holds it.
    pub async fn claim_close(
        &self,
        order_id: Uuid,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        let subject = format!("close:{order_id}");
        sqlx::query(
            "INSERT INTO payment_checks (subject, attempts, next_check_at) \
             SELECT 'close:' || o.id, 0, $2 FROM orders_view o \
             WHERE o.id = $1 AND o.status = 'pending_payment' \
             ON CONFLICT (subject) DO NOTHING",
        )
        .bind(order_id.to_string())
        .bind(millis(now))
        .execute(&self.db.pool)
        .await?;
        let free = format!(
            "c.subject = $1 AND c.next_check_at <= $2 \
             AND (c.leased_until IS NULL OR c.leased_until <= $2) AND {}",
            Job::Close.open()
        );
        let sql = match self.db.backend {
            Backend::Postgres => format!(
                "UPDATE payment_checks SET leased_until = $3, leased_by = $4 WHERE subject = \
                 (SELECT c.subject FROM payment_checks c WHERE {free} FOR UPDATE OF c SKIP LOCKED)"
            ),
            Backend::Sqlite => format!(
                "UPDATE payment_checks SET leased_until = $3, leased_by = $4 WHERE subject = \
                 (SELECT c.subject FROM payment_checks c WHERE {free})"
            ),
        };
        let done = sqlx::query(&sql)
            .bind(&subject)
            .bind(millis(now))
            .bind(millis(until))
            .bind(&self.holder)
            .execute(&self.db.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Drops the job `subject` (done, nothing more to ask), unless another holder has it now.
    pub async fn done(&self, subject: &str) -> Result<()> {
        sqlx::query(
            "DELETE FROM payment_checks WHERE subject = $1 \
             AND (leased_by IS NULL OR leased_by = $2)",
        )
        .bind(subject)
        .bind(&self.holder)
        .execute(&self.db.pool)
        .await?;
        Ok(())
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

    /// Checks `subject` again at `at`, without counting this check toward its back-off, and
    /// releases it (unless another holder took it meanwhile, its lease having run out).
    pub async fn recheck_at(&self, subject: &str, at: DateTime<Utc>) -> Result<()> {
        let done = sqlx::query(
            "INSERT INTO payment_checks (subject, attempts, next_check_at) VALUES ($1, 0, $2) \
             ON CONFLICT (subject) DO UPDATE SET next_check_at = excluded.next_check_at, \
             leased_until = NULL, leased_by = NULL \
             WHERE payment_checks.leased_by IS NULL OR payment_checks.leased_by = $3",
        )
        .bind(subject)
        .bind(millis(at))
        .bind(&self.holder)
        .execute(&self.db.pool)
        .await?;
        self.released(subject, done.rows_affected());
        Ok(())
    }

    /// Notes that `subject` was checked now; the next check waits `base × 2^attempts` (at least
    /// a millisecond, so one pass never takes the same job twice). Releases it, unless another
    /// holder took it meanwhile (this holder's lease having run out): theirs is the newer word.
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
            .min(MAX_BACKOFF)
            .max(Duration::milliseconds(1));
        let done = sqlx::query(
            "INSERT INTO payment_checks (subject, attempts, next_check_at) VALUES ($1, $2, $3) \
             ON CONFLICT (subject) DO UPDATE SET attempts = excluded.attempts, \
             next_check_at = excluded.next_check_at, leased_until = NULL, leased_by = NULL \
             WHERE payment_checks.leased_by IS NULL OR payment_checks.leased_by = $4 \
             OR payment_checks.leased_until <= $5",
        )
        .bind(subject)
        .bind(attempts)
        .bind(millis(now + wait))
        .bind(&self.holder)
        .bind(millis(now))
        .execute(&self.db.pool)
        .await?;
        self.released(subject, done.rows_affected());
        Ok(())
    }

    fn released(&self, subject: &str, rows: u64) {
        if rows == 0 {
            // `pay:` and `close:` subjects name the order.
            let order_id = subject
                .strip_prefix("pay:")
                .or_else(|| subject.strip_prefix("close:"))
                .unwrap_or_default();
            tracing::warn!(
                order_id,
                subject,
                holder = %self.holder,
                "job released after its lease ran out and another holder took it"
            );
        }
    }
}
