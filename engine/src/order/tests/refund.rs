//! Giving money back: requests, limits, and WeChat Pay's verdicts.

use super::*;

// --- RequestRefund ----------------------------------------------------------

#[test]
fn requesting_a_refund_reserves_the_amount_without_changing_status() {
    let order = paid();
    let events = decide_on(&order, request_refund("R1", 1_000)).unwrap();
    assert_eq!(
        events,
        vec![OrderEvent::RefundRequested {
            out_refund_no: "R1".into(),
            amount_fen: fen(1_000),
            reason: Some("damaged".into()),
            requested_at: at(60),
        }]
    );

    let order = events.iter().fold(Some(order), evolve).unwrap();
    // Not refunded until WeChat Pay says so.
    assert_eq!(order.status, OrderStatus::Paid);
    assert_eq!(
        order.refund("R1"),
        Some(&Refund {
            out_refund_no: "R1".into(),
            amount_fen: fen(1_000),
            reason: Some("damaged".into()),
            status: RefundStatus::Processing,
            requested_at: at(60),
            refund_id: None,
            finished_at: None,
            failure_reason: None,
        })
    );
    assert_eq!(order.refunding_fen(), fen(1_000));
    assert_eq!(order.refunded_fen(), Fen::ZERO);
    assert_eq!(order.refundable_fen(), fen(TOTAL - 1_000));
}

#[test]
fn orders_without_money_are_not_refundable() {
    let closed = then(pending(), close(CloseReason::Expired));
    for order in [pending(), closed] {
        assert_eq!(
            decide_on(&order, request_refund("R1", 100)),
            Err(OrderError::NotRefundable {
                status: order.status
            })
        );
    }
}

#[test]
fn a_fully_refunded_order_is_not_refundable() {
    let order = then(then(paid(), request_refund("R1", TOTAL)), refund_ok("R1"));
    assert_eq!(
        decide_on(&order, request_refund("R2", 1)),
        Err(OrderError::NotRefundable {
            status: OrderStatus::Refunded
        })
    );
}

#[test]
fn repeating_a_refund_request_emits_nothing() {
    let order = then(paid(), request_refund("R1", 1_000));
    assert_eq!(decide_on(&order, request_refund("R1", 1_000)), Ok(vec![]));

    // Still "already done" once it succeeded, even if that emptied the order.
    let order = then(then(paid(), request_refund("R1", TOTAL)), refund_ok("R1"));
    assert_eq!(order.status, OrderStatus::Refunded);
    assert_eq!(decide_on(&order, request_refund("R1", TOTAL)), Ok(vec![]));
}

#[test]
fn reusing_a_refund_number_for_another_amount_is_a_conflict() {
    let order = then(paid(), request_refund("R1", 1_000));
    assert_eq!(
        decide_on(&order, request_refund("R1", 999)),
        Err(OrderError::RefundConflict {
            out_refund_no: "R1".into()
        })
    );
    // Even once it failed: WeChat Pay ties the number to its first request.
    let order = then(order, refund_failed("R1"));
    assert_eq!(
        decide_on(&order, request_refund("R1", 2_000)),
        Err(OrderError::RefundConflict {
            out_refund_no: "R1".into()
        })
    );
}

#[test]
fn a_zero_refund_is_invalid() {
    assert_eq!(
        decide_on(&paid(), request_refund("R1", 0)),
        Err(OrderError::InvalidAmount)
    );
}

#[test]
fn a_refund_cannot_exceed_what_was_paid() {
    assert_eq!(
        decide_on(&paid(), request_refund("R1", TOTAL + 1)),
        Err(OrderError::RefundExceedsRefundable {
            requested: fen(TOTAL + 1),
            refundable: fen(TOTAL),
        })
    );
    assert!(decide_on(&paid(), request_refund("R1", TOTAL)).is_ok());
}

