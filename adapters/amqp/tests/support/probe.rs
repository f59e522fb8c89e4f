//! A queue of the test's own bound to `paystream.events`, as an outside consumer would bind one.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, Consumer};
use paystream_amqp::topology::{self, EVENTS_EXCHANGE};
use paystream_engine::consumers::EventMessage;
use uuid::Uuid;

use super::{amqp, WAIT};

/// A queue bound to `paystream.events` with `#`: sees everything the relay publishes.
pub struct Probe {
    _connection: Connection,
    consumer: Consumer,
    pub received: Vec<Delivery>,
}

impl Probe {
    pub async fn bind(url: &str) -> Probe {
        let connection = amqp(url).await;
        let channel = connection.create_channel().await.expect("channel");
        topology::declare_exchanges(&channel)
            .await
            .expect("exchanges");
        let queue = channel
            .queue_declare(
                "",
                QueueDeclareOptions {
                    exclusive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("probe queue");
        channel
            .queue_bind(
                queue.name().as_str(),
                EVENTS_EXCHANGE,
                "#",
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind probe");
        let consumer = channel
            .basic_consume(
                queue.name().as_str(),
                "probe",
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("consume probe");
        Probe {
            _connection: connection,
            consumer,
            received: Vec::new(),
        }
    }

    /// Receives until `count` deliveries in all have arrived; panics after `WAIT`.
    pub async fn until_count(&mut self, count: usize) {
        let received = tokio::time::timeout(WAIT, async {
            while self.received.len() < count {
                let delivery = self
                    .consumer
                    .next()
                    .await
                    .expect("probe open")
                    .expect("delivery");
                self.received.push(delivery);
            }
        })
        .await;
        assert!(
            received.is_ok(),
            "the probe saw {} deliveries in {WAIT:?}, expected {count}",
            self.received.len()
        );
    }

    /// Receives until every id in `ids` has arrived at least once; panics after `WAIT`.
    pub async fn until_all(&mut self, ids: &[Uuid]) {
        let mut missing: HashSet<Uuid> = ids.iter().copied().collect();
        for id in self.ids() {
            missing.remove(&id);
        }
        let received = tokio::time::timeout(WAIT, async {
            while !missing.is_empty() {
                let delivery = self
                    .consumer
                    .next()
                    .await
                    .expect("probe open")
                    .expect("delivery");
                missing.remove(&message_of(&delivery).event_id);
                self.received.push(delivery);
            }
        })
        .await;
        assert!(
            received.is_ok(),
            "{} events never reached the probe in {WAIT:?}",
            missing.len()
        );
    }

    /// Whatever else arrives within `quiet`.
    pub async fn drain(&mut self, quiet: Duration) {
        while let Ok(Some(delivery)) = tokio::time::timeout(quiet, self.consumer.next()).await {
            self.received.push(delivery.expect("delivery"));
        }
    }

    pub fn ids(&self) -> HashSet<Uuid> {
        self.received
            .iter()
            .map(|d| message_of(d).event_id)
            .collect()
    }

    pub fn messages(&self) -> Vec<EventMessage> {
        self.received.iter().map(message_of).collect()
    }
}

pub fn message_of(delivery: &Delivery) -> EventMessage {
    EventMessage::from_body(&delivery.data).expect("a published body decodes")
}

/// Each stream's events in first-delivery order, repeats removed: must be versions 1, 2, 3, ...
pub fn assert_each_stream_in_order(messages: &[EventMessage]) {
    let mut seen = HashSet::new();
    let mut versions: HashMap<&str, Vec<i64>> = HashMap::new();
    for m in messages {
        if seen.insert(m.event_id) {
            versions.entry(&m.stream_id).or_default().push(m.version);
        }
    }
    for (stream, versions) in versions {
        let expected: Vec<i64> = (1..=versions.len() as i64).collect();
        assert_eq!(
            versions, expected,
            "stream {stream} out of order or with a gap"
        );
    }
}
