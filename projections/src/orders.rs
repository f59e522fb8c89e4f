//! `orders_view`: one row per order, for lists and searches. Kept inline — in the transaction of
//! each append — by folding the order's stream with the domain's own `evolve`, so the row can
//! never disagree with the aggregate. The same fold keeps the other read models: `refunds_view`
//! ([`crate::refunds`]), `payments_view` ([`crate::payments`]), `review_queue`
//! ([`crate::review`]) and `daily_totals` ([`crate::daily`]).

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use uuid::Uuid;

use paystream_engine::db::{from_millis, millis, Backend, Db};
use paystream_engine::error::{Error, Result};
use paystream_engine::order::{
    self, Order, OrderCard, OrderEvent, OrderLine, OrderStatus, PayChannel,
};
use paystream_engine::orders::STREAM_PREFIX;
use paystream_engine::store::{read_streams_on, InlineProjection, RecordedEvent};

use crate::payments::Attempts;
use crate::rebuild::CopyText;
use crate::refunds::Requesters;
use crate::search::{bind_all, Param};
use crate::{daily, payments, refunds, review};

/// An order as the API shows it (contract.md, "Order").
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OrderView {
    pub id: Uuid,
    pub out_trade_no: String,
    pub status: OrderStatus,
    pub total_fen: i64,
    pub paid_fen: i64,
    pub refunded_fen: i64,
    pub items: Vec<OrderLine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<PayChannel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    pub created_at: String,
    pub expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paid_at: Option<String>,
    /// The card redeemed with the order, and whether it was consumed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub card: Option<OrderCard>,
    #[serde(skip)]
    pub user_id: Uuid,
    #[serde(skip)]
    pub openid: String,
}

impl OrderView {
    /// Where this order stands in a search, newest first: `(created_at in ms, id)`, for
    /// [`OrdersView::search_after`].
    pub fn cursor(&self) -> (i64, Uuid) {
        let created_at = DateTime::parse_from_rfc3339(&self.created_at)
            .map(|at| at.timestamp_millis())
            .unwrap_or_default();
        (created_at, self.id)
    }
}

pub(crate) fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl From<&Order> for OrderView {
    fn from(o: &Order) -> OrderView {
        OrderView {
            id: o.id,
            out_trade_no: o.out_trade_no.clone(),
            status: o.status,
            total_fen: o.total_fen.get(),
            paid_fen: o.paid_fen().get(),
            refunded_fen: o.refunded_fen().get(),
            items: o.items.clone(),
            note: o.note.clone(),
            channel: o.channel,
            transaction_id: o.transaction_id.clone(),
            created_at: rfc3339(o.created_at),
            expires_at: rfc3339(o.expires_at),
            paid_at: o.paid_at.map(rfc3339),
            card: o.card.clone(),
            user_id: o.user_id,
            openid: o.openid.clone(),
        }
    }
}

pub(crate) fn internal(message: impl std::fmt::Display) -> Error {
    Error::internal(message.to_string())
}

fn decode(row: &AnyRow) -> Result<OrderView> {
    let id: String = row.try_get("id")?;
    let user_id: String = row.try_get("user_id")?;
    let status: String = row.try_get("status")?;
    let channel: Option<String> = row.try_get("channel")?;
    let items: String = row.try_get("items")?;
    let paid_at: Option<i64> = row.try_get("paid_at")?;
    let card: Option<String> = row.try_get("card")?;
    Ok(OrderView {
        id: Uuid::parse_str(&id).map_err(internal)?,
        out_trade_no: row.try_get("out_trade_no")?,
        status: OrderStatus::parse(&status).ok_or_else(|| internal("bad status in orders_view"))?,
        total_fen: row.try_get("total_fen")?,
        paid_fen: row.try_get("paid_fen")?,
        refunded_fen: row.try_get("refunded_fen")?,
        items: serde_json::from_str(&items).map_err(internal)?,
        note: row.try_get("note")?,
        channel: channel
            .map(|c| serde_json::from_value(serde_json::Value::String(c)))
            .transpose()
            .map_err(internal)?,
        transaction_id: row.try_get("transaction_id")?,
        created_at: rfc3339(from_millis(row.try_get("created_at")?)),
        expires_at: rfc3339(from_millis(row.try_get("expires_at")?)),
        paid_at: paid_at.map(|ms| rfc3339(from_millis(ms))),
        card: card
            .map(|c| serde_json::from_str(&c))
            .transpose()
            .map_err(internal)?,
        user_id: Uuid::parse_str(&user_id).map_err(internal)?,
        openid: row.try_get("openid")?,
    })
}

