//! Background jobs. Each is safe to run in several engine processes on one database: its
//! effects are commands on the event log, and the log's optimistic concurrency lets exactly one
//! of two racing processes record a change while the other sees it already done. None keeps
//! state in memory, so a restart loses nothing.
//!
//! The pollers (payment queries, refund follow-ups, expiry closes) also share their work: every
//! due item is a job (a `payment_checks` row, made from the read models) that one process claims
//! with a lease (`Checks::claim_*`) before it asks WeChat, and releases with its next due time
//! (the back-off) once the answer is recorded in the log — so N processes ask WeChat once per due
//! time, not N times. The lease (`JOB_LEASE` in `projections/src/checks.rs`, 5 min) outlasts
//! one job's work (WeChat calls with their retries, then the append), so nobody retakes a job
//! between its claim and its release; a process that dies after claiming delays that job by the
//! lease. Jobs are claimed one at a time, just before their work, so a slow pass never holds
//! jobs it has not reached. Scheduled runs done once across processes: `paystream_engine::runs`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use metrics::{counter, gauge};
use paystream_engine::db::Db;
use paystream_engine::follow::Checkpoints;
use paystream_engine::order::CloseReason;
use paystream_engine::orders::Metadata;
use paystream_engine::payments::gateway::TradeState;
use paystream_engine::payments::{PaymentCheck, Payments};
use paystream_engine::ErrorCode;
use paystream_projections::{Checks, OrdersView};
use tokio::sync::watch;
use uuid::Uuid;

use crate::telemetry::{
    ORDERS_EXPIRED_TOTAL, PAYMENT_CHECKS_TOTAL, REFUNDS_IN_FLIGHT, REFUND_CHECKS_TOTAL,
    RELAY_LAG_CAP, RELAY_LAG_EVENTS,
};

/// How many due items one query fetches.
const BATCH: i64 = 200;

/// Closes unpaid orders whose time is up (at WeChat Pay first, when a payment was requested).
/// Returns how many this call closed; an order closed meanwhile by someone else, or found paid
/// at WeChat, or claimed by another process, is not counted.
pub async fn expire_due_orders(
    payments: &Payments,
    view: &OrdersView,
    checks: &Checks,
    now: DateTime<Utc>,
) -> paystream_engine::Result<usize> {
    let clock = Clock::starting_at(now);
    let mut closed = 0;
    let mut cursor = None;
    loop {
        let due = view.due_for_expiry(now, cursor, BATCH).await?;
        for &(_, id) in &due {
            // Another process may be closing it right now: its job, not ours.
            if !checks
                .claim_close(id, now, clock.now() + checks.lease())
                .await?
            {
                tracing::debug!(order_id = %id, "expiry close held by another process");
                continue;
            }
            let subject = format!("close:{id}");
            match close_expired(payments, id).await {
                Some(true) => {
                    closed += 1;
                    counter!(ORDERS_EXPIRED_TOTAL).increment(1);
                    checks.done(&subject).await?;
                }
                Some(false) => checks.done(&subject).await?,
                // WeChat could not close it (down, customer paying): ask again later, less and
                // less often, instead of every sweep.
                None => checks.checked(&subject, clock.now(), CLOSE_RETRY).await?,
            }
        }
        // Page on even past orders that could not be closed, so they never starve the rest.
        match due.last() {
            Some(&last) if due.len() as i64 == BATCH => cursor = Some(last),
            _ => break,
        }
    }
    Ok(closed)
}

/// The `now` a pass was called with, advanced by the time the pass has taken since: a lease taken
/// late in a long pass still lasts its full length. (Due times are judged by the call's `now`.)
struct Clock {
    start: DateTime<Utc>,
    started: tokio::time::Instant,
}

