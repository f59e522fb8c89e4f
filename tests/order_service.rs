//! Command handling over the real log: the states an `OrderService` remembers between commands
//! never let it decide on anything but the order as stored.

mod common;

use std::sync::Arc;

use chrono::{Duration, Utc};
use paystream_engine::db::Backend;
use paystream_engine::money::Fen;
use paystream_engine::order::{
    CloseReason, OrderCommand, OrderLine, OrderStatus, PayChannel, RefundStatus,
};
use paystream_engine::orders::{Metadata, OrderService, PlaceOrder};
use paystream_engine::store::{EventStore, SqlEventStore};
use paystream_engine::testing::TestDb;
use paystream_engine::ErrorCode;
use paystream_projections::{OrderFilter, OrderView, OrdersProjection, OrdersView};
use uuid::Uuid;

async fn store(db: &TestDb) -> Arc<dyn EventStore> {
    Arc::new(SqlEventStore::new(db.db().await).with_projection(Arc::new(OrdersProjection)))
}

fn fen(v: i64) -> Fen {
    Fen::new(v).unwrap()
}

async fn place(service: &OrderService) -> Uuid {
    let order = service
        .place(
            PlaceOrder {
                user_id: Uuid::new_v4(),
                openid: "o-test".into(),
                lines: vec![OrderLine {
                    sku: "tea".into(),
                    name: "Tea".into(),
                    quantity: 2,
                    unit_price_fen: fen(1500),
                    line_total_fen: fen(3000),
                }],
                note: None,
                ttl: Duration::minutes(30),
                idempotency_key: None,
                request_hash: "h".into(),
                card: None,
            },
            Metadata::actor("test"),
            Utc::now(),
        )
        .await
        .unwrap();
    order.id
}

/// Two services over one store: two engine processes, each with its own remembered states.
fn two_services(store: &Arc<dyn EventStore>) -> (OrderService, OrderService) {
    (
        OrderService::new(store.clone()),
        OrderService::new(store.clone()),
    )
}

fn request_payment() -> OrderCommand {
    OrderCommand::RequestPayment {
        channel: PayChannel::WechatpayV3,
        now: Utc::now(),
    }
}

fn close() -> OrderCommand {
    OrderCommand::Close {
        reason: CloseReason::CancelledByCustomer,
        now: Utc::now(),
    }
}

fn payment(transaction_id: &str) -> OrderCommand {
    OrderCommand::RecordPayment {
        channel: PayChannel::WechatpayV3,
        transaction_id: transaction_id.into(),
        amount_fen: fen(3000),
        paid_at: Utc::now(),
    }
}

/// After every command the order it answers with is the order a fresh replay of the log gives
/// (the remembered state is folded in memory, not read back).
async fn answers_match_the_log(backend: Backend) {
    let db = TestDb::new(backend).await;
    let service = OrderService::new(store(&db).await);
    let meta = Metadata::actor("test");
    let id = place(&service).await;
    let commands = [
        request_payment(),
        payment("4200000001"),
        payment("4200000001"),
        OrderCommand::RequestRefund {
            out_refund_no: "r-1".into(),
            amount_fen: fen(1000),
            reason: Some("cold".into()),
            now: Utc::now(),
        },
        OrderCommand::RecordRefundSuccess {
            out_refund_no: "r-1".into(),
            refund_id: Some("5030000001".into()),
            at: Utc::now(),
        },
    ];
    for command in commands {
        let outcome = service.execute(id, command, &meta).await.unwrap();
        let (stored, _) = service.load(id).await.unwrap().unwrap();
        assert_eq!(outcome.order, stored);
    }
    let order = service.get(id).await.unwrap();
    assert_eq!(order.status, OrderStatus::PartiallyRefunded);
    assert_eq!(order.refunds[0].status, RefundStatus::Succeeded);
    // Placed, PaymentRequested, PaymentSucceeded (once), RefundRequested, RefundSucceeded.
    assert_eq!(service.history(id).await.unwrap().len(), 5);
}

/// Two engine processes over one database: the one whose remembered state is behind must not
/// act on it. Closing an order the other already closed changes nothing; recording a payment
/// the other already recorded records nothing.
async fn a_stale_state_is_never_acted_on(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let (first, second) = two_services(&store);
    let meta = Metadata::actor("test");

    let closed_elsewhere = place(&first).await;
    second
        .execute(closed_elsewhere, close(), &meta)
        .await
        .unwrap();
    let outcome = first
        .execute(closed_elsewhere, close(), &meta)
        .await
        .unwrap();
    assert!(outcome.appended.is_empty());
    assert_eq!(outcome.order.status, OrderStatus::Closed);
    assert_eq!(first.history(closed_elsewhere).await.unwrap().len(), 2);

    let paid_elsewhere = place(&first).await;
    let request = request_payment();
    first.execute(paid_elsewhere, request, &meta).await.unwrap();
    second
        .execute(paid_elsewhere, payment("4200000002"), &meta)
        .await
        .unwrap();
    let outcome = first
        .execute(paid_elsewhere, payment("4200000002"), &meta)
        .await
        .unwrap();
    assert!(
        outcome.appended.is_empty(),
        "the payment was recorded twice"
    );
    assert_eq!(outcome.order.status, OrderStatus::Paid);
    let history = first.history(paid_elsewhere).await.unwrap();
    assert_eq!(
        history
            .iter()
            .filter(|e| e.event_type == "PaymentSucceeded")
            .count(),
        1
    );

    // A decision tied to a version the order has left is refused, however fresh it looks here.
    let moved_on = place(&first).await;
    second.execute(moved_on, close(), &meta).await.unwrap();
    let at_placement = first.execute_at(moved_on, 1, close(), &meta).await.unwrap();
    assert!(at_placement.is_none());
    assert_eq!(first.history(moved_on).await.unwrap().len(), 2);
}

