//! The card (coupon) redeemed with an order: consumed only after payment, once, and flagged for
//! staff when money goes back on an order whose card was consumed.

use super::*;

pub(super) fn with_card() -> Order {
    let command = match place_with(default_lines()) {
        OrderCommand::Place {
            order_id,
            user_id,
            openid,
            out_trade_no,
            items,
            note,
            now,
            ttl,
            ..
        } => OrderCommand::Place {
            order_id,
            user_id,
            openid,
            out_trade_no,
            items,
            note,
            card: Some(CardRef {
                card_id: "pCARD".into(),
                code: "123456".into(),
            }),
            now,
            ttl,
        },
        other => other,
    };
    step(None, command).unwrap()
}

pub(super) fn consumed() -> OrderCommand {
    OrderCommand::RecordCardConsumed { at: at(6) }
}

#[test]
fn the_card_travels_on_the_order_and_waits_for_payment() {
    let order = with_card();
    let card = order.card.as_ref().unwrap();
    assert_eq!(
        (card.card_id.as_str(), card.status),
        ("pCARD", CardStatus::Pending)
    );
    assert_eq!(decide_on(&order, consumed()), Err(OrderError::CardNotDue));
}

#[test]
fn a_paid_order_consumes_its_card_once() {
    let order = then(with_card(), pay("T1", TOTAL));
    let events = decide_on(&order, consumed()).unwrap();
    assert_eq!(
        events,
        vec![OrderEvent::CardConsumed {
            card_id: "pCARD".into(),
            code: "123456".into(),
            consumed_at: at(6),
        }]
    );
    let order = then(order, consumed());
    assert_eq!(order.card.as_ref().unwrap().status, CardStatus::Consumed);
    assert_eq!(
        decide_on(&order, consumed()),
        Ok(vec![]),
        "a repeat is a no-op"
    );
    let failed = OrderCommand::RecordCardConsumeFailed {
        reason: "late".into(),
        at: at(7),
    };
    assert_eq!(decide_on(&order, failed), Ok(vec![]), "consumed is final");
}

#[test]
fn an_order_without_a_card_has_nothing_to_consume() {
    assert_eq!(decide_on(&paid(), consumed()), Err(OrderError::NoCard));
}

#[test]
fn a_failed_consume_is_recorded_once() {
    let order = then(with_card(), pay("T1", TOTAL));
    let failed = || OrderCommand::RecordCardConsumeFailed {
        reason: "used elsewhere".into(),
        at: at(7),
    };
    let order = then(order, failed());
    let card = order.card.as_ref().unwrap();
    assert_eq!(card.status, CardStatus::ConsumeFailed);
    assert_eq!(card.failure_reason.as_deref(), Some("used elsewhere"));
    assert_eq!(decide_on(&order, failed()), Ok(vec![]));
}

#[test]
fn refunding_an_order_whose_card_was_consumed_flags_it_once() {
    let order = then(then(with_card(), pay("T1", TOTAL)), consumed());
    let events = decide_on(&order, request_refund("R1", 1_000)).unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        events[1],
        OrderEvent::CardRefundFlagged {
            card_id: "pCARD".into(),
            code: "123456".into(),
            out_refund_no: "R1".into(),
            flagged_at: at(60),
        }
    );
    let order = events.iter().fold(Some(order), evolve).unwrap();
    assert!(order.card.as_ref().unwrap().refund_flagged);
    let second = decide_on(&order, request_refund("R2", 500)).unwrap();
    assert_eq!(second.len(), 1, "flagged once: {second:?}");
}

#[test]
fn a_consume_after_a_racing_refund_still_flags_it() {
    let order = then(
        then(with_card(), pay("T1", TOTAL)),
        request_refund("R1", 1_000),
    );
    let events = decide_on(&order, consumed()).unwrap();
    assert!(matches!(
        events.as_slice(),
        [OrderEvent::CardConsumed { .. }, OrderEvent::CardRefundFlagged { out_refund_no, .. }]
            if out_refund_no == "R1"
    ));
}

#[test]
fn refunds_of_orders_whose_card_is_not_consumed_are_not_flagged() {
    let order = then(with_card(), pay("T1", TOTAL));
    assert_eq!(
        decide_on(&order, request_refund("R1", 1_000))
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn card_events_survive_the_store_round_trip() {
    let order = with_card();
    let placed = decide(None, place_with(default_lines())).unwrap();
    assert!(
        !placed[0]
            .to_data()
            .as_object()
            .unwrap()
            .contains_key("card"),
        "no card, no field"
    );
    let events = [
        OrderEvent::CardConsumed {
            card_id: "c".into(),
            code: "1".into(),
            consumed_at: at(1),
        },
        OrderEvent::CardConsumeFailed {
            card_id: "c".into(),
            code: "1".into(),
            reason: "r".into(),
            failed_at: at(1),
        },
        OrderEvent::CardRefundFlagged {
            card_id: "c".into(),
            code: "1".into(),
            out_refund_no: "R".into(),
            flagged_at: at(1),
        },
    ];
    for event in events {
        let back = OrderEvent::from_stored(event.event_type(), event.to_data()).unwrap();
        assert_eq!(back, event);
        let text = event.to_data().to_string();
        let from_text = OrderEvent::from_stored_json(event.event_type(), &text).unwrap();
        assert_eq!(from_text, event);
    }
    assert!(order.card.is_some());
}