impl Clock {
    fn starting_at(start: DateTime<Utc>) -> Clock {
        Clock {
            start,
            started: tokio::time::Instant::now(),
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.start + chrono::Duration::from_std(self.started.elapsed()).unwrap_or_default()
    }
}

/// How soon a payment the customer was in the middle of (USERPAYING) is asked about again.
const USER_PAYING_RECHECK: chrono::Duration = chrono::Duration::seconds(10);

/// First wait before trying again to close an order whose close failed.
const CLOSE_RETRY: chrono::Duration = chrono::Duration::seconds(30);

/// Closes one expired order: `Some(true)` if this call recorded the close, `Some(false)` if
/// there was nothing to do, `None` if it failed and should be tried again later.
async fn close_expired(payments: &Payments, id: Uuid) -> Option<bool> {
    match payments
        .close(id, CloseReason::Expired, &Metadata::actor("system:expiry"))
        .await
    {
        Ok(outcome) if !outcome.appended.is_empty() => {
            tracing::info!(order_id = %id, "unpaid order expired and closed");
            Some(true)
        }
        Ok(_) => Some(false),
        // Paid between the query and the close (the payment is recorded by `close`).
        Err(e) if e.code() == ErrorCode::OrderAlreadyPaid => {
            tracing::info!(order_id = %id, "expiry found the order paid at WeChat Pay");
            Some(false)
        }
        Err(e) => {
            tracing::warn!(order_id = %id, error = %e, "could not expire order; will retry with back-off");
            None
        }
    }
}

pub async fn expiry_loop(
    payments: Payments,
    view: OrdersView,
    checks: Checks,
    every: Duration,
    stop: watch::Receiver<bool>,
) {
    every_until_stopped(every, stop, || async {
        if let Err(e) = expire_due_orders(&payments, &view, &checks, Utc::now()).await {
            tracing::warn!(error = %e, "expiry sweep failed; retrying next tick");
        }
    })
    .await;
}

/// When the pollers ask WeChat Pay about something that has gone quiet.
#[derive(Clone, Copy, Debug)]
pub struct ReconcileTiming {
    /// An unpaid order with a payment request, no notice this long after the request.
    pub payment_after: chrono::Duration,
    /// A refund still processing this long after it was requested.
    pub refund_after: chrono::Duration,
}

/// Asks WeChat Pay about payments without a notice and refunds without an outcome, recording
/// what it says; a refund WeChat never received is sent again with the same out_refund_no.
/// Each item is claimed first, so a process sharing the database with others asks about the
/// ones it claimed only. Returns how many items this call checked.
pub async fn reconcile(
    payments: &Payments,
    checks: &Checks,
    timing: ReconcileTiming,
    now: DateTime<Utc>,
) -> paystream_engine::Result<usize> {
    let clock = Clock::starting_at(now);
    let mut payments_checked = 0;
    checks.add_payment_jobs(now, timing.payment_after).await?;
    while payments_checked < BATCH {
        let until = clock.now() + checks.lease();
        let Some(order_id) = checks.claim_payment(now, until).await? else {
            break;
        };
        check_payment(payments, checks, order_id, timing, &clock).await?;
        payments_checked += 1;
    }
    let mut refunds_checked = 0;
    checks.add_refund_jobs(now, timing.refund_after).await?;
    while refunds_checked < BATCH {
        let until = clock.now() + checks.lease();
        let Some((order_id, out_refund_no)) = checks.claim_refund(now, until).await? else {
            break;
        };
        let checked_refund = payments.reconcile_refund(order_id, &out_refund_no).await;
        counter!(REFUND_CHECKS_TOTAL, "result" => if checked_refund.is_ok() { "ok" } else { "error" })
            .increment(1);
        if let Err(e) = checked_refund {
            tracing::warn!(order_id = %order_id, %out_refund_no, error = %e, "refund reconciliation failed");
        }
        // The back-off runs from this check, not from the pass's start: a job released with a
        // next check already past would be taken again at once by another process.
        checks
            .checked(
                &format!("refund:{out_refund_no}"),
                clock.now(),
                timing.refund_after,
            )
            .await?;
        refunds_checked += 1;
    }
    checks.forget_settled().await?;
    gauge!(REFUNDS_IN_FLIGHT).set(checks.refunds_in_flight().await? as f64);
    Ok((payments_checked + refunds_checked) as usize)
}

/// Asks about one claimed payment, records what WeChat says, and releases the job with its next
/// due time.
async fn check_payment(
    payments: &Payments,
    checks: &Checks,
    order_id: Uuid,
    timing: ReconcileTiming,
    clock: &Clock,
) -> paystream_engine::Result<()> {
    let subject = format!("pay:{order_id}");
    let checked_payment = payments.reconcile_payment(order_id).await;
    counter!(PAYMENT_CHECKS_TOTAL, "result" => payment_check_result(&checked_payment)).increment(1);
    match checked_payment {
        Ok(PaymentCheck::Recorded) => {
            tracing::info!(order_id = %order_id, "payment found by query (no notice had arrived)")
        }
        Ok(PaymentCheck::Nothing(TradeState::UserPaying)) => {
            // The customer is entering the password: the outcome is seconds away, so look
            // again soon instead of backing off.
            tracing::info!(order_id = %order_id, "the customer is paying right now");
            return checks
                .recheck_at(&subject, clock.now() + USER_PAYING_RECHECK)
                .await;
        }
        Ok(PaymentCheck::Nothing(TradeState::PaymentFailed { reason })) => {
            // Still payable: the customer may try again, and expiry closes it if not.
            tracing::warn!(order_id = %order_id, %reason, "the customer's payment failed at WeChat Pay")
        }
        Ok(PaymentCheck::Nothing(_)) => {}
        Err(e) => tracing::warn!(order_id = %order_id, error = %e, "payment query failed"),
    }
    // From this check, not the pass's start (see the refunds in `reconcile`).
    checks
        .checked(&subject, clock.now(), timing.payment_after)
        .await
}

/// The `result` label of one payment check.
fn payment_check_result(check: &paystream_engine::Result<PaymentCheck>) -> &'static str {
    match check {
        Ok(PaymentCheck::Recorded) => "recorded",
        Ok(PaymentCheck::Nothing(TradeState::UserPaying)) => "user_paying",
        Ok(PaymentCheck::Nothing(TradeState::PaymentFailed { .. })) => "payment_failed",
        Ok(PaymentCheck::Nothing(_)) => "nothing",
        Err(_) => "error",
    }
}

