//! Filling a template from an order: placeholders become the order's facts, formatted as a
//! Chinese customer reads them (yuan with two decimals, Beijing time), cut to WeChat's limits.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use paystream_engine::consumers::EventMessage;
use paystream_engine::money::Fen;
use paystream_engine::order::{Order, OrderStatus};
use paystream_engine::subscriptions::SubscribeMessage;

use crate::templates::{field_limit, placeholders, Template};

/// Beijing time, the time customers read (no daylight saving).
fn beijing(at: DateTime<Utc>) -> String {
    at.with_timezone(&paystream_engine::beijing::OFFSET)
        .format("%Y-%m-%d %H:%M")
        .to_string()
}

fn yuan(fen: Fen) -> String {
    format!("{:.2}", fen.to_yuan())
}

fn status_text(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::PendingPayment => "待支付",
        OrderStatus::Paid => "已支付",
        OrderStatus::PartiallyRefunded => "部分退款",
        OrderStatus::Refunded => "已退款",
        OrderStatus::Closed => "已关闭",
        OrderStatus::NeedsReview => "处理中",
    }
}

/// The value of one placeholder for this order and event.
fn value(name: &str, order: &Order, event: &EventMessage) -> String {
    match name {
        "order_id" => order.id.to_string(),
        "out_trade_no" => order.out_trade_no.clone(),
        "total_yuan" => yuan(order.total_fen),
        "paid_yuan" => yuan(order.paid_fen()),
        "refunded_yuan" => yuan(order.refunded_fen()),
        "refund_yuan" => {
            // The refund this event is about; otherwise the latest one.
            let named = event.data.get("out_refund_no").and_then(|n| n.as_str());
            let refund = match named {
                Some(no) => order.refund(no),
                None => order.refunds.last(),
            };
            refund
                .map(|r| yuan(r.amount_fen))
                .unwrap_or_else(|| yuan(Fen::ZERO))
        }
        "status" => status_text(order.status).to_string(),
        "paid_at" => order.paid_at.map(beijing).unwrap_or_default(),
        "closed_at" => order.closed_at.map(beijing).unwrap_or_default(),
        "item_names" => order
            .items
            .iter()
            .map(|line| line.name.as_str())
            .collect::<Vec<_>>()
            .join("、"),
        // Template placeholders are checked at start-up.
        _ => String::new(),
    }
}

fn fill(text: &str, order: &Order, event: &EventMessage) -> String {
    let mut out = text.to_string();
    for name in placeholders(text).unwrap_or_default() {
        out = out.replace(&format!("{{{name}}}"), &value(name, order, event));
    }
    out
}

/// Cuts text to `limit` characters (not bytes). Free-text fields mark the cut with '…'; fields
/// WeChat accepts only ASCII in (character_string, number, letter, …) are cut bare.
fn cut(text: String, limit: Option<usize>, free_text: bool) -> String {
    match limit {
        Some(limit) if text.chars().count() > limit => {
            if !free_text {
                return text.chars().take(limit).collect();
            }
            let mut short: String = text.chars().take(limit.saturating_sub(1)).collect();
            short.push('…');
            short
        }
        _ => text,
    }
}

pub fn message(template: &Template, order: &Order, event: &EventMessage) -> SubscribeMessage {
    let data: BTreeMap<String, String> = template
        .data
        .iter()
        .map(|(field, text)| {
            let limit = field_limit(field).flatten();
            let free_text = field.starts_with("thing") || field.starts_with("name");
            (
                field.clone(),
                cut(fill(text, order, event), limit, free_text),
            )
        })
        .collect();
    SubscribeMessage {
        openid: order.openid.clone(),
        template_id: template.template_id.clone(),
        page: template.page.as_ref().map(|p| fill(p, order, event)),
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use paystream_engine::order::{decide, replay, OrderCommand, OrderLine, PayChannel};
    use uuid::Uuid;

    fn paid_order() -> Order {
        let placed_at = Utc.with_ymd_and_hms(2026, 12, 1, 16, 30, 0).unwrap();
        let place = OrderCommand::Place {
            order_id: Uuid::from_u128(7),
            user_id: Uuid::from_u128(8),
            openid: "o-user".into(),
            out_trade_no: "abc123".into(),
            items: vec![
                OrderLine::priced("tea", "绿茶", 2, Fen::new(1250).unwrap()).unwrap(),
                OrderLine::priced(
                    "cake",
                    "A very long cake name for the field",
                    1,
                    Fen::new(500).unwrap(),
                )
                .unwrap(),
            ],
            note: None,
            card: None,
            now: placed_at,
            ttl: chrono::Duration::minutes(30),
        };
        let mut events = decide(None, place).unwrap();
        let order = replay(events.iter()).unwrap();
        events.extend(
            decide(
                Some(&order),
                OrderCommand::RecordPayment {
                    channel: PayChannel::WechatpayV3,
                    transaction_id: "4200".into(),
                    amount_fen: Fen::new(3000).unwrap(),
                    paid_at: placed_at + chrono::Duration::minutes(2),
                },
            )
            .unwrap(),
        );
        replay(events.iter()).unwrap()
    }

    fn event() -> EventMessage {
        EventMessage {
            event_id: Uuid::from_u128(1),
            stream_id: "order-x".into(),
            version: 2,
            event_type: "PaymentSucceeded".into(),
            recorded_at: Utc::now(),
            data: serde_json::json!({}),
            metadata: serde_json::json!({}),
        }
    }

    #[test]
    fn placeholders_are_filled_in_yuan_and_beijing_time() {
        let template = Template {
            template_id: "T".into(),
            page: Some("pages/order/detail?id={order_id}".into()),
            data: [
                ("character_string1", "{out_trade_no}"),
                ("amount2", "{paid_yuan}"),
                ("time3", "{paid_at}"),
                ("phrase4", "{status}"),
                ("thing5", "{item_names}"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        };
        let order = paid_order();
        let message = message(&template, &order, &event());
        assert_eq!(message.openid, "o-user");
        assert_eq!(
            message.page.as_deref(),
            Some(format!("pages/order/detail?id={}", order.id).as_str())
        );
        assert_eq!(message.data["character_string1"], "abc123");
        assert_eq!(message.data["amount2"], "30.00");
        // 16:32 UTC is 00:32 the next day in Beijing.
        assert_eq!(message.data["time3"], "2026-12-02 00:32");
        assert_eq!(message.data["phrase4"], "已支付");
        let things = &message.data["thing5"];
        assert_eq!(things.chars().count(), 20, "{things}");
        assert!(
            things.starts_with("绿茶、A very") && things.ends_with('…'),
            "{things}"
        );
    }
}
