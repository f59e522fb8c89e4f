//! The stored shape of events and the string vocabularies are contracts
//! with the database and API clients, so they are pinned here.

use serde_json::json;

use super::*;

fn one_of_each() -> Vec<OrderEvent> {
    vec![
        OrderEvent::OrderPlaced {
            order_id: Uuid::from_u128(1),
            user_id: Uuid::from_u128(2),
            openid: "o-openid".into(),
            out_trade_no: "PS1".into(),
            items: default_lines(),
            total_fen: fen(TOTAL),
            note: None,
            placed_at: at(0),
            expires_at: at(30),
            card: None,
        },
        OrderEvent::PaymentRequested {
            channel: PayChannel::WechatpayV2,
            requested_at: at(1),
        },
        OrderEvent::PaymentSucceeded {
            channel: PayChannel::WechatpayV3,
            transaction_id: "T1".into(),
            amount_fen: fen(TOTAL),
            paid_at: at(2),
        },
        OrderEvent::PaymentAmountMismatch {
            channel: PayChannel::WechatpayV3,
            transaction_id: "T2".into(),
            expected_fen: fen(TOTAL),
            received_fen: fen(1),
            paid_at: at(3),
        },
        OrderEvent::OrderClosed {
            reason: CloseReason::CancelledByCustomer,
            closed_at: at(4),
        },
        OrderEvent::RefundRequested {
            out_refund_no: "R1".into(),
            amount_fen: fen(10),
            reason: Some("damaged".into()),
            requested_at: at(5),
        },
        OrderEvent::RefundSucceeded {
            out_refund_no: "R1".into(),
            refund_id: Some("wx-1".into()),
            succeeded_at: at(6),
        },
        OrderEvent::RefundFailed {
            out_refund_no: "R2".into(),
            reason: "ABNORMAL".into(),
            failed_at: at(7),
        },
    ]
}

#[test]
fn every_event_survives_the_store_round_trip() {
    let events = one_of_each();
    let types: Vec<_> = events.iter().map(OrderEvent::event_type).collect();
    assert_eq!(
        types,
        [
            "OrderPlaced",
            "PaymentRequested",
            "PaymentSucceeded",
            "PaymentAmountMismatch",
            "OrderClosed",
            "RefundRequested",
            "RefundSucceeded",
            "RefundFailed",
        ]
    );
    for event in events {
        let data = event.to_data();
        assert!(data.is_object(), "{data}");
        assert!(data.get("type").is_none(), "data must not repeat the type");
        let text = data.to_string();
        let back = OrderEvent::from_stored(event.event_type(), data).unwrap();
        assert_eq!(back, event);
        let from_text = OrderEvent::from_stored_json(event.event_type(), &text).unwrap();
        assert_eq!(from_text, event);
    }
}

#[test]
fn event_type_matches_the_serde_tag() {
    for event in one_of_each() {
        let tagged = serde_json::to_value(&event).unwrap();
        assert_eq!(tagged["type"], event.event_type());
        assert_eq!(tagged["data"], event.to_data());
    }
}

#[test]
fn order_placed_has_a_pinned_json_shape() {
    let event = &one_of_each()[0];
    assert_eq!(
        event.to_data(),
        json!({
            "order_id": "00000000-0000-0000-0000-000000000001",
            "user_id": "00000000-0000-0000-0000-000000000002",
            "openid": "o-openid",
            "out_trade_no": "PS1",
            "items": [
                {"sku": "tea", "name": "name of tea", "quantity": 2,
                 "unit_price_fen": 1500, "line_total_fen": 3000},
                {"sku": "cup", "name": "name of cup", "quantity": 1,
                 "unit_price_fen": 500, "line_total_fen": 500},
            ],
            "total_fen": 3500,
            "note": null,
            "placed_at": "2024-05-01T10:00:00Z",
            "expires_at": "2024-05-01T10:30:00Z",
        })
    );
}