#[test]
fn refunds_in_flight_count_against_the_refundable_amount() {
    let order = then(paid(), request_refund("R1", 2_000));
    assert_eq!(
        decide_on(&order, request_refund("R2", 2_000)),
        Err(OrderError::RefundExceedsRefundable {
            requested: fen(2_000),
            refundable: fen(TOTAL - 2_000),
        })
    );
    let order = then(order, request_refund("R2", TOTAL - 2_000));
    assert_eq!(order.refundable_fen(), Fen::ZERO);
    assert_eq!(
        decide_on(&order, request_refund("R3", 1)),
        Err(OrderError::RefundExceedsRefundable {
            requested: fen(1),
            refundable: Fen::ZERO,
        })
    );
}

#[test]
fn succeeded_refunds_count_against_the_refundable_amount() {
    let order = then(then(paid(), request_refund("R1", 3_000)), refund_ok("R1"));
    assert_eq!(
        decide_on(&order, request_refund("R2", 501)),
        Err(OrderError::RefundExceedsRefundable {
            requested: fen(501),
            refundable: fen(500),
        })
    );
}

#[test]
fn a_failed_refund_releases_its_amount() {
    let order = then(
        then(paid(), request_refund("R1", TOTAL)),
        refund_failed("R1"),
    );
    assert_eq!(order.refundable_fen(), fen(TOTAL));
    let order = then(order, request_refund("R2", TOTAL));
    assert_eq!(order.refunding_fen(), fen(TOTAL));
}

#[test]
fn at_most_fifty_live_refunds_per_order() {
    let mut order = paid();
    for i in 0..MAX_REFUNDS {
        order = then(order, request_refund(&format!("R{i}"), 1));
    }
    assert_eq!(order.refunds.len(), MAX_REFUNDS);
    assert_eq!(
        decide_on(&order, request_refund("R-extra", 1)),
        Err(OrderError::TooManyRefunds)
    );

    // Succeeded refunds still count...
    let order = then(order, refund_ok("R0"));
    assert_eq!(
        decide_on(&order, request_refund("R-extra", 1)),
        Err(OrderError::TooManyRefunds)
    );
    // ...failed ones do not, so a failure can be retried under a new number.
    let order = then(order, refund_failed("R1"));
    assert!(decide_on(&order, request_refund("R-extra", 1)).is_ok());
}

#[test]
fn an_order_under_review_can_refund_all_money_that_arrived() {
    let order = then(pending(), pay("T1", TOTAL + 500));
    assert_eq!(
        decide_on(&order, request_refund("R1", TOTAL + 501)),
        Err(OrderError::RefundExceedsRefundable {
            requested: fen(TOTAL + 501),
            refundable: fen(TOTAL + 500),
        })
    );
    let order = then(order, request_refund("R1", TOTAL + 500));
    let order = then(order, refund_ok("R1"));
    // Review is sticky: refunding everything does not make it look normal.
    assert_eq!(order.status, OrderStatus::NeedsReview);
    assert_eq!(order.refunded_fen(), order.paid_fen());
}

#[test]
fn an_order_paid_twice_can_refund_both_payments() {
    let order = then(paid(), pay("T2", TOTAL));
    let order = then(order, request_refund("R1", 2 * TOTAL));
    assert_eq!(order.refunding_fen(), fen(2 * TOTAL));
}

#[test]
fn an_order_paid_after_close_can_be_refunded() {
    let order = then(
        then(pending(), close(CloseReason::Expired)),
        pay("T1", TOTAL),
    );
    let order = then(order, request_refund("R1", TOTAL));
    assert_eq!(order.refunding_fen(), fen(TOTAL));
    assert_eq!(order.status, OrderStatus::NeedsReview);
}

// --- RecordRefundSuccess ----------------------------------------------------

#[test]
fn a_confirmed_partial_refund_makes_the_order_partially_refunded() {
    let order = then(paid(), request_refund("R1", 1_000));
    let events = decide_on(&order, refund_ok("R1")).unwrap();
    assert_eq!(
        events,
        vec![OrderEvent::RefundSucceeded {
            out_refund_no: "R1".into(),
            refund_id: Some("wx-R1".into()),
            succeeded_at: at(70),
        }]
    );

    let order = events.iter().fold(Some(order), evolve).unwrap();
    assert_eq!(order.status, OrderStatus::PartiallyRefunded);
    let refund = order.refund("R1").unwrap();
    assert_eq!(refund.status, RefundStatus::Succeeded);
    assert_eq!(refund.refund_id.as_deref(), Some("wx-R1"));
    assert_eq!(refund.finished_at, Some(at(70)));
    assert_eq!(order.refunded_fen(), fen(1_000));
    assert_eq!(order.refunding_fen(), Fen::ZERO);
    assert_eq!(order.refundable_fen(), fen(TOTAL - 1_000));
}

