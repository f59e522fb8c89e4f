//! Wiring of the log's consumers: which workers exist, and whether they are fed in this process
//! (embedded default, no broker) or from RabbitMQ (separate `paystream worker …` processes).

use std::sync::Arc;

use paystream_engine::cards::{Cards, ConsumeAttempts};
use paystream_engine::consumers::Worker;
use paystream_engine::orders::OrderService;
use paystream_engine::subscriptions::{SubscribeMessages, Subscriptions};
use paystream_workers::{CardVerificationWorker, SubscribeMessageWorker, Templates};

/// The worker names `paystream worker …` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkerKind {
    SubscribeMessage,
    CardVerification,
}

/// What the workers talk to.
#[derive(Clone)]
pub struct WorkerDeps {
    pub orders: OrderService,
    pub subscriptions: Subscriptions,
    pub sender: Arc<dyn SubscribeMessages>,
    pub cards: Arc<dyn Cards>,
    pub templates: Arc<Templates>,
}

pub fn build(kind: WorkerKind, deps: &WorkerDeps) -> Arc<dyn Worker> {
    match kind {
        WorkerKind::SubscribeMessage => Arc::new(SubscribeMessageWorker::new(
            deps.orders.clone(),
            deps.subscriptions.clone(),
            deps.sender.clone(),
            deps.templates.clone(),
        )),
        WorkerKind::CardVerification => Arc::new(CardVerificationWorker::new(
            deps.orders.clone(),
            deps.cards.clone(),
            ConsumeAttempts::new(deps.orders.store().db().clone()),
        )),
    }
}

/// Every worker, for the in-process runtime.
pub fn all(deps: &WorkerDeps) -> Vec<Arc<dyn Worker>> {
    [WorkerKind::SubscribeMessage, WorkerKind::CardVerification]
        .into_iter()
        .map(|kind| build(kind, deps))
        .collect()
}

/// RabbitMQ as `/readyz` sees it: does it accept a connection now.
pub struct AmqpBroker {
    pub url: String,
}

#[async_trait::async_trait]
impl paystream_engine::consumers::Broker for AmqpBroker {
    async fn check(&self) -> Result<(), String> {
        paystream_amqp::check_broker(&self.url)
            .await
            .map_err(|e| e.to_string())
    }
}
