//! Tells the customer what happened to their order with a subscribe message — only when they
//! accepted the template in `wx.requestSubscribeMessage`, one message per acceptance.
//!
//! Exactly once in effect: the acceptance is spent and the send claimed in one transaction
//! before WeChat is called; the outcome and the inbox row are recorded in one transaction after.
//! A crash in between leaves a claim that is resumed later; WeChat allows one send per acceptance,
//! so a resumed send whose first attempt got through is refused there (43101) rather than reaching
//! the customer twice.

use std::sync::Arc;

use async_trait::async_trait;
use paystream_engine::consumers::{Effect, EventMessage, HandleError, Worker};
use paystream_engine::orders::OrderService;
use paystream_engine::subscriptions::{
    Claim, SendError, SendKey, SendResult, SubscribeMessages, Subscriptions,
};

use crate::{order_of, render, Templates};

pub const NAME: &str = "subscribe-message";

pub struct SubscribeMessageWorker {
    orders: OrderService,
    subscriptions: Subscriptions,
    sender: Arc<dyn SubscribeMessages>,
    templates: Arc<Templates>,
}

impl SubscribeMessageWorker {
    pub fn new(
        orders: OrderService,
        subscriptions: Subscriptions,
        sender: Arc<dyn SubscribeMessages>,
        templates: Arc<Templates>,
    ) -> SubscribeMessageWorker {
        SubscribeMessageWorker {
            orders,
            subscriptions,
            sender,
            templates,
        }
    }
}

#[async_trait]
impl Worker for SubscribeMessageWorker {
    fn name(&self) -> &'static str {
        NAME
    }

    fn event_types(&self) -> Vec<String> {
        self.templates.event_types()
    }

    async fn handle(&self, message: &EventMessage) -> Result<Effect, HandleError> {
        let Some(template) = self.templates.get(&message.event_type) else {
            return Ok(Effect::NotRecorded);
        };
        let order_id = order_of(message)?;
        // The order as this event left it: a later change must not leak into this message.
        let order = self
            .orders
            .load_at(order_id, message.version)
            .await?
            .ok_or_else(|| HandleError::Poison(format!("order {order_id} does not exist")))?;
        let key = SendKey {
            message_id: message.event_id,
            template_id: template.template_id.clone(),
            user_id: order.user_id,
            openid: order.openid.clone(),
            order_id,
            event_type: message.event_type.clone(),
        };
        let claim = self.subscriptions.claim(&key, NAME).await?;
        let resumed = match claim {
            Claim::New => false,
            Claim::Resumed => true,
            Claim::Done => return Ok(Effect::NotRecorded),
            Claim::Unconfirmed => {
                tracing::warn!(
                    order_id = %order_id, message_id = %message.event_id,
                    template_id = %key.template_id,
                    "a worker died while sending; not resent, as the customer's other acceptances \
                     would let a repeat through"
                );
                // The claim recorded the message id with the "unconfirmed" status.
                return Ok(Effect::Recorded);
            }
            Claim::Busy => {
                return Err(HandleError::Transient(
                    "another worker is sending this message".into(),
                ))
            }
            Claim::NoAcceptance => {
                tracing::info!(
                    order_id = %order_id, message_id = %message.event_id,
                    template_id = %key.template_id, "no acceptance of the template: nothing sent"
                );
                return Ok(Effect::NotRecorded);
            }
        };
        let result = match self
            .sender
            .send(&render::message(template, &order, message))
            .await
        {
            Ok(msgid) => SendResult::Sent { msgid },
            Err(SendError::NoAcceptance) if resumed => SendResult::SentBefore,
            Err(SendError::NoAcceptance) => SendResult::Refused {
                errcode: 43101,
                detail: SendError::NoAcceptance.to_string(),
            },
            Err(SendError::Refused { errcode, errmsg }) => SendResult::Refused {
                errcode,
                detail: errmsg,
            },
            Err(SendError::Unavailable(reason)) => {
                // The claim stays: the next attempt resumes it.
                self.subscriptions.release(&key).await?;
                return Err(HandleError::Transient(reason));
            }
        };
        match &result {
            SendResult::Refused { errcode, detail } => tracing::warn!(
                order_id = %order_id, message_id = %message.event_id, errcode, %detail,
                "WeChat refused the subscribe message"
            ),
            _ => tracing::info!(
                order_id = %order_id, message_id = %message.event_id,
                template_id = %key.template_id, "subscribe message sent"
            ),
        }
        // Records the message id with the result.
        self.subscriptions.finish(&key, NAME, &result).await?;
        Ok(Effect::Recorded)
    }
}
