//! `payments_view`: every payment attempt, for staff searching "did this customer pay, and
//! where": one row per channel a payment was asked through (an order at that provider, which the
//! customer may pay), filled in when money arrives on it, and a row of its own for money that
//! found no attempt left to fill (paid twice).
//!
//! Built by the orders projection while it folds an order's stream (same transaction as the
//! append): each event is seen with the order as the domain's `evolve` left it, so a re-sent
//! notice that `evolve` ignored adds no row, and money the domain sent to review carries the
//! review's own reason as its status.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use uuid::Uuid;

use paystream_engine::db::{from_millis, millis, Db};
use paystream_engine::error::Result;
use paystream_engine::order::{Order, OrderEvent, PayChannel, ReviewReason};

use crate::orders::{internal, placeholders, rfc3339, Page, Projected};
use crate::rebuild::CopyText;
use crate::search::{search_page, Conditions, PageBounds, Param};

/// What became of a payment attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Asked for through this channel; no money arrived through it.
    Requested,
    /// The order closed with nothing paid through this channel.
    Closed,
    /// Exactly the order total arrived, on the happy path.
    Succeeded,
    /// Money arrived but not the order total (the order went to review).
    AmountMismatch,
    /// Money arrived after the order was closed (the order went to review).
    PaidAfterClose,
    /// Money arrived on an order already paid (the order went to review).
    PaidTwice,
}

impl PaymentStatus {
    pub const ALL: [PaymentStatus; 6] = [
        PaymentStatus::Requested,
        PaymentStatus::Closed,
        PaymentStatus::Succeeded,
        PaymentStatus::AmountMismatch,
        PaymentStatus::PaidAfterClose,
        PaymentStatus::PaidTwice,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            PaymentStatus::Requested => "requested",
            PaymentStatus::Closed => "closed",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::AmountMismatch => "amount_mismatch",
            PaymentStatus::PaidAfterClose => "paid_after_close",
            PaymentStatus::PaidTwice => "paid_twice",
        }
    }

    pub fn parse(s: &str) -> Option<PaymentStatus> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// Why the domain sent the money of `transaction_id` to review — the reason it opened naming
    /// that transaction — or `Succeeded` when it did not. Asked right after the arrival was
    /// applied, when that reason is still open.
    fn of_arrival(order: &Order, transaction_id: &str) -> PaymentStatus {
        order
            .review
            .open
            .iter()
            .rev()
            .find_map(|item| match &item.reason {
                ReviewReason::AmountMismatch {
                    transaction_id: t, ..
                } if t == transaction_id => Some(PaymentStatus::AmountMismatch),
                ReviewReason::PaidAfterClose {
                    transaction_id: t, ..
                } if t == transaction_id => Some(PaymentStatus::PaidAfterClose),
                ReviewReason::PaidTwice {
                    transaction_id: t, ..
                } if t == transaction_id => Some(PaymentStatus::PaidTwice),
                _ => None,
            })
            .unwrap_or(PaymentStatus::Succeeded)
    }
}

/// One attempt of an order, as its stream made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Attempt {
    pub channel: PayChannel,
    pub status: PaymentStatus,
    pub transaction_id: Option<String>,
    /// The money that arrived; until then the amount asked for (the order total).
    pub amount_fen: i64,
    /// `None` for money that arrived through a channel with no attempt left to fill.
    pub requested_at: Option<DateTime<Utc>>,
    pub paid_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
}

impl Attempt {
    /// When the money arrived, else when it was asked for: what searches sort and filter on, so
    /// that a payment counts on the day its money arrived, as in the daily report.
    fn happened_at(&self) -> DateTime<Utc> {
        self.paid_at
            .or(self.requested_at)
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
    }
}

/// The attempts of one order, oldest first, built event by event alongside the order's fold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Attempts(pub Vec<Attempt>);

