//! Staff review: what puts an order in review, and what a resolution does to it.

use super::card::{consumed, with_card};
use super::*;

fn kinds(order: &Order) -> Vec<&'static str> {
    order.review.open.iter().map(|i| i.reason.kind()).collect()
}

/// The wrong amount arrived first: in review.
fn mismatched() -> Order {
    then(pending(), pay("T1", TOTAL - 1))
}

#[test]
fn a_clean_payment_puts_nothing_in_review() {
    let order = paid();
    assert!(!order.review.is_open());
    assert_eq!(
        decide_on(&order, resolve(ReviewResolution::Accepted, None)),
        Err(OrderError::NothingToReview)
    );
}

#[test]
fn each_kind_of_odd_money_is_named() {
    let order = mismatched();
    assert_eq!(kinds(&order), ["amount_mismatch"]);
    assert_eq!(
        order.review.open[0].reason,
        ReviewReason::AmountMismatch {
            transaction_id: "T1".into(),
            expected_fen: fen(TOTAL),
            received_fen: fen(TOTAL - 1),
        }
    );
    assert_eq!(order.review.since(), Some(at(5)));
    let text = order.review.describe();
    assert!(text.contains("wrong amount"), "{text}");
    assert!(
        text.contains("35.00") && text.contains("34.99"),
        "yuan: {text}"
    );

    let late = then(
        then(pending(), close(CloseReason::Expired)),
        pay("T1", TOTAL),
    );
    assert_eq!(kinds(&late), ["paid_after_close"]);
    assert!(late.review.describe().contains("closed"));

    let twice = then(paid(), pay_at("T2", TOTAL, 9));
    assert_eq!(kinds(&twice), ["paid_twice"]);
    assert_eq!(twice.review.since(), Some(at(9)));

    let then_right = then(mismatched(), pay_at("T2", TOTAL, 8));
    assert_eq!(kinds(&then_right), ["amount_mismatch", "paid_twice"]);
    assert_eq!(then_right.review.since(), Some(at(5)), "the oldest item");
}

#[test]
fn flags_put_an_order_in_review_without_changing_its_status() {
    let card_refund = then(
        then(then(with_card(), pay("T1", TOTAL)), consumed()),
        request_refund("R1", 1_000),
    );
    assert_eq!(card_refund.status, OrderStatus::Paid);
    assert_eq!(kinds(&card_refund), ["card_refunded"]);

    let not_consumed = then(
        then(with_card(), pay("T1", TOTAL)),
        OrderCommand::RecordCardConsumeFailed {
            reason: "used elsewhere".into(),
            at: at(7),
        },
    );
    assert_eq!(kinds(&not_consumed), ["card_not_consumed"]);
    assert!(not_consumed.review.describe().contains("used elsewhere"));

    let refunded_first = then(
        then(
            then(
                then(with_card(), pay("T1", TOTAL)),
                request_refund("R1", TOTAL),
            ),
            refund_ok("R1"),
        ),
        OrderCommand::RecordCardConsumeFailed {
            reason: "refunded first".into(),
            at: at(80),
        },
    );
    assert!(
        !refunded_first.review.is_open(),
        "all money back: the customer keeps the card, nothing is owed"
    );

    let failed = then(
        then(paid(), request_refund("R1", 1_000)),
        refund_failed("R1"),
    );
    assert_eq!(failed.status, OrderStatus::Paid);
    assert_eq!(kinds(&failed), ["refund_failed"]);
}

#[test]
fn resolving_gives_the_order_the_status_its_money_says() {
    let accepted = then(mismatched(), resolve(ReviewResolution::Accepted, None));
    assert_eq!(accepted.status, OrderStatus::Paid);
    assert!(!accepted.review.is_open());
    assert_eq!(accepted.review.resolved.len(), 1);
    assert_eq!(accepted.review.resolved[0].items.len(), 1);

    let refunded = then(
        then(mismatched(), request_refund("R1", TOTAL - 1)),
        refund_ok("R1"),
    );
    assert_eq!(
        refunded.status,
        OrderStatus::NeedsReview,
        "sticky until resolved"
    );
    let refunded = then(
        refunded,
        resolve(ReviewResolution::Refunded, Some("sent back")),
    );
    assert_eq!(refunded.status, OrderStatus::Refunded);

    let twice = then(
        then(paid(), pay_at("T2", TOTAL, 9)),
        request_refund("R1", TOTAL),
    );
    let twice = then(
        then(twice, refund_ok("R1")),
        resolve(ReviewResolution::Refunded, None),
    );
    assert_eq!(
        twice.status,
        OrderStatus::PartiallyRefunded,
        "one of two payments back"
    );
    assert_eq!(twice.refundable_fen(), fen(TOTAL));
}

