//! One database handle for both backends.
//!
//! sqlx's `Any` driver lets every read model and repository share one set of portable queries; the
//! few places where the backends really differ (the event store's append and follow queries) pick
//! their SQL by [`Backend`]. Compile-checked `query!` macros are not available through `Any`; the
//! integration suites run every query against both databases instead.

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Connection, Executor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn of_url(url: &str) -> Option<Backend> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else {
            None
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("DATABASE_URL must start with postgres:// or sqlite: (got scheme {0:?})")]
    UnsupportedUrl(String),
    #[error("cannot connect to the database")]
    Connect(#[source] sqlx::Error),
    #[error("migrations failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// A pooled PostgreSQL connection idle for this long is checked before it is used again.
const RECHECK_IDLE_AFTER: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
}

impl Db {
    pub async fn connect(url: &str) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url).ok_or_else(|| {
            // Only the scheme: the rest may hold a password.
            DbError::UnsupportedUrl(url.split(':').next().unwrap_or_default().to_string())
        })?;
        let pool = match backend {
            Backend::Postgres => {
                let options = AnyConnectOptions::from_str(url).map_err(DbError::Connect)?;
                AnyPoolOptions::new()
                    .max_connections(32)
                    .acquire_timeout(Duration::from_secs(10))
                    // sqlx pings a connection when it comes back to the pool and, by default,
                    // again when it hands it out: the second round trip was an eighth of the
                    // engine's CPU under load. A connection checked a moment ago is alive; only
                    // one that sat idle (across a database restart, say) is checked again, and
                    // replaced when the check fails.
                    .test_before_acquire(false)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            // Every query here touches a handful of rows by index. Without
                            // fresh statistics (autovacuum off, a table that just grew) the
                            // planner may still pick a parallel plan, and each such query
                            // then forks worker processes: milliseconds of CPU for microseconds
                            // of work, measured at a third of PostgreSQL's time under load.
                            conn.execute("SET max_parallel_workers_per_gather = 0")
                                .await?;
                            Ok(())
                        })
                    })
                    .before_acquire(|conn, meta| {
                        Box::pin(async move {
                            if meta.idle_for < RECHECK_IDLE_AFTER {
                                return Ok(true);
                            }
                            Ok(conn.ping().await.is_ok())
                        })
                    })
                    .connect_with(options)
                    .await
                    .map_err(DbError::Connect)?
            }
            Backend::Sqlite => {
                let options =
                    AnyConnectOptions::from_str(&sqlite_url(url)).map_err(DbError::Connect)?;
                // SQLite has one writer. A single pooled connection serialises writers in the pool
                // instead of failing them with SQLITE_BUSY when a read transaction upgrades; the
                // embedded store is for one engine process, so this costs no real throughput.
                AnyPoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .acquire_timeout(Duration::from_secs(20))
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            // FULL: a committed payment must survive a power cut.
                            conn.execute(
                                "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; \
                                 PRAGMA foreign_keys=ON; PRAGMA busy_timeout=10000;",
                            )
                            .await?;
                            Ok(())
                        })
                    })
                    .connect_with(options)
                    .await
                    .map_err(DbError::Connect)?
            }
        };
        Ok(Db { pool, backend })
    }

    pub async fn migrate(&self) -> Result<(), DbError> {
        match self.backend {
            Backend::Postgres => {
                sqlx::migrate!("../migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
            Backend::Sqlite => {
                sqlx::migrate!("../migrations/sqlite")
                    .run(&self.pool)
                    .await?
            }
        }
        Ok(())
    }

    /// A transaction that will write. On SQLite it takes the write lock up front (`BEGIN
    /// IMMEDIATE`): a deferred transaction that reads first and upgrades later fails with
    /// SQLITE_BUSY when another process wrote meanwhile, instead of waiting its turn.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Postgres => self.pool.begin().await,
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
        }
    }

    /// `true` when the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }
}

/// The embedded default must create its file on first start; sqlx only does so with `mode=rwc`.
fn sqlite_url(url: &str) -> String {
    if url.contains("mode=") || url.contains(":memory:") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

/// Milliseconds since the Unix epoch: how read models store instants, portable across backends.
pub fn millis(at: chrono::DateTime<chrono::Utc>) -> i64 {
    at.timestamp_millis()
}

pub fn from_millis(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_gain_create_mode_once() {
        assert_eq!(sqlite_url("sqlite://a.db"), "sqlite://a.db?mode=rwc");
        assert_eq!(
            sqlite_url("sqlite://a.db?x=1"),
            "sqlite://a.db?x=1&mode=rwc"
        );
        assert_eq!(sqlite_url("sqlite://a.db?mode=ro"), "sqlite://a.db?mode=ro");
    }

    #[test]
    fn backend_is_read_from_the_scheme() {
        assert_eq!(Backend::of_url("postgres://x/y"), Some(Backend::Postgres));
        assert_eq!(Backend::of_url("postgresql://x/y"), Some(Backend::Postgres));
        assert_eq!(Backend::of_url("sqlite://p.db"), Some(Backend::Sqlite));
        assert_eq!(Backend::of_url("mysql://x"), None);
    }
}
