use super::*;

#[test]
fn place_emits_order_placed_with_repriced_lines_and_deadline() {
    let mut lying = line("tea", 2, 1_500);
    lying.line_total_fen = fen(1); // a client must not be able to set its own price
    let events = decide(None, place_with(vec![lying, line("cup", 1, 500)])).unwrap();

    assert_eq!(
        events,
        vec![OrderEvent::OrderPlaced {
            order_id: Uuid::from_u128(1),
            user_id: Uuid::from_u128(2),
            openid: "o-openid".into(),
            out_trade_no: "PS20240501000001".into(),
            items: vec![line("tea", 2, 1_500), line("cup", 1, 500)],
            total_fen: fen(TOTAL),
            note: Some("no sugar".into()),
            placed_at: at(0),
            expires_at: at(TTL_MINUTES),
            card: None,
        }]
    );
}

#[test]
fn placed_order_starts_pending_with_nothing_paid() {
    let order = pending();
    assert_eq!(order.id, Uuid::from_u128(1));
    assert_eq!(order.status, OrderStatus::PendingPayment);
    assert_eq!(order.total_fen, fen(TOTAL));
    assert_eq!(order.created_at, at(0));
    assert_eq!(order.expires_at, at(TTL_MINUTES));
    assert_eq!(order.items, default_lines());
    assert_eq!(order.channel, None);
    assert!(order.payments.is_empty() && order.refunds.is_empty());
    assert_eq!((order.paid_at, &order.transaction_id), (None, &None));
    assert_eq!((order.closed_at, order.close_reason), (None, None));
    assert_eq!(order.paid_fen(), Fen::ZERO);
    assert_eq!(order.refundable_fen(), Fen::ZERO);
}

#[test]
fn placing_an_existing_order_is_rejected() {
    let order = pending();
    assert_eq!(
        decide_on(&order, place_with(default_lines())),
        Err(OrderError::AlreadyExists)
    );
}

#[test]
fn an_order_needs_lines() {
    assert_eq!(
        decide(None, place_with(vec![])),
        Err(OrderError::EmptyOrder)
    );
}

#[test]
fn line_count_is_capped() {
    let lines = |n: usize| (0..n).map(|i| line(&format!("sku{i}"), 1, 1)).collect();
    assert!(decide(None, place_with(lines(MAX_LINES))).is_ok());
    assert_eq!(
        decide(None, place_with(lines(MAX_LINES + 1))),
        Err(OrderError::TooManyLines)
    );
}

#[test]
fn quantity_must_be_between_one_and_max() {
    let with_quantity = |quantity: u32| {
        let mut l = line("tea", 1, 100);
        l.quantity = quantity; // bypass `priced` like a hand-built request would
        decide(None, place_with(vec![line("cup", 1, 500), l]))
    };
    let invalid = Err(OrderError::InvalidQuantity { sku: "tea".into() });
    assert_eq!(with_quantity(0), invalid);
    assert_eq!(with_quantity(MAX_QUANTITY + 1), invalid);
    assert!(with_quantity(1).is_ok());
    assert!(with_quantity(MAX_QUANTITY).is_ok());
}

#[test]
fn unit_price_must_be_positive() {
    let mut free = line("tea", 1, 100);
    free.unit_price_fen = Fen::ZERO;
    free.line_total_fen = Fen::ZERO;
    assert_eq!(
        decide(None, place_with(vec![free])),
        Err(OrderError::InvalidPrice)
    );
}

#[test]
fn total_is_capped_at_one_million_yuan() {
    let at_cap = decide(None, place_with(vec![line("gold", 1, MAX_ORDER_TOTAL_FEN)])).unwrap();
    assert!(matches!(
        &at_cap[0],
        OrderEvent::OrderPlaced { total_fen, .. } if total_fen.get() == MAX_ORDER_TOTAL_FEN
    ));
    let over = vec![line("gold", 1, MAX_ORDER_TOTAL_FEN), line("pin", 1, 1)];
    assert_eq!(
        decide(None, place_with(over)),
        Err(OrderError::TotalTooLarge)
    );
}

#[test]
fn overflowing_totals_are_too_large_not_a_panic() {
    let mut huge_line = line("x", 1, 1);
    huge_line.unit_price_fen = fen(i64::MAX / 2 + 1);
    huge_line.quantity = 2;
    assert_eq!(
        decide(None, place_with(vec![huge_line])),
        Err(OrderError::TotalTooLarge)
    );

    let max = line("a", 1, i64::MAX);
    assert_eq!(
        decide(None, place_with(vec![max.clone(), max])),
        Err(OrderError::TotalTooLarge)
    );
}

#[test]
fn payment_window_must_be_positive_and_representable() {
    let with_ttl = |ttl| decide(None, place_with_ttl(default_lines(), ttl));
    assert_eq!(with_ttl(Duration::zero()), Err(OrderError::InvalidTtl));
    assert_eq!(with_ttl(Duration::minutes(-5)), Err(OrderError::InvalidTtl));
    assert_eq!(with_ttl(Duration::MAX), Err(OrderError::InvalidTtl));
    assert!(with_ttl(Duration::seconds(1)).is_ok());
}

#[test]
fn priced_computes_the_line_total() {
    let l = OrderLine::priced("tea", "Green tea", 3, fen(1_250)).unwrap();
    assert_eq!(l.sku, "tea");
    assert_eq!(l.name, "Green tea");
    assert_eq!(l.quantity, 3);
    assert_eq!(l.unit_price_fen, fen(1_250));
    assert_eq!(l.line_total_fen, fen(3_750));
}

#[test]
fn priced_validates_quantity_price_and_overflow() {
    assert_eq!(
        OrderLine::priced("tea", "Tea", 0, fen(1)),
        Err(OrderError::InvalidQuantity { sku: "tea".into() })
    );
    assert_eq!(
        OrderLine::priced("tea", "Tea", MAX_QUANTITY + 1, fen(1)),
        Err(OrderError::InvalidQuantity { sku: "tea".into() })
    );
    assert_eq!(
        OrderLine::priced("tea", "Tea", 1, Fen::ZERO),
        Err(OrderError::InvalidPrice)
    );
    assert_eq!(
        OrderLine::priced("tea", "Tea", 2, Fen::MAX),
        Err(OrderError::TotalTooLarge)
    );
}

#[test]
fn every_other_command_on_a_missing_order_is_not_found() {
    let commands = [
        OrderCommand::RequestPayment {
            channel: PayChannel::WechatpayV3,
            now: at(1),
        },
        pay("T1", TOTAL),
        close(CloseReason::Expired),
        request_refund("R1", 100),
        refund_ok("R1"),
        refund_failed("R1"),
    ];
    for command in commands {
        assert_eq!(
            decide(None, command.clone()),
            Err(OrderError::NotFound),
            "{command:?}"
        );
    }
}
