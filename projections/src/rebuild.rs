//! `paystream rebuild-projections`: every read model cleared and replayed from the event log, in
//! one transaction — readers see the old rows or the new ones, never half of them.
//!
//! The log is read in stream order (stream id, then version) in pages of [`PAGE_EVENTS`] of whole
//! streams, the stream cut by the page's end waiting for the next page. Nothing about a stream
//! outlives its page (but the day totals), so memory stays flat however long the log:
//!
//! - PostgreSQL: [`READERS`] connections read halves of the log at once, only the columns the
//!   read models fold, each page decoded (the events straight from their JSON text), folded
//!   with the orders projection's own fold ([`crate::orders`]) and encoded in COPY's text
//!   format ([`CopyText`]) off the async workers; meanwhile the rebuild's transaction, on a
//!   `PgConnection` of its own (the pool's `AnyConnection` has no COPY), writes the pages
//!   already folded with `COPY … FROM STDIN`, table by table, into tables without indexes or
//!   keys ([`clear`]). The day totals are summed over the whole log and written once, at the
//!   end;
//! - SQLite: one connection, the transaction's: each page is read and handed to every inline
//!   projection's [`InlineProjection::replay`] in turn.
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

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::DateTime;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow};
use sqlx::{AnyConnection, ConnectOptions, Connection, Row};
use tokio::sync::mpsc;
use uuid::Uuid;

use paystream_engine::db::{Backend, Db};
use paystream_engine::error::Result;
use paystream_engine::order::OrderEvent;
use paystream_engine::orders::STREAM_PREFIX;
use paystream_engine::store::{read_by_stream_on, EventStore, InlineProjection, RecordedEvent};

use crate::orders::{internal, Fact};
use crate::{daily, orders, payments, refunds, review, READ_MODEL_TABLES};

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

/// Clears every read model ([`READ_MODEL_TABLES`]) and replays the whole log into it: what the
/// inline projections ([`crate::inline_projections`]) wrote on each append.
pub async fn rebuild(store: &dyn EventStore) -> Result<Rebuilt> {
    rebuild_with(store, &mut Silent).await
}

/// [`rebuild`], telling `progress` how it goes.
pub async fn rebuild_with(store: &dyn EventStore, progress: &mut dyn Progress) -> Result<Rebuilt> {
    let db = store.db();
    match db.backend {
        Backend::Postgres => rebuild_postgres(db, progress).await,
        Backend::Sqlite => rebuild_sqlite(db, &crate::inline_projections(), progress).await,
    }
}

/// The replay saw every event of the log, or the rebuild must roll back.
fn check_count(rebuilt: Rebuilt, total: i64) -> Result<()> {
    if rebuilt.events != u64::try_from(total).unwrap_or_default() {
        // Nothing can append meanwhile; a shortfall means a page went missing.
        return Err(internal(format!(
            "the replay saw {} events of the log's {total}",
            rebuilt.events
        )));
    }
    Ok(())
}

/// SQLite: the transaction holds the write lock from its start (`BEGIN IMMEDIATE`); every page
/// goes through `projections`' [`InlineProjection::replay`].
async fn rebuild_sqlite(
    db: &Db,
    projections: &[Arc<dyn InlineProjection>],
    progress: &mut dyn Progress,
) -> Result<Rebuilt> {
    let mut tx = db.begin_write().await?;
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(&mut *tx)
        .await?;
    progress.started(u64::try_from(total).unwrap_or_default());
    for table in READ_MODEL_TABLES {
        sqlx::query(&format!("DELETE FROM {}", table.name))
            .execute(&mut *tx)
            .await?;
    }
    let rebuilt = replay_log(&mut tx, db.backend, projections, progress).await?;
    check_count(rebuilt, total)?;
    tx.commit().await?;
    Ok(rebuilt)
}

/// PostgreSQL: the rebuild's transaction on a connection of its own, opened from the pool's
/// settings — a `PgConnection`, for COPY — and closed at the end (a failed rebuild's
/// transaction rolls back with it).
async fn rebuild_postgres(db: &Db, progress: &mut dyn Progress) -> Result<Rebuilt> {
    // Its statements (a COPY of a whole table, an index over it) are slow by nature: sqlx's
    // slow-statement warnings would only alarm whoever runs it. It logs its own timings.
    let options = PgConnectOptions::from_url(&db.pool.connect_options().database_url)?
        .disable_statement_logging();
    let mut conn = PgConnection::connect_with(&options).await?;
    let rebuilt = rebuild_postgres_on(&mut conn, &options, progress).await;
    let _ = conn.close().await;
    rebuilt
}

