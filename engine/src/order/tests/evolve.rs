//! `evolve` must be total: events decide would never emit in that state
//! are ignored rather than corrupting the order or panicking.

use super::*;

fn placed_event() -> OrderEvent {
    decide(None, place_with(default_lines())).unwrap().remove(0)
}

fn succeeded(transaction_id: &str, amount: i64) -> OrderEvent {
    OrderEvent::PaymentSucceeded {
        channel: PayChannel::WechatpayV3,
        transaction_id: transaction_id.into(),
        amount_fen: fen(amount),
        paid_at: at(5),
    }
}

fn every_event_but_placed() -> Vec<OrderEvent> {
    vec![
        OrderEvent::PaymentRequested {
            channel: PayChannel::WechatpayV3,
            requested_at: at(1),
        },
        succeeded("T1", TOTAL),
        OrderEvent::PaymentAmountMismatch {
            channel: PayChannel::WechatpayV3,
            transaction_id: "T1".into(),
            expected_fen: fen(TOTAL),
            received_fen: fen(1),
            paid_at: at(5),
        },
        OrderEvent::OrderClosed {
            reason: CloseReason::Expired,
            closed_at: at(40),
        },
        OrderEvent::RefundRequested {
            out_refund_no: "R1".into(),
            amount_fen: fen(1),
            reason: None,
            requested_at: at(60),
        },
        OrderEvent::RefundSucceeded {
            out_refund_no: "R1".into(),
            refund_id: None,
            succeeded_at: at(70),
        },
        OrderEvent::RefundFailed {
            out_refund_no: "R1".into(),
            reason: "x".into(),
            failed_at: at(70),
        },
    ]
}

#[test]
fn nothing_but_order_placed_can_start_an_order() {
    for event in every_event_but_placed() {
        assert_eq!(evolve(None, &event), None, "{}", event.event_type());
    }
}

#[test]
fn a_second_order_placed_is_ignored() {
    let order = paid();
    assert_eq!(evolve(Some(order.clone()), &placed_event()), Some(order));
}

#[test]
fn a_duplicated_payment_event_is_not_counted_twice() {
    let order = paid();
    assert_eq!(
        evolve(Some(order.clone()), &succeeded("T1", TOTAL)),
        Some(order)
    );
}

#[test]
fn closing_cannot_hide_a_paid_order() {
    let order = paid();
    let close = OrderEvent::OrderClosed {
        reason: CloseReason::ClosedByStaff,
        closed_at: at(40),
    };
    assert_eq!(evolve(Some(order.clone()), &close), Some(order));
}

#[test]
fn refund_outcomes_for_unknown_or_finished_refunds_are_ignored() {
    let order = then(then(paid(), request_refund("R1", 100)), refund_ok("R1"));
    let late_failure = OrderEvent::RefundFailed {
        out_refund_no: "R1".into(),
        reason: "x".into(),
        failed_at: at(80),
    };
    let unknown = OrderEvent::RefundSucceeded {
        out_refund_no: "R404".into(),
        refund_id: None,
        succeeded_at: at(80),
    };
    assert_eq!(
        evolve(Some(order.clone()), &late_failure),
        Some(order.clone())
    );
    assert_eq!(evolve(Some(order.clone()), &unknown), Some(order));
}

#[test]
fn a_duplicated_refund_number_is_ignored() {
    let order = then(paid(), request_refund("R1", 100));
    let again = OrderEvent::RefundRequested {
        out_refund_no: "R1".into(),
        amount_fen: fen(999),
        reason: None,
        requested_at: at(61),
    };
    assert_eq!(evolve(Some(order.clone()), &again), Some(order));
}

#[test]
fn refund_events_cannot_turn_an_unpaid_order_into_a_refunded_one() {
    let stray = OrderEvent::RefundRequested {
        out_refund_no: "R1".into(),
        amount_fen: fen(100),
        reason: None,
        requested_at: at(1),
    };
    let done = OrderEvent::RefundSucceeded {
        out_refund_no: "R1".into(),
        refund_id: None,
        succeeded_at: at(2),
    };
    let order = replay(&[placed_event(), stray, done]).unwrap();
    assert_eq!(order.status, OrderStatus::PendingPayment);
    // Queries stay sane (saturating) even on such a stream.
    assert_eq!(order.refundable_fen(), Fen::ZERO);
}

#[test]
fn replay_folds_a_stream_in_order() {
    assert_eq!(replay(&[]), None);

    let stream = vec![
        placed_event(),
        succeeded("T1", TOTAL),
        OrderEvent::RefundRequested {
            out_refund_no: "R1".into(),
            amount_fen: fen(500),
            reason: None,
            requested_at: at(60),
        },
    ];
    let order = replay(&stream).unwrap();
    assert_eq!(order.status, OrderStatus::Paid);
    assert_eq!(order.refunding_fen(), fen(500));
    let by_hand = evolve(evolve(evolve(None, &stream[0]), &stream[1]), &stream[2]);
    assert_eq!(Some(order), by_hand);
}

#[test]
fn paid_fen_counts_matched_and_unmatched_money() {
    let order = then(then(pending(), pay("T1", 100)), pay("T2", TOTAL));
    assert_eq!(order.paid_fen(), fen(100 + TOTAL));
}

#[test]
fn paid_fen_saturates_instead_of_overflowing() {
    let order = then(then(pending(), pay("T1", i64::MAX)), pay("T2", i64::MAX));
    assert_eq!(order.paid_fen(), Fen::MAX);
}

#[test]
fn refund_lookup_by_number() {
    let order = then(
        then(paid(), request_refund("R1", 100)),
        request_refund("R2", 200),
    );
    assert_eq!(order.refund("R2").map(|r| r.amount_fen), Some(fen(200)));
    assert_eq!(order.refund("R3"), None);
}
