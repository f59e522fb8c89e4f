//! Asking for money, receiving it (right or wrong), and closing unpaid orders.

use super::*;

fn request_payment(channel: PayChannel, minute: i64) -> OrderCommand {
    OrderCommand::RequestPayment {
        channel,
        now: at(minute),
    }
}

// --- RequestPayment ---------------------------------------------------------

#[test]
fn requesting_payment_records_the_channel() {
    let order = pending();
    let events = decide_on(&order, request_payment(PayChannel::WechatpayV3, 1)).unwrap();
    assert_eq!(
        events,
        vec![OrderEvent::PaymentRequested {
            channel: PayChannel::WechatpayV3,
            requested_at: at(1),
        }]
    );
    let order = events.iter().fold(Some(order), evolve).unwrap();
    assert_eq!(order.channel, Some(PayChannel::WechatpayV3));
    assert_eq!(order.status, OrderStatus::PendingPayment);
}

#[test]
fn requesting_payment_again_on_the_same_channel_emits_nothing() {
    let order = then(pending(), request_payment(PayChannel::WechatpayV3, 1));
    assert_eq!(
        decide_on(&order, request_payment(PayChannel::WechatpayV3, 2)),
        Ok(vec![])
    );
}

#[test]
fn switching_channel_is_recorded() {
    let order = then(pending(), request_payment(PayChannel::WechatpayV3, 1));
    let order = then(order, request_payment(PayChannel::WechatpayV2, 2));
    assert_eq!(order.channel, Some(PayChannel::WechatpayV2));
}

#[test]
fn payment_cannot_be_requested_at_or_after_the_deadline() {
    let order = pending();
    assert!(decide_on(
        &order,
        request_payment(PayChannel::WechatpayV3, TTL_MINUTES - 1)
    )
    .is_ok());
    assert_eq!(
        decide_on(
            &order,
            request_payment(PayChannel::WechatpayV3, TTL_MINUTES)
        ),
        Err(OrderError::Expired)
    );
    assert_eq!(
        decide_on(&order, request_payment(PayChannel::WechatpayV3, 500)),
        Err(OrderError::Expired)
    );
}

#[test]
fn a_closed_order_is_not_payable() {
    let order = then(pending(), close(CloseReason::CancelledByCustomer));
    assert_eq!(
        decide_on(&order, request_payment(PayChannel::WechatpayV3, 1)),
        Err(OrderError::NotPayable {
            status: OrderStatus::Closed
        })
    );
}

#[test]
fn an_order_with_money_on_it_is_already_paid() {
    let partially_refunded = then(then(paid(), request_refund("R1", 100)), refund_ok("R1"));
    let refunded = then(then(paid(), request_refund("R1", TOTAL)), refund_ok("R1"));
    let needs_review = then(pending(), pay("T1", 1));
    for order in [paid(), partially_refunded, refunded, needs_review] {
        assert_eq!(
            decide_on(&order, request_payment(PayChannel::WechatpayV2, 1)),
            Err(OrderError::AlreadyPaid),
            "{:?}",
            order.status
        );
    }
}

// --- RecordPayment ----------------------------------------------------------

#[test]
fn the_exact_total_pays_the_order() {
    let order = then(pending(), request_payment(PayChannel::WechatpayV2, 1));
    let events = decide_on(&order, pay("T1", TOTAL)).unwrap();
    assert_eq!(
        events,
        vec![OrderEvent::PaymentSucceeded {
            channel: PayChannel::WechatpayV3,
            transaction_id: "T1".into(),
            amount_fen: fen(TOTAL),
            paid_at: at(5),
        }]
    );

    let order = events.iter().fold(Some(order), evolve).unwrap();
    assert_eq!(order.status, OrderStatus::Paid);
    assert_eq!(order.paid_at, Some(at(5)));
    assert_eq!(order.transaction_id.as_deref(), Some("T1"));
    // The channel that actually paid wins over the one last requested.
    assert_eq!(order.channel, Some(PayChannel::WechatpayV3));
    assert_eq!(
        order.payments,
        vec![Payment {
            transaction_id: "T1".into(),
            channel: PayChannel::WechatpayV3,
            amount_fen: fen(TOTAL),
            paid_at: at(5),
            matched: true,
        }]
    );
    assert_eq!(order.paid_fen(), fen(TOTAL));
    assert_eq!(order.refundable_fen(), fen(TOTAL));
}

#[test]
fn a_late_notification_still_pays_an_expired_but_unclosed_order() {
    let late = OrderCommand::RecordPayment {
        channel: PayChannel::WechatpayV3,
        transaction_id: "T1".into(),
        amount_fen: fen(TOTAL),
        paid_at: at(TTL_MINUTES + 10),
    };
    assert_eq!(then(pending(), late).status, OrderStatus::Paid);
}

#[test]
fn a_repeated_notification_for_the_same_transaction_emits_nothing() {
    let order = paid();
    assert_eq!(decide_on(&order, pay("T1", TOTAL)), Ok(vec![]));
    // The transaction id alone identifies the money, whatever else is resent.
    assert_eq!(decide_on(&order, pay("T1", 1)), Ok(vec![]));

    let review = then(pending(), pay("T9", 1));
    assert_eq!(decide_on(&review, pay("T9", 1)), Ok(vec![]));
}

#[test]
fn a_zero_payment_is_invalid() {
    assert_eq!(
        decide_on(&pending(), pay("T1", 0)),
        Err(OrderError::InvalidAmount)
    );
}