#[test]
fn payment_mismatch_has_a_pinned_json_shape() {
    let event = &one_of_each()[3];
    assert_eq!(
        serde_json::to_value(event).unwrap(),
        json!({
            "type": "PaymentAmountMismatch",
            "data": {
                "channel": "wechatpay_v3",
                "transaction_id": "T2",
                "expected_fen": 3500,
                "received_fen": 1,
                "paid_at": "2024-05-01T10:03:00Z",
            }
        })
    );
}

#[test]
fn unknown_types_and_bad_data_are_rejected() {
    let data = json!({"reason": "expired", "closed_at": "2024-05-01T10:00:00Z"});
    assert!(OrderEvent::from_stored("OrderClosed", data.clone()).is_ok());
    assert!(OrderEvent::from_stored("OrderDeleted", data).is_err());
    assert!(OrderEvent::from_stored("OrderClosed", json!({"reason": "expired"})).is_err());
    assert!(OrderEvent::from_stored(
        "OrderClosed",
        json!({"reason": "bored", "closed_at": "2024-05-01T10:00:00Z"})
    )
    .is_err());
    let negative = json!({"out_refund_no": "R1", "amount_fen": -5, "reason": null,
                          "requested_at": "2024-05-01T10:00:00Z"});
    assert!(OrderEvent::from_stored("RefundRequested", negative.clone()).is_err());
}

#[test]
fn decoding_from_the_stored_text_accepts_and_rejects_what_decoding_a_value_does() {
    let closed = json!({"reason": "expired", "closed_at": "2024-05-01T10:00:00Z"});
    let cases = [
        ("OrderClosed", closed.clone(), true),
        ("OrderDeleted", closed, false),
        ("OrderClosed", json!({"reason": "expired"}), false),
        (
            "OrderClosed",
            json!({"reason": "bored", "closed_at": "2024-05-01T10:00:00Z"}),
            false,
        ),
        (
            "RefundRequested",
            json!({"out_refund_no": "R1", "amount_fen": -5, "reason": null,
                                   "requested_at": "2024-05-01T10:00:00Z"}),
            false,
        ),
        (
            "ReconciliationDiscrepancy",
            json!({"date": "2024-05-01", "kind": "payment_amount_differs",
            "reference": "T1", "ours_fen": 3500, "theirs_fen": 3400,
            "found_at": "2024-05-02T02:00:00Z"}),
            true,
        ),
        (
            "ReconciliationDiscrepancy",
            json!({"date": "2024-05-01", "kind": "bored",
            "reference": "T1", "found_at": "2024-05-02T02:00:00Z"}),
            false,
        ),
        ("Order\"Closed", json!({}), false),
        ("OrderClosed", json!([1, 2]), false),
    ];
    for (event_type, data, ok) in cases {
        let from_value = OrderEvent::from_stored(event_type, data.clone()).ok();
        let from_text = OrderEvent::from_stored_json(event_type, &data.to_string()).ok();
        assert_eq!(from_text.is_some(), ok, "{event_type} {data}");
        assert_eq!(from_text, from_value, "{event_type} {data}");
    }
    // Text that is not one JSON value cannot smuggle another type into the envelope.
    let smuggled = r#"{"reason": "expired", "closed_at": "2024-05-01T10:00:00Z"}, "type": "X""#;
    assert!(OrderEvent::from_stored_json("OrderClosed", smuggled).is_err());
    assert!(OrderEvent::from_stored_json("OrderClosed", "").is_err());
}

#[test]
fn status_strings_agree_with_serde_and_parse_back() {
    let expected = [
        "pending_payment",
        "paid",
        "partially_refunded",
        "refunded",
        "closed",
        "needs_review",
    ];
    for (status, name) in OrderStatus::ALL.into_iter().zip(expected) {
        assert_eq!(status.as_str(), name);
        assert_eq!(status.to_string(), name);
        assert_eq!(serde_json::to_value(status).unwrap(), name);
        assert_eq!(OrderStatus::parse(name), Some(status));
    }
    assert_eq!(OrderStatus::parse("Paid"), None);
    assert_eq!(OrderStatus::parse(""), None);
}

