//! The whole life of an order, in one place.
//!
//! ```text
//!                  RecordPayment                    refund confirmed
//! PendingPayment ─────────────────▶ Paid ─────────────────────────▶ PartiallyRefunded
//!       │        (amount == total)   │                                     │
//!       │ Close                      │ all of it refunded                  │ the rest refunded
//!       ▼                            ▼                                     │
//!    Closed                       Refunded ◀───────────────────────────────┘
//!
//! Money that does not fit this picture (wrong amount, paid after close,
//! paid twice) moves the order to NeedsReview from wherever it is. That is
//! sticky: refunds can still be made, but only staff can resolve it
//! (`ResolveReview`), which gives the order back the status its money says:
//! Paid, PartiallyRefunded or Refunded by confirmed refunds.
//!
//! Some events leave the status alone but still flag the order for staff (a
//! refund on a consumed card, a card not consumed on a paid order, a failed
//! refund); `ResolveReview` closes those too. See `review.rs`.
//! ```
//!
//! `decide` enforces the rules and never changes anything; `evolve` applies
//! facts and never fails. Retries are expected everywhere (WeChat Pay
//! re-sends notifications, clients re-send requests), so every command but
//! `Place` answers a repeat of itself with `Ok(vec![])`: "already done".

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::{
    CardRef, CardStatus, CloseReason, Discrepancy, Order, OrderCard, OrderError, OrderEvent,
    OrderId, OrderLine, OrderStatus, PayChannel, Payment, Refund, RefundStatus, Review, ReviewItem,
    ReviewOutcome, ReviewReason, ReviewResolution, MAX_LINES, MAX_ORDER_TOTAL_FEN, MAX_REFUNDS,
};
use crate::money::Fen;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderCommand {
    /// `items` are re-priced here; their `line_total_fen` is ignored.
    /// The order can be paid until `now + ttl`.
    Place {
        order_id: OrderId,
        user_id: Uuid,
        openid: String,
        out_trade_no: String,
        items: Vec<OrderLine>,
        note: Option<String>,
        /// Checked at WeChat by the caller (the user's, consumable) before placing.
        card: Option<CardRef>,
        now: DateTime<Utc>,
        ttl: Duration,
    },
    /// The customer asks to pay (we are about to create a prepay order).
    RequestPayment {
        channel: PayChannel,
        now: DateTime<Utc>,
    },
    /// WeChat Pay says money arrived (notification or query).
    RecordPayment {
        channel: PayChannel,
        transaction_id: String,
        amount_fen: Fen,
        paid_at: DateTime<Utc>,
    },
    Close {
        reason: CloseReason,
        now: DateTime<Utc>,
    },
    RequestRefund {
        out_refund_no: String,
        amount_fen: Fen,
        reason: Option<String>,
        now: DateTime<Utc>,
    },
    RecordRefundSuccess {
        out_refund_no: String,
        refund_id: Option<String>,
        at: DateTime<Utc>,
    },
    RecordRefundFailure {
        out_refund_no: String,
        reason: String,
        at: DateTime<Utc>,
    },
    /// WeChat consumed the order's card.
    RecordCardConsumed { at: DateTime<Utc> },
    /// The order's card will not be consumed by us.
    RecordCardConsumeFailed { reason: String, at: DateTime<Utc> },
    /// Staff settled what the order has in review (all of it at once).
    ResolveReview {
        resolution: ReviewResolution,
        note: Option<String>,
        now: DateTime<Utc>,
    },
    /// Reconciliation found the provider's bill disagreeing with the log about this order.
    RecordDiscrepancy {
        discrepancy: Discrepancy,
        now: DateTime<Utc>,
    },
}

