//! Reconciliation against WeChat Pay's bills (contract.md, "Back-office API"): a Beijing day's
//! stored report, and running a day now (admin only). Money stays integer fen here; the web UI
//! shows yuan.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::Json;
use chrono::{NaiveDate, Utc};
use paystream_engine::reconciliation::Quiet;
use paystream_engine::{beijing, ErrorCode, Kind};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::StaffMember;
use crate::backoffice::{bad_query, parse_day};
use crate::error::{ApiError, ApiResult};
use crate::openapi::{self, ErrorBody};
use crate::AppState;

/// Each endpoint with its OpenAPI operation (the handler's `#[utoipa::path]`).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(report, run))
}

/// The `{date}` of the path: a Beijing calendar day, `YYYY-MM-DD`.
fn parse_date(value: &str) -> ApiResult<NaiveDate> {
    parse_day(Some(value), "date")?.ok_or_else(|| {
        bad_query("date must be a Beijing calendar day, YYYY-MM-DD (such as 2026-12-01)")
    })
}

/// `GET /admin/reconciliation/{date}` (any staff): the stored report of that Beijing day.
#[utoipa::path(
    get,
    path = "/admin/reconciliation/{date}",
    tag = "back-office",
    summary = "The reconciliation report of a Beijing day against WeChat Pay's bills",
    description = "The report the last run of the day stored (by the daily job at `RECONCILE_AT`, \
        `paystream reconcile`, or `POST` here): both sides' counts and totals, and every \
        difference with what was done about it. Money in integer fen.",
    security(("staff_token" = [])),
    params(("date" = String, Path, format = Date, description = "A Beijing day, `YYYY-MM-DD`")),
    responses(
        (status = 200, description = "The day's report", body = openapi::ReconciliationReport),
        (status = 400, description = "A date that is not `YYYY-MM-DD` (`invalid_query`)", body = ErrorBody),
        (status = 404, description = "The day was never reconciled (`reconciliation_not_found`)", body = ErrorBody),
    ),
)]
async fn report(
    State(state): State<AppState>,
    _staff: StaffMember,
    Path(date): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let date = parse_date(&date)?;
    let report = state.reconciler.reports().get(date).await?.ok_or_else(|| {
        ApiError::new(
            Kind::NotFound,
            ErrorCode::ReconciliationNotFound,
            format!("{date} has not been reconciled yet"),
        )
    })?;
    Ok(Json(report))
}

/// `POST /admin/reconciliation/{date}` (admin only): reconciles the day now and answers its
/// report. Running a day again records nothing twice.
#[utoipa::path(
    post,
    path = "/admin/reconciliation/{date}",
    tag = "back-office",
    summary = "Reconcile a Beijing day against WeChat Pay's bills now (admin only)",
    description = "Fetches the day's trade bill, compares it with the log, records what differs \
        (a payment missing in the log is recorded once a query confirms it; any other difference \
        puts the order in the review queue as a `ReconciliationDiscrepancy`) and stores the day's \
        report. Running a day again records nothing twice. Only a day that has ended in Beijing \
        has a bill: today or a later day is refused (422 `day_not_over`). A bill not made yet \
        gives a report with status `not_ready`.",
    security(("staff_token" = [])),
    params(("date" = String, Path, format = Date, description = "A Beijing day, `YYYY-MM-DD`, before today")),
    responses(
        (status = 200, description = "The day's report", body = openapi::ReconciliationReport),
        (status = 400, description = "A date that is not `YYYY-MM-DD` (`invalid_query`)", body = ErrorBody),
        (status = 403, description = "Admins only (`admin_only`)", body = ErrorBody),
        (status = 422, description = "Today or a later day: its bill does not exist yet (`day_not_over`)", body = ErrorBody),
        (status = 502, description = "WeChat Pay refused the bill request (`wechatpay_rejected`)", body = ErrorBody),
    ),
)]
async fn run(
    State(state): State<AppState>,
    staff: StaffMember,
    Path(date): Path<String>,
) -> ApiResult<impl IntoResponse> {
    staff.require_admin()?;
    let date = parse_date(&date)?;
    let now = Utc::now();
    let today = beijing::day(now);
    if date >= today {
        return Err(ApiError::new(
            Kind::Rule,
            ErrorCode::DayNotOver,
            format!(
                "{date} has not ended in Beijing (today is {today}): WeChat Pay makes a day's \
                 bill only after the day, so reconcile it from tomorrow"
            ),
        ));
    }
    let report = state.reconciler.run(date, now, &Quiet).await?;
    tracing::info!(
        bill_date = %date,
        staff_id = %staff.0.id,
        status = ?report.status,
        lines = report.lines.len(),
        open = report.open_lines(),
        "reconciliation run from the back-office"
    );
    Ok(Json(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_strict_yyyy_mm_dd() {
        assert_eq!(
            parse_date("2026-12-01").unwrap(),
            NaiveDate::from_ymd_opt(2026, 12, 1).unwrap()
        );
        for bad in [
            "2026-13-01",
            "2026-2-1",
            "20261201",
            "yesterday",
            "",
            "2026-02-30",
        ] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
    }
}
