//! Command handling for orders: read the stream, `decide`, append at the version read, and on a
//! concurrent append start over from a fresh read. The rules themselves live in [`crate::order`].

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::{info, instrument};
use uuid::Uuid;

use crate::cards::{Cards, CodeState};
use crate::error::{Error, ErrorCode, Kind, Result};
use crate::order::{self, CardRef, Order, OrderCommand, OrderEvent, OrderId, OrderLine};
use crate::state_cache::StateCache;
use crate::store::{EventStore, ExpectedVersion, NewEvent, RecordedEvent, StoreError};

pub const STREAM_PREFIX: &str = "order-";

/// Namespace for ids derived from idempotency keys (UUID v5), fixed forever.
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x8f3c_52a1_6b0e_4d0f_9a57_2f61_7d2e_c4b9);

/// Re-reads after a lost race before giving up with a conflict: enough for dozens of concurrent
/// writers on one order, bounded so a livelock cannot hang a request.
const MAX_ATTEMPTS: usize = 64;

/// The order id an idempotency key stands for: the same (user, key) always names the same order.
pub fn order_id_for_key(user_id: Uuid, key: &str) -> OrderId {
    Uuid::new_v5(
        &IDEMPOTENCY_NAMESPACE,
        format!("{user_id}:{key}").as_bytes(),
    )
}

pub fn stream_id(id: OrderId) -> String {
    format!("{STREAM_PREFIX}{id}")
}

/// Why and on whose behalf an event was written; stored with every event.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Metadata {
    /// `customer:<user id>`, `staff:<staff id>`, `system:<job>`, `wechatpay`.
    pub actor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_hash: Option<String>,
}

impl Metadata {
    pub fn actor(actor: impl Into<String>) -> Metadata {
        Metadata {
            actor: actor.into(),
            ..Metadata::default()
        }
    }

