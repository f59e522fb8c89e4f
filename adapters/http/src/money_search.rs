//! `GET /admin/payments` and `GET /admin/refunds`: staff (support and admin) search every payment
//! attempt and every refund, as they search orders — the same filters where they mean the same
//! (Beijing days, blank means no filter, bad values a 400), the same page shape, newest first.

use std::collections::{HashMap, HashSet};

use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use paystream_engine::order::PayChannel;
use paystream_engine::{ErrorCode, Kind};
use paystream_projections::{
    refund_status, Page, PaymentFilter, PaymentStatus, PaymentsView, RefundFilter, RefundView,
    RefundsView,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::admin::{parse_bound, text_filter};
use crate::auth::StaffMember;
use crate::error::{ApiError, ApiResult};
use crate::extract::{empty_as_none, ApiQuery};
use crate::openapi;
use crate::AppState;

/// Each endpoint with its OpenAPI operation (the handler's `#[utoipa::path]`).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(search_payments))
        .routes(routes!(search_refunds))
}

/// Items per page when the query does not say.
const DEFAULT_PER_PAGE: u32 = 20;

fn unknown_status(status: &str) -> ApiError {
    ApiError::new(
        Kind::Invalid,
        ErrorCode::InvalidStatus,
        format!("unknown status {status}"),
    )
}

/// A closed-vocabulary filter: blank means no filter, anything but one of its names is `error`.
fn named<T>(
    value: Option<&str>,
    parse: impl Fn(&str) -> Option<T>,
    error: impl Fn(&str) -> ApiError,
) -> ApiResult<Option<T>> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => parse(v).map(Some).ok_or_else(|| error(v)),
    }
}

