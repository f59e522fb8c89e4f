//! Background jobs. Each is safe to run in several engine processes on one database: its
//! effects are commands on the event log, and the log's optimistic concurrency lets exactly one
//! of two racing processes record a change while the other sees it already done.

use std::time::Duration;

use chrono::{DateTime, Utc};
use paystream_engine::order::{CloseReason, OrderCommand};
use paystream_engine::orders::{Metadata, OrderService};
use paystream_projections::OrdersView;
use tokio::sync::watch;

/// How many due orders one query fetches.
const SWEEP_BATCH: i64 = 200;

/// Closes unpaid orders whose time is up. Returns how many this call closed (an order closed
/// meanwhile by someone else is not counted). The job keeps no state of its own: what is due is
/// read from the orders view, so it survives restarts by construction.
pub async fn expire_due_orders(
    orders: &OrderService,
    view: &OrdersView,
    now: DateTime<Utc>,
) -> paystream_engine::Result<usize> {
    let mut closed = 0;
    let mut cursor = None;
    loop {
        let due = view.due_for_expiry(now, cursor, SWEEP_BATCH).await?;
        for &(_, id) in &due {
            if close_expired(orders, id, now).await {
                closed += 1;
            }
        }
        // Page on even past orders that could not be closed, so they never starve the rest.
        match due.last() {
            Some(&last) if due.len() as i64 == SWEEP_BATCH => cursor = Some(last),
            _ => break,
        }
    }
    Ok(closed)
}

/// Closes one expired order; `true` if this call recorded the close.
async fn close_expired(orders: &OrderService, id: uuid::Uuid, now: DateTime<Utc>) -> bool {
    let command = OrderCommand::Close {
        reason: CloseReason::Expired,
        now,
    };
    match orders
        .execute(id, command, &Metadata::actor("system:expiry"))
        .await
    {
        Ok(outcome) if !outcome.appended.is_empty() => {
            tracing::info!(order_id = %id, "unpaid order expired and closed");
            true
        }
        Ok(_) => false,
        // Paid between the query and the close: nothing to do.
        Err(e) if e.code() == "order_already_paid" => {
            tracing::debug!(order_id = %id, "expiry skipped: order was paid");
            false
        }
        Err(e) => {
            tracing::warn!(order_id = %id, error = %e, "could not expire order");
            false
        }
    }
}

pub async fn expiry_loop(
    orders: OrderService,
    view: OrdersView,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            _ = ticker.tick() => {}
        }
        if let Err(e) = expire_due_orders(&orders, &view, Utc::now()).await {
            tracing::warn!(error = %e, "expiry sweep failed; retrying next tick");
        }
    }
}