/// Checks `command` against the current state and returns the events that
/// record its effect. An empty vector means "already done" (a retry).
pub fn decide(state: Option<&Order>, command: OrderCommand) -> Result<Vec<OrderEvent>, OrderError> {
    use OrderCommand as C;
    let Some(order) = state else {
        return match command {
            C::Place {
                order_id,
                user_id,
                openid,
                out_trade_no,
                items,
                note,
                card,
                now,
                ttl,
            } => {
                let (items, total_fen) = price_lines(items)?;
                let expires_at = payment_deadline(now, ttl)?;
                Ok(vec![OrderEvent::OrderPlaced {
                    order_id,
                    user_id,
                    openid,
                    out_trade_no,
                    items,
                    total_fen,
                    note,
                    placed_at: now,
                    expires_at,
                    card,
                }])
            }
            _ => Err(OrderError::NotFound),
        };
    };
    match command {
        // Ids are chosen by the caller, so this is a retried or colliding create.
        C::Place { .. } => Err(OrderError::AlreadyExists),
        C::RequestPayment { channel, now } => request_payment(order, channel, now),
        C::RecordPayment {
            channel,
            transaction_id,
            amount_fen,
            paid_at,
        } => record_payment(order, channel, transaction_id, amount_fen, paid_at),
        C::Close { reason, now } => close(order, reason, now),
        C::RequestRefund {
            out_refund_no,
            amount_fen,
            reason,
            now,
        } => request_refund(order, out_refund_no, amount_fen, reason, now).map(|mut events| {
            // Decided on the state the refund leads to, so the flag names this refund.
            events.extend(flag_card_refund(
                &events.iter().fold(order.clone(), applied),
                now,
            ));
            events
        }),
        C::RecordCardConsumed { at } => card_consumed(order, at),
        C::RecordCardConsumeFailed { reason, at } => card_consume_failed(order, reason, at),
        C::ResolveReview {
            resolution,
            note,
            now,
        } => resolve_review(order, resolution, note, now),
        C::RecordDiscrepancy { discrepancy, now } => {
            // Once per finding: a re-run of the day, or the same finding after staff settled
            // it, is already done.
            if order.review.has_discrepancy(&discrepancy) {
                return Ok(vec![]);
            }
            Ok(vec![OrderEvent::ReconciliationDiscrepancy {
                discrepancy,
                found_at: now,
            }])
        }
        C::RecordRefundSuccess {
            out_refund_no,
            refund_id,
            at,
        } => {
            if !refund_awaits_outcome(order, &out_refund_no, RefundStatus::Succeeded)? {
                return Ok(vec![]);
            }
            Ok(vec![OrderEvent::RefundSucceeded {
                out_refund_no,
                refund_id,
                succeeded_at: at,
            }])
        }
        C::RecordRefundFailure {
            out_refund_no,
            reason,
            at,
        } => {
            if !refund_awaits_outcome(order, &out_refund_no, RefundStatus::Failed)? {
                return Ok(vec![]);
            }
            Ok(vec![OrderEvent::RefundFailed {
                out_refund_no,
                reason,
                failed_at: at,
            }])
        }
    }
}

/// The card can be consumed only once money arrived, and only once.
fn card_consumed(order: &Order, at: DateTime<Utc>) -> Result<Vec<OrderEvent>, OrderError> {
    let card = order.card.as_ref().ok_or(OrderError::NoCard)?;
    if card.status == CardStatus::Consumed {
        return Ok(vec![]);
    }
    if order.payments.is_empty() {
        return Err(OrderError::CardNotDue);
    }
    let mut events = vec![OrderEvent::CardConsumed {
        card_id: card.card_id.clone(),
        code: card.code.clone(),
        consumed_at: at,
    }];
    // A refund that raced the consume: staff must still hear of it.
    events.extend(flag_card_refund(&applied(order.clone(), &events[0]), at));
    Ok(events)
}

fn card_consume_failed(
    order: &Order,
    reason: String,
    at: DateTime<Utc>,
) -> Result<Vec<OrderEvent>, OrderError> {
    let card = order.card.as_ref().ok_or(OrderError::NoCard)?;
    if card.status != CardStatus::Pending {
        return Ok(vec![]);
    }
    Ok(vec![OrderEvent::CardConsumeFailed {
        card_id: card.card_id.clone(),
        code: card.code.clone(),
        reason,
        failed_at: at,
    }])
}

/// Staff close everything open in the order's review. A repeat of the resolution that closed
/// it last (same resolution, same note) is "already done"; any other answer once nothing is
/// open is a conflict, so two staff members deciding differently at once do not both win.
fn resolve_review(
    order: &Order,
    resolution: ReviewResolution,
    note: Option<String>,
    now: DateTime<Utc>,
) -> Result<Vec<OrderEvent>, OrderError> {
    if !order.review.is_open() {
        return match order.review.resolved.last() {
            Some(last) if last.resolution == resolution && last.note == note => Ok(vec![]),
            Some(last) => Err(OrderError::ReviewAlreadyResolved {
                resolution: last.resolution,
            }),
            None => Err(OrderError::NothingToReview),
        };
    }
    if resolution == ReviewResolution::Other && note.is_none() {
        return Err(OrderError::ReviewNoteRequired { resolution });
    }
    if resolution == ReviewResolution::Refunded
        && order
            .refunds
            .iter()
            .all(|r| r.status == RefundStatus::Failed)
    {
        return Err(OrderError::NothingRefunded);
    }
    Ok(vec![OrderEvent::ReviewResolved {
        resolution,
        note,
        resolved_at: now,
    }])
}

