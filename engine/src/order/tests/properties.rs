//! Property tests over random command sequences.
//!
//! Each case places an order, then runs up to 40 random commands drawn
//! from a deliberately tiny space (3 transaction ids, 4 refund numbers,
//! small amounts, times around the deadline) so retries, collisions, late
//! payments and over-refunds happen often. Amounts may be symbolic
//! ("the total", "what is refundable") and are resolved against the state
//! at that moment, otherwise the happy paths would almost never be hit.

use proptest::prelude::*;

use super::*;

#[derive(Clone, Copy, Debug)]
enum Amount {
    Total,
    Refundable,
    HalfRefundable,
    Fixed(i64),
}

#[derive(Clone, Debug)]
enum Plan {
    RequestPayment {
        v3: bool,
        minute: i64,
    },
    RecordPayment {
        v3: bool,
        txn: u8,
        amount: Amount,
        minute: i64,
    },
    Close {
        reason: CloseReason,
        minute: i64,
    },
    RequestRefund {
        no: u8,
        amount: Amount,
        minute: i64,
    },
    RefundSucceeded {
        no: u8,
        minute: i64,
    },
    RefundFailed {
        no: u8,
        minute: i64,
    },
    ResolveReview {
        resolution: ReviewResolution,
        note: Option<u8>,
        minute: i64,
    },
}

/// Mostly the right amount: a wrong one sends the order to review for
/// good, and the refund paths are only reachable from a clean payment.
fn payment_amount() -> impl Strategy<Value = Amount> {
    prop_oneof![
        6 => Just(Amount::Total),
        1 => (0i64..=400).prop_map(Amount::Fixed),
    ]
}

/// Mostly WeChat Pay re-sending the same transaction, sometimes a second one.
fn transaction() -> impl Strategy<Value = u8> {
    prop_oneof![6 => Just(0u8), 1 => 1u8..3]
}

fn refund_amount() -> impl Strategy<Value = Amount> {
    prop_oneof![
        3 => Just(Amount::Total),
        2 => Just(Amount::Refundable),
        2 => Just(Amount::HalfRefundable),
        3 => (0i64..=400).prop_map(Amount::Fixed),
    ]
}

fn channel() -> impl Strategy<Value = bool> {
    any::<bool>()
}

/// Minutes after placement; the deadline is at `TTL_MINUTES`.
fn minute() -> impl Strategy<Value = i64> {
    0i64..=TTL_MINUTES * 2
}

fn plan() -> impl Strategy<Value = Plan> {
    let reason = prop_oneof![
        Just(CloseReason::Expired),
        Just(CloseReason::CancelledByCustomer),
        Just(CloseReason::ClosedByStaff),
    ];
    prop_oneof![
        2 => (channel(), minute()).prop_map(|(v3, minute)| Plan::RequestPayment { v3, minute }),
        3 => (channel(), transaction(), payment_amount(), minute())
            .prop_map(|(v3, txn, amount, minute)| Plan::RecordPayment { v3, txn, amount, minute }),
        1 => (reason, minute()).prop_map(|(reason, minute)| Plan::Close { reason, minute }),
        5 => (0u8..4, refund_amount(), minute())
            .prop_map(|(no, amount, minute)| Plan::RequestRefund { no, amount, minute }),
        3 => (0u8..4, minute()).prop_map(|(no, minute)| Plan::RefundSucceeded { no, minute }),
        2 => (0u8..4, minute()).prop_map(|(no, minute)| Plan::RefundFailed { no, minute }),
        2 => (resolution(), prop::option::of(0u8..2), minute())
            .prop_map(|(resolution, note, minute)| Plan::ResolveReview { resolution, note, minute }),
    ]
}

fn resolution() -> impl Strategy<Value = ReviewResolution> {
    prop_oneof![
        Just(ReviewResolution::Refunded),
        Just(ReviewResolution::Accepted),
        Just(ReviewResolution::Other),
    ]
}

/// Small carts so random fixed amounts sometimes equal or exceed the total.
fn cart() -> impl Strategy<Value = Vec<OrderLine>> {
    prop::collection::vec((1u32..=3, 1i64..=300), 1..=3).prop_map(|lines| {
        lines
            .into_iter()
            .enumerate()
            .map(|(i, (quantity, price))| line(&format!("sku{i}"), quantity, price))
            .collect()
    })
}

fn scenario() -> impl Strategy<Value = (Vec<OrderLine>, Vec<Plan>)> {
    (cart(), prop::collection::vec(plan(), 0..=40))
}

fn resolve(amount: Amount, order: &Order) -> Fen {
    match amount {
        Amount::Total => order.total_fen,
        Amount::Refundable => order.refundable_fen(),
        Amount::HalfRefundable => fen(order.refundable_fen().get() / 2),
        Amount::Fixed(v) => fen(v),
    }
}