async fn rebuild_postgres_on(
    conn: &mut PgConnection,
    options: &PgConnectOptions,
    progress: &mut dyn Progress,
) -> Result<Rebuilt> {
    let started = Instant::now();
    let mut tx = conn.begin().await?;
    // Taken before counting and clearing: appends already in flight finish first, later ones
    // wait for the commit. EXCLUSIVE still lets the log's readers (the relay, and the pages
    // read ahead below) read.
    sqlx::query("LOCK TABLE events IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(&mut *tx)
        .await?;
    progress.started(u64::try_from(total).unwrap_or_default());
    let dropped = clear(&mut tx).await?;
    let clearing = started.elapsed();
    let rebuilt = replay_postgres(&mut tx, options, progress).await?;
    check_count(rebuilt, total)?;
    let started = Instant::now();
    for definition in dropped {
        sqlx::query(&definition).execute(&mut *tx).await?;
    }
    let indexing = started.elapsed();
    let started = Instant::now();
    tx.commit().await?;
    tracing::debug!(
        ?clearing,
        ?indexing,
        committing = ?started.elapsed(),
        "read models rebuilt"
    );
    Ok(rebuilt)
}

/// PostgreSQL: empties every read model, drops their indexes — primary keys and unique
/// constraints included — and returns the statements that create them again after the replay:
/// filling a table and then indexing it (one sort per index) costs a fraction of keeping half a
/// dozen indexes up to date row by row, and TRUNCATE leaves no dead rows behind. Both take the
/// tables' ACCESS EXCLUSIVE lock, so readers of the read models wait for the commit (as appends
/// do). The keys still check the rows the replay wrote: a duplicate fails their creation, and
/// the rebuild with it.
async fn clear(conn: &mut PgConnection) -> Result<Vec<String>> {
    let names: Vec<&str> = READ_MODEL_TABLES.iter().map(|t| t.name).collect();
    sqlx::query(&format!("TRUNCATE {}", names.join(", ")))
        .execute(&mut *conn)
        .await?;
    let list = (1..=names.len())
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let tables = format!(
        "SELECT c.oid FROM pg_class c WHERE c.relnamespace = to_regnamespace(current_schema())::oid \
         AND c.relname IN ({list})"
    );
    // Constraints first: their indexes go with them, and come back before the plain indexes.
    let sql = format!(
        "SELECT 'ALTER TABLE ' || quote_ident(t.relname) || ' DROP CONSTRAINT ' \
           || quote_ident(k.conname), \
         'ALTER TABLE ' || quote_ident(t.relname) || ' ADD CONSTRAINT ' \
           || quote_ident(k.conname) || ' ' || pg_get_constraintdef(k.oid), 0 AS rank, k.conname::text \
         FROM pg_constraint k JOIN pg_class t ON t.oid = k.conrelid \
         WHERE k.contype IN ('p', 'u') AND k.conrelid IN ({tables}) \
         UNION ALL \
         SELECT 'DROP INDEX ' || quote_ident(i.relname), pg_get_indexdef(i.oid), 1, i.relname::text \
         FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
         WHERE x.indrelid IN ({tables}) \
         AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid) \
         ORDER BY 3, 4"
    );
    let indexes: Vec<(String, String, i32, String)> = names
        .iter()
        .fold(sqlx::query_as(&sql), |query, name| query.bind(*name))
        .fetch_all(&mut *conn)
        .await?;
    let mut definitions = Vec::with_capacity(indexes.len());
    for (drop, create, _, _) in indexes {
        sqlx::query(&drop).execute(&mut *conn).await?;
        definitions.push(create);
    }
    Ok(definitions)
}

/// SQLite: pages through the whole log in stream order on the transaction's connection, handing
/// whole streams to every projection.
async fn replay_log(
    conn: &mut AnyConnection,
    backend: Backend,
    projections: &[Arc<dyn InlineProjection>],
    progress: &mut dyn Progress,
) -> Result<Rebuilt> {
    let mut pages = StreamPages::default();
    let mut done = Rebuilt::default();
    let (mut reading, mut projecting) = (Duration::ZERO, Duration::ZERO);
    loop {
        let started = Instant::now();
        let Some(events) = pages.next(conn, backend).await? else {
            tracing::debug!(?reading, ?projecting, "log replayed");
            return Ok(done);
        };
        reading += started.elapsed();
        let started = Instant::now();
        for projection in projections {
            projection.replay(conn, backend, &events).await?;
        }
        projecting += started.elapsed();
        done.events += events.len() as u64;
        done.streams += count_streams(&events);
        progress.advanced(done.events, done.streams);
    }
}