    pub fn with_request_id(mut self, request_id: Option<String>) -> Metadata {
        self.request_id = request_id;
        self
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// A new order as the customer asked for it, already priced from the catalogue.
#[derive(Clone, Debug)]
pub struct PlaceOrder {
    pub user_id: Uuid,
    pub openid: String,
    pub lines: Vec<OrderLine>,
    pub note: Option<String>,
    pub ttl: chrono::Duration,
    /// With a key, the order id is derived from (user, key): a retry — even after a crash, even
    /// racing the first attempt — lands on the same stream and returns the same order.
    pub idempotency_key: Option<String>,
    /// Hash of the request body, to refuse a key reused for a different order.
    pub request_hash: String,
    /// The customer's card to redeem after payment; checked at WeChat before anything is written.
    pub card: Option<CardRef>,
}

/// The result of a command: the order afterwards and what was appended (empty when the command
/// was an idempotent repeat).
#[derive(Clone, Debug)]
pub struct Outcome {
    pub order: Order,
    pub appended: Vec<RecordedEvent>,
}

/// Order states remembered per process (see [`StateCache`]): enough for every order paid within
/// the last hours of a busy shop, a few megabytes.
const STATES_REMEMBERED: usize = 20_000;

#[derive(Clone)]
pub struct OrderService {
    store: Arc<dyn EventStore>,
    states: Arc<StateCache>,
    cards: Option<Arc<dyn Cards>>,
}

fn decode_all(events: &[RecordedEvent]) -> Result<Vec<OrderEvent>> {
    events
        .iter()
        .map(|e| {
            OrderEvent::from_stored(&e.event_type, e.data.clone()).map_err(|err| {
                Error::Store(StoreError::Corrupt {
                    position: e.global_position,
                    reason: err.to_string(),
                })
            })
        })
        .collect()
}

fn to_new_events(order_id: OrderId, events: &[OrderEvent], meta: &Metadata) -> Vec<NewEvent> {
    events
        .iter()
        .map(|e| {
            let event = NewEvent::new(e.event_type(), e.to_data()).with_metadata(meta.to_json());
            match e {
                // The first event of a stream has an id derived from the order id, so a retried
                // placement is recognised by the store as the same append.
                OrderEvent::OrderPlaced { .. } => {
                    event.with_id(Uuid::new_v5(&order_id, b"OrderPlaced"))
                }
                _ => event,
            }
        })
        .collect()
}

impl OrderService {
    pub fn new(store: Arc<dyn EventStore>) -> OrderService {
        OrderService {
            store,
            states: Arc::new(StateCache::new(STATES_REMEMBERED)),
            cards: None,
        }
    }

    /// Where cards on new orders are checked; without it an order with a card is refused.
    pub fn with_cards(mut self, cards: Arc<dyn Cards>) -> OrderService {
        self.cards = Some(cards);
        self
    }

    /// Refuses a card that is not this user's or cannot be consumed, before anything is written.
    async fn check_card(&self, openid: &str, card: &CardRef) -> Result<()> {
        let cards = self.cards.as_ref().ok_or_else(|| {
            Error::new(
                Kind::Rule,
                ErrorCode::CardNotUsable,
                "cards are not enabled on this engine",
            )
        })?;
        let code = cards.check(card).await?;
        if code.usable_by(openid) {
            return Ok(());
        }
        let why = match &code.state {
            _ if code.openid != openid => "it is not this customer's card".to_string(),
            CodeState::Consumed => "it is already used".to_string(),
            CodeState::Unusable(state) => format!("its state is {state}"),
            CodeState::Usable => "it cannot be consumed now".to_string(),
        };
        Err(Error::new(
            Kind::Rule,
            ErrorCode::CardNotUsable,
            format!("the card cannot be used with this order: {why}"),
        ))
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// The order's events as stored, oldest first.
    pub async fn history(&self, id: OrderId) -> Result<Vec<RecordedEvent>> {
        Ok(self.store.read_stream(&stream_id(id)).await?)
    }

    /// The order as of its latest event, with the stream's version.
    pub async fn load(&self, id: OrderId) -> Result<Option<(Order, i64)>> {
        let stored = self.history(id).await?;
        let version = stored.last().map(|e| e.version).unwrap_or_default();
        let events = decode_all(&stored)?;
        Ok(order::replay(events.iter()).map(|o| (o, version)))
    }

    /// The order as it was right after its event number `version` (what a consumer of that
    /// event should see, even if more happened since).
    pub async fn load_at(&self, id: OrderId, version: i64) -> Result<Option<Order>> {
        let mut stored = self.history(id).await?;
        stored.retain(|e| e.version <= version);
        Ok(order::replay(decode_all(&stored)?.iter()))
    }

    pub async fn get(&self, id: OrderId) -> Result<Order> {
        self.load(id)
            .await?
            .map(|(order, _)| order)
            .ok_or_else(|| Error::from(order::OrderError::NotFound))
    }

    #[instrument(skip_all, fields(user_id = %req.user_id))]
    pub async fn place(
        &self,
        req: PlaceOrder,
        meta: Metadata,
        now: DateTime<Utc>,
    ) -> Result<Order> {
        let order_id = match &req.idempotency_key {
            Some(key) => order_id_for_key(req.user_id, key),
            None => Uuid::now_v7(),
        };
        let sid = stream_id(order_id);
        if let Some(card) = &req.card {
            self.check_card(&req.openid, card).await?;
        }
        let meta = Metadata {
            idempotency_key: req.idempotency_key.clone(),
            request_hash: Some(req.request_hash.clone()),
            ..meta
        };
        // No read first: a new id has no stream, and an idempotent retry meets the existing
        // stream as a replayed or conflicting append below.
        let events = order::decide(
            None,
            OrderCommand::Place {
                order_id,
                user_id: req.user_id,
                openid: req.openid.clone(),
                out_trade_no: order_id.simple().to_string(),
                items: req.lines.clone(),
                note: req.note.clone(),
                now,
                card: req.card.clone(),
                ttl: req.ttl,
            },
        )?;
        let appended = match self
            .store
            .append(
                &sid,
                ExpectedVersion::NoStream,
                to_new_events(order_id, &events, &meta),
            )
            .await
        {
            Ok(appended) if !appended.replayed => appended.events,
            // Someone with the same key got there first: answer as they were answered.
            Ok(_) | Err(StoreError::Conflict { .. }) => {
                let existing = self.store.read_stream(&sid).await?;
                return self.same_request(&existing, &req.request_hash);
            }
            Err(e) => return Err(e.into()),
        };
        let order = order::replay(decode_all(&appended)?.iter()).ok_or_else(|| {
            Error::new(Kind::Internal, ErrorCode::InternalError, "order not placed")
        })?;
        self.states
            .put(order_id, order.clone(), appended.len() as i64);
        info!(order_id = %order.id, total_fen = order.total_fen.get(), "order placed");
        Ok(order)
    }

    /// The order already placed under this key, if any. A retry is answered from the log before
    /// anything else is checked: a product deactivated since the first attempt must not turn a
    /// successful checkout into an error on retry.
    pub async fn placed_with_key(
        &self,
        user_id: Uuid,
        key: &str,
        request_hash: &str,
    ) -> Result<Option<Order>> {
        let existing = self
            .store
            .read_stream(&stream_id(order_id_for_key(user_id, key)))
            .await?;
        if existing.is_empty() {
            return Ok(None);
        }
        self.same_request(&existing, request_hash).map(Some)
    }

    /// An order already exists for this idempotency key: the same request gets the same order,
    /// a different one is refused rather than silently answered with the wrong order.
    fn same_request(&self, stored: &[RecordedEvent], request_hash: &str) -> Result<Order> {
        let first_hash = stored
            .first()
            .and_then(|e| e.metadata.get("request_hash"))
            .and_then(|h| h.as_str());
        if first_hash != Some(request_hash) {
            return Err(Error::new(
                Kind::Rule,
                ErrorCode::IdempotencyKeyReused,
                "this Idempotency-Key was already used for a different request",
            ));
        }
        order::replay(decode_all(stored)?.iter())
            .ok_or_else(|| Error::new(Kind::Internal, ErrorCode::InternalError, "order not found"))
    }

    /// Runs one command against the state at exactly `version`, for callers that acted on that
    /// state outside the log (e.g. closed the order at WeChat Pay). `None` when the order has
    /// moved on since: the caller must look again rather than apply a stale decision.
    pub async fn execute_at(
        &self,
        id: OrderId,
        version: i64,
        command: OrderCommand,
        meta: &Metadata,
    ) -> Result<Option<Outcome>> {
        self.attempt(id, Some(version), command, meta).await
    }

    /// Runs one command against the latest state, retrying from a fresh read whenever another
    /// writer appended in between. The command is re-decided each time, never blindly re-applied.
    #[instrument(skip_all, fields(order_id = %id))]
    pub async fn execute(
        &self,
        id: OrderId,
        command: OrderCommand,
        meta: &Metadata,
    ) -> Result<Outcome> {
        for _ in 0..MAX_ATTEMPTS {
            if let Some(outcome) = self.attempt(id, None, command.clone(), meta).await? {
                return Ok(outcome);
            }
        }
        Err(Error::new(
            Kind::Conflict,
            ErrorCode::ConcurrentUpdate,
            "the order is being changed by many requests at once; try again",
        ))
    }

    /// One decide–append round. `None` when the stream is not at `at` (if given) or another
    /// writer appended between the read and the append.
    async fn attempt(
        &self,
        id: OrderId,
        at: Option<i64>,
        command: OrderCommand,
        meta: &Metadata,
    ) -> Result<Option<Outcome>> {
        let remembered = self
            .states
            .get(id)
            .filter(|(_, version)| at.is_none_or(|at| at == *version));
        if let Some((state, version)) = remembered {
            // Only an append at the remembered version proves the state current. A refusal, a
            // no-op or a lost race may be an artefact of a stale state: decide again on a read.
            if let Ok(new) = order::decide(Some(&state), command.clone()) {
                if !new.is_empty() {
                    if let Some(outcome) = self.append(id, version, state, &new, meta).await? {
                        return Ok(Some(outcome));
                    }
                }
            }
            self.states.forget(id);
        }

        let stored = self.store.read_stream(&stream_id(id)).await?;
        let version = stored.last().map(|e| e.version).unwrap_or_default();
        if at.is_some_and(|at| at != version) {
            return Ok(None);
        }
        let past = decode_all(&stored)?;
        let state = order::replay(past.iter());
        let new = order::decide(state.as_ref(), command)?;
        let Some(state) = state else {
            return Err(order::OrderError::NotFound.into());
        };
        if new.is_empty() {
            self.states.put(id, state.clone(), version);
            return Ok(Some(Outcome {
                order: state,
                appended: Vec::new(),
            }));
        }
        self.append(id, version, state, &new, meta).await
    }

    /// Appends what was decided on `state` at exactly `version`; `None` on a lost race.
    async fn append(
        &self,
        id: OrderId,
        version: i64,
        state: Order,
        new: &[OrderEvent],
        meta: &Metadata,
    ) -> Result<Option<Outcome>> {
        let appended = match self
            .store
            .append(
                &stream_id(id),
                ExpectedVersion::Exact(version),
                to_new_events(id, new, meta),
            )
            .await
        {
            Ok(appended) => appended,
            Err(StoreError::Conflict { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let order = new
            .iter()
            .fold(Some(state), order::evolve)
            .ok_or_else(|| Error::new(Kind::Internal, ErrorCode::InternalError, "lost order"))?;
        self.states.put(id, order.clone(), appended.version);
        for event in &appended.events {
            info!(order_id = %id, event = %event.event_type, version = event.version, "event recorded");
        }
        Ok(Some(Outcome {
            order,
            appended: appended.events,
        }))
    }
}
