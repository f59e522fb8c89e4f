//! Back-office work on top of the orders (contract.md, "Back-office API"): the review queue and
//! staff resolutions, the daily report, the orders as CSV. Support staff read; admins also write
//! (see `admin.rs`).

use std::borrow::Cow;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Days, NaiveDate, Utc};
use paystream_engine::money::Fen;
use paystream_engine::order::{OrderCommand, ReviewResolution};
use paystream_engine::orders::Metadata;
use paystream_engine::{ErrorCode, Kind};
use paystream_projections::{
    beijing_day, DailyTotals, OrderFilter, OrderView, OrdersView, ReviewQueue, MAX_REPORT_DAYS,
};
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::StaffMember;
use crate::customer::parse_order_id;
use crate::error::{ApiError, ApiResult};
use crate::extract::{empty_as_none, ApiJson, ApiQuery, RequestId};
use crate::openapi::{self, ErrorBody};
use crate::text::TextField;
use crate::AppState;

/// Each endpoint with its OpenAPI operation (the handler's `#[utoipa::path]`).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(review_queue))
        .routes(routes!(resolve_review))
        .routes(routes!(daily_report))
        .routes(routes!(export_orders))
}

/// Staff's note on a review resolution.
const REVIEW_NOTE: TextField = TextField {
    name: "note",
    code: ErrorCode::InvalidNote,
    max_chars: 500,
};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PageQuery {
    /// From 1 (the default).
    #[serde(default, deserialize_with = "empty_as_none")]
    #[param(minimum = 1)]
    page: Option<u32>,
    /// 100 by default and at most.
    #[serde(default, deserialize_with = "empty_as_none")]
    per_page: Option<u32>,
}

/// `GET /admin/review`: orders awaiting a staff decision, longest waiting first, each with why
/// (`reason` in words, `reasons` itemised). Paged like `/admin/orders` (100 per page at most).
#[utoipa::path(
    get,
    path = "/admin/review",
    tag = "back-office",
    summary = "Orders awaiting a staff decision, longest waiting first, each with why",
    security(("staff_token" = [])),
    params(PageQuery),
    responses((status = 200, description = "One page of the queue", body = openapi::ReviewPage)),
)]
async fn review_queue(
    State(state): State<AppState>,
    _staff: StaffMember,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    let page = ReviewQueue::new(state.db.clone())
        .list(q.page.unwrap_or(1), q.per_page.unwrap_or(100))
        .await?;
    Ok(Json(page))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ResolveRequest {
    /// `refunded` (the money that did not belong went back through refunds on the order),
    /// `accepted` (the money is kept and the order stands) or `other` (settled outside the
    /// engine; `note` required).
    #[schema(pattern = "^(refunded|accepted|other)$")]
    resolution: String,
    /// What was done; up to 500 characters.
    #[serde(default)]
    #[schema(nullable = false)]
    note: Option<String>,
}

/// `POST /admin/orders/{id}/review` (admin only): records how staff settled everything the
/// order has in review (`ReviewResolved`, with the staff member as actor). `resolution` is
/// `refunded` (the money that did not belong went back through refunds on the order),
/// `accepted` (the money is kept and the order stands) or `other` (settled outside the engine;
/// `note` required). An order in `needs_review` gets back the status its money says. Repeating
/// the same resolution answers as the first time; a different one once resolved is a 409.
#[utoipa::path(
    post,
    path = "/admin/orders/{id}/review",
    tag = "back-office",
    summary = "Record how staff resolved an order's review (admin only)",
    description = "An order in `needs_review` gets back the status its money says. Repeating \
        the same resolution answers as the first time; a different one once resolved is a 409.",
    security(("staff_token" = [])),
    params(("id" = Uuid, Path, description = "The order's id")),
    request_body = ResolveRequest,
    responses(
        (status = 200, description = "The order and its review", body = openapi::ReviewedOrder),
        (status = 400, description = "`invalid_resolution`, `invalid_note`, \
            `review_note_required`", body = ErrorBody),
        (status = 403, description = "Admins only (`admin_only`)", body = ErrorBody),
        (status = 404, description = "`order_not_found`", body = ErrorBody),
        (status = 409, description = "`nothing_to_review`, `review_already_resolved`", body = ErrorBody),
        (status = 422, description = "`refunded` without a refund (`nothing_refunded`)", body = ErrorBody),
    ),
)]
async fn resolve_review(
    State(state): State<AppState>,
    staff: StaffMember,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ResolveRequest>,
) -> ApiResult<impl IntoResponse> {
    staff.require_admin()?;
    let order_id = parse_order_id(&id)?;
    let resolution = ReviewResolution::parse(req.resolution.trim()).ok_or_else(|| {
        ApiError::new(
            Kind::Invalid,
            ErrorCode::InvalidResolution,
            "resolution must be one of refunded, accepted, other",
        )
    })?;
    let note = REVIEW_NOTE.optional(req.note.as_deref())?;
    let meta = Metadata::actor(format!("staff:{}", staff.0.id)).with_request_id(request_id);
    let command = OrderCommand::ResolveReview {
        resolution,
        note,
        now: Utc::now(),
    };
    let outcome = state.orders.execute(order_id, command, &meta).await?;
    if !outcome.appended.is_empty() {
        tracing::info!(order_id = %order_id, resolution = resolution.as_str(), staff_id = %staff.0.id, status = outcome.order.status.as_str(), "review resolved");
    }
    let mut body = serde_json::to_value(OrderView::from(&outcome.order))
        .map_err(|e| ApiError::new(Kind::Internal, ErrorCode::InternalError, e.to_string()))?;
    body["review"] = json!(outcome.order.review);
    Ok(Json(body))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ReportQuery {
    /// The first Beijing day, `YYYY-MM-DD`; 30 days before `to` by default.
    #[param(format = Date)]
    from: Option<String>,
    /// The last Beijing day, `YYYY-MM-DD`, included; today by default. At most 366 days.
    #[param(format = Date)]
    to: Option<String>,
}

/// Days a report covers when `from` is not given.
const DEFAULT_REPORT_DAYS: u64 = 30;

pub(crate) fn bad_query(message: impl Into<String>) -> ApiError {
    ApiError::new(Kind::Invalid, ErrorCode::InvalidQuery, message)
}

/// A Beijing calendar day, exactly `YYYY-MM-DD` (chrono alone also takes `2026-2-1`); blank
/// means absent.
pub(crate) fn parse_day(value: Option<&str>, name: &str) -> ApiResult<Option<NaiveDate>> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| {
            let b = v.as_bytes();
            (b.len() == 10 && b[4] == b'-' && b[7] == b'-')
                .then(|| NaiveDate::parse_from_str(v, "%Y-%m-%d").ok())
                .flatten()
                .ok_or_else(|| {
                    bad_query(format!(
                        "{name} must be a Beijing calendar day, YYYY-MM-DD (such as 2026-12-01)"
                    ))
                })
        })
        .transpose()
}