impl Attempts {
    /// Takes in one event, given `order` as `evolve` left it after that event.
    pub(crate) fn observe(&mut self, event: &OrderEvent, order: &Order) {
        match event {
            OrderEvent::PaymentRequested {
                channel,
                requested_at,
            } => {
                // Switching back to a channel asks the provider about the same order again: the
                // attempt already open there stays the one.
                let open = self
                    .0
                    .iter()
                    .any(|a| a.channel == *channel && a.status == PaymentStatus::Requested);
                if !open {
                    self.0.push(Attempt {
                        channel: *channel,
                        status: PaymentStatus::Requested,
                        transaction_id: None,
                        amount_fen: order.total_fen.get(),
                        requested_at: Some(*requested_at),
                        paid_at: None,
                        closed_at: None,
                    });
                }
            }
            OrderEvent::OrderClosed { closed_at, .. } => {
                // `evolve` ignores a close once money arrived; only one that closed the order
                // closes its open attempts.
                if order.closed_at != Some(*closed_at) {
                    return;
                }
                for attempt in self.0.iter_mut() {
                    if attempt.status == PaymentStatus::Requested {
                        attempt.status = PaymentStatus::Closed;
                        attempt.closed_at = Some(*closed_at);
                    }
                }
            }
            OrderEvent::PaymentSucceeded {
                channel,
                transaction_id,
                ..
            }
            | OrderEvent::PaymentAmountMismatch {
                channel,
                transaction_id,
                ..
            } => self.arrived(order, *channel, transaction_id),
            _ => {}
        }
    }

    /// Money arrived: it fills the oldest attempt on its channel still without money (also a
    /// closed one: that is the order the customer paid after all), else it is an attempt of its
    /// own.
    fn arrived(&mut self, order: &Order, channel: PayChannel, transaction_id: &str) {
        let seen = self
            .0
            .iter()
            .any(|a| a.transaction_id.as_deref() == Some(transaction_id));
        let payment = order
            .payments
            .iter()
            .find(|p| p.transaction_id == transaction_id);
        let (false, Some(payment)) = (seen, payment) else {
            return;
        };
        let index = match self
            .0
            .iter()
            .position(|a| a.channel == channel && a.transaction_id.is_none())
        {
            Some(index) => index,
            None => {
                self.0.push(Attempt {
                    channel,
                    status: PaymentStatus::Requested,
                    transaction_id: None,
                    amount_fen: 0,
                    requested_at: None,
                    paid_at: None,
                    closed_at: None,
                });
                self.0.len() - 1
            }
        };
        let attempt = &mut self.0[index];
        attempt.status = PaymentStatus::of_arrival(order, transaction_id);
        attempt.transaction_id = Some(transaction_id.to_string());
        attempt.amount_fen = payment.amount_fen.get();
        attempt.paid_at = Some(payment.paid_at);
    }
}

/// Values bound per row, in the column order of [`UPSERT`].
const VALUES: usize = 12;
/// Rows per statement, far below both databases' limits of bound parameters.
const ROWS_PER_STATEMENT: usize = 1_000;
const UPSERT: &str = "INSERT INTO payments_view (order_id, attempt, out_trade_no, openid, \
    channel, status, transaction_id, amount_fen, requested_at, paid_at, closed_at, happened_at) \
    VALUES ";
const UPSERT_CONFLICT: &str = " ON CONFLICT (order_id, attempt) DO UPDATE SET \
    status = excluded.status, transaction_id = excluded.transaction_id, \
    amount_fen = excluded.amount_fen, requested_at = excluded.requested_at, \
    paid_at = excluded.paid_at, closed_at = excluded.closed_at, \
    happened_at = excluded.happened_at";

