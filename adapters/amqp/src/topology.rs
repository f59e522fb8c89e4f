//! The broker's side of the contract, declared idempotently by the relay and by every worker at
//! start (whoever comes first creates it; the same declaration again is a no-op).
//!
//! - `paystream.events`: durable topic exchange, routing key = event type.
//! - `paystream.dead`: durable direct exchange for messages a worker gave up on.
//! - per worker N: durable quorum queue `paystream.N` bound to `paystream.events` with each event
//!   type N needs, dead-lettering to `paystream.dead` with key `paystream.N` after a delivery limit;
//!   and its parking queue `paystream.N.parked` bound to `paystream.dead` with that key.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

pub const EVENTS_EXCHANGE: &str = "paystream.events";
pub const DEAD_EXCHANGE: &str = "paystream.dead";
/// Deliveries of one message (nacks and crashed consumers included) before it is dead-lettered.
pub const DEFAULT_DELIVERY_LIMIT: u32 = 10;

/// The queue a worker consumes.
pub fn queue_name(worker: &str) -> String {
    format!("paystream.{worker}")
}

/// Where a worker's dead messages wait for a human; also the dead-letter routing key's queue.
pub fn parked_queue_name(worker: &str) -> String {
    format!("paystream.{worker}.parked")
}

/// A worker's queue as the broker needs to know it. The relay declares these too, so that events
/// published before a worker first starts are already queued for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueSpec {
    pub worker: String,
    pub event_types: Vec<String>,
    pub delivery_limit: u32,
}

impl QueueSpec {
    pub fn new(worker: impl Into<String>, event_types: Vec<String>) -> QueueSpec {
        QueueSpec {
            worker: worker.into(),
            event_types,
            delivery_limit: DEFAULT_DELIVERY_LIMIT,
        }
    }

    /// The spec of an engine worker (its name and the event types it handles).
    pub fn of(worker: &dyn paystream_engine::consumers::Worker) -> QueueSpec {
        QueueSpec::new(worker.name(), worker.event_types())
    }

    pub fn with_delivery_limit(mut self, limit: u32) -> QueueSpec {
        self.delivery_limit = limit;
        self
    }
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

fn quorum(args: &mut FieldTable) {
    args.insert(ShortString::from("x-queue-type"), text("quorum"));
}

/// Both exchanges.
pub async fn declare_exchanges(channel: &Channel) -> Result<(), lapin::Error> {
    let options = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            EVENTS_EXCHANGE,
            ExchangeKind::Topic,
            options,
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            DEAD_EXCHANGE,
            ExchangeKind::Direct,
            options,
            FieldTable::default(),
        )
        .await
}

/// A durable quorum queue of anyone else's (an outside consumer, a benchmark's probe or sink)
/// bound to `paystream.events` with these routing keys (`#` for everything).
pub async fn declare_listener(
    channel: &Channel,
    queue: &str,
    routing_keys: &[&str],
) -> Result<(), lapin::Error> {
    declare_exchanges(channel).await?;
    let mut args = FieldTable::default();
    quorum(&mut args);
    channel.queue_declare(queue, durable(), args).await?;
    for key in routing_keys {
        channel
            .queue_bind(
                queue,
                EVENTS_EXCHANGE,
                key,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// The exchanges plus one worker's queue, bindings and parking queue.
///
/// Declaring a queue that exists with other arguments closes the channel (PRECONDITION_FAILED):
/// change a queue's arguments by deleting it first. Bindings are only ever added; a routing key a
/// worker no longer wants must be unbound by hand.
pub async fn declare_worker(channel: &Channel, spec: &QueueSpec) -> Result<(), lapin::Error> {
    declare_exchanges(channel).await?;
    let queue = queue_name(&spec.worker);
    let parked = parked_queue_name(&spec.worker);

    let mut args = FieldTable::default();
    quorum(&mut args);
    args.insert(
        ShortString::from("x-dead-letter-exchange"),
        text(DEAD_EXCHANGE),
    );
    args.insert(ShortString::from("x-dead-letter-routing-key"), text(&queue));
    args.insert(
        ShortString::from("x-delivery-limit"),
        AMQPValue::LongLongInt(i64::from(spec.delivery_limit)),
    );
    // Quorum queues dead-letter at most once by default: a message over its delivery limit could
    // vanish if the parking queue were briefly unavailable. At least once needs reject-publish.
    args.insert(
        ShortString::from("x-dead-letter-strategy"),
        text("at-least-once"),
    );
    args.insert(ShortString::from("x-overflow"), text("reject-publish"));
    channel.queue_declare(&queue, durable(), args).await?;
    for event_type in &spec.event_types {
        channel
            .queue_bind(
                &queue,
                EVENTS_EXCHANGE,
                event_type,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }

    let mut args = FieldTable::default();
    quorum(&mut args);
    channel.queue_declare(&parked, durable(), args).await?;
    channel
        .queue_bind(
            &parked,
            DEAD_EXCHANGE,
            &queue,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}
