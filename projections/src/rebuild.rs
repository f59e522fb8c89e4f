//! `paystream rebuild-projections`: every read model cleared and replayed from the event log, in
//! one transaction — readers see the old rows or the new ones, never half of them.
//!
//! The log is read in stream order (stream id, then version) in pages of [`PAGE_EVENTS`]: each
//! page goes to every inline projection's [`InlineProjection::replay`] as whole streams, the
//! stream cut by the page's end waiting for the next page. Nothing about a stream outlives its
//! page, so memory stays flat however long the log.
//!
//! Writers are shut out for the duration, so that no append lands between the replay and the
//! commit (its inline projection would count it a second time on top of the replay):
//!
//! - PostgreSQL: `LOCK TABLE events IN EXCLUSIVE MODE` — appends of a running engine wait for the
//!   rebuild to commit (then project themselves onto the rebuilt tables). Reading the log goes
//!   on; reading the read models waits too, since they are truncated and re-indexed (see
//!   [`clear`]);
//! - SQLite: the transaction holds the database's write lock (`BEGIN IMMEDIATE`) — another
//!   process's writes wait for their busy timeout and then fail.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::AnyConnection;
use tokio::sync::mpsc;

use paystream_engine::db::{Backend, Db};
use paystream_engine::error::Result;
use paystream_engine::store::{read_by_stream_on, EventStore, InlineProjection, RecordedEvent};

use crate::orders::internal;
use crate::READ_MODEL_TABLES;

/// Events read per page: large enough that a round trip and a statement per read model carry
/// thousands of rows, small enough to keep a page's memory in megabytes.
const PAGE_EVENTS: i64 = 20_000;

/// A read-model table and its key: what a rebuild clears, and what orders its rows when they
/// are compared (`tests/rebuild.rs`).
#[derive(Clone, Copy, Debug)]
pub struct ReadModelTable {
    pub name: &'static str,
    /// The primary key's columns.
    pub key: &'static [&'static str],
}

/// Told how a rebuild advances (the CLI draws a progress bar with it).
pub trait Progress: Send {
    /// Before the replay: how many events the log holds.
    fn started(&mut self, total_events: u64);
    /// After each page: how far the replay has come, in events and whole streams.
    fn advanced(&mut self, events: u64, streams: u64);
}

/// No one to tell.
pub struct Silent;

impl Progress for Silent {
    fn started(&mut self, _: u64) {}
    fn advanced(&mut self, _: u64, _: u64) {}
}

/// What a rebuild replayed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rebuilt {
    pub events: u64,
    pub streams: u64,
}

/// Clears every read model ([`READ_MODEL_TABLES`]) and replays the whole log into it through
/// `projections` — the ones the event store applies on each append ([`crate::inline_projections`]).
pub async fn rebuild(store: &dyn EventStore) -> Result<Rebuilt> {
    rebuild_with(store, &crate::inline_projections(), &mut Silent).await
}

/// [`rebuild`], telling `progress` how it goes.
pub async fn rebuild_with(
    store: &dyn EventStore,
    projections: &[Arc<dyn InlineProjection>],
    progress: &mut dyn Progress,
) -> Result<Rebuilt> {
    let db = store.db();
    let mut tx = db.begin_write().await?;
    if db.backend == Backend::Postgres {
        // Taken before counting and clearing: appends already in flight finish first, later
        // ones wait for the commit. EXCLUSIVE still lets the log's readers (the relay) read.
        sqlx::query("LOCK TABLE events IN EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
    }
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(&mut *tx)
        .await?;
    progress.started(u64::try_from(total).unwrap_or_default());
    let dropped = clear(&mut tx, db.backend).await?;
    let rebuilt = replay_log(&mut tx, db, projections, progress).await?;
    if rebuilt.events != u64::try_from(total).unwrap_or_default() {
        // Nothing can append meanwhile; a shortfall means a page went missing. Roll back.
        return Err(internal(format!(
            "the replay saw {} events of the log's {total}",
            rebuilt.events
        )));
    }
    for definition in dropped {
        sqlx::query(&definition).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(rebuilt)
}

/// Empties every read model. On PostgreSQL it also drops their secondary indexes and returns
/// their definitions, to be created again after the replay: filling a table and then indexing
/// it (one sort per index) costs a fraction of keeping half a dozen indexes up to date row by
/// row, and TRUNCATE leaves no dead rows behind for the replay to step over. Both take the
/// tables' ACCESS EXCLUSIVE lock, so readers of the read models wait for the commit (as appends
/// do); primary keys and unique constraints stay, the projections' upserts rely on them.
async fn clear(conn: &mut AnyConnection, backend: Backend) -> Result<Vec<String>> {
    let names: Vec<&str> = READ_MODEL_TABLES.iter().map(|t| t.name).collect();
    if backend == Backend::Sqlite {
        for name in names {
            sqlx::query(&format!("DELETE FROM {name}"))
                .execute(&mut *conn)
                .await?;
        }
        return Ok(Vec::new());
    }
    sqlx::query(&format!("TRUNCATE {}", names.join(", ")))
        .execute(&mut *conn)
        .await?;
    let list = (1..=names.len())
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT i.indexname::text, i.indexdef::text FROM pg_indexes i \
         WHERE i.schemaname = current_schema() AND i.tablename IN ({list}) \
         AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname \
           AND c.connamespace = to_regnamespace(current_schema())::oid) \
         ORDER BY i.indexname"
    );
    let indexes: Vec<(String, String)> = names
        .iter()
        .fold(sqlx::query_as(&sql), |query, name| query.bind(*name))
        .fetch_all(&mut *conn)
        .await?;
    let mut definitions = Vec::with_capacity(indexes.len());
    for (name, definition) in indexes {
        sqlx::query(&format!("DROP INDEX \"{name}\""))
            .execute(&mut *conn)
            .await?;
        definitions.push(definition);
    }
    Ok(definitions)
}