/// Writes the attempts of the orders whose payments changed. Attempts only ever accumulate, in
/// stream order, so `(order, index)` names the same attempt on every fold and no row ever goes.
pub(crate) async fn write(
    conn: &mut AnyConnection,
    orders: &[Projected],
) -> Result<(), sqlx::Error> {
    let rows: Vec<(&Order, usize, &Attempt)> = orders
        .iter()
        .filter(|p| p.payments_changed)
        .flat_map(|p| {
            p.payments
                .0
                .iter()
                .enumerate()
                .map(move |(index, attempt)| (&p.order, index, attempt))
        })
        .collect();
    for round in rows.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "{UPSERT}{}{UPSERT_CONFLICT}",
            placeholders(round.len(), VALUES)
        );
        let mut query = sqlx::query(&sql);
        for (order, index, attempt) in round {
            query = query
                .bind(order.id.to_string())
                .bind(*index as i64)
                .bind(order.out_trade_no.clone())
                .bind(order.openid.clone())
                .bind(attempt.channel.as_str())
                .bind(attempt.status.as_str())
                .bind(attempt.transaction_id.clone())
                .bind(attempt.amount_fen)
                .bind(attempt.requested_at.map(millis))
                .bind(attempt.paid_at.map(millis))
                .bind(attempt.closed_at.map(millis))
                .bind(millis(attempt.happened_at()));
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// `COPY` of `payments_view` rows, in the column order [`copy_rows`] writes them.
pub(crate) const COPY_PAYMENTS: &str = "COPY payments_view (order_id, attempt, out_trade_no, \
    openid, channel, status, transaction_id, amount_fen, requested_at, paid_at, closed_at, \
    happened_at) FROM STDIN";

/// [`write`] during a PostgreSQL rebuild: every attempt of `orders`, for [`COPY_PAYMENTS`].
pub(crate) fn copy_rows(orders: &[Projected], out: &mut CopyText) {
    for p in orders.iter().filter(|p| p.payments_changed) {
        for (index, attempt) in p.payments.0.iter().enumerate() {
            out.uuid(p.order.id);
            out.int(index as i64);
            out.text(&p.order.out_trade_no);
            out.text(&p.order.openid);
            out.text(attempt.channel.as_str());
            out.text(attempt.status.as_str());
            out.opt_text(attempt.transaction_id.as_deref());
            out.int(attempt.amount_fen);
            out.opt_int(attempt.requested_at.map(millis));
            out.opt_int(attempt.paid_at.map(millis));
            out.opt_int(attempt.closed_at.map(millis));
            out.int(millis(attempt.happened_at()));
            out.end_row();
        }
    }
}

/// A payment attempt as staff see it; money in fen, times RFC 3339.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PaymentView {
    pub order_id: Uuid,
    pub out_trade_no: String,
    pub openid: String,
    pub channel: PayChannel,
    pub status: PaymentStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    /// The money that arrived; until then the amount asked for (the order total).
    pub amount_fen: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paid_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<String>,
}

const COLUMNS: &str = "order_id, out_trade_no, openid, channel, status, transaction_id, \
    amount_fen, requested_at, paid_at, closed_at";

fn channel_named(name: &str) -> Option<PayChannel> {
    [PayChannel::WechatpayV3, PayChannel::WechatpayV2]
        .into_iter()
        .find(|c| c.as_str() == name)
}

fn time(row: &AnyRow, column: &str) -> Result<Option<String>> {
    let at: Option<i64> = row.try_get(column)?;
    Ok(at.map(|ms| rfc3339(from_millis(ms))))
}

fn decode(row: &AnyRow) -> Result<PaymentView> {
    let order_id: String = row.try_get("order_id")?;
    let channel: String = row.try_get("channel")?;
    let status: String = row.try_get("status")?;
    Ok(PaymentView {
        order_id: Uuid::parse_str(&order_id).map_err(internal)?,
        out_trade_no: row.try_get("out_trade_no")?,
        openid: row.try_get("openid")?,
        channel: channel_named(&channel).ok_or_else(|| internal("bad channel in payments_view"))?,
        status: PaymentStatus::parse(&status)
            .ok_or_else(|| internal("bad status in payments_view"))?,
        transaction_id: row.try_get("transaction_id")?,
        amount_fen: row.try_get("amount_fen")?,
        requested_at: time(row, "requested_at")?,
        paid_at: time(row, "paid_at")?,
        closed_at: time(row, "closed_at")?,
    })
}

