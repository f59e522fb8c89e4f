//! The reconciliation endpoints of the back-office API (`/admin/reconciliation/{date}`): the
//! stored report of a Beijing day, and running a day now — through the real engine over HTTP,
//! against the built-in WeChat Pay simulator, each test on its own database.

mod common;

use chrono::{Days, NaiveDate, Utc};
use common::{assert_error, spawn_app};
use paystream_engine::db::Backend;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Today in Beijing.
fn today() -> NaiveDate {
    paystream_engine::beijing::day(Utc::now())
}

/// A Beijing day `n` days before today.
fn days_ago(n: u64) -> NaiveDate {
    today().checked_sub_days(Days::new(n)).unwrap()
}

fn path(date: impl std::fmt::Display) -> String {
    format!("/admin/reconciliation/{date}")
}

fn assert_zero(totals: &Value) {
    assert_eq!(
        totals,
        &json!({ "payments": 0, "payments_fen": 0, "refunds": 0, "refunds_fen": 0 }),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_day_never_reconciled_is_a_404() {
    let app = spawn_app(Backend::Sqlite).await;
    let admin = app.admin_token().await;
    for date in [days_ago(1), days_ago(3), today()] {
        let (status, body) = app.get(&path(date), Some(&admin)).await;
        assert_error(
            status,
            &body,
            StatusCode::NOT_FOUND,
            "reconciliation_not_found",
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&date.to_string()),
            "{body}"
        );
    }
    // Without a token: 401, as everywhere in the back-office.
    let (status, body) = app.get(&path(days_ago(1)), None).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "missing_token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_malformed_date_is_a_400() {
    let app = spawn_app(Backend::Sqlite).await;
    let admin = app.admin_token().await;
    for bad in [
        "yesterday",
        "2026-13-01",
        "2026-02-30",
        "2026-2-1",
        "20261201",
        "2026-12-01T00:00:00Z",
    ] {
        let (status, body) = app.get(&path(bad), Some(&admin)).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_query");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("YYYY-MM-DD"),
            "{bad}: {body}"
        );
        let (status, body) = app.post(&path(bad), Some(&admin), json!({})).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_query");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn today_and_later_days_cannot_be_run_yet() {
    let app = spawn_app(Backend::Sqlite).await;
    let admin = app.admin_token().await;
    let tomorrow = today().checked_add_days(Days::new(1)).unwrap();
    let next_year = today().checked_add_days(Days::new(366)).unwrap();
    for date in [today(), tomorrow, next_year] {
        let (status, body) = app.post(&path(date), Some(&admin), json!({})).await;
        assert_error(
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "day_not_over",
        );
        assert!(
            body["error"]["message"].as_str().unwrap().contains("bill"),
            "{body}"
        );
        // Nothing was stored.
        let (status, body) = app.get(&path(date), Some(&admin)).await;
        assert_error(
            status,
            &body,
            StatusCode::NOT_FOUND,
            "reconciliation_not_found",
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn support_staff_read_reports_but_cannot_run_a_day() {
    let app = spawn_app(Backend::Sqlite).await;
    let support = app.support_token().await;
    let day = days_ago(3);
    let (status, body) = app.post(&path(day), Some(&support), json!({})).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "admin_only");
    // Refused before anything ran: still not reconciled.
    let (status, body) = app.get(&path(day), Some(&support)).await;
    assert_error(
        status,
        &body,
        StatusCode::NOT_FOUND,
        "reconciliation_not_found",
    );

    let admin = app.admin_token().await;
    let (status, ran) = app.post(&path(day), Some(&admin), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{ran}");
    let (status, read) = app.get(&path(day), Some(&support)).await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read, ran);
}

/// A past day without any trade: WeChat Pay keeps no bill for it (`NO_STATEMENT_EXIST`; the
/// simulator answers the same), so the report says `no_bill`, with zeros on both sides and no
/// differences. Running it again counts the run and records nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_admin_runs_a_past_day_and_its_report_is_stored_sqlite() {
    runs_a_past_day(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_admin_runs_a_past_day_and_its_report_is_stored_postgres() {
    runs_a_past_day(Backend::Postgres).await;
}

async fn runs_a_past_day(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin_token().await;
    let day = days_ago(3);
    let before = Utc::now();
    let (status, report) = app.post(&path(day), Some(&admin), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["date"], day.to_string(), "{report}");
    assert_eq!(report["status"], "no_bill", "{report}");
    assert_eq!(report["runs"], 1, "{report}");
    assert_zero(&report["bill"]);
    assert_zero(&report["log"]);
    assert_eq!(report["lines"], json!([]), "{report}");
    let ran_at: chrono::DateTime<Utc> = report["ran_at"].as_str().unwrap().parse().unwrap();
    assert!(ran_at >= before - chrono::Duration::seconds(1), "{report}");

    let (status, stored) = app.get(&path(day), Some(&admin)).await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    assert_eq!(stored, report);

    let (status, again) = app.post(&path(day), Some(&admin), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["runs"], 2, "{again}");
    assert_eq!(again["status"], "no_bill", "{again}");
    assert_eq!(again["lines"], json!([]), "{again}");
    let (_, stored) = app.get(&path(day), Some(&admin)).await;
    assert_eq!(stored, again);

    // Other days are untouched.
    let (status, body) = app.get(&path(days_ago(4)), Some(&admin)).await;
    assert_error(
        status,
        &body,
        StatusCode::NOT_FOUND,
        "reconciliation_not_found",
    );
}
