//! The event store over SQL, one implementation for both backends. The dialects differ only in
//! casts and, fundamentally, in how the whole log is followed (see [`PG_READ_ALL`]).

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use uuid::Uuid;

use super::group_commit::GroupCommit;
use super::{
    Appended, Checkpoint, EventStore, ExpectedVersion, InlineProjection, NewEvent, RecordedEvent,
    StoreError,
};
use crate::db::{Backend, Db};

pub(super) const PG_COLUMNS: &str =
    "global_position, stream_id, version, event_id::text AS event_id, \
    event_type, schema_version::bigint AS schema_version, data::text AS data, \
    metadata::text AS metadata, \
    to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS recorded_at, \
    transaction_id::text::bigint AS tx";

const SQLITE_COLUMNS: &str = "global_position, stream_id, version, event_id, event_type, \
    schema_version, data, metadata, recorded_at, 0 AS tx";

/// Following the log on PostgreSQL: a position is taken from the sequence at insert but becomes
/// visible only at commit, so a reader that remembers "last position seen" skips a row whose
/// transaction commits after a later one. Rows are therefore ordered by the writing transaction's
/// id and only read once every transaction that could still commit an earlier id has finished
/// (`transaction_id < xmin` of the current snapshot).
const PG_READ_ALL: &str = "WHERE (transaction_id, global_position) > (($1::text)::xid8, $2) \
    AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
    ORDER BY transaction_id, global_position LIMIT $3";

/// SQLite has a single writer: positions become visible in order, so they alone suffice.
const SQLITE_READ_ALL: &str = "WHERE global_position > $2 ORDER BY global_position LIMIT $3";

fn columns(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => PG_COLUMNS,
        Backend::Sqlite => SQLITE_COLUMNS,
    }
}

fn insert_sql(backend: Backend) -> String {
    match backend {
        Backend::Postgres => format!(
            "INSERT INTO events (stream_id, version, event_id, event_type, schema_version, data, \
             metadata, recorded_at) VALUES ($1, $2, $3::uuid, $4, $5, $6::jsonb, $7::jsonb, \
             $8::timestamptz) RETURNING {PG_COLUMNS}"
        ),
        Backend::Sqlite => format!(
            "INSERT INTO events (stream_id, version, event_id, event_type, schema_version, data, \
             metadata, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             RETURNING {SQLITE_COLUMNS}"
        ),
    }
}

/// The first event of an append: inserted only if the stream is at version `$9`.
fn checked_insert_sql(backend: Backend) -> String {
    match backend {
        Backend::Postgres => format!(
            "INSERT INTO events (stream_id, version, event_id, event_type, schema_version, data, \
             metadata, recorded_at) SELECT $1, $2, $3::uuid, $4, $5, $6::jsonb, $7::jsonb, \
             $8::timestamptz WHERE (SELECT COALESCE(MAX(version), 0) FROM events \
             WHERE stream_id = $1) = $9 RETURNING {PG_COLUMNS}"
        ),
        Backend::Sqlite => format!(
            "INSERT INTO events (stream_id, version, event_id, event_type, schema_version, data, \
             metadata, recorded_at) SELECT $1, $2, $3, $4, $5, $6, $7, $8 \
             WHERE (SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = $1) = $9 \
             RETURNING {SQLITE_COLUMNS}"
        ),
    }
}

fn by_event_id_sql(backend: Backend) -> String {
    let cast = if backend == Backend::Postgres {
        "$1::uuid"
    } else {
        "$1"
    };
    format!(
        "SELECT {} FROM events WHERE event_id = {cast}",
        columns(backend)
    )
}