/// Which payment attempts to list. Every field narrows the result; `from`/`to` bound when the
/// money arrived (when it was asked for, for attempts without money).
#[derive(Clone, Debug, Default)]
pub struct PaymentFilter {
    pub status: Option<PaymentStatus>,
    pub channel: Option<PayChannel>,
    pub transaction_id: Option<String>,
    pub out_trade_no: Option<String>,
    pub openid: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

impl PaymentFilter {
    fn conditions(&self) -> Conditions {
        let mut conditions = Conditions::default();
        conditions.equals("status", self.status.as_ref().map(PaymentStatus::as_str));
        conditions.equals("channel", self.channel.as_ref().map(PayChannel::as_str));
        conditions.equals("transaction_id", self.transaction_id.as_deref());
        conditions.equals("out_trade_no", self.out_trade_no.as_deref());
        conditions.equals("openid", self.openid.as_deref());
        if let Some(from) = self.from {
            conditions.add("happened_at >= ?", Param::Int(millis(from)));
        }
        if let Some(to) = self.to {
            conditions.add("happened_at < ?", Param::Int(millis(to)));
        }
        conditions
    }
}

/// The payment attempts as staff search them.
#[derive(Clone)]
pub struct PaymentsView {
    db: Db,
}

impl PaymentsView {
    pub fn new(db: Db) -> PaymentsView {
        PaymentsView { db }
    }

    /// Attempts matching `filter`, newest first. `page` starts at 1; 100 per page at most.
    pub async fn search(
        &self,
        filter: &PaymentFilter,
        page: u32,
        per_page: u32,
    ) -> Result<Page<PaymentView>> {
        search_page(
            &self.db,
            ("payments_view", COLUMNS),
            &filter.conditions(),
            "happened_at DESC, order_id DESC, attempt DESC",
            PageBounds::new(page, per_page),
            decode,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};
    use paystream_engine::money::Fen;
    use paystream_engine::order::{evolve, CloseReason, OrderLine};

    fn at(minute: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 2, 0, 0).unwrap() + Duration::minutes(minute)
    }

    fn fen(v: i64) -> Fen {
        Fen::new(v).unwrap()
    }

    const TOTAL: i64 = 3000;

    fn placed() -> OrderEvent {
        OrderEvent::OrderPlaced {
            order_id: Uuid::nil(),
            user_id: Uuid::nil(),
            openid: "o-1".into(),
            out_trade_no: "T1".into(),
            items: vec![OrderLine::priced("tea", "Tea", 2, fen(TOTAL / 2)).unwrap()],
            total_fen: fen(TOTAL),
            note: None,
            placed_at: at(0),
            expires_at: at(30),
            card: None,
        }
    }

    fn requested(channel: PayChannel, minute: i64) -> OrderEvent {
        OrderEvent::PaymentRequested {
            channel,
            requested_at: at(minute),
        }
    }

    fn paid(channel: PayChannel, txn: &str, amount: i64, minute: i64) -> OrderEvent {
        if amount == TOTAL {
            OrderEvent::PaymentSucceeded {
                channel,
                transaction_id: txn.into(),
                amount_fen: fen(amount),
                paid_at: at(minute),
            }
        } else {
            OrderEvent::PaymentAmountMismatch {
                channel,
                transaction_id: txn.into(),
                expected_fen: fen(TOTAL),
                received_fen: fen(amount),
                paid_at: at(minute),
            }
        }
    }

    fn closed(minute: i64) -> OrderEvent {
        OrderEvent::OrderClosed {
            reason: CloseReason::Expired,
            closed_at: at(minute),
        }
    }

