//! The daily reconciliation: at `RECONCILE_AT` (Beijing time), yesterday's bills against the
//! log, by one engine instance (a run claimed with a lease, `engine::runs`), until the day has a
//! final report: from a bill WeChat had ready, with every finding acted on. A bill not ready
//! yet is asked for again every [`NOT_READY_RETRY`]; a day whose findings could not all be acted
//! on is run again less and less often ([`retry_after`]); after a run that could not read the
//! bill or the log, no instance tries the day again for [`FAILED_RETRY`].
//!
//! Days are not lost to an outage: a day of the last [`CATCH_UP_DAYS`] that has no final report
//! (the engine was down at `RECONCILE_AT`, or the day's run kept failing) is run at the next
//! tick, oldest first — but never a day before the first one this deployment reconciled, whose
//! payments were taken by whatever ran before it. A day that leaves that window without a final
//! report is not dropped in silence: each instance names it in a warning, with the command that
//! reconciles it, when it leaves and again at the instance's next start
//! ([`DailyJob::left_behind`]).

use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use paystream_engine::beijing;
use paystream_engine::reconciliation::{Quiet, Reconciler, ReportStatus};
use paystream_engine::runs::Runs;
use tokio::sync::watch;

/// How often the loop looks at the clock.
const TICK: Duration = Duration::from_secs(60);

/// How soon a bill that was not ready is asked for again; a day whose findings could not all be
/// acted on waits twice as long after each run, up to [`RETRY_CAP`].
const NOT_READY_RETRY: chrono::Duration = chrono::Duration::minutes(15);
const RETRY_CAP: chrono::Duration = chrono::Duration::hours(4);

/// How soon a day whose run stored no report (WeChat Pay or the database did not answer) is
/// tried again, by any instance (the failed run releases the day only for then): not every
/// minute on every instance, which would only add to an outage.
const FAILED_RETRY: chrono::Duration = chrono::Duration::minutes(5);

/// How many days back a missed day is still caught up. WeChat keeps bills for three months; a
/// week covers an outage nobody noticed, while older days are left to `reconcile --date`.
pub const CATCH_UP_DAYS: u64 = 7;

/// How many days back WeChat Pay keeps bills: an older day cannot be reconciled any more, so a
/// day left behind is not named beyond it.
pub const BILLS_KEPT_DAYS: u64 = 90;

/// Longer than any run: another instance takes over only from a holder that died.
pub const LEASE_TTL: Duration = Duration::from_secs(30 * 60);

/// The days due for reconciliation at `now`, oldest first: yesterday (Beijing) once today's `at`
/// has passed, and the days before it back to [`CATCH_UP_DAYS`], but none before
/// `first_reported`. Yesterday is always due: a deployment that never reconciled, or whose first
/// report is of today (run by hand), begins with it.
pub fn due_days(
    now: DateTime<Utc>,
    at: NaiveTime,
    first_reported: Option<NaiveDate>,
) -> Vec<NaiveDate> {
    let local = now.with_timezone(&beijing::OFFSET);
    let yesterday = local.date_naive() - chrono::Days::new(1);
    let latest = match local.time() >= at {
        true => yesterday,
        false => yesterday - chrono::Days::new(1),
    };
    let earliest = first_reported
        .map_or(yesterday, |first| {
            first.max(yesterday - chrono::Days::new(CATCH_UP_DAYS - 1))
        })
        .min(yesterday);
    earliest.iter_days().take_while(|d| *d <= latest).collect()
}

/// One engine instance's daily reconciliation.
pub struct DailyJob {
    reconciler: Reconciler,
    runs: Runs,
    at: NaiveTime,
}

/// What a tick did with one day it ran: the status of the day's report, or why there is none.
pub type DayRun = (NaiveDate, Result<ReportStatus, String>);

impl DailyJob {
    pub fn new(reconciler: Reconciler, runs: Runs, at: NaiveTime) -> DailyJob {
        DailyJob {
            reconciler,
            runs,
            at,
        }
    }

    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The last day looked at as it left the catch-up window: each day is named once per
        // run of the engine, and none is skipped (not across an outage, nor after a failed look).
        let mut checked_through: Option<NaiveDate> = None;
        loop {
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => return,
                _ = ticker.tick() => {}
            }
            let now = Utc::now();
            match self.newly_left_behind(now, &mut checked_through).await {
                Ok(days) => {
                    for date in days {
                        tracing::warn!(
                            bill_date = %date,
                            "this day has no final reconciliation report and is older than the {CATCH_UP_DAYS} days the daily run catches up: run `paystream reconcile --date {date}`"
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "daily reconciliation could not look for days left behind")
                }
            }
            match self.tick(now).await {
                Ok(days) => {
                    for (date, result) in days {
                        if let Err(error) = result {
                            tracing::warn!(bill_date = %date, %error, "daily reconciliation failed; trying again later");
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "daily reconciliation could not look for due days")
                }
            }
        }
    }