fn command(plan: &Plan, order: &Order) -> OrderCommand {
    let channel = |v3: bool| {
        if v3 {
            PayChannel::WechatpayV3
        } else {
            PayChannel::WechatpayV2
        }
    };
    match *plan {
        Plan::RequestPayment { v3, minute } => OrderCommand::RequestPayment {
            channel: channel(v3),
            now: at(minute),
        },
        Plan::RecordPayment {
            v3,
            txn,
            amount,
            minute,
        } => OrderCommand::RecordPayment {
            channel: channel(v3),
            transaction_id: format!("T{txn}"),
            amount_fen: resolve(amount, order),
            paid_at: at(minute),
        },
        Plan::Close { reason, minute } => OrderCommand::Close {
            reason,
            now: at(minute),
        },
        Plan::RequestRefund { no, amount, minute } => OrderCommand::RequestRefund {
            out_refund_no: format!("R{no}"),
            amount_fen: resolve(amount, order),
            reason: None,
            now: at(minute),
        },
        Plan::RefundSucceeded { no, minute } => OrderCommand::RecordRefundSuccess {
            out_refund_no: format!("R{no}"),
            refund_id: Some(format!("wx-R{no}")),
            at: at(minute),
        },
        Plan::RefundFailed { no, minute } => OrderCommand::RecordRefundFailure {
            out_refund_no: format!("R{no}"),
            reason: "ABNORMAL".into(),
            at: at(minute),
        },
        Plan::ResolveReview {
            resolution,
            note,
            minute,
        } => OrderCommand::ResolveReview {
            resolution,
            note: note.map(|n| format!("note {n}")),
            now: at(minute),
        },
    }
}

/// One command and what it did.
struct Step {
    command: OrderCommand,
    before: Option<Order>,
    outcome: Result<Vec<OrderEvent>, OrderError>,
    after: Option<Order>,
}

/// Places the order, then runs every plan against the evolving state.
fn simulate(cart: Vec<OrderLine>, plans: &[Plan]) -> Vec<Step> {
    let mut steps = Vec::with_capacity(plans.len() + 1);
    let mut state: Option<Order> = None;
    let mut run = |command: OrderCommand, state: &mut Option<Order>| {
        let before = state.clone();
        let outcome = decide(before.as_ref(), command.clone());
        if let Ok(events) = &outcome {
            *state = events.iter().fold(state.take(), evolve);
        }
        steps.push(Step {
            command,
            before,
            outcome,
            after: state.clone(),
        });
    };
    run(place_with(cart), &mut state);
    for plan in plans {
        let order = state.as_ref().expect("placing a valid cart succeeds");
        let command = command(plan, order);
        run(command, &mut state);
    }
    steps
}

fn emitted(steps: &[Step]) -> impl Iterator<Item = &OrderEvent> {
    steps.iter().flat_map(|s| s.outcome.iter().flatten())
}

