//! RabbitMQ for end-to-end tests: a vhost per test (deleted afterwards) and a probe queue bound
//! to `paystream.events` that sees what an outside consumer would. RabbitMQ must answer and
//! `rabbitmqctl` must run: a test that cannot reach them fails instead of passing without a broker.

use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, Consumer};

fn rabbitmqctl(args: &[&str]) -> Result<(), String> {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run rabbitmqctl: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

pub struct Vhost {
    pub name: String,
}

impl Vhost {
    pub async fn new() -> Vhost {
        let name = format!("paystream-e2e-{}", uuid::Uuid::new_v4().simple());
        let vhost = name.clone();
        tokio::task::spawn_blocking(move || {
            rabbitmqctl(&["add_vhost", &vhost])?;
            rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"])
        })
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("RabbitMQ is required for this test (rabbitmqctl failed): {e}"));
        Vhost { name }
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:5672/{}", self.name)
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = rabbitmqctl(&["delete_vhost", &self.name]);
    }
}

/// An outside consumer: its own queue bound to `paystream.events` with `#`.
pub struct Probe {
    _connection: Connection,
    consumer: Consumer,
}

impl Probe {
    pub async fn bind(url: &str) -> Probe {
        let connection = paystream_amqp::connect(url, "e2e-probe")
            .await
            .expect("RabbitMQ answers");
        let channel = connection.create_channel().await.unwrap();
        paystream_amqp::topology::declare_exchanges(&channel)
            .await
            .unwrap();
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
            .unwrap();
        channel
            .queue_bind(
                queue.name().as_str(),
                "paystream.events",
                "#",
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let consumer = channel
            .basic_consume(
                queue.name().as_str(),
                "probe",
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        Probe {
            _connection: connection,
            consumer,
        }
    }

    /// Deliveries until `done` holds for what arrived so far (or 30 s pass).
    pub async fn until(&mut self, done: impl Fn(&[Delivery]) -> bool) -> Vec<Delivery> {
        let mut received = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !done(&received) {
            let next = tokio::time::timeout_at(deadline, self.consumer.next()).await;
            match next {
                Ok(Some(Ok(delivery))) => {
                    delivery.ack(BasicAckOptions::default()).await.unwrap();
                    received.push(delivery);
                }
                _ => panic!(
                    "the probe stopped receiving after {} messages",
                    received.len()
                ),
            }
        }
        received
    }
}