pub(super) fn decode(row: &AnyRow) -> Result<RecordedEvent, StoreError> {
    let position: i64 = row.try_get("global_position")?;
    let corrupt = |reason: String| StoreError::Corrupt { position, reason };
    let event_id: String = row.try_get("event_id")?;
    let data: String = row.try_get("data")?;
    let metadata: String = row.try_get("metadata")?;
    let recorded_at: String = row.try_get("recorded_at")?;
    Ok(RecordedEvent {
        global_position: position,
        stream_id: row.try_get("stream_id")?,
        version: row.try_get("version")?,
        event_id: Uuid::parse_str(&event_id).map_err(|e| corrupt(e.to_string()))?,
        event_type: row.try_get("event_type")?,
        schema_version: i32::try_from(row.try_get::<i64, _>("schema_version")?)
            .map_err(|e| corrupt(e.to_string()))?,
        data: serde_json::from_str(&data).map_err(|e| corrupt(e.to_string()))?,
        metadata: serde_json::from_str(&metadata).map_err(|e| corrupt(e.to_string()))?,
        recorded_at: DateTime::parse_from_rfc3339(&recorded_at)
            .map_err(|e| corrupt(e.to_string()))?
            .with_timezone(&Utc),
        checkpoint: Checkpoint {
            transaction: row.try_get("tx")?,
            position,
        },
    })
}

/// Reads a stream on a connection the caller holds, so an inline projection sees the events its
/// own transaction just appended.
pub async fn read_stream_on(
    conn: &mut AnyConnection,
    backend: Backend,
    stream_id: &str,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let sql = format!(
        "SELECT {} FROM events WHERE stream_id = $1 ORDER BY version",
        columns(backend)
    );
    let rows = sqlx::query(&sql).bind(stream_id).fetch_all(conn).await?;
    rows.iter().map(decode).collect()
}

/// Reads several streams at once on a connection the caller holds, each oldest first.
pub async fn read_streams_on(
    conn: &mut AnyConnection,
    backend: Backend,
    stream_ids: &[&str],
) -> Result<Vec<RecordedEvent>, StoreError> {
    if stream_ids.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders = (1..=stream_ids.len())
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {} FROM events WHERE stream_id IN ({placeholders}) ORDER BY stream_id, version",
        columns(backend)
    );
    let query = stream_ids
        .iter()
        .fold(sqlx::query(&sql), |query, id| query.bind(*id));
    let rows = query.fetch_all(conn).await?;
    rows.iter().map(decode).collect()
}

/// Up to `limit` events of the whole log in stream order — by stream id, then version — strictly
/// after the event `after` (`(stream_id, version)`; `None` starts at the beginning), on a
/// connection the caller holds. A rebuild pages through the log with it: the unique
/// `(stream_id, version)` index serves it, and every stream comes in one piece (or continues on
/// the next page), so a fold never needs to look back.
pub async fn read_by_stream_on(
    conn: &mut AnyConnection,
    backend: Backend,
    after: Option<(&str, i64)>,
    limit: i64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let columns = columns(backend);
    let rows = match after {
        None => {
            let sql = format!("SELECT {columns} FROM events ORDER BY stream_id, version LIMIT $1");
            sqlx::query(&sql).bind(limit).fetch_all(conn).await?
        }
        Some((stream_id, version)) => {
            let sql = format!(
                "SELECT {columns} FROM events WHERE (stream_id, version) > ($1, $2) \
                 ORDER BY stream_id, version LIMIT $3"
            );
            sqlx::query(&sql)
                .bind(stream_id)
                .bind(version)
                .bind(limit)
                .fetch_all(conn)
                .await?
        }
    };
    rows.iter().map(decode).collect()
}

/// How many events lie after `after` in log order, counting no further than `cap`: how far a
/// follower of the log is behind (a gauge, so a cap keeps a huge backlog cheap to measure).
pub async fn events_after(db: &Db, after: Checkpoint, cap: i64) -> Result<i64, StoreError> {
    let filter = match db.backend {
        Backend::Postgres => "WHERE (transaction_id, global_position) > (($1::text)::xid8, $2)",
        Backend::Sqlite => "WHERE global_position > $2",
    };
    let sql =
        format!("SELECT COUNT(*) AS n FROM (SELECT 1 FROM events {filter} LIMIT $3) AS behind");
    Ok(sqlx::query_scalar(&sql)
        .bind(after.transaction)
        .bind(after.position)
        .bind(cap)
        .fetch_one(&db.pool)
        .await?)
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_unique_violation())
}

