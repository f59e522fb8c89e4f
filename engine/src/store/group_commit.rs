//! Group commit on PostgreSQL: appends to different streams that arrive while earlier ones are
//! being written share one transaction — one multi-row INSERT, one pass of the inline
//! projections and one commit (one WAL flush) for all of them.
//!
//! Why: under load the cost of an append is not the rows but the round trips and the commit.
//! Concurrent payment notifications each append a single event to their own order; written one
//! transaction each they spend most of their time in BEGIN/INSERT/projection/COMMIT round trips
//! and in waiting for their own fsync.
//!
//! The semantics are those of single appends. A batch only ever holds one append per stream and
//! only `Exact`/`NoStream` appends; each is checked against its expected version inside the
//! INSERT itself. An append that comes up short — its version check failed, or its version or
//! event id is taken (a lost race, or the retry of an append already stored) — is handed back to
//! its caller, and the batch is rolled back and written again without it. A database error hands
//! every append of the batch back (or, when the pool cannot give a connection, answers it with
//! that error). A caller handed back runs the ordinary one-transaction path with its precise
//! conflict and replay handling. Nothing is reported written unless its batch committed.
//!
//! No latency is added at low load: a batch is whatever is queued when a writer becomes free,
//! so a lone append is written at once, alone.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::sql::{decode, PG_COLUMNS};
use super::{Appended, InlineProjection, NewEvent, RecordedEvent};
use crate::db::Db;

/// Batches written at the same time. Two, so that one batch is built and sent while the other
/// waits for its WAL flush; more only split the same load into smaller batches (measured with
/// `paystream bench notify`: 3, 4 and 6 writers cost 10–70 % more CPU per notice than 2).
const WRITERS: usize = 2;
/// The most appends one batch takes.
const MAX_BATCH: usize = 64;
/// Appends waiting for a writer before callers fall back to writing on their own.
const QUEUE: usize = 1024;

/// Every event of the batch in one INSERT. Each row carries the version its stream must be at
/// (`base`); the subquery sees the table as it was when the statement started, so all rows of
/// one append are checked against the same state. A row whose check fails, or whose version or
/// event id is taken (by a concurrent writer, or by an earlier try of a retried append), is not
/// inserted — no error, so one bad append does not fail the others: the batch sees which
/// appends are short, rolls back and goes again without them. (`jsonb_to_recordset` reads a
/// JSON `null` as SQL NULL, hence the COALESCE.)
const INSERT_BATCH: &str = "INSERT INTO events (stream_id, version, event_id, event_type, \
    schema_version, data, metadata, recorded_at) \
    SELECT r.stream_id, r.version, r.event_id, r.event_type, r.schema_version, \
    COALESCE(r.data, 'null'::jsonb), COALESCE(r.metadata, 'null'::jsonb), $2::timestamptz \
    FROM jsonb_to_recordset($1::jsonb) AS r(seq bigint, stream_id text, version bigint, \
    event_id uuid, event_type text, schema_version int, data jsonb, metadata jsonb, base bigint) \
    WHERE (SELECT COALESCE(MAX(e.version), 0) FROM events e WHERE e.stream_id = r.stream_id) \
    = r.base ORDER BY r.seq ON CONFLICT DO NOTHING";

/// One append waiting for its batch.
struct Pending {
    stream_id: String,
    /// The version the stream must be at (0: must not exist).
    base: i64,
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Answer>,
}

enum Answer {
    /// Committed.
    Written(Appended),
    /// Not written by a batch: append on your own.
    OnYourOwn,
    /// The database cannot be reached (pool timed out or closed): trying again alone would
    /// only wait as long a second time.
    Unavailable(sqlx::Error),
}

#[derive(Clone)]
pub(super) struct GroupCommit {
    queue: mpsc::Sender<Pending>,
}

impl GroupCommit {
    /// Starts the collector on the current runtime. It ends when the last handle is dropped.
    pub(super) fn start(db: Db, projections: Arc<[Arc<dyn InlineProjection>]>) -> GroupCommit {
        let (queue, pending) = mpsc::channel(QUEUE);
        tokio::spawn(collect(pending, db, projections));
        GroupCommit { queue }
    }

    /// Appends through a batch. `Ok(None)` when the batch could not take it (the caller then
    /// appends on its own); `Ok(Some)` only once the events are committed.
    pub(super) async fn append(
        &self,
        stream_id: &str,
        base: i64,
        events: &[NewEvent],
    ) -> Result<Option<Appended>, sqlx::Error> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            stream_id: stream_id.to_string(),
            base,
            events: events.to_vec(),
            reply,
        };
        if self.queue.try_send(pending).is_err() {
            return Ok(None);
        }
        match answer.await {
            Ok(Answer::Written(appended)) => Ok(Some(appended)),
            Ok(Answer::Unavailable(error)) => Err(error),
            Ok(Answer::OnYourOwn) | Err(_) => Ok(None),
        }
    }
}

/// A caller that stopped waiting (its request timed out or was dropped) must not have its
/// append committed behind its back: a request answered with an error has changed nothing.
/// Once its batch is being written it is too late, exactly as for a transaction whose COMMIT
/// was already sent.
fn abandoned(pending: &Pending) -> bool {
    pending.reply.is_closed()
}