#[test]
fn the_wrong_amount_is_recorded_and_needs_review() {
    let order = pending();
    let events = decide_on(&order, pay("T1", TOTAL - 1)).unwrap();
    assert_eq!(
        events,
        vec![OrderEvent::PaymentAmountMismatch {
            channel: PayChannel::WechatpayV3,
            transaction_id: "T1".into(),
            expected_fen: fen(TOTAL),
            received_fen: fen(TOTAL - 1),
            paid_at: at(5),
        }]
    );

    let order = events.iter().fold(Some(order), evolve).unwrap();
    assert_eq!(order.status, OrderStatus::NeedsReview);
    assert_eq!(order.paid_at, Some(at(5)));
    assert_eq!(order.transaction_id.as_deref(), Some("T1"));
    assert_eq!(order.payments.len(), 1);
    assert!(!order.payments[0].matched);
    assert_eq!(order.payments[0].amount_fen, fen(TOTAL - 1));
    // The money that arrived is what can be paid back.
    assert_eq!(order.paid_fen(), fen(TOTAL - 1));
    assert_eq!(order.refundable_fen(), fen(TOTAL - 1));
}

#[test]
fn overpayment_is_also_a_mismatch() {
    let order = then(pending(), pay("T1", TOTAL + 1));
    assert_eq!(order.status, OrderStatus::NeedsReview);
    assert_eq!(order.paid_fen(), fen(TOTAL + 1));
}

#[test]
fn money_arriving_after_close_is_recorded_and_needs_review() {
    let closed = then(pending(), close(CloseReason::Expired));
    let events = decide_on(&closed, pay("T1", TOTAL)).unwrap();
    assert!(matches!(
        events.as_slice(),
        [OrderEvent::PaymentSucceeded { .. }]
    ));

    let order = events.iter().fold(Some(closed), evolve).unwrap();
    assert_eq!(order.status, OrderStatus::NeedsReview);
    assert_eq!(order.paid_at, Some(at(5)));
    assert_eq!(order.transaction_id.as_deref(), Some("T1"));
    assert!(order.payments[0].matched);
    // The close stays on record: that is what makes the payment suspicious.
    assert_eq!(order.closed_at, Some(at(40)));
    assert_eq!(order.close_reason, Some(CloseReason::Expired));
}

#[test]
fn a_second_transaction_needs_review_and_keeps_the_first_as_reference() {
    let order = then(paid(), pay_at("T2", TOTAL, 9));
    assert_eq!(order.status, OrderStatus::NeedsReview);
    assert_eq!(order.transaction_id.as_deref(), Some("T1"));
    assert_eq!(order.paid_at, Some(at(5)));
    assert_eq!(order.payments[1].paid_at, at(9));
    assert_eq!(order.payments.len(), 2);
    assert_eq!(order.paid_fen(), fen(2 * TOTAL));
}

#[test]
fn a_correct_payment_after_a_wrong_one_does_not_clear_review() {
    let order = then(then(pending(), pay("T1", 100)), pay_at("T2", TOTAL, 9));
    assert_eq!(order.status, OrderStatus::NeedsReview);
    assert_eq!(order.transaction_id.as_deref(), Some("T1"));
    assert_eq!(order.paid_at, Some(at(5)));
    assert_eq!(order.paid_fen(), fen(100 + TOTAL));
}

#[test]
fn money_is_recorded_even_on_a_fully_refunded_order() {
    let refunded = then(then(paid(), request_refund("R1", TOTAL)), refund_ok("R1"));
    assert_eq!(refunded.status, OrderStatus::Refunded);
    let order = then(refunded, pay("T2", TOTAL));
    assert_eq!(order.status, OrderStatus::NeedsReview);
    assert_eq!(order.refundable_fen(), fen(TOTAL));
}

// --- Close ------------------------------------------------------------------

#[test]
fn closing_a_pending_order() {
    let order = pending();
    let events = decide_on(&order, close(CloseReason::CancelledByCustomer)).unwrap();
    assert_eq!(
        events,
        vec![OrderEvent::OrderClosed {
            reason: CloseReason::CancelledByCustomer,
            closed_at: at(40),
        }]
    );
    let order = events.iter().fold(Some(order), evolve).unwrap();
    assert_eq!(order.status, OrderStatus::Closed);
    assert_eq!(order.closed_at, Some(at(40)));
    assert_eq!(order.close_reason, Some(CloseReason::CancelledByCustomer));
}

#[test]
fn closing_twice_emits_nothing_whatever_the_reason() {
    let order = then(pending(), close(CloseReason::Expired));
    assert_eq!(decide_on(&order, close(CloseReason::Expired)), Ok(vec![]));
    assert_eq!(
        decide_on(&order, close(CloseReason::ClosedByStaff)),
        Ok(vec![])
    );
}

#[test]
fn an_order_with_money_cannot_be_closed() {
    let partially_refunded = then(then(paid(), request_refund("R1", 1)), refund_ok("R1"));
    let refunded = then(then(paid(), request_refund("R1", TOTAL)), refund_ok("R1"));
    let needs_review = then(pending(), pay("T1", 1));
    for order in [paid(), partially_refunded, refunded, needs_review] {
        assert_eq!(
            decide_on(&order, close(CloseReason::ClosedByStaff)),
            Err(OrderError::AlreadyPaid),
            "{:?}",
            order.status
        );
    }
}