fn count_streams(events: &[RecordedEvent]) -> u64 {
    events.chunk_by(|a, b| a.stream_id == b.stream_id).count() as u64
}

/// PostgreSQL: writes the batches the [`READERS`] make of their ranges of the log ([`read_range`]),
/// each table's rows with one `COPY … FROM STDIN`, as they come; the day totals, summed over
/// every batch, last. The tables were just truncated and every stream comes whole in one batch,
/// so each row is written once: no upsert needed, and the keys, created again after the replay,
/// check it.
async fn replay_postgres(
    conn: &mut PgConnection,
    options: &PgConnectOptions,
    progress: &mut dyn Progress,
) -> Result<Rebuilt> {
    let (send, mut batches) = mpsc::channel(READERS);
    for (from, to) in ranges(READERS) {
        tokio::spawn(read_range(options.clone(), from, to, send.clone()));
    }
    drop(send);
    let mut done = Rebuilt::default();
    let mut money = daily::Movements::new();
    let (mut waiting, mut writing) = (Duration::ZERO, Duration::ZERO);
    let mut rows = 0_usize;
    loop {
        let started = Instant::now();
        let Some(batch) = batches.recv().await else {
            break;
        };
        let batch = batch?;
        waiting += started.elapsed();
        let started = Instant::now();
        for (statement, text) in &batch.copies {
            copy_in(conn, statement, text).await?;
            rows += text.rows;
        }
        writing += started.elapsed();
        for (key, page) in batch.money {
            money.entry(key).or_default().add(&page);
        }
        done.events += batch.events;
        done.streams += batch.streams;
        progress.advanced(done.events, done.streams);
    }
    let mut totals = CopyText::default();
    daily::copy_rows(&money, &mut totals);
    copy_in(conn, daily::COPY_TOTALS, &totals).await?;
    tracing::debug!(?waiting, ?writing, rows, "log replayed");
    Ok(done)
}

/// `rows` into the table of `statement` (a `COPY … FROM STDIN` in text format).
async fn copy_in(conn: &mut PgConnection, statement: &str, rows: &CopyText) -> Result<()> {
    if rows.rows == 0 {
        return Ok(());
    }
    let mut copy = conn.copy_in_raw(statement).await?;
    copy.send(rows.bytes.as_slice()).await?;
    copy.finish().await?;
    Ok(())
}