pub async fn reconcile_loop(
    payments: Payments,
    checks: Checks,
    timing: ReconcileTiming,
    stop: watch::Receiver<bool>,
) {
    // Often enough to honour the shorter of the two delays, never busier than once a second.
    let every = timing
        .payment_after
        .min(timing.refund_after)
        .to_std()
        .unwrap_or(Duration::from_secs(1))
        .div_f64(2.0)
        .clamp(Duration::from_secs(1), Duration::from_secs(30));
    every_until_stopped(every, stop, || async {
        if let Err(e) = reconcile(&payments, &checks, timing, Utc::now()).await {
            tracing::warn!(error = %e, "reconciliation failed; retrying next tick");
        }
    })
    .await;
}

/// Downloads WeChat Pay's platform certificates now and every `every` after (an unknown serial
/// also triggers a download, rate-limited, in the client).
pub async fn certificate_refresh_loop(
    client: std::sync::Arc<paystream_wechatpay::client::V3Client>,
    every: Duration,
    stop: watch::Receiver<bool>,
) {
    every_until_stopped(every, stop, || async {
        match client.fetch_certificates().await {
            Ok(count) => tracing::debug!(count, "WeChat Pay platform certificates refreshed"),
            // Not fatal: public-key merchants have none, the next tick tries again, and an
            // unknown serial triggers a download meanwhile.
            Err(e) => tracing::warn!(error = %e, "WeChat Pay platform certificates not refreshed"),
        }
    })
    .await;
}

/// Measures how far the RabbitMQ relay is behind the log (`relay_lag_events`), from its saved
/// checkpoint, so that every engine process reports it whichever of them holds the relay lease.
pub async fn relay_lag_loop(db: Db, every: Duration, stop: watch::Receiver<bool>) {
    let checkpoints = Checkpoints::new(db.clone());
    every_until_stopped(every, stop, || async {
        let lag = match checkpoints.load(paystream_amqp::RELAY_NAME).await {
            Ok(at) => paystream_engine::store::events_after(&db, at, RELAY_LAG_CAP).await,
            Err(e) => Err(e),
        };
        match lag {
            Ok(lag) => gauge!(RELAY_LAG_EVENTS).set(lag as f64),
            Err(e) => tracing::debug!(error = %e, "relay lag not measured"),
        }
    })
    .await;
}

/// Drains the metrics recorder's histogram samples into their buckets now and then, so that
/// memory stays flat when nobody scrapes `/metrics` (a scrape does the same).
pub async fn metrics_upkeep_loop(
    handle: metrics_exporter_prometheus::PrometheusHandle,
    every: Duration,
    stop: watch::Receiver<bool>,
) {
    every_until_stopped(every, stop, || async { handle.run_upkeep() }).await;
}

async fn every_until_stopped<F, Fut>(every: Duration, mut stop: watch::Receiver<bool>, mut work: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stopped(&mut stop) => return,
            _ = ticker.tick() => work().await,
        }
    }
}

/// Resolves once shutdown is signalled (without holding the channel's guard across awaits).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}