fn channel_named(name: &str) -> Option<PayChannel> {
    [PayChannel::WechatpayV3, PayChannel::WechatpayV2]
        .into_iter()
        .find(|c| c.as_str() == name)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PaymentQuery {
    #[param(value_type = Option<PaymentStatusSchema>)]
    status: Option<String>,
    #[param(value_type = Option<openapi::PayChannel>)]
    channel: Option<String>,
    /// WeChat Pay's payment id.
    transaction_id: Option<String>,
    /// Our order number, as WeChat Pay knows it.
    out_trade_no: Option<String>,
    /// The paying customer's openid.
    openid: Option<String>,
    /// Money arrived (else: asked for) at or after: an RFC 3339 time, or `YYYY-MM-DD` (that day
    /// in Beijing time).
    from: Option<String>,
    /// Money arrived (else: asked for) before: an RFC 3339 time, or `YYYY-MM-DD` (that whole day
    /// included).
    to: Option<String>,
    /// From 1 (the default).
    #[serde(default, deserialize_with = "empty_as_none")]
    page: Option<u32>,
    /// 20 by default, 100 at most.
    #[serde(default, deserialize_with = "empty_as_none")]
    per_page: Option<u32>,
}

/// The search the query asks for; bad values are a 400 naming the field.
fn payment_filter(q: PaymentQuery) -> ApiResult<PaymentFilter> {
    Ok(PaymentFilter {
        status: named(q.status.as_deref(), PaymentStatus::parse, unknown_status)?,
        channel: named(q.channel.as_deref(), channel_named, |c| {
            ApiError::new(
                Kind::Invalid,
                ErrorCode::InvalidQuery,
                format!("channel must be wechatpay_v3 or wechatpay_v2, not {c}"),
            )
        })?,
        transaction_id: text_filter(q.transaction_id, "transaction_id")?,
        out_trade_no: text_filter(q.out_trade_no, "out_trade_no")?,
        openid: text_filter(q.openid, "openid")?,
        from: parse_bound(q.from.as_deref(), "from", false)?,
        to: parse_bound(q.to.as_deref(), "to", true)?,
    })
}

/// `GET /admin/payments`: every payment attempt (a channel a payment was asked through, filled
/// in when money arrived on it; money with no attempt to fill is one of its own), newest first
/// by when the money arrived — or, without money, when it was asked for.
#[utoipa::path(
    get,
    path = "/admin/payments",
    tag = "back-office",
    summary = "Search payment attempts, newest first",
    description = "One item per payment attempt: a channel a payment was asked through \
        (`requested`, or `closed` with the order), filled in when money arrived through it \
        (`succeeded`, or why it went to review: `amount_mismatch`, `paid_after_close`, \
        `paid_twice`). A notice WeChat Pay sends again adds nothing. `from`/`to` bound when the \
        money arrived (when it was asked for, without money): a day's payments are the daily \
        report's.",
    security(("staff_token" = [])),
    params(PaymentQuery),
    responses((status = 200, description = "One page of payment attempts", body = PaymentPage)),
)]
async fn search_payments(
    State(state): State<AppState>,
    _staff: StaffMember,
    ApiQuery(q): ApiQuery<PaymentQuery>,
) -> ApiResult<impl IntoResponse> {
    let (page, per_page) = (q.page, q.per_page);
    let filter = payment_filter(q)?;
    let page = PaymentsView::new(state.db.clone())
        .search(
            &filter,
            page.unwrap_or(1),
            per_page.unwrap_or(DEFAULT_PER_PAGE),
        )
        .await?;
    Ok(Json(page))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RefundQuery {
    #[param(value_type = Option<openapi::RefundStatus>)]
    status: Option<String>,
    /// Our refund number, as WeChat Pay knows it.
    out_refund_no: Option<String>,
    /// The order's number, as WeChat Pay knows it.
    out_trade_no: Option<String>,
    /// Asked for at or after: an RFC 3339 time, or `YYYY-MM-DD` (that day in Beijing time).
    from: Option<String>,
    /// Asked for before: an RFC 3339 time, or `YYYY-MM-DD` (that whole day included).
    to: Option<String>,
    /// From 1 (the default).
    #[serde(default, deserialize_with = "empty_as_none")]
    page: Option<u32>,
    /// 20 by default, 100 at most.
    #[serde(default, deserialize_with = "empty_as_none")]
    per_page: Option<u32>,
}

fn refund_filter(q: RefundQuery) -> ApiResult<RefundFilter> {
    Ok(RefundFilter {
        status: named(q.status.as_deref(), refund_status, unknown_status)?,
        out_refund_no: text_filter(q.out_refund_no, "out_refund_no")?,
        out_trade_no: text_filter(q.out_trade_no, "out_trade_no")?,
        from: parse_bound(q.from.as_deref(), "from", false)?,
        to: parse_bound(q.to.as_deref(), "to", true)?,
    })
}

/// A refund with the username of the staff member who asked for it, for people reading the list.
#[derive(Serialize)]
struct RefundItem {
    #[serde(flatten)]
    refund: RefundView,
    #[serde(skip_serializing_if = "Option::is_none")]
    requested_by_username: Option<String>,
}

/// `GET /admin/refunds`: every refund, newest first by when it was asked for, with what WeChat
/// Pay answered and who asked (by id and username, one lookup per staff member on the page).
#[utoipa::path(
    get,
    path = "/admin/refunds",
    tag = "back-office",
    summary = "Search refunds, newest first",
    description = "A refund is `processing` until WeChat Pay answers, then `succeeded` (with its \
        `refund_id`) or `failed` (with `failure_reason`). `from`/`to` bound when it was asked \
        for.",
    security(("staff_token" = [])),
    params(RefundQuery),
    responses((status = 200, description = "One page of refunds", body = RefundPage)),
)]
async fn search_refunds(
    State(state): State<AppState>,
    _staff: StaffMember,
    ApiQuery(q): ApiQuery<RefundQuery>,
) -> ApiResult<impl IntoResponse> {
    let (page, per_page) = (q.page, q.per_page);
    let filter = refund_filter(q)?;
    let found = RefundsView::new(state.db.clone())
        .search(
            &filter,
            page.unwrap_or(1),
            per_page.unwrap_or(DEFAULT_PER_PAGE),
        )
        .await?;
    // One lookup per staff member on the page, not per refund.
    let requesters: HashSet<Uuid> = found.items.iter().filter_map(|r| r.requested_by).collect();
    let mut usernames = HashMap::new();
    for id in requesters {
        if let Some(staff) = state.accounts.staff(id).await? {
            usernames.insert(id, staff.username);
        }
    }
    let items = found
        .items
        .into_iter()
        .map(|refund| RefundItem {
            requested_by_username: refund
                .requested_by
                .and_then(|id| usernames.get(&id).cloned()),
            refund,
        })
        .collect();
    Ok(Json(Page {
        page: found.page,
        per_page: found.per_page,
        total_items: found.total_items,
        total_pages: found.total_pages,
        items,
    }))
}

// ---- OpenAPI shapes of the answers (the projections' types stay free of OpenAPI) ----

/// What became of a payment attempt (mirrors `PaymentStatus`; see the test).
#[derive(ToSchema)]
#[schema(as = PaymentStatus)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum PaymentStatusSchema {
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

/// A payment attempt.
#[derive(ToSchema)]
#[allow(dead_code)]
struct PaymentAttempt {
    order_id: Uuid,
    out_trade_no: String,
    openid: String,
    channel: openapi::PayChannel,
    status: PaymentStatusSchema,
    /// WeChat Pay's payment id, once money arrived.
    #[schema(nullable = false)]
    transaction_id: Option<String>,
    /// The money that arrived; until then the amount asked for (the order total). Integer fen.
    amount_fen: i64,
    /// Absent for money that arrived with no attempt left to fill (`paid_twice`).
    #[schema(nullable = false)]
    requested_at: Option<DateTime<Utc>>,
    #[schema(nullable = false)]
    paid_at: Option<DateTime<Utc>>,
    /// When the order closed with this attempt open.
    #[schema(nullable = false)]
    closed_at: Option<DateTime<Utc>>,
}