    /// The attempts a stream makes, folded as the projection folds it.
    fn attempts(events: &[OrderEvent]) -> Vec<Attempt> {
        let mut state = None;
        let mut attempts = Attempts::default();
        for event in events {
            state = evolve(state, event);
            attempts.observe(event, state.as_ref().unwrap());
        }
        attempts.0
    }

    fn summary(attempts: &[Attempt]) -> Vec<(PayChannel, PaymentStatus, Option<&str>, i64)> {
        attempts
            .iter()
            .map(|a| {
                (
                    a.channel,
                    a.status,
                    a.transaction_id.as_deref(),
                    a.amount_fen,
                )
            })
            .collect()
    }

    use PayChannel::{WechatpayV2 as V2, WechatpayV3 as V3};
    use PaymentStatus::*;

    #[test]
    fn a_paid_request_is_one_attempt_even_when_the_notice_comes_again() {
        let rows = attempts(&[
            placed(),
            requested(V3, 1),
            paid(V3, "4200", TOTAL, 2),
            paid(V3, "4200", TOTAL, 3),
        ]);
        assert_eq!(summary(&rows), [(V3, Succeeded, Some("4200"), TOTAL)]);
        assert_eq!(rows[0].requested_at, Some(at(1)));
        assert_eq!(rows[0].paid_at, Some(at(2)), "the first notice's time");
        assert_eq!(rows[0].happened_at(), at(2));
    }

    #[test]
    fn switching_channels_keeps_one_attempt_per_provider_order() {
        let rows = attempts(&[
            placed(),
            requested(V3, 1),
            requested(V2, 2),
            requested(V3, 3),
            paid(V2, "4200", TOTAL, 4),
        ]);
        assert_eq!(
            summary(&rows),
            [
                (V3, Requested, None, TOTAL),
                (V2, Succeeded, Some("4200"), TOTAL)
            ]
        );
        assert_eq!(rows[0].requested_at, Some(at(1)), "the first ask");
        assert_eq!(rows[0].happened_at(), at(1));
    }

    #[test]
    fn closing_closes_the_open_attempts_and_late_money_fills_its_own() {
        let rows = attempts(&[
            placed(),
            requested(V3, 1),
            requested(V2, 2),
            closed(30),
            paid(V2, "4200", TOTAL, 31),
        ]);
        assert_eq!(
            summary(&rows),
            [
                (V3, Closed, None, TOTAL),
                (V2, PaidAfterClose, Some("4200"), TOTAL)
            ]
        );
        assert_eq!(rows[0].closed_at, Some(at(30)));
        assert_eq!(rows[1].closed_at, Some(at(30)), "it was closed, then paid");
    }

    #[test]
    fn a_close_the_order_ignored_closes_nothing() {
        let rows = attempts(&[
            placed(),
            requested(V3, 1),
            requested(V2, 2),
            paid(V3, "4200", TOTAL, 3),
            closed(30),
        ]);
        assert_eq!(
            summary(&rows),
            [
                (V3, Succeeded, Some("4200"), TOTAL),
                (V2, Requested, None, TOTAL)
            ]
        );
    }

    #[test]
    fn money_beyond_the_happy_path_says_why_it_went_to_review() {
        let rows = attempts(&[
            placed(),
            requested(V3, 1),
            paid(V3, "4200", TOTAL - 1, 2),
            paid(V3, "4201", TOTAL, 3),
        ]);
        assert_eq!(
            summary(&rows),
            [
                (V3, AmountMismatch, Some("4200"), TOTAL - 1),
                (V3, PaidTwice, Some("4201"), TOTAL),
            ]
        );
        assert_eq!(rows[1].requested_at, None, "no attempt was left to fill");
        assert_eq!(rows[1].happened_at(), at(3));
    }

    #[test]
    fn statuses_read_back_as_written() {
        for status in PaymentStatus::ALL {
            assert_eq!(PaymentStatus::parse(status.as_str()), Some(status));
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::Value::String(status.as_str().into())
            );
        }
        assert_eq!(PaymentStatus::parse("paid"), None);
    }
}