/// How many times an `ExpectedVersion::Any` append retries when it loses a race for a version.
const ANY_RETRIES: usize = 20;

#[derive(Clone)]
pub struct SqlEventStore {
    db: Db,
    projections: Vec<Arc<dyn InlineProjection>>,
    /// Started on the first append that can use it (PostgreSQL only), once the projections are
    /// known.
    group_commit: Arc<OnceLock<GroupCommit>>,
}

impl SqlEventStore {
    pub fn new(db: Db) -> SqlEventStore {
        SqlEventStore {
            db,
            projections: Vec::new(),
            group_commit: Arc::default(),
        }
    }

    pub fn with_projection(mut self, projection: Arc<dyn InlineProjection>) -> SqlEventStore {
        self.projections.push(projection);
        // A group commit already started (by an append through a clone) writes with the
        // projections it was started with; this store gets its own.
        self.group_commit = Arc::default();
        self
    }

    async fn try_append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<Result<Appended, i64>, sqlx::Error> {
        let backend = self.db.backend;
        let mut tx = self.db.begin_write().await?;
        let current = match expected {
            // The caller knows the version: check it in the first INSERT itself (one round trip
            // fewer on the hot path). Two racing appenders both pass the check; the unique
            // (stream_id, version) index then refuses the second.
            ExpectedVersion::Exact(version) => version,
            ExpectedVersion::NoStream => 0,
            ExpectedVersion::Any => {
                sqlx::query_scalar(
                    "SELECT COALESCE(MAX(version), 0) AS v FROM events WHERE stream_id = $1",
                )
                .bind(stream_id)
                .fetch_one(&mut *tx)
                .await?
            }
        };
        let recorded_at = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
        let checked_insert = checked_insert_sql(backend);
        let insert = insert_sql(backend);
        let mut stored = Vec::with_capacity(events.len());
        for (offset, event) in (1_i64..).zip(events) {
            let sql = if offset == 1 {
                &checked_insert
            } else {
                &insert
            };
            let row = sqlx::query(sql)
                .bind(stream_id)
                .bind(current + offset)
                .bind(event.event_id.to_string())
                .bind(&event.event_type)
                .bind(event.schema_version)
                .bind(event.data.to_string())
                .bind(event.metadata.to_string())
                .bind(&recorded_at)
                .bind(current)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else {
                // The stream is not at the expected version: report where it is.
                let actual: i64 = sqlx::query_scalar(
                    "SELECT COALESCE(MAX(version), 0) AS v FROM events WHERE stream_id = $1",
                )
                .bind(stream_id)
                .fetch_one(&mut *tx)
                .await?;
                return Ok(Err(actual));
            };
            stored.push(decode(&row).map_err(|e| sqlx::Error::Protocol(e.to_string()))?);
        }
        for projection in &self.projections {
            projection.apply(&mut tx, backend, &stored).await?;
        }
        tx.commit().await?;
        Ok(Ok(Appended {
            version: current + events.len() as i64,
            events: stored,
            replayed: false,
        }))
    }