/// What one page of the log makes of the read models, ready for COPY.
struct Batch {
    /// The page's events and streams.
    events: u64,
    streams: u64,
    /// `COPY … FROM STDIN` statements and their rows.
    copies: Vec<(&'static str, CopyText)>,
    /// The money the page moved, for the day totals.
    money: daily::Movements,
}

/// `COPY` of `review_queue` rows, in the column order [`fold_page`] writes them.
const COPY_REVIEWS: &str = "COPY review_queue (order_id, out_trade_no, status, reason, reasons, \
    since, paid_fen, total_fen, updated_at) FROM STDIN";

/// Folds one page of whole order streams (as the orders projection's `replay` does) into its
/// rows; `events` and `streams` are what the page held, order streams or not.
fn fold_page(facts: &[Fact], events: u64, streams: u64) -> Result<Batch> {
    let mut money = daily::Movements::new();
    let orders = orders::fold_whole(facts, &mut money);
    let mut order_rows = CopyText::default();
    orders::copy_rows(&orders, &mut order_rows)?;
    let mut refund_rows = CopyText::default();
    refunds::copy_rows(&orders, &mut refund_rows);
    let mut payment_rows = CopyText::default();
    payments::copy_rows(&orders, &mut payment_rows);
    // The values `review::write` binds.
    let mut review_rows = CopyText::default();
    for projected in &orders {
        let Some(row) = review::row_of(projected)? else {
            continue;
        };
        review_rows.uuid(row.order.id);
        review_rows.text(&row.order.out_trade_no);
        review_rows.text(row.order.status.as_str());
        review_rows.text(&row.order.review.describe());
        review_rows.text(&row.reasons);
        review_rows.int(row.since);
        review_rows.int(row.order.paid_fen().get());
        review_rows.int(row.order.total_fen.get());
        review_rows.int(row.changed_at);
        review_rows.end_row();
    }
    Ok(Batch {
        events,
        streams,
        copies: vec![
            (orders::COPY_ORDERS, order_rows),
            (refunds::COPY_REFUNDS, refund_rows),
            (payments::COPY_PAYMENTS, payment_rows),
            (COPY_REVIEWS, review_rows),
        ],
        money,
    })
}

/// Readers of the log at once on PostgreSQL, each on a connection of its own over its own range
/// of stream ids ([`ranges`]). Reading a page (PostgreSQL's index scan, its JSON turned to text)
/// costs PostgreSQL about twice what decoding and folding it costs this process, and a reader
/// reads its next page while the last one is folded: two readers keep the writing connection
/// fed.
const READERS: usize = 2;

/// `readers` ranges of stream ids, `[from, to)`, that together cover every id. Order streams are
/// `order-` and a random UUID, whose first hex digit is spread evenly: the bounds split the
/// order streams evenly (any bounds would split the log correctly — other streams fall in one
/// range or another).
fn ranges(readers: usize) -> Vec<(Option<String>, Option<String>)> {
    let bounds: Vec<String> = (1..readers)
        .map(|i| format!("order-{:x}", i * 16 / readers))
        .collect();
    (0..readers)
        .map(|i| {
            let from = i.checked_sub(1).map(|j| bounds[j].clone());
            (from, bounds.get(i).cloned())
        })
        .collect()
}

/// The log's columns as a rebuild reads them ([`decode`]): only what the read models fold. Each
/// column PostgreSQL turns into text costs it time (the event id, the whole metadata), and the
/// data's text goes straight into the event ([`OrderEvent::from_stored_json`]).
const PAGE_COLUMNS: &str = "stream_id, version, event_type, data::text, metadata->>'actor', \
    (extract(epoch FROM recorded_at) * 1000000)::bigint, global_position";

/// One reader of [`READERS`]: the log's streams from `from` (included) to `to` (excluded), in
/// stream order, in pages of [`PAGE_EVENTS`] whole streams, each decoded and folded
/// ([`fold_rows`]) off the async workers while the next page is read, and sent to the writer.
/// It sees the very log the
/// rebuild does: the rebuild's lock keeps appends out. A failure is sent as the last batch;
/// the writer notices a reader that vanished without one by the count.
async fn read_range(
    options: PgConnectOptions,
    from: Option<String>,
    to: Option<String>,
    send: mpsc::Sender<Result<Batch>>,
) {
    // The bounds as index conditions, so that the last page's scan stops at `to`.
    let mut conditions = vec!["(stream_id, version) > ($1, $2)".to_string()];
    let bounds: Vec<String> = from.iter().chain(&to).cloned().collect();
    if from.is_some() {
        conditions.push("stream_id >= $4".into());
    }
    if to.is_some() {
        conditions.push(format!("stream_id < ${}", 4 + bounds.len() - 1));
    }
    let sql = format!(
        "SELECT {PAGE_COLUMNS} FROM events WHERE {} ORDER BY stream_id, version LIMIT $3",
        conditions.join(" AND ")
    );
    let (mut reading, mut folding) = (Duration::ZERO, Duration::ZERO);
    let read = async {
        let mut conn = PgConnection::connect_with(&options).await?;
        // The key of the last event read; before the first, below every key.
        let mut after = (from.clone().unwrap_or_default(), i64::MIN);
        // The page being folded off the async workers while the next one is read.
        let mut folding_page: Option<FoldingPage> = None;
        // The stream of the last event read.
        let mut last_stream: Option<String> = None;
        loop {
            let started = Instant::now();
            let query = sqlx::query(&sql)
                .bind(after.0.as_str())
                .bind(after.1)
                .bind(PAGE_EVENTS);
            let rows = bounds
                .iter()
                .fold(query, |query, bound| query.bind(bound.as_str()))
                .fetch_all(&mut conn)
                .await?;
            reading += started.elapsed();
            let at_end = (rows.len() as i64) < PAGE_EVENTS;
            let previous = last_stream.take();
            if let Some(last) = rows.last() {
                after = (last.try_get(0)?, last.try_get(1)?);
                last_stream = Some(after.0.clone());
            }
            // The page before must be folded first: the start of a stream it cut goes with
            // this one.
            let mut cut = Vec::new();
            if let Some(page) = folding_page.take() {
                let started = Instant::now();
                let (batch, rest) = page.await.map_err(internal)??;
                folding += started.elapsed();
                cut = rest;
                if send.send(Ok(batch)).await.is_err() {
                    return Ok(());
                }
            }
            folding_page = Some(tokio::task::spawn_blocking(move || {
                fold_rows(&rows, cut, previous.as_deref(), at_end)
            }));
            if at_end {
                break;
            }
        }
        if let Some(page) = folding_page {
            let started = Instant::now();
            let (batch, _) = page.await.map_err(internal)??;
            folding += started.elapsed();
            let _ = send.send(Ok(batch)).await;
        }
        let _ = conn.close().await;
        Ok::<_, paystream_engine::error::Error>(())
    };
    if let Err(e) = read.await {
        let _ = send.send(Err(e)).await;
    }
    tracing::debug!(?from, ?to, ?reading, ?folding, "log range read");
}

/// A page being folded ([`fold_rows`]) on a blocking thread.
type FoldingPage = tokio::task::JoinHandle<Result<(Batch, Vec<Fact>)>>;

/// Decodes a page of the log read in stream order and folds its whole order streams, after
/// `earlier` — the start of a stream the page before cut ([`fold_page`]). Returns the batch and
/// the start of the stream this page cut, unless it is the last (`at_end`). `previous` is the
/// stream the page before ended in.
fn fold_rows(
    rows: &[PgRow],
    earlier: Vec<Fact>,
    previous: Option<&str>,
    at_end: bool,
) -> Result<(Batch, Vec<Fact>)> {
    let ids = rows
        .iter()
        .map(|row| row.try_get::<&str, _>(0))
        .collect::<Result<Vec<_>, _>>()?;
    let streams = streams_ended(previous, &ids, at_end);
    let mut facts = earlier;
    facts.reserve(rows.len());
    for (row, id) in rows.iter().zip(&ids) {
        if id.starts_with(STREAM_PREFIX) {
            facts.push(decode(row)?);
        }
    }
    let mut rest = Vec::new();
    if let (false, Some(last)) = (at_end, ids.last()) {
        // The last stream may go on beyond this page: keep it for the next one.
        let last_start = facts
            .iter()
            .rposition(|f| f.stream_id != *last)
            .map_or(0, |i| i + 1);
        rest = facts.split_off(last_start);
    }
    let batch = fold_page(&facts, rows.len() as u64, streams)?;
    Ok((batch, rest))
}

/// How many streams a page of stream ids (in stream order) saw end: the stream the page before
/// ended in (`previous`), if this one goes on with another; each stream followed by another
/// within the page; and the last one, if no page follows.
fn streams_ended(previous: Option<&str>, ids: &[&str], at_end: bool) -> u64 {
    let previous_ended = match (previous, ids.first()) {
        (Some(previous), Some(first)) => previous != *first,
        (Some(_), None) => at_end,
        (None, _) => false,
    };
    let within = ids.windows(2).filter(|pair| pair[0] != pair[1]).count() as u64;
    let last_ended = at_end && !ids.is_empty();
    u64::from(previous_ended) + within + u64::from(last_ended)
}

/// An order event as [`PAGE_COLUMNS`] reads it, decoded as the event store would — its data
/// straight from the text, its time from microseconds since the epoch.
fn decode(row: &PgRow) -> Result<Fact> {
    let position: i64 = row.try_get(6)?;
    let event_type: &str = row.try_get(2)?;
    let data: &str = row.try_get(3)?;
    let recorded_at: i64 = row.try_get(5)?;
    Ok(Fact {
        stream_id: row.try_get(0)?,
        version: row.try_get(1)?,
        recorded_at: DateTime::from_timestamp_micros(recorded_at)
            .ok_or_else(|| internal(format!("event {position}: recorded at {recorded_at} µs")))?,
        actor: row.try_get(4)?,
        event: OrderEvent::from_stored_json(event_type, data)
            .map_err(|e| orders::undecodable(position, e))?,
    })
}

/// Rows in the text format of PostgreSQL's COPY: columns separated by tabs, rows ended by a
/// newline, NULL as `\N`, and in values a backslash, tab, newline or carriage return escaped
/// with a backslash (everything else, UTF-8 included, as it is).
#[derive(Default)]
pub(crate) struct CopyText {
    bytes: Vec<u8>,
    rows: usize,
}

impl CopyText {
    pub(crate) fn text(&mut self, value: &str) {
        let bytes = value.as_bytes();
        if bytes
            .iter()
            .any(|b| matches!(b, b'\\' | b'\t' | b'\n' | b'\r'))
        {
            for &b in bytes {
                match b {
                    b'\\' => self.bytes.extend_from_slice(b"\\\\"),
                    b'\t' => self.bytes.extend_from_slice(b"\\t"),
                    b'\n' => self.bytes.extend_from_slice(b"\\n"),
                    b'\r' => self.bytes.extend_from_slice(b"\\r"),
                    _ => self.bytes.push(b),
                }
            }
        } else {
            self.bytes.extend_from_slice(bytes);
        }
        self.bytes.push(b'\t');
    }