#[test]
fn refunding_the_rest_makes_the_order_refunded() {
    let order = then(then(paid(), request_refund("R1", 1_000)), refund_ok("R1"));
    let order = then(order, request_refund("R2", TOTAL - 1_000));
    assert_eq!(order.status, OrderStatus::PartiallyRefunded);
    let order = then(order, refund_ok("R2"));
    assert_eq!(order.status, OrderStatus::Refunded);
    assert!(order.status.is_terminal());
    assert_eq!(order.refundable_fen(), Fen::ZERO);
}

#[test]
fn refund_success_for_an_unknown_refund_is_rejected() {
    assert_eq!(
        decide_on(&paid(), refund_ok("R404")),
        Err(OrderError::UnknownRefund {
            out_refund_no: "R404".into()
        })
    );
}

#[test]
fn a_repeated_refund_success_emits_nothing() {
    let order = then(then(paid(), request_refund("R1", 1_000)), refund_ok("R1"));
    assert_eq!(decide_on(&order, refund_ok("R1")), Ok(vec![]));
}

#[test]
fn a_failed_refund_cannot_succeed_later() {
    let order = then(
        then(paid(), request_refund("R1", 1_000)),
        refund_failed("R1"),
    );
    assert_eq!(
        decide_on(&order, refund_ok("R1")),
        Err(OrderError::RefundAlreadyFinal {
            out_refund_no: "R1".into()
        })
    );
}

// --- RecordRefundFailure ----------------------------------------------------

#[test]
fn a_failed_refund_is_recorded_and_the_order_is_paid_again() {
    let order = then(paid(), request_refund("R1", 1_000));
    let events = decide_on(&order, refund_failed("R1")).unwrap();
    assert_eq!(
        events,
        vec![OrderEvent::RefundFailed {
            out_refund_no: "R1".into(),
            reason: "ABNORMAL".into(),
            failed_at: at(70),
        }]
    );

    let order = events.iter().fold(Some(order), evolve).unwrap();
    assert_eq!(order.status, OrderStatus::Paid);
    let refund = order.refund("R1").unwrap();
    assert_eq!(refund.status, RefundStatus::Failed);
    assert_eq!(refund.failure_reason.as_deref(), Some("ABNORMAL"));
    assert_eq!(refund.finished_at, Some(at(70)));
    assert_eq!(refund.refund_id, None);
    assert_eq!(order.refunding_fen(), Fen::ZERO);
}

#[test]
fn a_failure_after_a_partial_refund_keeps_it_partially_refunded() {
    let order = then(then(paid(), request_refund("R1", 1_000)), refund_ok("R1"));
    let order = then(then(order, request_refund("R2", 500)), refund_failed("R2"));
    assert_eq!(order.status, OrderStatus::PartiallyRefunded);
    assert_eq!(order.refunded_fen(), fen(1_000));
}

#[test]
fn refund_failure_for_an_unknown_refund_is_rejected() {
    assert_eq!(
        decide_on(&paid(), refund_failed("R404")),
        Err(OrderError::UnknownRefund {
            out_refund_no: "R404".into()
        })
    );
}

#[test]
fn a_repeated_refund_failure_emits_nothing() {
    let order = then(
        then(paid(), request_refund("R1", 1_000)),
        refund_failed("R1"),
    );
    assert_eq!(decide_on(&order, refund_failed("R1")), Ok(vec![]));
}

#[test]
fn a_succeeded_refund_cannot_fail_later() {
    let order = then(then(paid(), request_refund("R1", 1_000)), refund_ok("R1"));
    assert_eq!(
        decide_on(&order, refund_failed("R1")),
        Err(OrderError::RefundAlreadyFinal {
            out_refund_no: "R1".into()
        })
    );
}