/// Pages through the whole log in stream order, handing whole streams to every projection.
async fn replay_log(
    conn: &mut AnyConnection,
    db: &Db,
    projections: &[Arc<dyn InlineProjection>],
    progress: &mut dyn Progress,
) -> Result<Rebuilt> {
    let mut pages = match db.backend {
        Backend::Postgres => Pages::ReadAhead(read_ahead(db)),
        // One connection, the transaction's: nothing to read ahead with.
        Backend::Sqlite => Pages::Inline(StreamPages::default()),
    };
    let mut done = Rebuilt::default();
    let (mut waiting, mut projecting) = (Duration::ZERO, Duration::ZERO);
    loop {
        let started = Instant::now();
        let Some(events) = pages.next(conn, db.backend).await? else {
            tracing::debug!(?waiting, ?projecting, "log replayed");
            return Ok(done);
        };
        waiting += started.elapsed();
        let started = Instant::now();
        for projection in projections {
            projection.replay(conn, db.backend, &events).await?;
        }
        projecting += started.elapsed();
        done.events += events.len() as u64;
        done.streams += events.chunk_by(|a, b| a.stream_id == b.stream_id).count() as u64;
        progress.advanced(done.events, done.streams);
    }
}

/// Where the pages come from.
enum Pages {
    /// Read on the rebuild's own connection, in turn with the projections.
    Inline(StreamPages),
    /// Read by [`read_ahead`].
    ReadAhead(mpsc::Receiver<Result<Vec<RecordedEvent>>>),
}

impl Pages {
    async fn next(
        &mut self,
        conn: &mut AnyConnection,
        backend: Backend,
    ) -> Result<Option<Vec<RecordedEvent>>> {
        match self {
            Pages::Inline(pages) => pages.next(conn, backend).await,
            Pages::ReadAhead(received) => received.recv().await.transpose(),
        }
    }
}

/// PostgreSQL: the pages read and decoded on a connection of their own, one page ahead, while
/// the rebuild's connection writes the previous one — the two halves of the work overlap. The
/// other connection sees the very log the rebuild does: the rebuild's lock keeps appends out.
/// The channel ends early only if the reader died, which [`rebuild_with`] notices by the count.
fn read_ahead(db: &Db) -> mpsc::Receiver<Result<Vec<RecordedEvent>>> {
    let (send, received) = mpsc::channel(1);
    let (pool, backend) = (db.pool.clone(), db.backend);
    tokio::spawn(async move {
        let mut conn = match pool.acquire().await {
            Ok(conn) => conn,
            Err(e) => {
                let _ = send.send(Err(e.into())).await;
                return;
            }
        };
        let mut pages = StreamPages::default();
        loop {
            let page = pages.next(&mut conn, backend).await.transpose();
            let Some(page) = page else { return };
            let failed = page.is_err();
            if send.send(page).await.is_err() || failed {
                return;
            }
        }
    });
    received
}

/// The log in pages of whole streams, in stream order.
#[derive(Default)]
struct StreamPages {
    /// The start of a stream the last read cut: handed out with the rest of it, next time.
    cut: Vec<RecordedEvent>,
    at_end: bool,
}

impl StreamPages {
    /// The whole streams of the next [`PAGE_EVENTS`] events or so; `None` after the last.
    async fn next(
        &mut self,
        conn: &mut AnyConnection,
        backend: Backend,
    ) -> Result<Option<Vec<RecordedEvent>>> {
        while !self.at_end {
            let after = self
                .cut
                .last()
                .map(|last| (last.stream_id.as_str(), last.version));
            let page = read_by_stream_on(conn, backend, after, PAGE_EVENTS)
                .await
                .map_err(internal)?;
            self.at_end = (page.len() as i64) < PAGE_EVENTS;
            let mut events = std::mem::take(&mut self.cut);
            events.extend(page);
            if !self.at_end {
                // The last stream may go on beyond this page: keep it for the next one.
                let last_start = events
                    .iter()
                    .rposition(|e| e.stream_id != events[events.len() - 1].stream_id)
                    .map_or(0, |i| i + 1);
                self.cut = events.split_off(last_start);
            }
            if !events.is_empty() {
                return Ok(Some(events));
            }
        }
        Ok(None)
    }
}

/// Rebuilds the read models once if a migration asked for it (a read model added to a database
/// that already holds orders starts empty); returns whether it did. A crash before the marker is
/// removed only means the (idempotent) rebuild runs again at the next start.
pub async fn backfill_if_needed(store: &dyn EventStore) -> Result<bool> {
    let db = store.db();
    let pending: Vec<String> = sqlx::query_scalar("SELECT name FROM projection_backfills")
        .fetch_all(&db.pool)
        .await?;
    if pending.is_empty() {
        return Ok(false);
    }
    let rebuilt = rebuild(store).await?;
    tracing::info!(
        ?pending,
        events = rebuilt.events,
        streams = rebuilt.streams,
        "read models filled from the event log"
    );
    sqlx::query("DELETE FROM projection_backfills")
        .execute(&db.pool)
        .await?;
    Ok(true)
}
