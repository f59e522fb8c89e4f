//! Tests for the order aggregate. Fixtures live here; each submodule covers
//! one slice of the life of an order.

mod card;
mod events;
mod evolve;
mod payment;
mod place;
mod properties;
mod refund;
mod review;

use chrono::{DateTime, Duration, TimeZone, Utc};
use uuid::Uuid;

use super::*;
use crate::money::Fen;

/// Every order in these tests is placed at minute 0 with this window.
const TTL_MINUTES: i64 = 30;
/// 2 × 15.00 + 1 × 5.00 yuan, see `default_lines`.
const TOTAL: i64 = 3_500;

fn fen(v: i64) -> Fen {
    Fen::new(v).expect("test amounts are non-negative")
}

/// Minutes after the (fixed) moment the test order is placed.
fn at(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).unwrap() + Duration::minutes(minutes)
}

fn line(sku: &str, quantity: u32, unit_price: i64) -> OrderLine {
    OrderLine::priced(sku, format!("name of {sku}"), quantity, fen(unit_price)).unwrap()
}

fn default_lines() -> Vec<OrderLine> {
    vec![line("tea", 2, 1_500), line("cup", 1, 500)]
}

fn place_with(items: Vec<OrderLine>) -> OrderCommand {
    place_with_ttl(items, Duration::minutes(TTL_MINUTES))
}

fn place_with_ttl(items: Vec<OrderLine>, ttl: Duration) -> OrderCommand {
    OrderCommand::Place {
        order_id: Uuid::from_u128(1),
        user_id: Uuid::from_u128(2),
        openid: "o-openid".into(),
        out_trade_no: "PS20240501000001".into(),
        items,
        note: Some("no sugar".into()),
        now: at(0),
        card: None,
        ttl,
    }
}

/// Runs a command that must succeed and applies its events.
fn step(order: Option<Order>, command: OrderCommand) -> Option<Order> {
    let events = decide(order.as_ref(), command).expect("command should succeed");
    events.iter().fold(order, evolve)
}

fn decide_on(order: &Order, command: OrderCommand) -> Result<Vec<OrderEvent>, OrderError> {
    decide(Some(order), command)
}

/// A freshly placed order with total `TOTAL`.
fn pending() -> Order {
    step(None, place_with(default_lines())).unwrap()
}

fn then(order: Order, command: OrderCommand) -> Order {
    step(Some(order), command).unwrap()
}

/// A payment notification at minute 5.
fn pay(transaction_id: &str, amount: i64) -> OrderCommand {
    pay_at(transaction_id, amount, 5)
}

fn pay_at(transaction_id: &str, amount: i64, minute: i64) -> OrderCommand {
    OrderCommand::RecordPayment {
        channel: PayChannel::WechatpayV3,
        transaction_id: transaction_id.into(),
        amount_fen: fen(amount),
        paid_at: at(minute),
    }
}

/// Paid in full by transaction "T1".
fn paid() -> Order {
    then(pending(), pay("T1", TOTAL))
}

fn close(reason: CloseReason) -> OrderCommand {
    OrderCommand::Close {
        reason,
        now: at(40),
    }
}

fn request_refund(out_refund_no: &str, amount: i64) -> OrderCommand {
    OrderCommand::RequestRefund {
        out_refund_no: out_refund_no.into(),
        amount_fen: fen(amount),
        reason: Some("damaged".into()),
        now: at(60),
    }
}

fn refund_ok(out_refund_no: &str) -> OrderCommand {
    OrderCommand::RecordRefundSuccess {
        out_refund_no: out_refund_no.into(),
        refund_id: Some(format!("wx-{out_refund_no}")),
        at: at(70),
    }
}

fn resolve(resolution: ReviewResolution, note: Option<&str>) -> OrderCommand {
    OrderCommand::ResolveReview {
        resolution,
        note: note.map(String::from),
        now: at(90),
    }
}

fn refund_failed(out_refund_no: &str) -> OrderCommand {
    OrderCommand::RecordRefundFailure {
        out_refund_no: out_refund_no.into(),
        reason: "ABNORMAL".into(),
        at: at(70),
    }
}