/// The report's days, both included: `to` defaults to today in Beijing, `from` to 30 days
/// ending at `to`; at most 366 days, and `from` not after `to`.
fn report_range(
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    today: NaiveDate,
) -> ApiResult<(NaiveDate, NaiveDate)> {
    let to = to.unwrap_or(today);
    let from = match from {
        Some(from) => from,
        None => to
            .checked_sub_days(Days::new(DEFAULT_REPORT_DAYS - 1))
            .ok_or_else(|| bad_query("to is out of range"))?,
    };
    if from > to {
        return Err(bad_query("from must not be after to"));
    }
    let days = (to - from).num_days() + 1;
    if days > MAX_REPORT_DAYS as i64 {
        return Err(bad_query(format!(
            "a report covers at most {MAX_REPORT_DAYS} days; this asks for {days}"
        )));
    }
    Ok((from, to))
}

/// `GET /admin/reports/daily?from=YYYY-MM-DD&to=YYYY-MM-DD`: one item per Beijing day (UTC+8),
/// oldest first, days without money included as zeros, each split `by_channel`. From the
/// `daily_totals` read model (see `projections/src/daily.rs` for what is counted where: every
/// payment that arrived counts in `gross_fen` on the day of its `paid_at`, the part that went to
/// review also in `unmatched_fen`; refunds count on the day WeChat Pay confirmed them).
#[utoipa::path(
    get,
    path = "/admin/reports/daily",
    tag = "back-office",
    summary = "Money per Beijing day, split by channel",
    security(("staff_token" = [])),
    params(ReportQuery),
    responses((status = 200, description = "One item per day, oldest first", body = openapi::DailyReport)),
)]
async fn daily_report(
    State(state): State<AppState>,
    _staff: StaffMember,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> ApiResult<impl IntoResponse> {
    let (from, to) = report_range(
        parse_day(q.from.as_deref(), "from")?,
        parse_day(q.to.as_deref(), "to")?,
        beijing_day(Utc::now()),
    )?;
    let items = DailyTotals::new(state.db.clone()).report(from, to).await?;
    Ok(Json(json!({ "items": items })))
}

// ---- GET /admin/orders.csv ----

/// The filters of `GET /admin/orders` (`admin.rs`, `SearchQuery`); paging parameters are
/// accepted and ignored: the export is the whole result.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ExportQuery {
    #[param(value_type = Option<openapi::OrderStatus>)]
    status: Option<String>,
    /// The customer's openid.
    openid: Option<String>,
    /// Our order number, as WeChat Pay knows it.
    out_trade_no: Option<String>,
    /// WeChat Pay's payment id.
    transaction_id: Option<String>,
    /// Placed at or after: an RFC 3339 time, or `YYYY-MM-DD` (that day in Beijing time).
    from: Option<String>,
    /// Placed before: an RFC 3339 time, or `YYYY-MM-DD` (that whole day included).
    to: Option<String>,
}