    /// The append written as part of a group commit, when it can be; `None` means "append on
    /// your own" (see [`GroupCommit`]), `Some(Err)` that the database cannot be reached.
    async fn grouped(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Option<Result<Appended, sqlx::Error>> {
        let base = match expected {
            ExpectedVersion::Exact(version) => version,
            ExpectedVersion::NoStream => 0,
            ExpectedVersion::Any => return None,
        };
        if self.db.backend != Backend::Postgres {
            // SQLite has one writer connection in process: nothing to group.
            return None;
        }
        let group = self
            .group_commit
            .get_or_init(|| GroupCommit::start(self.db.clone(), self.projections.clone().into()));
        group.append(stream_id, base, events).await.transpose()
    }

    /// When an append cannot go ahead, it may be the retry of one that already went through
    /// (its answer lost on the way back). Then the stored events are its result.
    async fn replayed(
        &self,
        stream_id: &str,
        events: &[NewEvent],
    ) -> Result<Option<Appended>, StoreError> {
        let Some(first) = events.first() else {
            return Ok(None);
        };
        let found = sqlx::query(&by_event_id_sql(self.db.backend))
            .bind(first.event_id.to_string())
            .fetch_optional(&self.db.pool)
            .await?;
        let Some(found) = found else {
            return Ok(None);
        };
        let found = decode(&found)?;
        let stream = self.read_stream(&found.stream_id).await?;
        let start = stream.iter().position(|e| e.event_id == first.event_id);
        let same = found.stream_id == stream_id
            && start.is_some_and(|start| {
                stream.len() >= start + events.len()
                    && stream[start..start + events.len()]
                        .iter()
                        .zip(events)
                        .all(|(stored, new)| stored.event_id == new.event_id)
            });
        if !same {
            return Err(StoreError::DuplicateEventId {
                event_id: first.event_id,
            });
        }
        let start = start.unwrap_or_default();
        let events = stream[start..start + events.len()].to_vec();
        Ok(Some(Appended {
            version: events.last().map(|e| e.version).unwrap_or_default(),
            events,
            replayed: true,
        }))
    }
}

#[async_trait]
impl EventStore for SqlEventStore {
    async fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        let started = std::time::Instant::now();
        let result = self.append_timed(stream_id, expected, events).await;
        crate::telemetry::appended(&result, started.elapsed());
        result
    }

    async fn read_stream(&self, stream_id: &str) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut conn = self.db.pool.acquire().await?;
        read_stream_on(&mut conn, self.db.backend, stream_id).await
    }

    async fn read_all(
        &self,
        after: Checkpoint,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let filter = match self.db.backend {
            Backend::Postgres => PG_READ_ALL,
            Backend::Sqlite => SQLITE_READ_ALL,
        };
        let sql = format!("SELECT {} FROM events {filter}", columns(self.db.backend));
        let rows = sqlx::query(&sql)
            .bind(after.transaction)
            .bind(after.position)
            .bind(limit)
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter().map(decode).collect()
    }

    fn db(&self) -> &Db {
        &self.db
    }
}

impl SqlEventStore {
    /// [`EventStore::append`], which times it.
    async fn append_timed(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        if events.is_empty() {
            let version = self.read_stream(stream_id).await?.len() as i64;
            return Ok(Appended {
                version,
                events: Vec::new(),
                replayed: false,
            });
        }
        if let Some(grouped) = self.grouped(stream_id, expected, &events).await {
            return Ok(grouped?);
        }
        let mut attempts = 0;
        loop {
            attempts += 1;
            let actual = match self.try_append(stream_id, expected, &events).await {
                Ok(Ok(appended)) => return Ok(appended),
                Ok(Err(actual)) => Some(actual),
                Err(e) if is_unique_violation(&e) => None,
                Err(e) => return Err(e.into()),
            };
            if let Some(appended) = self.replayed(stream_id, &events).await? {
                return Ok(appended);
            }
            // Lost a race for the next version: `Any` simply tries again, the others report.
            if expected == ExpectedVersion::Any && actual.is_none() && attempts < ANY_RETRIES {
                continue;
            }
            let actual = match actual {
                Some(actual) => actual,
                None => self.read_stream(stream_id).await?.len() as i64,
            };
            return Err(StoreError::Conflict {
                stream_id: stream_id.to_string(),
                expected,
                actual,
            });
        }
    }
}
