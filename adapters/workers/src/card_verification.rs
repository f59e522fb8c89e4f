//! Consumes the order's card at WeChat once the order is paid, and records the outcome on the
//! order (`CardConsumed` / `CardConsumeFailed`). Never twice: the order stream says whether the
//! card is consumed, and WeChat refuses a second consume of a code (40099). A 40099 after one of
//! our own calls (whose answer was lost) means we consumed it: checked at WeChat, not failed.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use paystream_engine::cards::{CardError, Cards, CodeState, ConsumeAttempts};
use paystream_engine::consumers::{Effect, EventMessage, HandleError, Worker};
use paystream_engine::order::{CardRef, CardStatus, OrderCommand, OrderId, OrderStatus};
use paystream_engine::orders::{Metadata, OrderService};

use crate::order_of;

pub const NAME: &str = "card-verification";

pub struct CardVerificationWorker {
    orders: OrderService,
    cards: Arc<dyn Cards>,
    attempts: ConsumeAttempts,
}

/// What became of the card at WeChat.
enum Outcome {
    Consumed,
    Failed(String),
}

impl CardVerificationWorker {
    pub fn new(
        orders: OrderService,
        cards: Arc<dyn Cards>,
        attempts: ConsumeAttempts,
    ) -> CardVerificationWorker {
        CardVerificationWorker {
            orders,
            cards,
            attempts,
        }
    }

    async fn consume(&self, order_id: OrderId, card: &CardRef) -> Result<Outcome, HandleError> {
        let earlier = self.attempts.begin(order_id, card).await?;
        match self.cards.consume(card).await {
            Ok(_) => Ok(Outcome::Consumed),
            Err(CardError::AlreadyConsumed) => {
                // Ours if any other call of ours was made (a lost answer, a concurrent redelivery).
                if earlier > 0 || self.attempts.count(order_id).await? > 1 {
                    let code = self.cards.check(card).await.map_err(transient)?;
                    if code.state == CodeState::Consumed {
                        return Ok(Outcome::Consumed);
                    }
                }
                Ok(Outcome::Failed(
                    "the card was consumed elsewhere before the order was paid".into(),
                ))
            }
            Err(CardError::Unavailable(reason)) => Err(HandleError::Transient(reason)),
            Err(e @ CardError::Unknown) => Ok(Outcome::Failed(e.to_string())),
            // Not a verdict on the card (a permission or configuration problem): the card is
            // still usable at WeChat, so nothing final is recorded; the message is parked for a
            // human and can be replayed once the cause is fixed.
            Err(e @ CardError::Refused { .. }) => Err(HandleError::Poison(e.to_string())),
        }
    }
}

fn transient(e: CardError) -> HandleError {
    HandleError::Transient(e.to_string())
}

#[async_trait]
impl Worker for CardVerificationWorker {
    fn name(&self) -> &'static str {
        NAME
    }

    fn event_types(&self) -> Vec<String> {
        vec!["PaymentSucceeded".to_string()]
    }

    async fn handle(&self, message: &EventMessage) -> Result<Effect, HandleError> {
        let order_id = order_of(message)?;
        let order = self.orders.get(order_id).await?;
        let Some(card) = order
            .card
            .as_ref()
            .filter(|c| c.status == CardStatus::Pending)
        else {
            return Ok(Effect::NotRecorded);
        };
        let card_ref = CardRef {
            card_id: card.card_id.clone(),
            code: card.code.clone(),
        };
        let outcome = if order.status == OrderStatus::Refunded {
            // All the money went back before the card was used: the customer keeps the card.
            Outcome::Failed("the order was refunded before the card was consumed".into())
        } else {
            self.consume(order_id, &card_ref).await?
        };
        let now = Utc::now();
        let command = match &outcome {
            Outcome::Consumed => OrderCommand::RecordCardConsumed { at: now },
            Outcome::Failed(reason) => OrderCommand::RecordCardConsumeFailed {
                reason: reason.clone(),
                at: now,
            },
        };
        let meta = Metadata::actor("system:card-verification");
        self.orders.execute(order_id, command, &meta).await?;
        match outcome {
            Outcome::Consumed => {
                tracing::info!(order_id = %order_id, card_id = %card_ref.card_id, "card consumed")
            }
            Outcome::Failed(reason) => {
                tracing::warn!(order_id = %order_id, card_id = %card_ref.card_id, %reason, "card not consumed")
            }
        }
        // The effect is the event on the order (a repeat finds the card no longer pending).
        Ok(Effect::NotRecorded)
    }
}
