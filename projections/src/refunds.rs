//! `refunds_view`: every refund, from request to WeChat Pay's answer. The refund poller reads it
//! for refunds still processing (`checks.rs`); staff search it. Kept by the orders projection in
//! the append's transaction from the order's own refunds (the domain's `evolve`), plus the one
//! thing only the log knows: which staff member asked for each.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use uuid::Uuid;

use paystream_engine::db::{from_millis, millis, Db};
use paystream_engine::error::Result;
use paystream_engine::order::{OrderEvent, RefundStatus};

use crate::orders::{internal, placeholders, rfc3339, Page, Projected};
use crate::rebuild::CopyText;
use crate::search::{search_page, Conditions, PageBounds, Param};

/// Who asked for each refund of one order (`out_refund_no` → staff id), from the metadata of its
/// `RefundRequested` event. Refunds asked for by anyone else (none today) have no entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Requesters(HashMap<String, Uuid>);

impl Requesters {
    /// `actor` recorded `event` (the event metadata's `actor`).
    pub(crate) fn observe(&mut self, actor: Option<&str>, event: &OrderEvent) {
        let OrderEvent::RefundRequested { out_refund_no, .. } = event else {
            return;
        };
        let staff = actor
            .and_then(|actor| actor.strip_prefix("staff:"))
            .and_then(|id| Uuid::parse_str(id).ok());
        // As in `evolve`, the first request under a refund number is the refund.
        if let (Some(staff), false) = (staff, self.0.contains_key(out_refund_no)) {
            self.0.insert(out_refund_no.clone(), staff);
        }
    }

    fn of(&self, out_refund_no: &str) -> Option<Uuid> {
        self.0.get(out_refund_no).copied()
    }
}

/// Values bound per row, in the column order of [`UPSERT`].
const VALUES: usize = 11;
/// Rows per statement, far below both databases' limits of bound parameters.
const ROWS_PER_STATEMENT: usize = 500;
const UPSERT: &str = "INSERT INTO refunds_view (out_refund_no, order_id, out_trade_no, \
    amount_fen, reason, status, refund_id, failure_reason, requested_by, requested_at, \
    finished_at) VALUES ";
const UPSERT_CONFLICT: &str = " ON CONFLICT (out_refund_no) DO UPDATE SET \
    status = excluded.status, refund_id = excluded.refund_id, \
    failure_reason = excluded.failure_reason, finished_at = excluded.finished_at";

