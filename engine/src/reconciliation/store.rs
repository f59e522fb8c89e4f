//! The day reports, one row per Beijing day, replaced by each run of that day.

use chrono::NaiveDate;
use sqlx::Row;

use super::Report;
use crate::db::{millis, Db};
use crate::error::{Error, Result};

#[derive(Clone)]
pub struct Reports {
    db: Db,
}

impl Reports {
    pub fn new(db: Db) -> Reports {
        Reports { db }
    }

    pub async fn get(&self, date: NaiveDate) -> Result<Option<Report>> {
        let row = sqlx::query("SELECT report FROM reconciliation_reports WHERE bill_date = $1")
            .bind(date.to_string())
            .fetch_optional(&self.db.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let text: String = row.try_get("report")?;
        serde_json::from_str(&text).map(Some).map_err(|e| {
            Error::internal(format!(
                "stored reconciliation report of {date} unreadable: {e}"
            ))
        })
    }

    /// The earliest day with a report: where this deployment's reconciliation began (days
    /// before it belong to whatever took payments before paystream).
    pub async fn first_day(&self) -> Result<Option<NaiveDate>> {
        // Dates are stored as `YYYY-MM-DD`, so the smallest text is the earliest day.
        let row = sqlx::query("SELECT MIN(bill_date) AS first FROM reconciliation_reports")
            .fetch_one(&self.db.pool)
            .await?;
        let Some(text) = row.try_get::<Option<String>, _>("first")? else {
            return Ok(None);
        };
        text.parse().map(Some).map_err(|e| {
            Error::internal(format!(
                "stored reconciliation date {text:?} unreadable: {e}"
            ))
        })
    }

    /// How many runs of the day there have been.
    pub async fn runs(&self, date: NaiveDate) -> Result<u32> {
        let row = sqlx::query("SELECT runs FROM reconciliation_reports WHERE bill_date = $1")
            .bind(date.to_string())
            .fetch_optional(&self.db.pool)
            .await?;
        Ok(match row {
            Some(row) => u32::try_from(row.try_get::<i64, _>("runs")?).unwrap_or(u32::MAX),
            None => 0,
        })
    }

    pub async fn put(&self, report: &Report) -> Result<()> {
        let text = serde_json::to_string(report).map_err(|e| Error::internal(e.to_string()))?;
        let status = serde_json::to_value(report.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        sqlx::query(
            "INSERT INTO reconciliation_reports (bill_date, status, runs, ran_at, report) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (bill_date) DO UPDATE SET \
             status = excluded.status, runs = excluded.runs, ran_at = excluded.ran_at, \
             report = excluded.report",
        )
        .bind(report.date.to_string())
        .bind(status)
        .bind(i64::from(report.runs))
        .bind(millis(report.ran_at))
        .bind(text)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }
}