/// Money going back on an order whose card was consumed is flagged once for staff: a consumed
/// card cannot be handed back at WeChat.
fn flag_card_refund(order: &Order, now: DateTime<Utc>) -> Option<OrderEvent> {
    if !order.card_needs_refund_flag() {
        return None;
    }
    let card = order.card.as_ref()?;
    Some(OrderEvent::CardRefundFlagged {
        card_id: card.card_id.clone(),
        code: card.code.clone(),
        out_refund_no: order.live_refund()?.out_refund_no.clone(),
        flagged_at: now,
    })
}

/// `evolve` for a state known to exist.
fn applied(mut order: Order, event: &OrderEvent) -> Order {
    apply(&mut order, event);
    order
}

/// Re-prices every line (never trusting a client-supplied total) and sums them.
fn price_lines(items: Vec<OrderLine>) -> Result<(Vec<OrderLine>, Fen), OrderError> {
    if items.is_empty() {
        return Err(OrderError::EmptyOrder);
    }
    if items.len() > MAX_LINES {
        return Err(OrderError::TooManyLines);
    }
    let lines = items
        .into_iter()
        .map(|line| OrderLine::priced(line.sku, line.name, line.quantity, line.unit_price_fen))
        .collect::<Result<Vec<_>, _>>()?;
    // Overflow and "merely huge" are the same problem to the customer.
    let total = Fen::checked_sum(lines.iter().map(|line| line.line_total_fen))
        .filter(|total| total.get() <= MAX_ORDER_TOTAL_FEN)
        .ok_or(OrderError::TotalTooLarge)?;
    Ok((lines, total))
}

fn payment_deadline(now: DateTime<Utc>, ttl: Duration) -> Result<DateTime<Utc>, OrderError> {
    // A non-positive window would create an order born expired, and
    // `checked_add_signed` keeps an absurd ttl from panicking.
    if ttl <= Duration::zero() {
        return Err(OrderError::InvalidTtl);
    }
    now.checked_add_signed(ttl).ok_or(OrderError::InvalidTtl)
}

fn request_payment(
    order: &Order,
    channel: PayChannel,
    now: DateTime<Utc>,
) -> Result<Vec<OrderEvent>, OrderError> {
    match order.status {
        OrderStatus::PendingPayment => {}
        OrderStatus::Closed => {
            return Err(OrderError::NotPayable {
                status: order.status,
            })
        }
        // Every other status means money already arrived.
        OrderStatus::Paid
        | OrderStatus::PartiallyRefunded
        | OrderStatus::Refunded
        | OrderStatus::NeedsReview => return Err(OrderError::AlreadyPaid),
    }
    // The sweeper may not have closed it yet; don't start a payment we
    // would refuse to honour.
    if now >= order.expires_at {
        return Err(OrderError::Expired);
    }
    // Customers double-tap "pay"; only a channel switch is news.
    if order.channel == Some(channel) {
        return Ok(vec![]);
    }
    Ok(vec![OrderEvent::PaymentRequested {
        channel,
        requested_at: now,
    }])
}

/// Accepted in every status: money that arrived must be on record even if
/// the order was closed or already paid, or nobody would ever pay it back.
/// `evolve` decides what that does to the status.
fn record_payment(
    order: &Order,
    channel: PayChannel,
    transaction_id: String,
    amount_fen: Fen,
    paid_at: DateTime<Utc>,
) -> Result<Vec<OrderEvent>, OrderError> {
    // WeChat Pay re-sends notifications until acknowledged; the transaction
    // id is its idempotency key.
    if order.has_payment(&transaction_id) {
        return Ok(vec![]);
    }
    if amount_fen == Fen::ZERO {
        return Err(OrderError::InvalidAmount);
    }
    if amount_fen != order.total_fen {
        return Ok(vec![OrderEvent::PaymentAmountMismatch {
            channel,
            transaction_id,
            expected_fen: order.total_fen,
            received_fen: amount_fen,
            paid_at,
        }]);
    }
    Ok(vec![OrderEvent::PaymentSucceeded {
        channel,
        transaction_id,
        amount_fen,
        paid_at,
    }])
}