const COLUMNS: &str = "id, out_trade_no, user_id, openid, status, total_fen, paid_fen, \
    refunded_fen, channel, transaction_id, items, note, created_at, expires_at, paid_at, card";

/// Values bound per `orders_view` row, in the column order of [`UPSERT_ORDERS`].
const ORDER_VALUES: usize = 19;

const UPSERT_ORDERS: &str = "INSERT INTO orders_view (id, out_trade_no, user_id, openid, status, \
    total_fen, paid_fen, refunded_fen, channel, transaction_id, items, note, created_at, \
    expires_at, paid_at, updated_at, version, payment_requested_at, card) VALUES ";
const UPSERT_ORDERS_CONFLICT: &str = " ON CONFLICT (id) DO UPDATE SET status = excluded.status, \
    paid_fen = excluded.paid_fen, refunded_fen = excluded.refunded_fen, \
    channel = excluded.channel, transaction_id = excluded.transaction_id, \
    paid_at = excluded.paid_at, updated_at = excluded.updated_at, version = excluded.version, \
    payment_requested_at = excluded.payment_requested_at, card = excluded.card";

/// `($1, …, $k), ($k+1, …)`: `rows` tuples of `width` placeholders. One statement per batch of
/// orders instead of one per order.
pub(crate) fn placeholders(rows: usize, width: usize) -> String {
    (0..rows)
        .map(|row| {
            let values = (1..=width)
                .map(|column| format!("${}", row * width + column))
                .collect::<Vec<_>>()
                .join(", ");
            format!("({values})")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// An order folded from its stream, with what its rows take from the stream itself.
pub(crate) struct Projected {
    pub order: Order,
    /// The stream's last version.
    pub version: i64,
    /// When the stream's last event was recorded (ms): the rows' `updated_at`. Taken from the
    /// log rather than the clock so that a rebuild writes exactly the rows the appends wrote.
    pub changed_at: i64,
    /// The order's payment attempts (`payments_view`).
    pub payments: Attempts,
    /// An event projected now asked for, closed or paid an attempt: its rows must be written.
    pub payments_changed: bool,
    /// Who asked for each refund (`refunds_view`).
    pub refund_requesters: Requesters,
}

/// `orders_view` rows per statement (each binds [`ORDER_VALUES`] parameters): far below both
/// PostgreSQL's and SQLite's limits of bound parameters.
const ORDERS_PER_STATEMENT: usize = 1_000;

/// Writes the rows of `orders`: one statement per [`ORDERS_PER_STATEMENT`] orders, then their
/// refunds and payment attempts.
async fn upsert(conn: &mut AnyConnection, orders: &[Projected]) -> Result<(), sqlx::Error> {
    for round in orders.chunks(ORDERS_PER_STATEMENT) {
        upsert_orders(conn, round).await?;
    }
    refunds::write(conn, orders).await?;
    payments::write(conn, orders).await
}

/// The order's `items` and `card` columns: JSON text, as [`decode`] reads them back.
fn json_columns(order: &Order) -> Result<(String, Option<String>), sqlx::Error> {
    let json = |e: serde_json::Error| sqlx::Error::Protocol(e.to_string());
    let items = serde_json::to_string(&order.items).map_err(json)?;
    let card = order
        .card
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(json)?;
    Ok((items, card))
}

/// `COPY` of `orders_view` rows, in the column order [`copy_rows`] writes them.
pub(crate) const COPY_ORDERS: &str = "COPY orders_view (id, out_trade_no, user_id, openid, \
    status, total_fen, paid_fen, refunded_fen, channel, transaction_id, items, note, created_at, \
    expires_at, paid_at, updated_at, version, payment_requested_at, card) FROM STDIN";

/// A PostgreSQL rebuild: the `orders_view` rows of `orders` for [`COPY_ORDERS`] — the values
/// [`upsert_orders`] binds, as COPY's text.
pub(crate) fn copy_rows(orders: &[Projected], out: &mut CopyText) -> Result<(), sqlx::Error> {
    for p in orders {
        let order = &p.order;
        let (items, card) = json_columns(order)?;
        out.uuid(order.id);
        out.text(&order.out_trade_no);
        out.uuid(order.user_id);
        out.text(&order.openid);
        out.text(order.status.as_str());
        out.int(order.total_fen.get());
        out.int(order.paid_fen().get());
        out.int(order.refunded_fen().get());
        out.opt_text(order.channel.map(|c| c.as_str()));
        out.opt_text(order.transaction_id.as_deref());
        out.text(&items);
        out.opt_text(order.note.as_deref());
        out.int(millis(order.created_at));
        out.int(millis(order.expires_at));
        out.opt_int(order.paid_at.map(millis));
        out.int(p.changed_at);
        out.int(p.version);
        out.opt_int(order.payment_requested_at.map(millis));
        out.opt_text(card.as_deref());
        out.end_row();
    }
    Ok(())
}

async fn upsert_orders(conn: &mut AnyConnection, orders: &[Projected]) -> Result<(), sqlx::Error> {
    if orders.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "{UPSERT_ORDERS}{}{UPSERT_ORDERS_CONFLICT}",
        placeholders(orders.len(), ORDER_VALUES)
    );
    let mut query = sqlx::query(&sql);
    for Projected {
        order,
        version,
        changed_at,
        ..
    } in orders
    {
        let (items, card) = json_columns(order)?;
        query = query
            .bind(order.id.to_string())
            .bind(order.out_trade_no.clone())
            .bind(order.user_id.to_string())
            .bind(order.openid.clone())
            .bind(order.status.as_str())
            .bind(order.total_fen.get())
            .bind(order.paid_fen().get())
            .bind(order.refunded_fen().get())
            .bind(order.channel.map(|c| c.as_str()))
            .bind(order.transaction_id.clone())
            .bind(items)
            .bind(order.note.clone())
            .bind(millis(order.created_at))
            .bind(millis(order.expires_at))
            .bind(order.paid_at.map(millis))
            .bind(*changed_at)
            .bind(*version)
            .bind(order.payment_requested_at.map(millis))
            .bind(card);
    }
    query.execute(&mut *conn).await?;
    Ok(())
}

/// One order stream, folded.
struct Folded {
    order: Option<Order>,
    /// An event projected now closed a review: the order's queue row may have to go.
    review_closed: bool,
    payments: Attempts,
    payments_changed: bool,
    refund_requesters: Requesters,
}

/// An order event as the read models fold it: the event, and what they take of its envelope.
pub(crate) struct Fact {
    pub stream_id: String,
    pub version: i64,
    pub recorded_at: DateTime<Utc>,
    /// Who recorded it (the metadata's `actor`): `refunds_view` names who asked for a refund.
    pub actor: Option<String>,
    pub event: OrderEvent,
}

impl Fact {
    /// Decodes a stored order event (the live projection's path; a rebuild on PostgreSQL decodes
    /// the log's text straight into facts).
    fn of(stored: &RecordedEvent) -> Result<Fact, sqlx::Error> {
        Ok(Fact {
            stream_id: stored.stream_id.clone(),
            version: stored.version,
            recorded_at: stored.recorded_at,
            actor: stored.metadata["actor"].as_str().map(str::to_owned),
            event: OrderEvent::from_stored(&stored.event_type, stored.data.clone())
                .map_err(|e| undecodable(stored.global_position, e))?,
        })
    }
}

pub(crate) fn undecodable(position: i64, e: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::Protocol(format!("undecodable order event at {position}: {e}"))
}

/// Folds a stream with the domain's `evolve`. Events from version `first_new` on are the ones
/// being projected now: the money they move is added to `money`.
fn fold(facts: &[Fact], first_new: i64, money: &mut daily::Movements) -> Folded {
    let mut state: Option<Order> = None;
    let mut review_closed = false;
    let (mut payments, mut payments_changed) = (Attempts::default(), false);
    let mut refund_requesters = Requesters::default();
    for fact in facts {
        let event = &fact.event;
        let new = fact.version >= first_new;
        let moves_money = matches!(
            event,
            OrderEvent::PaymentSucceeded { .. }
                | OrderEvent::PaymentAmountMismatch { .. }
                | OrderEvent::RefundSucceeded { .. }
        );
        if new && moves_money {
            let before = state.clone();
            state = order::evolve(state, event);
            if let Some(after) = &state {
                daily::record(money, before.as_ref(), after);
            }
        } else {
            review_closed |= new && matches!(event, OrderEvent::ReviewResolved { .. });
            state = order::evolve(state, event);
        }
        if let Some(after) = &state {
            payments.observe(event, after);
            refund_requesters.observe(fact.actor.as_deref(), event);
        }
        payments_changed |= new
            && matches!(
                event,
                OrderEvent::PaymentRequested { .. }
                    | OrderEvent::PaymentSucceeded { .. }
                    | OrderEvent::PaymentAmountMismatch { .. }
                    | OrderEvent::OrderClosed { .. }
            );
    }
    Folded {
        order: state,
        review_closed,
        payments,
        payments_changed,
        refund_requesters,
    }
}

/// Streams read per statement: keeps the bound parameters far below PostgreSQL's limit.
const STREAMS_PER_ROUND: usize = 200;

/// Re-reads the given order streams (in the caller's transaction, so it sees what was just
/// appended) and projects them. `first_new` gives, per stream, the first version being projected
/// now.
async fn project_streams(
    conn: &mut AnyConnection,
    backend: Backend,
    stream_ids: &[&str],
    first_new: &HashMap<&str, i64>,
) -> Result<(), sqlx::Error> {
    for round in stream_ids.chunks(STREAMS_PER_ROUND) {
        let events = read_streams_on(conn, backend, round)
            .await
            .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        project(conn, &events, Some(first_new)).await?;
    }
    Ok(())
}

/// Folds each of the whole streams in `events` (grouped by stream, each in version order) with
/// the domain's `evolve` and writes their rows. `first_new` gives, per stream, the first version
/// being projected now; `None` projects every event (a rebuild).
async fn project(
    conn: &mut AnyConnection,
    events: &[RecordedEvent],
    first_new: Option<&HashMap<&str, i64>>,
) -> Result<(), sqlx::Error> {
    let mut money = daily::Movements::new();
    let (orders, review_closed) = fold_streams(events, first_new, &mut money)?;
    upsert(conn, &orders).await?;
    review::write(conn, &orders, &review_closed).await?;
    daily::add(conn, &money).await
}

/// A PostgreSQL rebuild ([`crate::rebuild`]): the orders of the whole order streams in `facts`
/// (grouped by stream, each in version order), every event projected, the money they moved
/// added to `money` — what [`project`] folds, for the rebuild to write with COPY (the totals
/// once, at its end).
pub(crate) fn fold_whole(facts: &[Fact], money: &mut daily::Movements) -> Vec<Projected> {
    facts
        .chunk_by(|a, b| a.stream_id == b.stream_id)
        .filter_map(|stream| projected(stream, 0, money).map(|(order, _)| order))
        .collect()
}

/// One order stream folded, with the row values it takes from the stream itself; whether an
/// event from `first_new` on closed its review. `None` for a stream that holds no order.
fn projected(
    stream: &[Fact],
    first_new: i64,
    money: &mut daily::Movements,
) -> Option<(Projected, bool)> {
    let last = stream.last()?;
    let folded = fold(stream, first_new, money);
    let order = folded.order?;
    Some((
        Projected {
            order,
            version: last.version,
            changed_at: millis(last.recorded_at),
            payments: folded.payments,
            payments_changed: folded.payments_changed,
            refund_requesters: folded.refund_requesters,
        },
        folded.review_closed,
    ))
}

/// [`project`]'s fold: the orders of `events`, and those whose review an event projected now
/// closed.
fn fold_streams(
    events: &[RecordedEvent],
    first_new: Option<&HashMap<&str, i64>>,
    money: &mut daily::Movements,
) -> Result<(Vec<Projected>, Vec<Uuid>), sqlx::Error> {
    let mut orders = Vec::new();
    let mut review_closed = Vec::new();
    for stream in events.chunk_by(|a, b| a.stream_id == b.stream_id) {
        let Some(first) = stream.first() else {
            continue;
        };
        if !first.stream_id.starts_with(STREAM_PREFIX) {
            continue;
        }
        let from = match first_new {
            None => 0,
            Some(first_new) => first_new
                .get(first.stream_id.as_str())
                .copied()
                .unwrap_or(i64::MAX),
        };
        let facts = stream.iter().map(Fact::of).collect::<Result<Vec<_>, _>>()?;
        if let Some((order, closed)) = projected(&facts, from, money) {
            if closed {
                review_closed.push(order.order.id);
            }
            orders.push(order);
        }
    }
    Ok((orders, review_closed))
}

pub struct OrdersProjection;

#[async_trait]
impl InlineProjection for OrdersProjection {
    async fn apply(
        &self,
        conn: &mut AnyConnection,
        backend: Backend,
        appended: &[RecordedEvent],
    ) -> Result<(), sqlx::Error> {
        // The first version of each order stream appended in this transaction.
        let mut first_new: HashMap<&str, i64> = HashMap::new();
        for event in appended
            .iter()
            .filter(|e| e.stream_id.starts_with(STREAM_PREFIX))
        {
            first_new
                .entry(event.stream_id.as_str())
                .and_modify(|v| *v = (*v).min(event.version))
                .or_insert(event.version);
        }
        let mut streams: Vec<&str> = first_new.keys().copied().collect();
        streams.sort_unstable();
        project_streams(conn, backend, &streams, &first_new).await
    }

    /// The streams are whole: folded as they are, without reading them again. (A rebuild on
    /// PostgreSQL folds them with [`fold_whole`] and writes them with COPY instead.)
    async fn replay(
        &self,
        conn: &mut AnyConnection,
        _backend: Backend,
        streams: &[RecordedEvent],
    ) -> Result<(), sqlx::Error> {
        project(conn, streams, None).await
    }
}

/// Which orders to list. Every field narrows the result.
#[derive(Clone, Debug, Default)]
pub struct OrderFilter {
    pub user_id: Option<Uuid>,
    pub status: Option<OrderStatus>,
    pub openid: Option<String>,
    pub out_trade_no: Option<String>,
    pub transaction_id: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Page<T> {
    pub page: u32,
    pub per_page: u32,
    pub total_items: i64,
    pub total_pages: i64,
    pub items: Vec<T>,
}

/// The WHERE clauses (joined with AND) and their parameters for `filter`.
fn filter_clauses(filter: &OrderFilter) -> (Vec<String>, Vec<Param>) {
    let mut clauses = Vec::new();
    let mut params = Vec::new();
    let mut add = |clause: &str, param: Param| {
        params.push(param);
        clauses.push(clause.replace('?', &format!("${}", params.len())));
    };
    if let Some(user) = filter.user_id {
        add("user_id = ?", Param::Text(user.to_string()));
    }
    if let Some(status) = filter.status {
        add("status = ?", Param::Text(status.as_str().into()));
    }
    if let Some(openid) = &filter.openid {
        add("openid = ?", Param::Text(openid.clone()));
    }
    if let Some(no) = &filter.out_trade_no {
        add("out_trade_no = ?", Param::Text(no.clone()));
    }
    if let Some(txn) = &filter.transaction_id {
        add("transaction_id = ?", Param::Text(txn.clone()));
    }
    if let Some(from) = filter.from {
        add("created_at >= ?", Param::Int(millis(from)));
    }
    if let Some(to) = filter.to {
        add("created_at < ?", Param::Int(millis(to)));
    }
    (clauses, params)
}

#[derive(Clone)]
pub struct OrdersView {
    db: Db,
}

impl OrdersView {
    pub fn new(db: Db) -> OrdersView {
        OrdersView { db }
    }

    /// Orders matching `filter`, newest first. `page` starts at 1.
    pub async fn search(
        &self,
        filter: &OrderFilter,
        page: u32,
        per_page: u32,
    ) -> Result<Page<OrderView>> {
        let (clauses, params) = filter_clauses(filter);
        let filter_sql = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        let count_sql = format!("SELECT COUNT(*) AS n FROM orders_view {filter_sql}");
        let total: i64 = bind_all(&count_sql, &params)
            .fetch_one(&self.db.pool)
            .await?
            .try_get("n")?;
        let page = page.max(1);
        let per_page = per_page.clamp(1, 100);
        let offset = i64::from(page - 1) * i64::from(per_page);
        let list_sql = format!(
            "SELECT {COLUMNS} FROM orders_view {filter_sql} \
             ORDER BY created_at DESC, id DESC LIMIT {per_page} OFFSET {offset}"
        );
        let rows = bind_all(&list_sql, &params)
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

    /// Up to `limit` orders matching `filter` in the order of [`OrdersView::search`] (newest
    /// first), strictly after `after` — the [`OrderView::cursor`] of the last one seen — for
    /// walking a whole result: orders placed meanwhile neither shift nor repeat the rest, as
    /// they would with pages by offset.
    pub async fn search_after(
        &self,
        filter: &OrderFilter,
        after: Option<(i64, Uuid)>,
        limit: u32,
    ) -> Result<Vec<OrderView>> {
        let (mut clauses, mut params) = filter_clauses(filter);
        if let Some((created_at, id)) = after {
            params.push(Param::Int(created_at));
            params.push(Param::Text(id.to_string()));
            let (at, id) = (params.len() - 1, params.len());
            clauses.push(format!(
                "(created_at < ${at} OR (created_at = ${at} AND id < ${id}))"
            ));
        }
        let filter_sql = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        let limit = limit.clamp(1, 1_000);
        let sql = format!(
            "SELECT {COLUMNS} FROM orders_view {filter_sql} \
             ORDER BY created_at DESC, id DESC LIMIT {limit}"
        );
        let rows = bind_all(&sql, &params).fetch_all(&self.db.pool).await?;
        rows.iter().map(decode).collect()
    }

    /// Unpaid orders whose time is up, oldest first, after `cursor` (the `(expires_at, id)` of
    /// the last one seen) so that a sweep pages past orders it could not close. Orders whose
    /// close failed recently (`close:` checks) wait for their back-off.
    pub async fn due_for_expiry(
        &self,
        now: DateTime<Utc>,
        cursor: Option<(i64, Uuid)>,
        limit: i64,
    ) -> Result<Vec<(i64, Uuid)>> {
        let (after_ms, after_id) = cursor.unwrap_or((i64::MIN, Uuid::nil()));
        let rows = sqlx::query(
            "SELECT o.id, o.expires_at FROM orders_view o \
             LEFT JOIN payment_checks c ON c.subject = 'close:' || o.id \
             WHERE o.status = 'pending_payment' AND o.expires_at <= $1 \
             AND (o.expires_at > $2 OR (o.expires_at = $2 AND o.id > $3)) \
             AND (c.next_check_at IS NULL OR c.next_check_at <= $1) \
             ORDER BY o.expires_at, o.id LIMIT $4",
        )
        .bind(millis(now))
        .bind(after_ms)
        .bind(after_id.to_string())
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let id: String = row.try_get("id")?;
                Ok((
                    row.try_get("expires_at")?,
                    Uuid::parse_str(&id).map_err(internal)?,
                ))
            })
            .collect()
    }
}