    /// One look at the clock: runs each due day that has no final report and that no instance
    /// holds, finished or paused after a failure. Returns the days it ran.
    pub async fn tick(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<DayRun>> {
        let first_reported = self.reconciler.reports().first_day().await?;
        let days = due_days(now, self.at, first_reported);
        let started = std::time::Instant::now();
        let mut ran = Vec::new();
        for date in days {
            // Each day's lease is taken as of when its run begins, not when the tick began:
            // days run one after another, and a long one must not leave the next with a lease
            // that has already run out.
            let now = now + chrono::Duration::from_std(started.elapsed()).unwrap_or_default();
            match self.run_day(date, now).await {
                Ok(None) => {}
                Ok(Some(status)) => ran.push((date, Ok(status))),
                Err(error) => ran.push((date, Err(format!("{error:#}")))),
            }
        }
        Ok(ran)
    }

    /// The days left behind ([`Self::left_behind`]) since the last look, which ended with the day
    /// `checked_through`: none until another day leaves the window, and `checked_through` moves
    /// on only when the look succeeded, so that no day is skipped.
    pub async fn newly_left_behind(
        &self,
        now: DateTime<Utc>,
        checked_through: &mut Option<NaiveDate>,
    ) -> anyhow::Result<Vec<NaiveDate>> {
        let leaving = left_window(now);
        if *checked_through >= Some(leaving) {
            return Ok(Vec::new());
        }
        let days = self.left_behind(now, *checked_through).await?;
        *checked_through = Some(leaving);
        Ok(days)
    }

    /// The days after `after` (from the first, when `None`) up to the one that left the catch-up
    /// window at `now` ([`left_window`]) that have no final report: no tick runs them again, so a
    /// person has to (`reconcile --date`). Days before this deployment's first report, or older
    /// than WeChat Pay keeps bills ([`BILLS_KEPT_DAYS`]), are not owed.
    pub async fn left_behind(
        &self,
        now: DateTime<Utc>,
        after: Option<NaiveDate>,
    ) -> anyhow::Result<Vec<NaiveDate>> {
        let reports = self.reconciler.reports();
        let Some(first) = reports.first_day().await? else {
            return Ok(Vec::new());
        };
        let oldest = beijing::day(now) - chrono::Days::new(BILLS_KEPT_DAYS);
        let from = after
            .and_then(|day| day.succ_opt())
            .map_or(first, |next| next.max(first))
            .max(oldest);
        let last = left_window(now);
        let mut left = Vec::new();
        for date in from.iter_days().take_while(|d| *d <= last) {
            // The finished run first, as `run_day` looks: at a start up to three months of days
            // are looked at, most of them finished by this job, and a key lookup each is cheaper
            // than reading every report. A day reconciled by hand has only its report.
            if self.runs.finished_at(&run_key(date)).await?.is_some() {
                continue;
            }
            if !reports.get(date).await?.is_some_and(|r| r.is_final()) {
                left.push(date);
            }
        }
        Ok(left)
    }

    /// Runs `date` unless it is done, held by another instance or not worth asking again yet;
    /// the status of the report it made, if it ran.
    async fn run_day(
        &self,
        date: NaiveDate,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<ReportStatus>> {
        let key = run_key(date);
        // The finished run first: one key lookup per day on each tick, instead of reading the
        // day's whole report every minute.
        if self.runs.finished_at(&key).await?.is_some() || !self.wanted(date, now).await? {
            return Ok(None);
        }
        if !self.runs.claim_run_at(&key, LEASE_TTL, now).await? {
            return Ok(None);
        }
        let result = self.reconciler.run(date, now, &Quiet).await;
        match &result {
            Ok(report) if report.is_final() => {
                self.runs.finish_run_at(&key, now).await?;
            }
            // Not ready, or a finding whose action failed: free for the next tick of any
            // instance ([`Self::wanted`] spaces those runs by their report).
            Ok(_) => self.runs.release_run(&key).await?,
            // No report at all: no instance asks again for [`FAILED_RETRY`].
            Err(_) => {
                self.runs
                    .release_run_until(&key, now + FAILED_RETRY)
                    .await?
            }
        }
        Ok(Some(result?.status))
    }

    /// The day has no report yet, or only one that is not final (a bill not ready, a finding
    /// whose action failed) and old enough to try again.
    async fn wanted(&self, date: NaiveDate, now: DateTime<Utc>) -> paystream_engine::Result<bool> {
        Ok(match self.reconciler.reports().get(date).await? {
            None => true,
            Some(report) => !report.is_final() && now - report.ran_at >= retry_after(report.runs),
        })
    }
}

/// The `engine::runs` key of a day's run: claimed while it runs, finished once its report is
/// final.
fn run_key(date: NaiveDate) -> String {
    format!("reconcile:{date}")
}

/// The day that has just left the catch-up window of [`due_days`] at `now`: the one before its
/// earliest day, [`CATCH_UP_DAYS`] before yesterday (Beijing).
pub fn left_window(now: DateTime<Utc>) -> NaiveDate {
    beijing::day(now) - chrono::Days::new(1 + CATCH_UP_DAYS)
}

/// How long after a run that stored a report which is not final the day is run again: 15
/// minutes after a bill that was not ready (no run counted) or a first run, doubling with each
/// further run up to [`RETRY_CAP`] — a finding that keeps failing must not have the day's whole
/// bill downloaded every quarter of an hour for a week.
fn retry_after(runs: u32) -> chrono::Duration {
    let doublings = runs.saturating_sub(1).min(8);
    (NOT_READY_RETRY * 2_i32.pow(doublings)).min(RETRY_CAP)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, d).unwrap()
    }