fn close(
    order: &Order,
    reason: CloseReason,
    now: DateTime<Utc>,
) -> Result<Vec<OrderEvent>, OrderError> {
    match order.status {
        OrderStatus::PendingPayment => Ok(vec![OrderEvent::OrderClosed {
            reason,
            closed_at: now,
        }]),
        // Two expiry sweepers, or a sweeper and a customer, may race.
        OrderStatus::Closed => Ok(vec![]),
        // Money arrived; closing would hide it. Refund instead.
        _ => Err(OrderError::AlreadyPaid),
    }
}

fn request_refund(
    order: &Order,
    out_refund_no: String,
    amount_fen: Fen,
    reason: Option<String>,
    now: DateTime<Utc>,
) -> Result<Vec<OrderEvent>, OrderError> {
    // Checked before the status so that retrying the refund that just
    // emptied the order (now Refunded) still answers "already done".
    if let Some(existing) = order.refund(&out_refund_no) {
        if existing.amount_fen == amount_fen {
            return Ok(vec![]);
        }
        return Err(OrderError::RefundConflict { out_refund_no });
    }
    let has_money = matches!(
        order.status,
        OrderStatus::Paid | OrderStatus::PartiallyRefunded | OrderStatus::NeedsReview
    ) && order.paid_fen() > Fen::ZERO;
    if !has_money {
        return Err(OrderError::NotRefundable {
            status: order.status,
        });
    }
    if amount_fen == Fen::ZERO {
        return Err(OrderError::InvalidAmount);
    }
    let live_refunds = order
        .refunds
        .iter()
        .filter(|r| r.status != RefundStatus::Failed)
        .count();
    if live_refunds >= MAX_REFUNDS {
        return Err(OrderError::TooManyRefunds);
    }
    // Refunds still processing count as spent: otherwise two concurrent
    // requests could each take the full amount.
    let refundable = order.refundable_fen();
    if amount_fen > refundable {
        return Err(OrderError::RefundExceedsRefundable {
            requested: amount_fen,
            refundable,
        });
    }
    Ok(vec![OrderEvent::RefundRequested {
        out_refund_no,
        amount_fen,
        reason,
        requested_at: now,
    }])
}

/// Shared by both refund outcomes: `Ok(true)` if the refund is still
/// processing, `Ok(false)` if it already reached `outcome` (a re-sent
/// notification), and an error if it reached the opposite outcome.
fn refund_awaits_outcome(
    order: &Order,
    out_refund_no: &str,
    outcome: RefundStatus,
) -> Result<bool, OrderError> {
    let refund = order
        .refund(out_refund_no)
        .ok_or_else(|| OrderError::UnknownRefund {
            out_refund_no: out_refund_no.to_owned(),
        })?;
    match refund.status {
        RefundStatus::Processing => Ok(true),
        status if status == outcome => Ok(false),
        // WeChat Pay never flips a final outcome; if we are told it did,
        // a human must look rather than us silently rewriting history.
        _ => Err(OrderError::RefundAlreadyFinal {
            out_refund_no: out_refund_no.to_owned(),
        }),
    }
}

/// Applies one event. Never fails and never panics: an event that cannot
/// apply (anything but `OrderPlaced` before the order exists, a second
/// `OrderPlaced`, a duplicate payment, an unknown refund) leaves the state
/// as it was, so a damaged stream degrades instead of crashing a reader.
pub fn evolve(state: Option<Order>, event: &OrderEvent) -> Option<Order> {
    let Some(mut order) = state else {
        return match event {
            OrderEvent::OrderPlaced {
                order_id,
                user_id,
                openid,
                out_trade_no,
                items,
                total_fen,
                note,
                placed_at,
                expires_at,
                card,
            } => Some(Order {
                id: *order_id,
                user_id: *user_id,
                openid: openid.clone(),
                out_trade_no: out_trade_no.clone(),
                items: items.clone(),
                total_fen: *total_fen,
                note: note.clone(),
                status: OrderStatus::PendingPayment,
                created_at: *placed_at,
                expires_at: *expires_at,
                channel: None,
                payment_requested_at: None,
                requested_channels: Vec::new(),
                payments: Vec::new(),
                refunds: Vec::new(),
                paid_at: None,
                transaction_id: None,
                closed_at: None,
                close_reason: None,
                card: card.as_ref().map(|c| OrderCard {
                    card_id: c.card_id.clone(),
                    code: c.code.clone(),
                    status: CardStatus::Pending,
                    consumed_at: None,
                    failure_reason: None,
                    refund_flagged: false,
                }),
                review: Review::default(),
            }),
            _ => None,
        };
    };
    apply(&mut order, event);
    Some(order)
}