/// Writes the refunds of `orders` (an order has at most 50, but a rebuild projects many orders
/// at once).
pub(crate) async fn write(
    conn: &mut AnyConnection,
    orders: &[Projected],
) -> Result<(), sqlx::Error> {
    let refunds: Vec<_> = orders
        .iter()
        .flat_map(|p| p.order.refunds.iter().map(move |r| (p, r)))
        .collect();
    for round in refunds.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "{UPSERT}{}{UPSERT_CONFLICT}",
            placeholders(round.len(), VALUES)
        );
        let mut query = sqlx::query(&sql);
        for (projected, refund) in round {
            let requested_by = projected.refund_requesters.of(&refund.out_refund_no);
            query = query
                .bind(refund.out_refund_no.clone())
                .bind(projected.order.id.to_string())
                .bind(projected.order.out_trade_no.clone())
                .bind(refund.amount_fen.get())
                .bind(refund.reason.clone())
                .bind(refund.status.as_str())
                .bind(refund.refund_id.clone())
                .bind(refund.failure_reason.clone())
                .bind(requested_by.map(|id| id.to_string()))
                .bind(millis(refund.requested_at))
                .bind(refund.finished_at.map(millis));
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// `COPY` of `refunds_view` rows, in the column order [`copy_rows`] writes them.
pub(crate) const COPY_REFUNDS: &str = "COPY refunds_view (out_refund_no, order_id, \
    out_trade_no, amount_fen, reason, status, refund_id, failure_reason, requested_by, \
    requested_at, finished_at) FROM STDIN";

/// [`write`] during a PostgreSQL rebuild: every refund of `orders`, for [`COPY_REFUNDS`].
pub(crate) fn copy_rows(orders: &[Projected], out: &mut CopyText) {
    for p in orders {
        for refund in &p.order.refunds {
            out.text(&refund.out_refund_no);
            out.uuid(p.order.id);
            out.text(&p.order.out_trade_no);
            out.int(refund.amount_fen.get());
            out.opt_text(refund.reason.as_deref());
            out.text(refund.status.as_str());
            out.opt_text(refund.refund_id.as_deref());
            out.opt_text(refund.failure_reason.as_deref());
            match p.refund_requesters.of(&refund.out_refund_no) {
                Some(staff) => out.uuid(staff),
                None => out.null(),
            }
            out.int(millis(refund.requested_at));
            out.opt_int(refund.finished_at.map(millis));
            out.end_row();
        }
    }
}

/// A refund as staff see it; money in fen, times RFC 3339.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RefundView {
    pub order_id: Uuid,
    pub out_trade_no: String,
    pub out_refund_no: String,
    /// WeChat Pay's refund id, once it reported success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refund_id: Option<String>,
    pub amount_fen: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub status: RefundStatus,
    /// Why WeChat Pay refused or closed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// The staff member who asked for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<Uuid>,
    pub requested_at: String,
    /// When WeChat Pay confirmed or refused it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

const COLUMNS: &str = "order_id, out_trade_no, out_refund_no, refund_id, amount_fen, reason, \
    status, failure_reason, requested_by, requested_at, finished_at";

/// The refund statuses by their stored names.
pub fn refund_status(name: &str) -> Option<RefundStatus> {
    [
        RefundStatus::Processing,
        RefundStatus::Succeeded,
        RefundStatus::Failed,
    ]
    .into_iter()
    .find(|s| s.as_str() == name)
}

fn decode(row: &AnyRow) -> Result<RefundView> {
    let order_id: String = row.try_get("order_id")?;
    let status: String = row.try_get("status")?;
    let requested_by: Option<String> = row.try_get("requested_by")?;
    let finished_at: Option<i64> = row.try_get("finished_at")?;
    Ok(RefundView {
        order_id: Uuid::parse_str(&order_id).map_err(internal)?,
        out_trade_no: row.try_get("out_trade_no")?,
        out_refund_no: row.try_get("out_refund_no")?,
        refund_id: row.try_get("refund_id")?,
        amount_fen: row.try_get("amount_fen")?,
        reason: row.try_get("reason")?,
        status: refund_status(&status).ok_or_else(|| internal("bad status in refunds_view"))?,
        failure_reason: row.try_get("failure_reason")?,
        requested_by: requested_by
            .map(|id| Uuid::parse_str(&id))
            .transpose()
            .map_err(internal)?,
        requested_at: rfc3339(from_millis(row.try_get("requested_at")?)),
        finished_at: finished_at.map(|ms| rfc3339(from_millis(ms))),
    })
}

/// Which refunds to list. Every field narrows the result; `from`/`to` bound when the refund was
/// asked for.
#[derive(Clone, Debug, Default)]
pub struct RefundFilter {
    pub status: Option<RefundStatus>,
    pub out_refund_no: Option<String>,
    pub out_trade_no: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

impl RefundFilter {
    fn conditions(&self) -> Conditions {
        let mut conditions = Conditions::default();
        conditions.equals("status", self.status.as_ref().map(RefundStatus::as_str));
        conditions.equals("out_refund_no", self.out_refund_no.as_deref());
        conditions.equals("out_trade_no", self.out_trade_no.as_deref());
        if let Some(from) = self.from {
            conditions.add("requested_at >= ?", Param::Int(millis(from)));
        }
        if let Some(to) = self.to {
            conditions.add("requested_at < ?", Param::Int(millis(to)));
        }
        conditions
    }
}

/// The refunds as staff search them.
#[derive(Clone)]
pub struct RefundsView {
    db: Db,
}

impl RefundsView {
    pub fn new(db: Db) -> RefundsView {
        RefundsView { db }
    }

    /// Refunds matching `filter`, newest first. `page` starts at 1; 100 per page at most.
    pub async fn search(
        &self,
        filter: &RefundFilter,
        page: u32,
        per_page: u32,
    ) -> Result<Page<RefundView>> {
        search_page(
            &self.db,
            ("refunds_view", COLUMNS),
            &filter.conditions(),
            "requested_at DESC, out_refund_no DESC",
            PageBounds::new(page, per_page),
            decode,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paystream_engine::money::Fen;

    fn requested(no: &str) -> OrderEvent {
        OrderEvent::RefundRequested {
            out_refund_no: no.into(),
            amount_fen: Fen::new(100).unwrap(),
            reason: None,
            requested_at: Utc::now(),
        }
    }

    #[test]
    fn the_staff_member_who_asked_first_is_the_requester() {
        let staff = Uuid::new_v4();
        let mut requesters = Requesters::default();
        for (no, actor) in [
            ("R1", format!("staff:{staff}")),
            ("R1", format!("staff:{}", Uuid::new_v4())),
            ("R2", "system:job".to_string()),
            ("R3", "staff:not-an-id".to_string()),
        ] {
            requesters.observe(Some(&actor), &requested(no));
        }
        requesters.observe(None, &requested("R4"));
        assert_eq!(requesters.of("R1"), Some(staff));
        assert_eq!(requesters.of("R2"), None);
        assert_eq!(requesters.of("R3"), None);
        assert_eq!(requesters.of("R4"), None);
    }

    #[test]
    fn refund_statuses_read_back_as_written() {
        for status in [
            RefundStatus::Processing,
            RefundStatus::Succeeded,
            RefundStatus::Failed,
        ] {
            assert_eq!(refund_status(status.as_str()), Some(status));
        }
        assert_eq!(refund_status("done"), None);
    }
}
