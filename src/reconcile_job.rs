//! The daily reconciliation: at `RECONCILE_AT` (Beijing time), yesterday's bills against the
//! log, by one engine instance (a run claimed with a lease, `engine::runs`), until the day has a
//! final report: from a bill WeChat had ready, with every finding acted on. A bill not ready
//! yet, or a finding whose action failed, is tried again every [`NOT_READY_RETRY`].

use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use paystream_engine::beijing;
use paystream_engine::reconciliation::{Quiet, Reconciler, ReportStatus};
use paystream_engine::runs::Runs;
use tokio::sync::watch;

/// How often the loop looks at the clock.
const TICK: Duration = Duration::from_secs(60);

/// How soon a bill that was not ready is asked for again.
const NOT_READY_RETRY: chrono::Duration = chrono::Duration::minutes(15);

/// Longer than any run: another instance takes over only from a holder that died.
pub const LEASE_TTL: Duration = Duration::from_secs(30 * 60);

/// The day due for reconciliation at `now`: yesterday (Beijing), once today's `at` has passed.
pub fn due_day(now: DateTime<Utc>, at: NaiveTime) -> Option<NaiveDate> {
    let local = now.with_timezone(&beijing::OFFSET);
    (local.time() >= at).then(|| local.date_naive() - chrono::Days::new(1))
}

pub async fn daily_loop(
    reconciler: Reconciler,
    runs: Runs,
    at: NaiveTime,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            _ = ticker.tick() => {}
        }
        if let Err(e) = tick(&reconciler, &runs, at, Utc::now()).await {
            tracing::warn!(error = %e, "daily reconciliation failed; trying again later");
        }
    }
}

/// One look at the clock: runs the due day if it has no final report and no other instance
/// holds (or finished) its run. Returns the status of the run it made, if it made one.
pub async fn tick(
    reconciler: &Reconciler,
    runs: &Runs,
    at: NaiveTime,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<ReportStatus>> {
    let Some(date) = due_day(now, at) else {
        return Ok(None);
    };
    let key = format!("reconcile:{date}");
    // The finished run first: one key lookup on each tick for the rest of the day, instead of
    // reading the day's whole report every minute.
    if runs.finished_at(&key).await?.is_some() || !wanted(reconciler, date, now).await? {
        return Ok(None);
    }
    if !runs.claim_run_at(&key, LEASE_TTL, now).await? {
        return Ok(None);
    }
    let result = reconciler.run(date, now, &Quiet).await;
    match &result {
        Ok(report) if report.is_final() => {
            runs.finish_run_at(&key, now).await?;
        }
        // Not ready, a finding whose action failed, or no report at all: free for the next
        // tick of any instance ([`wanted`] spaces the runs that stored a report).
        _ => runs.release_run(&key).await?,
    }
    Ok(Some(result?.status))
}

/// The day has no report yet, or only one that is not final (a bill not ready, a finding
/// whose action failed) and old enough to try again.
async fn wanted(
    reconciler: &Reconciler,
    date: NaiveDate,
    now: DateTime<Utc>,
) -> paystream_engine::Result<bool> {
    Ok(match reconciler.reports().get(date).await? {
        None => true,
        Some(report) => !report.is_final() && now - report.ran_at >= NOT_READY_RETRY,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn yesterday_is_due_once_the_beijing_time_has_passed() {
        let at = NaiveTime::from_hms_opt(10, 0, 0).unwrap();
        // 09:59 Beijing on 2 December.
        let before = Utc.with_ymd_and_hms(2026, 12, 2, 1, 59, 0).unwrap();
        assert_eq!(due_day(before, at), None);
        // 10:00 Beijing on 2 December.
        let after = Utc.with_ymd_and_hms(2026, 12, 2, 2, 0, 0).unwrap();
        assert_eq!(due_day(after, at), NaiveDate::from_ymd_opt(2026, 12, 1));
        // 23:30 UTC on 1 December is 07:30 Beijing on 2 December: not yet.
        let night = Utc.with_ymd_and_hms(2026, 12, 1, 23, 30, 0).unwrap();
        assert_eq!(due_day(night, at), None);
    }
}