/// Folds a whole stream, oldest first.
pub fn replay<'a>(events: impl IntoIterator<Item = &'a OrderEvent>) -> Option<Order> {
    events.into_iter().fold(None, evolve)
}

fn apply(order: &mut Order, event: &OrderEvent) {
    match event {
        OrderEvent::OrderPlaced { .. } => {}
        OrderEvent::PaymentRequested {
            channel,
            requested_at,
        } => {
            order.channel = Some(*channel);
            order.payment_requested_at = Some(*requested_at);
            if !order.requested_channels.contains(channel) {
                order.requested_channels.push(*channel);
            }
        }
        OrderEvent::PaymentSucceeded {
            channel,
            transaction_id,
            amount_fen,
            paid_at,
        } => {
            if order.has_payment(transaction_id) {
                return;
            }
            // The happy path is exactly one payment while still pending.
            // Anything else (after close, a second transaction) means
            // someone is owed money back, so a human must look.
            let clean = order.status == OrderStatus::PendingPayment && order.payments.is_empty();
            if !clean {
                flag_arrival(order, transaction_id, *amount_fen, *paid_at);
            }
            record_arrival(
                order,
                Payment {
                    transaction_id: transaction_id.clone(),
                    channel: *channel,
                    amount_fen: *amount_fen,
                    paid_at: *paid_at,
                    matched: true,
                },
            );
            if clean {
                order.status = OrderStatus::Paid;
                order.channel = Some(*channel);
            } else {
                order.status = OrderStatus::NeedsReview;
            }
        }
        OrderEvent::PaymentAmountMismatch {
            channel,
            transaction_id,
            received_fen,
            paid_at,
            ..
        } => {
            if order.has_payment(transaction_id) {
                return;
            }
            flag_arrival(order, transaction_id, *received_fen, *paid_at);
            record_arrival(
                order,
                Payment {
                    transaction_id: transaction_id.clone(),
                    channel: *channel,
                    amount_fen: *received_fen,
                    paid_at: *paid_at,
                    matched: false,
                },
            );
            order.status = OrderStatus::NeedsReview;
        }
        OrderEvent::OrderClosed { reason, closed_at } => {
            // Closing can only ever hide an unpaid order, never paid money.
            if order.status == OrderStatus::PendingPayment {
                order.status = OrderStatus::Closed;
                order.closed_at = Some(*closed_at);
                order.close_reason = Some(*reason);
            }
        }
        OrderEvent::RefundRequested {
            out_refund_no,
            amount_fen,
            reason,
            requested_at,
        } => {
            // The refund number is the key everything else looks up by.
            if order.refund(out_refund_no).is_some() {
                return;
            }
            order.refunds.push(Refund {
                out_refund_no: out_refund_no.clone(),
                amount_fen: *amount_fen,
                reason: reason.clone(),
                status: RefundStatus::Processing,
                requested_at: *requested_at,
                refund_id: None,
                finished_at: None,
                failure_reason: None,
            });
            settle_refund_status(order);
        }
        OrderEvent::RefundSucceeded {
            out_refund_no,
            refund_id,
            succeeded_at,
        } => {
            if let Some(refund) = processing_refund(order, out_refund_no) {
                refund.status = RefundStatus::Succeeded;
                refund.refund_id = refund_id.clone();
                refund.finished_at = Some(*succeeded_at);
            }
            settle_refund_status(order);
        }
        OrderEvent::RefundFailed {
            out_refund_no,
            reason,
            failed_at,
        } => {
            if let Some(refund) = processing_refund(order, out_refund_no) {
                refund.status = RefundStatus::Failed;
                refund.failure_reason = Some(reason.clone());
                refund.finished_at = Some(*failed_at);
                let amount_fen = refund.amount_fen;
                order.review.open.push(ReviewItem {
                    reason: ReviewReason::RefundFailed {
                        out_refund_no: out_refund_no.clone(),
                        amount_fen,
                        reason: reason.clone(),
                    },
                    at: *failed_at,
                });
            }
            settle_refund_status(order);
        }
        OrderEvent::CardConsumed { consumed_at, .. } => {
            if let Some(card) = order.card.as_mut() {
                card.status = CardStatus::Consumed;
                card.consumed_at = Some(*consumed_at);
                card.failure_reason = None;
            }
        }
        OrderEvent::CardConsumeFailed {
            reason, failed_at, ..
        } => {
            // All the money went back already: the customer keeps the card, nothing is owed.
            let kept_money = order.status != OrderStatus::Refunded;
            if let Some(card) = order
                .card
                .as_mut()
                .filter(|c| c.status == CardStatus::Pending)
            {
                card.status = CardStatus::ConsumeFailed;
                card.failure_reason = Some(reason.clone());
                let card_id = card.card_id.clone();
                if kept_money {
                    order.review.open.push(ReviewItem {
                        reason: ReviewReason::CardNotConsumed {
                            card_id,
                            reason: reason.clone(),
                        },
                        at: *failed_at,
                    });
                }
            }
        }
        OrderEvent::CardRefundFlagged {
            card_id,
            out_refund_no,
            flagged_at,
            ..
        } => {
            if let Some(card) = order.card.as_mut() {
                card.refund_flagged = true;
                order.review.open.push(ReviewItem {
                    reason: ReviewReason::CardRefunded {
                        card_id: card_id.clone(),
                        out_refund_no: out_refund_no.clone(),
                    },
                    at: *flagged_at,
                });
            }
        }
        OrderEvent::ReconciliationDiscrepancy {
            discrepancy,
            found_at,
        } => {
            if order.review.has_discrepancy(discrepancy) {
                return;
            }
            order.review.open.push(ReviewItem {
                reason: ReviewReason::ReconciliationDiscrepancy {
                    discrepancy: discrepancy.clone(),
                },
                at: *found_at,
            });
        }
        OrderEvent::ReviewResolved {
            resolution,
            note,
            resolved_at,
        } => {
            if !order.review.is_open() {
                return;
            }
            let items = std::mem::take(&mut order.review.open);
            order.review.resolved.push(ReviewOutcome {
                resolution: *resolution,
                note: note.clone(),
                resolved_at: *resolved_at,
                items,
            });
            // Review only ever follows arrived money, so the money now says the status.
            if order.status == OrderStatus::NeedsReview {
                order.status = order.money_status();
            }
        }
    }
}