proptest! {
    #[test]
    fn refunds_never_exceed_the_money_that_arrived((cart, plans) in scenario()) {
        for step in simulate(cart, &plans) {
            let order = step.after.unwrap();
            let promised = order.refunded_fen().checked_add(order.refunding_fen()).unwrap();
            prop_assert!(
                promised <= order.paid_fen(),
                "refunded {} + refunding {} > paid {} after {:?}",
                order.refunded_fen().get(), order.refunding_fen().get(),
                order.paid_fen().get(), step.command
            );
        }
    }

    #[test]
    fn replaying_the_emitted_events_rebuilds_the_same_state((cart, plans) in scenario()) {
        let steps = simulate(cart, &plans);
        for (i, step) in steps.iter().enumerate() {
            let replayed = replay(emitted(&steps[..=i]));
            prop_assert_eq!(&replayed, &step.after);
        }
    }

    #[test]
    fn repeating_a_command_that_just_took_effect_is_harmless((cart, plans) in scenario()) {
        for step in simulate(cart, &plans) {
            let Ok(events) = &step.outcome else { continue };
            if events.is_empty() {
                continue;
            }
            let again = decide(step.after.as_ref(), step.command.clone());
            match step.command {
                OrderCommand::Place { .. } => prop_assert_eq!(again, Err(OrderError::AlreadyExists)),
                // Every other command is promised to be retry-safe.
                _ => prop_assert_eq!(again, Ok(vec![]), "retrying {:?}", step.command),
            }
        }
    }

    /// Until staff resolve a review; after that the money, not the payments, says the status.
    #[test]
    fn settled_statuses_mean_exactly_one_matching_payment((cart, plans) in scenario()) {
        for step in simulate(cart, &plans) {
            let order = step.after.unwrap();
            let settled = matches!(
                order.status,
                OrderStatus::Paid | OrderStatus::PartiallyRefunded | OrderStatus::Refunded
            );
            if settled && order.review.resolved.is_empty() {
                prop_assert_eq!(order.payments.len(), 1, "{:?}", order.status);
                prop_assert!(order.payments[0].matched);
                prop_assert_eq!(order.payments[0].amount_fen, order.total_fen);
            }
            if order.status == OrderStatus::Refunded {
                prop_assert_eq!(order.refunded_fen(), order.paid_fen());
            }
        }
    }

    #[test]
    fn every_decided_event_changes_the_state((cart, plans) in scenario()) {
        for step in simulate(cart, &plans) {
            let Ok(events) = &step.outcome else { continue };
            let mut state = step.before.clone();
            for event in events {
                let next = evolve(state.clone(), event);
                prop_assert_ne!(&next, &state, "no-op {:?}", event);
                state = next;
            }
        }
    }

    #[test]
    fn needs_review_is_left_only_by_a_staff_resolution((cart, plans) in scenario()) {
        for step in simulate(cart, &plans) {
            let was_review = step.before.as_ref().map(|o| o.status) == Some(OrderStatus::NeedsReview);
            let resolved = matches!(&step.outcome, Ok(events) if events.iter().any(
                |e| matches!(e, OrderEvent::ReviewResolved { .. })
            ));
            if was_review && !resolved {
                prop_assert_eq!(step.after.unwrap().status, OrderStatus::NeedsReview);
            }
        }
    }

    #[test]
    fn needs_review_always_says_why((cart, plans) in scenario()) {
        for step in simulate(cart, &plans) {
            let order = step.after.unwrap();
            if order.status == OrderStatus::NeedsReview {
                prop_assert!(order.review.is_open(), "{:?}", step.command);
            }
        }
    }

    #[test]
    fn a_resolution_closes_the_review_and_the_money_says_the_status((cart, plans) in scenario()) {
        for step in simulate(cart, &plans) {
            let Ok(events) = &step.outcome else { continue };
            if !events.iter().any(|e| matches!(e, OrderEvent::ReviewResolved { .. })) {
                continue;
            }
            let before = step.before.unwrap();
            let after = step.after.unwrap();
            prop_assert!(before.review.is_open());
            prop_assert!(!after.review.is_open());
            prop_assert!(after.paid_fen() > Fen::ZERO);
            if before.status == OrderStatus::NeedsReview {
                prop_assert_eq!(after.status, after.money_status());
            } else {
                prop_assert_eq!(after.status, before.status);
            }
            // Money itself is untouched by a decision about it.
            prop_assert_eq!(&after.payments, &before.payments);
            prop_assert_eq!(&after.refunds, &before.refunds);
        }
    }

    #[test]
    fn every_emitted_event_survives_the_store_round_trip((cart, plans) in scenario()) {
        let steps = simulate(cart, &plans);
        for event in emitted(&steps) {
            let back = OrderEvent::from_stored(event.event_type(), event.to_data()).unwrap();
            prop_assert_eq!(&back, event);
            let text = event.to_data().to_string();
            let from_text = OrderEvent::from_stored_json(event.event_type(), &text).unwrap();
            prop_assert_eq!(&from_text, event);
        }
    }
}

/// Guards the properties above against passing vacuously: over a fixed
/// sample, the generator must reach every status, emit every event type,
/// hit the interesting rejections and exercise real retries.
#[test]
fn the_generator_reaches_every_corner() {
    use std::collections::BTreeMap;

    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut note = |what: String| *seen.entry(what).or_default() += 1;
    for _ in 0..500 {
        let (cart, plans) = scenario().new_tree(&mut runner).unwrap().current();
        for step in simulate(cart, &plans) {
            note(format!("status {}", step.after.unwrap().status));
            match &step.outcome {
                Ok(events) if events.is_empty() => note("retry".into()),
                Ok(events) => events.iter().for_each(|e| note(e.event_type().into())),
                Err(error) => note(format!("error {}", error.code())),
            }
        }
    }
    println!("{seen:#?}");

    let mut expected: Vec<String> = OrderStatus::ALL
        .iter()
        .map(|s| format!("status {s}"))
        .collect();
    expected.extend(
        [
            "PaymentRequested",
            "PaymentSucceeded",
            "PaymentAmountMismatch",
            "OrderClosed",
            "RefundRequested",
            "RefundSucceeded",
            "RefundFailed",
            "ReviewResolved",
            "retry",
        ]
        .map(String::from),
    );
    expected.extend(
        [
            "order_already_paid",
            "order_not_payable",
            "order_expired",
            "order_not_refundable",
            "refund_exceeds_refundable",
            "refund_conflict",
            "unknown_refund",
            "refund_already_final",
            "invalid_amount",
            "nothing_to_review",
            "review_already_resolved",
            "review_note_required",
            "nothing_refunded",
        ]
        .map(|code| format!("error {code}")),
    );
    for what in expected {
        assert!(
            seen.get(&what).copied().unwrap_or(0) >= 5,
            "never saw {what}"
        );
    }
}