    #[test]
    fn a_new_deployment_begins_with_yesterday_once_the_beijing_time_has_passed() {
        let at = NaiveTime::from_hms_opt(10, 0, 0).unwrap();
        // 09:59 Beijing on 2 December.
        let before = Utc.with_ymd_and_hms(2026, 12, 2, 1, 59, 0).unwrap();
        assert_eq!(due_days(before, at, None), vec![]);
        // 10:00 Beijing on 2 December.
        let after = Utc.with_ymd_and_hms(2026, 12, 2, 2, 0, 0).unwrap();
        assert_eq!(due_days(after, at, None), vec![day(1)]);
        // 23:30 UTC on 1 December is 07:30 Beijing on 2 December: not yet.
        let night = Utc.with_ymd_and_hms(2026, 12, 1, 23, 30, 0).unwrap();
        assert_eq!(due_days(night, at, None), vec![]);
    }

    #[test]
    fn missed_days_are_due_back_to_the_first_report_and_at_most_a_week() {
        let at = NaiveTime::from_hms_opt(10, 0, 0).unwrap();
        // 10:00 Beijing on 20 December.
        let after = Utc.with_ymd_and_hms(2026, 12, 20, 2, 0, 0).unwrap();
        assert_eq!(
            due_days(after, at, Some(day(16))),
            (16..=19).map(day).collect::<Vec<_>>()
        );
        assert_eq!(
            due_days(after, at, Some(day(1))),
            (13..=19).map(day).collect::<Vec<_>>(),
            "{CATCH_UP_DAYS} days back at most"
        );
        // 09:00 Beijing: the days before yesterday are overdue already, yesterday is not due.
        let before = Utc.with_ymd_and_hms(2026, 12, 20, 1, 0, 0).unwrap();
        assert_eq!(
            due_days(before, at, Some(day(16))),
            (16..=18).map(day).collect::<Vec<_>>()
        );
        // Whatever the time of day, the day before the earliest one a week back has left.
        assert_eq!(left_window(after), day(12));
        assert_eq!(left_window(before), day(12));
        // Reconciled only yesterday so far (by hand, before the time): nothing is due.
        assert_eq!(due_days(before, at, Some(day(19))), vec![]);
        // The first report is of today (run by hand): yesterday is still due.
        assert_eq!(due_days(after, at, Some(day(20))), vec![day(19)]);
    }

    #[test]
    fn a_day_whose_findings_keep_failing_is_run_less_and_less_often() {
        let minutes = |runs| retry_after(runs).num_minutes();
        assert_eq!(
            [0, 1, 2, 3, 4, 5, 6, 100].map(minutes),
            [15, 15, 30, 60, 120, 240, 240, 240]
        );
    }
}