fn export_filter(q: ExportQuery) -> ApiResult<OrderFilter> {
    crate::admin::order_filter(crate::admin::OrderFilterQuery {
        status: q.status,
        openid: q.openid,
        out_trade_no: q.out_trade_no,
        transaction_id: q.transaction_id,
        from: q.from,
        to: q.to,
    })
}

/// Orders read per query while the export streams.
const EXPORT_BATCH: u32 = 100;

const CSV_HEADER: [&str; 13] = [
    "id",
    "out_trade_no",
    "status",
    "created_at",
    "paid_at",
    "total_yuan",
    "paid_yuan",
    "refunded_yuan",
    "channel",
    "transaction_id",
    "openid",
    "items",
    "note",
];

/// A cell a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, or a tab or carriage return
/// first) gets a `'` in front, so it is shown as text (OWASP, "CSV injection").
fn safe_cell(value: &str) -> Cow<'_, str> {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{value}"))
    } else {
        Cow::Borrowed(value)
    }
}

/// Fen as yuan with two decimals ("12.50"), through `rust_decimal`.
fn yuan(fen: i64) -> String {
    Fen::new(fen).map_or_else(|| fen.to_string(), |f| f.to_yuan().to_string())
}

/// An RFC 3339 instant of the view in Beijing time, `yyyy-MM-dd HH:mm:ss`.
fn beijing_time(at: &str) -> String {
    DateTime::parse_from_rfc3339(at)
        .map(|at| paystream_engine::beijing::datetime(at.to_utc()))
        .unwrap_or_default()
}

fn csv_row(order: &OrderView) -> [String; 13] {
    let items = order
        .items
        .iter()
        .map(|line| format!("{} x {}", line.name, line.quantity))
        .collect::<Vec<_>>()
        .join("; ");
    [
        order.id.to_string(),
        order.out_trade_no.clone(),
        order.status.as_str().to_string(),
        beijing_time(&order.created_at),
        order
            .paid_at
            .as_deref()
            .map(beijing_time)
            .unwrap_or_default(),
        yuan(order.total_fen),
        yuan(order.paid_fen),
        yuan(order.refunded_fen),
        order
            .channel
            .map(|c| c.as_str().to_string())
            .unwrap_or_default(),
        order.transaction_id.clone().unwrap_or_default(),
        order.openid.clone(),
        items,
        order.note.clone().unwrap_or_default(),
    ]
}

/// CSV lines (CRLF, quoted where needed by the `csv` crate, formula-safe) for `rows`.
fn csv_lines<I, R>(rows: I) -> Result<Vec<u8>, csv::Error>
where
    I: IntoIterator<Item = R>,
    R: IntoIterator,
    R::Item: AsRef<str>,
{
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    for row in rows {
        let cells: Vec<String> = row
            .into_iter()
            .map(|cell| safe_cell(cell.as_ref()).into_owned())
            .collect();
        writer.write_record(&cells)?;
    }
    writer
        .into_inner()
        .map_err(|e| csv::Error::from(e.into_error()))
}

/// Where the export stands between two chunks.
struct Export {
    view: OrdersView,
    filter: OrderFilter,
    /// A batch read but not yet written (the first, read before answering).
    pending: Option<Vec<OrderView>>,
    after: Option<(i64, uuid::Uuid)>,
    started: bool,
    done: bool,
}

impl Export {
    /// The next chunk of the file: the BOM and the header with the first batch, then one batch
    /// of orders per chunk.
    async fn next(mut self) -> Option<(Result<Bytes, std::io::Error>, Export)> {
        if self.done {
            return None;
        }
        let batch = match self.pending.take() {
            Some(batch) => batch,
            None => match self
                .view
                .search_after(&self.filter, self.after, EXPORT_BATCH)
                .await
            {
                Ok(batch) => batch,
                Err(error) => {
                    // The answer has started: all that is left is to cut it short.
                    tracing::error!(%error, "orders export failed midway");
                    self.done = true;
                    return Some((Err(std::io::Error::other(error.to_string())), self));
                }
            },
        };
        self.done = batch.len() < EXPORT_BATCH as usize;
        self.after = batch.last().map(OrderView::cursor);
        let mut chunk = Vec::new();
        if !self.started {
            self.started = true;
            chunk.extend_from_slice("\u{FEFF}".as_bytes());
            chunk.extend(csv_lines([CSV_HEADER]).unwrap_or_default());
        }
        match csv_lines(batch.iter().map(csv_row)) {
            Ok(lines) => chunk.extend(lines),
            Err(error) => {
                tracing::error!(%error, "orders export failed midway");
                self.done = true;
                return Some((Err(std::io::Error::other(error)), self));
            }
        }
        Some((Ok(Bytes::from(chunk)), self))
    }
}