/// Money that does not fit the happy path, named for staff by what it ran into. Called before
/// the payment is recorded, on the order as it was.
fn flag_arrival(order: &mut Order, transaction_id: &str, received_fen: Fen, at: DateTime<Utc>) {
    let (transaction_id, expected_fen) = (transaction_id.to_owned(), order.total_fen);
    let reason = if order.status == OrderStatus::Closed {
        ReviewReason::PaidAfterClose {
            transaction_id,
            expected_fen,
            received_fen,
        }
    } else if !order.payments.is_empty() {
        ReviewReason::PaidTwice {
            transaction_id,
            expected_fen,
            received_fen,
        }
    } else {
        ReviewReason::AmountMismatch {
            transaction_id,
            expected_fen,
            received_fen,
        }
    };
    order.review.open.push(ReviewItem { reason, at });
}

/// The first payment is the one receipts and reconciliation refer to,
/// whether or not it turned out to be right.
fn record_arrival(order: &mut Order, payment: Payment) {
    order.paid_at.get_or_insert(payment.paid_at);
    order
        .transaction_id
        .get_or_insert_with(|| payment.transaction_id.clone());
    order.payments.push(payment);
}

/// Final refund outcomes are never rewritten.
fn processing_refund<'o>(order: &'o mut Order, out_refund_no: &str) -> Option<&'o mut Refund> {
    order
        .refund_mut(out_refund_no)
        .filter(|refund| refund.status == RefundStatus::Processing)
}

/// Derives the status from confirmed refunds. In-flight refunds do not
/// count: until WeChat Pay confirms, the customer has not got money back.
fn settle_refund_status(order: &mut Order) {
    // NeedsReview stays until staff resolve it; pending and closed orders
    // hold no money, so a refund event cannot make them "paid".
    if !matches!(
        order.status,
        OrderStatus::Paid | OrderStatus::PartiallyRefunded | OrderStatus::Refunded
    ) {
        return;
    }
    order.status = order.money_status();
}
