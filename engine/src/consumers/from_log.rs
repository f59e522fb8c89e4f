//! Runs a [`Worker`] straight off the log, without a broker (the embedded default): a follower
//! with its own checkpoint hands each wanted event to the worker, one at a time in log order.
//! Transient failures are retried with back-off (the checkpoint waits); poison messages are parked
//! with their reason and the follower moves on.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{handle_once, EventMessage, HandleError, Inbox, Parked, Worker};
use crate::follow::Follower;
use crate::store::{EventStore, StoreError};

const BATCH: i64 = 200;
/// How often an idle follower looks for new events.
const IDLE_POLL: Duration = Duration::from_millis(100);
const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// The follower's checkpoint name for a worker.
pub fn checkpoint_name(worker: &str) -> String {
    format!("worker:{worker}")
}

#[derive(Debug, thiserror::Error)]
enum StopOr {
    #[error("stopping")]
    Stopped,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Follows the log until `stop` turns true. Events already handled are skipped by the inbox.
pub async fn run(
    worker: Arc<dyn Worker>,
    store: Arc<dyn EventStore>,
    mut stop: watch::Receiver<bool>,
) {
    let name = worker.name();
    let follower = Follower::new(checkpoint_name(name), store.clone(), BATCH);
    let inbox = Inbox::new(store.db().clone());
    let parked = Parked::new(store.db().clone());
    let wanted = worker.event_types();
    tracing::info!(worker = name, "worker running in-process, fed from the log");
    loop {
        if *stop.borrow() {
            return;
        }
        let polled = follower
            .poll(|events| {
                let (worker, inbox, parked, wanted, stop) =
                    (&worker, &inbox, &parked, &wanted, stop.clone());
                async move {
                    for event in events.iter().filter(|e| wanted.contains(&e.event_type)) {
                        let message = EventMessage::from(event);
                        handle_until_done(worker.as_ref(), inbox, parked, &message, stop.clone())
                            .await?;
                    }
                    Ok::<(), StopOr>(())
                }
            })
            .await;
        let pause = match polled {
            Ok(0) => IDLE_POLL,
            Ok(_) => continue,
            Err(StopOr::Stopped) => return,
            Err(StopOr::Store(e)) => {
                tracing::warn!(worker = name, error = %e, "cannot read the log; retrying");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Handles one message, retrying transient failures with back-off until it is handled, parked,
/// or the process stops.
async fn handle_until_done(
    worker: &dyn Worker,
    inbox: &Inbox,
    parked: &Parked,
    message: &EventMessage,
    mut stop: watch::Receiver<bool>,
) -> Result<(), StopOr> {
    let name = worker.name();
    let mut wait = FIRST_RETRY;
    loop {
        match handle_once(worker, inbox, message).await {
            Ok(_) => return Ok(()),
            Err(HandleError::Poison(reason)) => {
                tracing::error!(
                    worker = name, message_id = %message.event_id, stream_id = %message.stream_id,
                    event_type = %message.event_type, %reason, "message parked"
                );
                match parked.park(name, message, &reason).await {
                    Ok(()) => return Ok(()),
                    Err(e) => tracing::warn!(worker = name, error = %e, "cannot park a message"),
                }
            }
            Err(HandleError::Transient(reason)) => {
                tracing::warn!(
                    worker = name, message_id = %message.event_id, stream_id = %message.stream_id,
                    %reason, retry_in_ms = wait.as_millis() as u64, "message not handled yet"
                );
            }
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return Err(StopOr::Stopped),
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(MAX_RETRY);
    }
}