/// `GET /admin/orders.csv?<the filters of /admin/orders>`: every matching order (not one page),
/// newest first, as CSV: UTF-8 with a BOM (so spreadsheets read Chinese right), a header row,
/// times in Beijing time (`yyyy-MM-dd HH:mm:ss`), money in yuan with two decimals. Streamed in
/// batches walked by keyset, so a large export holds one batch in memory and orders placed
/// meanwhile neither repeat nor hide others. Any staff member may export (it is the search as a
/// file, and the search is open to support staff).
#[utoipa::path(
    get,
    path = "/admin/orders.csv",
    tag = "back-office",
    summary = "Every order matching the search, as CSV",
    description = "UTF-8 with a BOM, a header row, Beijing times, money in yuan with two \
        decimals; newest first. Takes the filters of `GET /admin/orders` (paging is ignored).",
    security(("staff_token" = [])),
    params(ExportQuery),
    responses((status = 200, description = "The orders", content_type = "text/csv", body = String)),
)]
async fn export_orders(
    State(state): State<AppState>,
    _staff: StaffMember,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> ApiResult<Response> {
    let filter = export_filter(q)?;
    let view = state.orders_view.clone();
    // Read before answering: a failure now is still a proper error answer.
    let first = view.search_after(&filter, None, EXPORT_BATCH).await?;
    let export = Export {
        view,
        filter,
        pending: Some(first),
        after: None,
        started: false,
        done: false,
    };
    let body = Body::from_stream(futures::stream::unfold(export, Export::next));
    let disposition = format!(
        "attachment; filename=\"orders-{}.csv\"",
        beijing_day(Utc::now()).format("%Y%m%d")
    );
    let disposition = HeaderValue::from_str(&disposition)
        .map_err(|e| ApiError::new(Kind::Internal, ErrorCode::InternalError, e.to_string()))?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
            // Customers' openids: not for shared caches.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn code<T: std::fmt::Debug>(result: ApiResult<T>) -> ErrorCode {
        result.unwrap_err().0.code()
    }

    #[test]
    fn the_report_range_defaults_to_the_last_30_days_and_is_bounded() {
        let today = day("2024-05-31");
        assert_eq!(
            report_range(None, None, today).unwrap(),
            (day("2024-05-02"), today)
        );
        assert_eq!(
            report_range(None, Some(day("2024-01-30")), today).unwrap(),
            (day("2024-01-01"), day("2024-01-30"))
        );
        assert_eq!(
            report_range(Some(day("2024-05-31")), None, today).unwrap(),
            (today, today)
        );
        // 2024 is a leap year: 366 days is the most.
        assert_eq!(
            report_range(Some(day("2024-01-01")), Some(day("2024-12-31")), today).unwrap(),
            (day("2024-01-01"), day("2024-12-31"))
        );
        assert_eq!(
            code(report_range(
                Some(day("2023-12-31")),
                Some(day("2024-12-31")),
                today
            )),
            ErrorCode::InvalidQuery
        );
        assert_eq!(
            code(report_range(
                Some(day("2024-05-02")),
                Some(day("2024-05-01")),
                today
            )),
            ErrorCode::InvalidQuery
        );
        assert_eq!(
            code(parse_day(Some("2024-5-1x"), "from")),
            ErrorCode::InvalidQuery
        );
        assert_eq!(parse_day(Some(" "), "from").unwrap(), None);
    }

    #[test]
    fn cells_that_a_spreadsheet_would_run_are_shown_as_text() {
        for formula in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(safe_cell(formula), format!("'{formula}"));
        }
        for plain in ["tea", "12.50", "", "a=b", " =x"] {
            assert_eq!(safe_cell(plain), plain);
        }
    }

    #[test]
    fn csv_lines_quote_what_needs_it_and_money_is_yuan() {
        let lines = csv_lines([["a,b", "say \"hi\"", "=cmd", "plain"]]).unwrap();
        assert_eq!(
            String::from_utf8(lines).unwrap(),
            "\"a,b\",\"say \"\"hi\"\"\",'=cmd,plain\r\n"
        );
        assert_eq!(yuan(1250), "12.50");
        assert_eq!(yuan(5), "0.05");
        assert_eq!(yuan(0), "0.00");
        assert_eq!(yuan(100_000_000), "1000000.00");
        assert_eq!(
            beijing_time("2024-05-01T23:30:00.000Z"),
            "2024-05-02 07:30:00"
        );
    }
}