    pub(crate) fn opt_text(&mut self, value: Option<&str>) {
        match value {
            Some(value) => self.text(value),
            None => self.null(),
        }
    }

    /// As `Uuid::to_string` writes it.
    pub(crate) fn uuid(&mut self, id: Uuid) {
        let mut buffer = Uuid::encode_buffer();
        self.text(id.hyphenated().encode_lower(&mut buffer));
    }

    pub(crate) fn int(&mut self, value: i64) {
        let _ = write!(self.bytes, "{value}\t");
    }

    pub(crate) fn opt_int(&mut self, value: Option<i64>) {
        match value {
            Some(value) => self.int(value),
            None => self.null(),
        }
    }

    pub(crate) fn null(&mut self) {
        self.bytes.extend_from_slice(b"\\N\t");
    }

    /// Ends the row: its last separator becomes the newline.
    pub(crate) fn end_row(&mut self) {
        if let Some(last) = self.bytes.last_mut() {
            *last = b'\n';
        }
        self.rows += 1;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(write: impl FnOnce(&mut CopyText)) -> String {
        let mut text = CopyText::default();
        write(&mut text);
        String::from_utf8(text.bytes).unwrap()
    }

    #[test]
    fn copy_text_escapes_what_copy_reads_specially() {
        let row = encoded(|t| {
            t.text("tab\there, new\nline, cr\r, back\\slash \\N \\. \"quoted\" '单引号' 茉莉花茶");
            t.opt_text(None);
            t.text("");
            t.int(-42);
            t.opt_int(None);
            t.uuid(Uuid::nil());
            t.end_row();
        });
        assert_eq!(
            row,
            "tab\\there, new\\nline, cr\\r, back\\\\slash \\\\N \\\\. \"quoted\" '单引号' 茉莉花茶\t\\N\t\t-42\t\\N\t\
             00000000-0000-0000-0000-000000000000\n"
        );
    }

    #[test]
    fn streams_are_counted_once_in_the_page_they_end_in() {
        // Three pages of one log: a b b | b c d | d   (a, b, c, d: four streams).
        let pages: [(&[&str], bool); 3] = [
            (&["a", "b", "b"], false),
            (&["b", "c", "d"], false),
            (&["d"], true),
        ];
        let mut previous: Option<&str> = None;
        let mut counts = Vec::new();
        for (ids, at_end) in pages {
            counts.push(streams_ended(previous, ids, at_end));
            previous = ids.last().copied().or(previous);
        }
        assert_eq!(counts, [1, 2, 1]);
        // A last page with nothing in it ends the stream the page before ended in.
        assert_eq!(streams_ended(Some("d"), &[], true), 1);
        assert_eq!(streams_ended(None, &[], true), 0);
    }

    #[test]
    fn a_postgres_rebuild_copies_into_every_read_model() {
        let copies = [
            orders::COPY_ORDERS,
            refunds::COPY_REFUNDS,
            payments::COPY_PAYMENTS,
            COPY_REVIEWS,
            daily::COPY_TOTALS,
        ];
        for table in READ_MODEL_TABLES {
            assert!(
                copies
                    .iter()
                    .any(|copy| copy.starts_with(&format!("COPY {} (", table.name))),
                "{} has no COPY in a PostgreSQL rebuild (fold_page)",
                table.name
            );
        }
        assert_eq!(copies.len(), READ_MODEL_TABLES.len());
    }
}