/// One page of payment attempts, newest first.
#[derive(ToSchema)]
#[allow(dead_code)]
struct PaymentPage {
    page: u32,
    per_page: u32,
    total_items: i64,
    total_pages: i64,
    items: Vec<PaymentAttempt>,
}

/// A refund.
#[derive(ToSchema)]
#[allow(dead_code)]
struct RefundRecord {
    order_id: Uuid,
    out_trade_no: String,
    out_refund_no: String,
    /// WeChat Pay's refund id, once it reported success.
    #[schema(nullable = false)]
    refund_id: Option<String>,
    /// Integer fen.
    amount_fen: i64,
    #[schema(nullable = false)]
    reason: Option<String>,
    status: openapi::RefundStatus,
    /// Why WeChat Pay refused or closed it.
    #[schema(nullable = false)]
    failure_reason: Option<String>,
    /// The id of the staff member who asked for it.
    #[schema(nullable = false)]
    requested_by: Option<Uuid>,
    /// Their username (absent if the account is gone).
    #[schema(nullable = false)]
    requested_by_username: Option<String>,
    requested_at: DateTime<Utc>,
    /// When WeChat Pay confirmed or refused it.
    #[schema(nullable = false)]
    finished_at: Option<DateTime<Utc>>,
}

/// One page of refunds, newest first.
#[derive(ToSchema)]
#[allow(dead_code)]
struct RefundPage {
    page: u32,
    per_page: u32,
    total_items: i64,
    total_pages: i64,
    items: Vec<RefundRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code<T: std::fmt::Debug>(result: ApiResult<T>) -> ErrorCode {
        result.unwrap_err().0.code()
    }

    fn payment_query(status: &str, channel: &str, from: &str) -> PaymentQuery {
        PaymentQuery {
            status: Some(status.into()),
            channel: Some(channel.into()),
            transaction_id: None,
            out_trade_no: Some("  ".into()),
            openid: None,
            from: Some(from.into()),
            to: Some("2024-05-01".into()),
            page: None,
            per_page: None,
        }
    }

    #[test]
    fn payment_filters_read_like_the_order_search() {
        let filter =
            payment_filter(payment_query("paid_twice", " wechatpay_v2 ", "2024-05-01")).unwrap();
        assert_eq!(filter.status, Some(PaymentStatus::PaidTwice));
        assert_eq!(filter.channel, Some(PayChannel::WechatpayV2));
        assert_eq!(filter.out_trade_no, None, "blank filters nothing");
        // A Beijing day: from its midnight (16:00 UTC the day before) to the next.
        assert_eq!(
            filter.from.unwrap().to_rfc3339(),
            "2024-04-30T16:00:00+00:00"
        );
        assert_eq!(filter.to.unwrap().to_rfc3339(), "2024-05-01T16:00:00+00:00");

        let unfiltered = payment_filter(payment_query("", "", "")).unwrap();
        assert_eq!((unfiltered.status, unfiltered.channel), (None, None));
    }

    #[test]
    fn bad_payment_filters_name_what_is_wrong() {
        let bad = |status: &str, channel: &str, from: &str| {
            code(payment_filter(payment_query(status, channel, from)))
        };
        assert_eq!(bad("paid", "", ""), ErrorCode::InvalidStatus);
        assert_eq!(bad("", "alipay", ""), ErrorCode::InvalidQuery);
        assert_eq!(bad("", "", "yesterday"), ErrorCode::InvalidQuery);
    }

    #[test]
    fn bad_refund_filters_name_what_is_wrong() {
        let query = |status: &str, out_refund_no: &str| RefundQuery {
            status: Some(status.into()),
            out_refund_no: Some(out_refund_no.into()),
            out_trade_no: None,
            from: None,
            to: None,
            page: None,
            per_page: None,
        };
        let filter = refund_filter(query("processing", "R1")).unwrap();
        assert_eq!(
            filter.status,
            Some(paystream_engine::order::RefundStatus::Processing)
        );
        assert_eq!(filter.out_refund_no.as_deref(), Some("R1"));
        assert_eq!(
            code(refund_filter(query("refunded", ""))),
            ErrorCode::InvalidStatus
        );
        assert_eq!(
            code(refund_filter(query("", "a\u{0}b"))),
            ErrorCode::InvalidQuery
        );
    }

    #[test]
    fn the_documented_payment_statuses_are_the_read_models() {
        use utoipa::PartialSchema;
        let documented = serde_json::to_value(PaymentStatusSchema::schema()).unwrap();
        let names: Vec<&str> = PaymentStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(documented["enum"], serde_json::json!(names));
    }
}