async fn collect(
    mut pending: mpsc::Receiver<Pending>,
    db: Db,
    projections: Arc<[Arc<dyn InlineProjection>]>,
) {
    let writers = Arc::new(Semaphore::new(WRITERS));
    while let Some(first) = pending.recv().await {
        // Waiting for a free writer before draining the queue is what lets batches grow
        // exactly as much as the load requires.
        let Ok(permit) = writers.clone().acquire_owned().await else {
            return;
        };
        let mut streams = HashSet::new();
        let mut batch = Vec::new();
        for next in std::iter::once(first).chain(std::iter::from_fn(|| pending.try_recv().ok())) {
            if abandoned(&next) {
                continue;
            }
            if streams.insert(next.stream_id.clone()) {
                batch.push(next);
            } else {
                // Two appends to one stream in one batch cannot both succeed; the second goes
                // its own way (and most likely meets a conflict there).
                let _ = next.reply.send(Answer::OnYourOwn);
            }
            if batch.len() == MAX_BATCH {
                break;
            }
        }
        let (db, projections) = (db.clone(), projections.clone());
        tokio::spawn(async move {
            write(&db, &projections, batch).await;
            drop(permit);
        });
    }
}

/// One event as [`INSERT_BATCH`] reads it, borrowed from the pending appends.
#[derive(Serialize)]
struct Row<'a> {
    seq: usize,
    stream_id: &'a str,
    version: i64,
    event_id: uuid::Uuid,
    event_type: &'a str,
    schema_version: i32,
    data: &'a serde_json::Value,
    metadata: &'a serde_json::Value,
    base: i64,
}

/// What one attempt at writing a batch came to.
enum Attempt {
    Committed(HashMap<String, Appended>),
    /// Rolled back: these streams were not at their expected version (or an event id was
    /// already stored); the others may go again without them.
    Incomplete(HashSet<String>),
}

async fn write(db: &Db, projections: &[Arc<dyn InlineProjection>], mut batch: Vec<Pending>) {
    // The same order of index insertions in every batch: two batches touching the same streams
    // wait for each other instead of deadlocking.
    batch.sort_by(|a, b| a.stream_id.cmp(&b.stream_id));
    loop {
        batch.retain(|p| !abandoned(p));
        if batch.is_empty() {
            return;
        }
        match try_write(db, projections, &batch).await {
            Ok(Attempt::Committed(mut written)) => {
                for pending in batch {
                    let answer = match written.remove(&pending.stream_id) {
                        Some(appended) => Answer::Written(appended),
                        None => Answer::OnYourOwn,
                    };
                    let _ = pending.reply.send(answer);
                }
                return;
            }
            Ok(Attempt::Incomplete(failed)) => {
                // Each round removes at least one append, so this ends.
                let (out, keep): (Vec<_>, Vec<_>) = batch
                    .into_iter()
                    .partition(|p| failed.contains(&p.stream_id));
                for pending in out {
                    let _ = pending.reply.send(Answer::OnYourOwn);
                }
                batch = keep;
            }
            Err(error) => {
                tracing::debug!(%error, appends = batch.len(), "batch not written");
                for pending in batch {
                    let answer = match &error {
                        sqlx::Error::PoolTimedOut => Answer::Unavailable(sqlx::Error::PoolTimedOut),
                        sqlx::Error::PoolClosed => Answer::Unavailable(sqlx::Error::PoolClosed),
                        // Anything else, a dead connection included, is retried alone: on
                        // another connection, with the exact conflict and replay rules.
                        _ => Answer::OnYourOwn,
                    };
                    let _ = pending.reply.send(answer);
                }
                return;
            }
        }
    }
}

async fn try_write(
    db: &Db,
    projections: &[Arc<dyn InlineProjection>],
    batch: &[Pending],
) -> Result<Attempt, sqlx::Error> {
    let rows: Vec<Row> = batch
        .iter()
        .flat_map(|p| {
            (1_i64..).zip(&p.events).map(move |(offset, event)| Row {
                seq: 0,
                stream_id: &p.stream_id,
                version: p.base + offset,
                event_id: event.event_id,
                event_type: &event.event_type,
                schema_version: event.schema_version,
                data: &event.data,
                metadata: &event.metadata,
                base: p.base,
            })
        })
        .zip(0..)
        .map(|(row, seq)| Row { seq, ..row })
        .collect();
    let rows = serde_json::to_string(&rows).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let recorded_at = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
    let mut tx = db.pool.begin().await?;
    let stored = sqlx::query(&format!("{INSERT_BATCH} RETURNING {PG_COLUMNS}"))
        .bind(rows)
        .bind(recorded_at)
        .fetch_all(&mut *tx)
        .await?;
    let stored = stored
        .iter()
        .map(|row| decode(row).map_err(|e| sqlx::Error::Protocol(e.to_string())))
        .collect::<Result<Vec<RecordedEvent>, _>>()?;

    let mut inserted: HashMap<&str, usize> = HashMap::new();
    for event in &stored {
        *inserted.entry(event.stream_id.as_str()).or_default() += 1;
    }
    let failed: HashSet<String> = batch
        .iter()
        .filter(|p| inserted.get(p.stream_id.as_str()).copied().unwrap_or(0) != p.events.len())
        .map(|p| p.stream_id.clone())
        .collect();
    if !failed.is_empty() {
        tx.rollback().await?;
        return Ok(Attempt::Incomplete(failed));
    }
    for projection in projections {
        projection.apply(&mut tx, db.backend, &stored).await?;
    }
    tx.commit().await?;

    let mut by_stream: HashMap<String, Vec<RecordedEvent>> = HashMap::new();
    for event in stored {
        by_stream
            .entry(event.stream_id.clone())
            .or_default()
            .push(event);
    }

    Ok(Attempt::Committed(
        batch
            .iter()
            .filter_map(|p| {
                let mut events = by_stream.remove(&p.stream_id)?;
                events.sort_by_key(|e| e.version);
                Some((
                    p.stream_id.clone(),
                    Appended {
                        version: p.base + p.events.len() as i64,
                        events,
                        replayed: false,
                    },
                ))
            })
            .collect(),
    ))
}