#[test]
fn only_closed_and_refunded_are_terminal() {
    let terminal: Vec<_> = OrderStatus::ALL
        .into_iter()
        .filter(OrderStatus::is_terminal)
        .collect();
    assert_eq!(terminal, [OrderStatus::Refunded, OrderStatus::Closed]);
}

#[test]
fn other_vocabularies_agree_with_serde() {
    for channel in [PayChannel::WechatpayV3, PayChannel::WechatpayV2] {
        assert_eq!(serde_json::to_value(channel).unwrap(), channel.as_str());
    }
    assert_eq!(PayChannel::WechatpayV3.as_str(), "wechatpay_v3");
    assert_eq!(PayChannel::WechatpayV2.as_str(), "wechatpay_v2");
    for reason in [
        CloseReason::Expired,
        CloseReason::CancelledByCustomer,
        CloseReason::ClosedByStaff,
    ] {
        assert_eq!(serde_json::to_value(reason).unwrap(), reason.as_str());
    }
    assert_eq!(
        CloseReason::CancelledByCustomer.as_str(),
        "cancelled_by_customer"
    );
    for status in [
        RefundStatus::Processing,
        RefundStatus::Succeeded,
        RefundStatus::Failed,
    ] {
        assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
    }
}

#[test]
fn error_codes_and_kinds_are_stable() {
    use ErrorKind::*;
    let no = || "R1".to_string();
    let table = [
        (OrderError::AlreadyExists, "order_exists", Conflict),
        (OrderError::NotFound, "order_not_found", NotFound),
        (OrderError::EmptyOrder, "empty_order", Invalid),
        (OrderError::TooManyLines, "too_many_lines", Invalid),
        (
            OrderError::InvalidQuantity { sku: "x".into() },
            "invalid_quantity",
            Invalid,
        ),
        (OrderError::TotalTooLarge, "total_too_large", Rule),
        (OrderError::InvalidPrice, "invalid_price", Invalid),
        (OrderError::InvalidAmount, "invalid_amount", Invalid),
        (OrderError::InvalidTtl, "invalid_ttl", Invalid),
        (OrderError::AlreadyPaid, "order_already_paid", Conflict),
        (
            OrderError::NotPayable {
                status: OrderStatus::Closed,
            },
            "order_not_payable",
            Conflict,
        ),
        (OrderError::Expired, "order_expired", Conflict),
        (
            OrderError::NotRefundable {
                status: OrderStatus::PendingPayment,
            },
            "order_not_refundable",
            Conflict,
        ),
        (
            OrderError::RefundExceedsRefundable {
                requested: fen(2),
                refundable: fen(1),
            },
            "refund_exceeds_refundable",
            Rule,
        ),
        (OrderError::TooManyRefunds, "too_many_refunds", Rule),
        (
            OrderError::RefundConflict {
                out_refund_no: no(),
            },
            "refund_conflict",
            Conflict,
        ),
        (
            OrderError::UnknownRefund {
                out_refund_no: no(),
            },
            "unknown_refund",
            NotFound,
        ),
        (
            OrderError::RefundAlreadyFinal {
                out_refund_no: no(),
            },
            "refund_already_final",
            Conflict,
        ),
    ];
    for (error, code, kind) in table {
        assert_eq!(error.code().as_str(), code, "{error:?}");
        assert_eq!(error.kind(), kind, "{error:?}");
        assert!(!error.to_string().is_empty());
    }
}

#[test]
fn error_messages_name_the_subject_and_show_amounts_in_fen() {
    let exceeds = OrderError::RefundExceedsRefundable {
        requested: fen(1_234),
        refundable: fen(1_000),
    };
    assert_eq!(
        exceeds.to_string(),
        "refund of 1234 fen exceeds the refundable 1000 fen"
    );
    assert_eq!(
        OrderError::NotPayable {
            status: OrderStatus::Closed
        }
        .to_string(),
        "order cannot be paid in status closed"
    );
    assert!(OrderError::InvalidQuantity { sku: "tea".into() }
        .to_string()
        .contains("tea"));
    assert!(OrderError::TotalTooLarge
        .to_string()
        .contains("100000000 fen"));
}