#[test]
fn a_refund_in_flight_settles_the_status_when_confirmed() {
    let order = then(mismatched(), request_refund("R1", TOTAL - 1));
    let order = then(order, resolve(ReviewResolution::Refunded, None));
    assert_eq!(
        order.status,
        OrderStatus::Paid,
        "nothing confirmed back yet"
    );
    let order = then(order, refund_ok("R1"));
    assert_eq!(order.status, OrderStatus::Refunded);
}

#[test]
fn resolutions_are_checked() {
    assert_eq!(
        decide_on(&mismatched(), resolve(ReviewResolution::Other, None)),
        Err(OrderError::ReviewNoteRequired {
            resolution: ReviewResolution::Other
        })
    );
    assert_eq!(
        decide_on(&mismatched(), resolve(ReviewResolution::Refunded, None)),
        Err(OrderError::NothingRefunded)
    );
    let failed_refund = then(
        then(mismatched(), request_refund("R1", 100)),
        refund_failed("R1"),
    );
    assert_eq!(
        decide_on(&failed_refund, resolve(ReviewResolution::Refunded, None)),
        Err(OrderError::NothingRefunded),
        "a failed refund gave nothing back"
    );
    assert_eq!(
        decide(None, resolve(ReviewResolution::Accepted, None)),
        Err(OrderError::NotFound)
    );
}

#[test]
fn a_repeat_is_already_done_and_a_different_answer_a_conflict() {
    let command = || resolve(ReviewResolution::Other, Some("called the customer"));
    let events = decide_on(&mismatched(), command()).unwrap();
    assert_eq!(
        events,
        vec![OrderEvent::ReviewResolved {
            resolution: ReviewResolution::Other,
            note: Some("called the customer".into()),
            resolved_at: at(90),
        }]
    );
    let order = then(mismatched(), command());
    assert_eq!(decide_on(&order, command()), Ok(vec![]));
    assert_eq!(
        decide_on(&order, resolve(ReviewResolution::Accepted, None)),
        Err(OrderError::ReviewAlreadyResolved {
            resolution: ReviewResolution::Other
        })
    );
    assert_eq!(
        decide_on(
            &order,
            resolve(ReviewResolution::Other, Some("another note"))
        ),
        Err(OrderError::ReviewAlreadyResolved {
            resolution: ReviewResolution::Other
        })
    );
}

#[test]
fn money_arriving_after_a_resolution_opens_a_new_review() {
    let order = then(mismatched(), resolve(ReviewResolution::Accepted, None));
    let order = then(order, pay_at("T2", TOTAL, 100));
    assert_eq!(order.status, OrderStatus::NeedsReview);
    assert_eq!(kinds(&order), ["paid_twice"]);
    let order = then(
        order,
        resolve(ReviewResolution::Accepted, Some("kept as a tip")),
    );
    assert_eq!(order.review.resolved.len(), 2);
    assert_eq!(order.status, OrderStatus::Paid);
}

#[test]
fn review_resolved_has_a_pinned_json_shape() {
    let event = OrderEvent::ReviewResolved {
        resolution: ReviewResolution::Refunded,
        note: Some("sent back".into()),
        resolved_at: at(90),
    };
    assert_eq!(event.event_type(), "ReviewResolved");
    assert_eq!(
        event.to_data(),
        serde_json::json!({
            "resolution": "refunded",
            "note": "sent back",
            "resolved_at": "2024-05-01T11:30:00Z",
        })
    );
    let back = OrderEvent::from_stored("ReviewResolved", event.to_data()).unwrap();
    assert_eq!(back, event);
    let bare = OrderEvent::from_stored(
        "ReviewResolved",
        serde_json::json!({ "resolution": "accepted", "resolved_at": "2024-05-01T11:30:00Z" }),
    )
    .unwrap();
    assert!(matches!(
        bare,
        OrderEvent::ReviewResolved { note: None, .. }
    ));
    for resolution in ReviewResolution::ALL {
        assert_eq!(
            serde_json::to_value(resolution).unwrap(),
            resolution.as_str()
        );
        assert_eq!(
            ReviewResolution::parse(resolution.as_str()),
            Some(resolution)
        );
    }
}

#[test]
fn review_error_codes_are_stable() {
    let table = [
        (
            OrderError::NothingToReview,
            "nothing_to_review",
            ErrorKind::Conflict,
        ),
        (
            OrderError::ReviewAlreadyResolved {
                resolution: ReviewResolution::Accepted,
            },
            "review_already_resolved",
            ErrorKind::Conflict,
        ),
        (
            OrderError::ReviewNoteRequired {
                resolution: ReviewResolution::Other,
            },
            "review_note_required",
            ErrorKind::Invalid,
        ),
        (
            OrderError::NothingRefunded,
            "nothing_refunded",
            ErrorKind::Rule,
        ),
    ];
    for (error, code, kind) in table {
        assert_eq!(error.code().as_str(), code, "{error:?}");
        assert_eq!(error.kind(), kind, "{error:?}");
    }
}