/// A remembered state that would refuse a command, or find nothing to do, is not the last word:
/// the order may have moved on elsewhere. The answer must be the one the order as stored gives.
async fn a_stale_refusal_or_no_op_is_decided_again(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let (first, second) = two_services(&store);
    let meta = Metadata::actor("test");

    // Remembered as unpaid, paid elsewhere: a refund is refused on the remembered state but
    // must be accepted.
    let paid_elsewhere = place(&first).await;
    let request = request_payment();
    first.execute(paid_elsewhere, request, &meta).await.unwrap();
    second
        .execute(paid_elsewhere, payment("4200000003"), &meta)
        .await
        .unwrap();
    let refund = OrderCommand::RequestRefund {
        out_refund_no: "r-stale".into(),
        amount_fen: fen(500),
        reason: None,
        now: Utc::now(),
    };
    let outcome = first.execute(paid_elsewhere, refund, &meta).await.unwrap();
    assert_eq!(outcome.appended.len(), 1);
    assert_eq!(outcome.appended[0].event_type, "RefundRequested");

    // Remembered as closed, a late payment recorded elsewhere: closing again is a no-op on the
    // remembered state, but the stored order decides.
    let late = place(&first).await;
    first.execute(late, close(), &meta).await.unwrap();
    second
        .execute(late, payment("4200000004"), &meta)
        .await
        .unwrap();
    let (stored, _) = first.load(late).await.unwrap().unwrap();
    // The late payment did land elsewhere: the remembered state (closed) is really stale.
    assert_eq!(stored.status, OrderStatus::NeedsReview);
    let expected = paystream_engine::order::decide(Some(&stored), close());
    let answer = first.execute(late, close(), &meta).await;
    match (expected, answer) {
        (Ok(events), Ok(outcome)) => {
            assert_eq!(events.len(), outcome.appended.len());
            assert_eq!(outcome.order.status, stored.status);
        }
        (Err(expected), Err(answer)) => assert_eq!(
            paystream_engine::error::Error::from(expected).code(),
            answer.code()
        ),
        (expected, answer) => panic!("stored order says {expected:?}, the service said {answer:?}"),
    }
}

/// Two services (two engine processes) race the same commands on many orders at once, so that
/// appends are grouped and projected several orders per transaction: afterwards every
/// `orders_view` row is the fold of its stream and every order was paid exactly once.
async fn concurrent_commands_keep_the_view_equal_to_the_log(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let (one, other) = two_services(&store);
    let services = [one, other];
    let mut ids = Vec::new();
    for _ in 0..60 {
        ids.push(place(&services[0]).await);
    }
    let rounds: [fn(usize) -> OrderCommand; 3] = [
        |_| request_payment(),
        |i| payment(&format!("42000001{i:02}")),
        |_| close(),
    ];
    for command in rounds {
        let racing = ids.iter().enumerate().flat_map(|(i, &id)| {
            services.iter().map(move |service| {
                let service = service.clone();
                tokio::spawn(async move {
                    // Refusing to close a paid order is the right answer; anything else fails.
                    match service
                        .execute(id, command(i), &Metadata::actor("test"))
                        .await
                    {
                        Ok(_) => {}
                        Err(e) if e.code() == ErrorCode::OrderAlreadyPaid => {}
                        Err(e) => panic!("{id}: {e}"),
                    }
                })
            })
        });
        for task in futures::future::join_all(racing.collect::<Vec<_>>()).await {
            task.unwrap();
        }
    }
    let view = OrdersView::new(store.db().clone());
    for &id in &ids {
        let (order, _) = services[0].load(id).await.unwrap().unwrap();
        assert_eq!(order.status, OrderStatus::Paid);
        let filter = OrderFilter {
            out_trade_no: Some(id.simple().to_string()),
            ..OrderFilter::default()
        };
        let rows = view.search(&filter, 1, 10).await.unwrap().items;
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(
            row,
            &OrderView::from(&order),
            "orders_view differs from the log"
        );
        let payments = services[0]
            .history(id)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.event_type == "PaymentSucceeded")
            .count();
        assert_eq!(payments, 1);
    }
}

on_both_backends!(
    concurrent_commands_keep_the_view_equal_to_the_log,
    answers_match_the_log,
    a_stale_state_is_never_acted_on,
    a_stale_refusal_or_no_op_is_decided_again,
);
