//! An order's events in plain words, for shop support staff: one sentence per event, money in
//! yuan, in Chinese (the default) or English. Pure: no database, no clock.

use std::collections::HashMap;

use paystream_engine::money::Fen;
use paystream_engine::order::{
    CloseReason, Discrepancy, DiscrepancyKind, OrderEvent, OrderLine, PayChannel, ReviewResolution,
};
use serde::Serialize;
use uuid::Uuid;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Lang {
    #[default]
    ZhCn,
    En,
}

impl Lang {
    /// `zh-CN` / `zh` / `en` / `en-US` …, case-insensitively; `None` for anything else.
    pub fn parse(s: &str) -> Option<Lang> {
        let s = s.trim().to_ascii_lowercase();
        let primary = s.split(['-', '_']).next().unwrap_or_default();
        match primary {
            "zh" => Some(Lang::ZhCn),
            "en" => Some(Lang::En),
            _ => None,
        }
    }
}

/// Who wrote an event, as stored in its metadata (`Metadata.actor`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ActorRef {
    Customer(Uuid),
    Staff(Uuid),
    /// `<channel>:<how>`: `notify`, `query`, `refund` (the answer to our refund call).
    Wechatpay {
        /// `v3` / `v2` (`None`: not said).
        channel: Option<&'static str>,
        via: String,
    },
    /// `system:<job>`.
    System(String),
    /// Anything else (kept as written).
    Other(String),
}

impl ActorRef {
    pub fn parse(actor: &str) -> ActorRef {
        let (prefix, rest) = actor.split_once(':').unwrap_or((actor, ""));
        let channel = match prefix {
            "wechatpay_v3" => Some(Some(channel_short(PayChannel::WechatpayV3))),
            "wechatpay_v2" => Some(Some(channel_short(PayChannel::WechatpayV2))),
            "wechatpay" => Some(None),
            _ => None,
        };
        if let Some(channel) = channel {
            return ActorRef::Wechatpay {
                channel,
                via: rest.to_string(),
            };
        }
        match prefix {
            "customer" => Uuid::parse_str(rest)
                .map(ActorRef::Customer)
                .unwrap_or_else(|_| ActorRef::Other(actor.to_string())),
            "staff" => Uuid::parse_str(rest)
                .map(ActorRef::Staff)
                .unwrap_or_else(|_| ActorRef::Other(actor.to_string())),
            "system" if !rest.is_empty() => ActorRef::System(rest.to_string()),
            _ => ActorRef::Other(actor.to_string()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    Customer,
    Staff,
    Wechatpay,
    System,
}

/// An actor as the timeline shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = TimelineActor)]
pub struct Actor {
    pub kind: ActorKind,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub detail: Option<String>,
}

/// What the database knows about a customer or staff actor (`None`: not found).
#[derive(Clone, Debug, Default)]
pub struct Known {
    pub phone: Option<String>,
    pub openid: Option<String>,
    pub username: Option<String>,
}

fn channel_short(channel: PayChannel) -> &'static str {
    match channel {
        PayChannel::WechatpayV3 => "v3",
        PayChannel::WechatpayV2 => "v2",
    }
}

/// The actor's display name: a customer's phone if known else openid, a staff member's
/// username, a WeChat Pay source or a job in words.
pub fn actor(actor: &ActorRef, known: &Known, lang: Lang) -> Actor {
    let zh = lang == Lang::ZhCn;
    match actor {
        ActorRef::Customer(id) => Actor {
            kind: ActorKind::Customer,
            name: known
                .phone
                .clone()
                .or_else(|| known.openid.clone())
                .unwrap_or_else(|| id.to_string()),
            detail: None,
        },
        ActorRef::Staff(id) => Actor {
            kind: ActorKind::Staff,
            name: known.username.clone().unwrap_or_else(|| id.to_string()),
            detail: None,
        },
        ActorRef::Wechatpay { channel, via } => {
            let name = match (via.as_str(), zh) {
                ("notify", true) => "微信支付通知".to_string(),
                ("notify", false) => "WeChat Pay notify".to_string(),
                ("query", true) => "微信支付查询".to_string(),
                ("query", false) => "WeChat Pay query".to_string(),
                ("refund", true) => "微信支付退款".to_string(),
                ("refund", false) => "WeChat Pay refund".to_string(),
                ("", true) => "微信支付".to_string(),
                ("", false) => "WeChat Pay".to_string(),
                (other, true) => format!("微信支付（{other}）"),
                (other, false) => format!("WeChat Pay ({other})"),
            };
            Actor {
                kind: ActorKind::Wechatpay,
                name,
                detail: channel.map(str::to_string),
            }
        }
        ActorRef::System(job) => {
            let name = match (job.as_str(), zh) {
                ("expiry", true) => "超时关单".to_string(),
                ("expiry", false) => "expiry".to_string(),
                ("payment-poller" | "payment_poller", true) => "支付查询任务".to_string(),
                ("payment-poller" | "payment_poller", false) => "payment poller".to_string(),
                ("refund-poller" | "refund_poller", true) => "退款查询任务".to_string(),
                ("refund-poller" | "refund_poller", false) => "refund poller".to_string(),
                ("card-verification", true) => "卡券核销任务".to_string(),
                ("card-verification", false) => "card verification".to_string(),
                ("reconciliation", true) => "对账任务".to_string(),
                ("reconciliation", false) => "reconciliation".to_string(),
                (other, _) => other.replace(['-', '_'], " "),
            };
            Actor {
                kind: ActorKind::System,
                name,
                detail: None,
            }
        }
        ActorRef::Other(raw) => Actor {
            kind: ActorKind::System,
            name: raw.clone(),
            detail: None,
        },
    }
}

/// What a sentence may need beyond its own event.
pub struct Context<'a> {
    pub lang: Lang,
    /// Who wrote the event, already resolved.
    pub actor: &'a Actor,
    /// Amounts of the order's refunds so far, by `out_refund_no` (refund outcomes do not repeat
    /// the amount).
    pub refunds: &'a HashMap<String, Fen>,
}

/// `¥12.50`: yuan with two decimals.
pub fn yuan(amount: Fen) -> String {
    format!("¥{}", amount.to_yuan())
}

pub use paystream_engine::beijing::datetime as beijing_time;

fn lines(items: &[OrderLine], lang: Lang) -> String {
    let sep = match lang {
        Lang::ZhCn => "、",
        Lang::En => ", ",
    };
    items
        .iter()
        .map(|l| format!("{} ×{}", l.name, l.quantity))
        .collect::<Vec<_>>()
        .join(sep)
}

fn via_channel(channel: PayChannel, lang: Lang) -> String {
    match lang {
        Lang::ZhCn => format!("微信支付 {}", channel_short(channel)),
        Lang::En => format!("WeChat Pay {}", channel_short(channel)),
    }
}

/// The event in one sentence. Exhaustive on purpose (no wildcard): a new event type does not
/// compile until it has its sentence.
pub fn sentence(event: &OrderEvent, ctx: &Context<'_>) -> String {
    let zh = ctx.lang == Lang::ZhCn;
    let who = &ctx.actor.name;
    let from_wechat = ctx.actor.kind == ActorKind::Wechatpay;
    match event {
        OrderEvent::OrderPlaced {
            items,
            total_fen,
            note,
            card,
            ..
        } => {
            let mut text = if zh {
                format!(
                    "顾客下单：{}，合计 {}",
                    lines(items, ctx.lang),
                    yuan(*total_fen)
                )
            } else {
                format!(
                    "Order placed: {}, total {}",
                    lines(items, ctx.lang),
                    yuan(*total_fen)
                )
            };
            if let Some(card) = card {
                text.push_str(&if zh {
                    format!("，使用卡券（券码 {}）", card.code)
                } else {
                    format!(", with a coupon (code {})", card.code)
                });
            }
            if let Some(note) = note.as_deref().filter(|n| !n.trim().is_empty()) {
                text.push_str(&if zh {
                    format!("；备注：{note}")
                } else {
                    format!("; note: {note}")
                });
            }
            text
        }
        OrderEvent::PaymentRequested { channel, .. } => {
            if zh {
                format!("顾客发起支付（{}）", via_channel(*channel, ctx.lang))
            } else {
                format!(
                    "The customer started paying ({})",
                    via_channel(*channel, ctx.lang)
                )
            }
        }
        OrderEvent::PaymentSucceeded {
            channel,
            transaction_id,
            amount_fen,
            ..
        } => {
            let source = if from_wechat {
                who.clone()
            } else {
                via_channel(*channel, ctx.lang)
            };
            if zh {
                format!(
                    "{source}：已支付 {}（交易号 {transaction_id}）",
                    yuan(*amount_fen)
                )
            } else {
                format!(
                    "{source}: paid {} (transaction {transaction_id})",
                    yuan(*amount_fen)
                )
            }
        }
        OrderEvent::PaymentAmountMismatch {
            transaction_id,
            expected_fen,
            received_fen,
            ..
        } => {
            if zh {
                format!(
                    "实付 {}，但订单金额为 {}——需人工核查（交易号 {transaction_id}）",
                    yuan(*received_fen),
                    yuan(*expected_fen)
                )
            } else {
                format!(
                    "Paid {} but the order is {} — needs review (transaction {transaction_id})",
                    yuan(*received_fen),
                    yuan(*expected_fen)
                )
            }
        }
        OrderEvent::OrderClosed { reason, .. } => match (reason, zh) {
            (CloseReason::Expired, true) => "订单超时未支付，已自动关闭".to_string(),
            (CloseReason::Expired, false) => "Closed: not paid in time (expired)".to_string(),
            (CloseReason::CancelledByCustomer, true) => "顾客取消了订单".to_string(),
            (CloseReason::CancelledByCustomer, false) => "Cancelled by the customer".to_string(),
            (CloseReason::ClosedByStaff, true) => format!("{who} 关闭了订单"),
            (CloseReason::ClosedByStaff, false) => format!("Closed by {who}"),
        },
        OrderEvent::RefundRequested {
            amount_fen, reason, ..
        } => {
            let reason = reason.as_deref().filter(|r| !r.trim().is_empty());
            match (reason, zh) {
                (Some(r), true) => format!("{who} 申请退款 {}：{r}", yuan(*amount_fen)),
                (None, true) => format!("{who} 申请退款 {}", yuan(*amount_fen)),
                (Some(r), false) => {
                    format!("Refund of {} requested by {who}: {r}", yuan(*amount_fen))
                }
                (None, false) => format!("Refund of {} requested by {who}", yuan(*amount_fen)),
            }
        }
        OrderEvent::RefundSucceeded {
            out_refund_no,
            refund_id,
            ..
        } => {
            let what = refund_words(out_refund_no, ctx);
            match (refund_id, zh) {
                (Some(id), true) => format!("{what}已完成（微信退款单号 {id}）"),
                (None, true) => format!("{what}已完成"),
                (Some(id), false) => format!("{what} completed (WeChat refund {id})"),
                (None, false) => format!("{what} completed"),
            }
        }
        OrderEvent::RefundFailed {
            out_refund_no,
            reason,
            ..
        } => {
            let what = refund_words(out_refund_no, ctx);
            if zh {
                format!("{what}失败：{reason}")
            } else {
                format!("{what} failed: {reason}")
            }
        }
        OrderEvent::CardConsumed { code, .. } => {
            if zh {
                format!("卡券已核销（券码 {code}）")
            } else {
                format!("Coupon redeemed (code {code})")
            }
        }
        OrderEvent::CardConsumeFailed { code, reason, .. } => {
            if zh {
                format!("卡券核销失败（券码 {code}）：{reason}——需人工核查")
            } else {
                format!("Coupon could not be redeemed (code {code}): {reason} — needs review")
            }
        }
        OrderEvent::CardRefundFlagged { code, .. } => {
            if zh {
                format!("订单退款，但卡券已核销（券码 {code}）——需人工核查")
            } else {
                format!("Money is going back but the coupon was already redeemed (code {code}) — needs review")
            }
        }
        OrderEvent::ReviewResolved {
            resolution, note, ..
        } => {
            let how = match (resolution, zh) {
                (ReviewResolution::Refunded, true) => "已退款",
                (ReviewResolution::Refunded, false) => "money refunded",
                (ReviewResolution::Accepted, true) => "款项照收，订单有效",
                (ReviewResolution::Accepted, false) => "payment accepted as is",
                (ReviewResolution::Other, true) => "已另行处理",
                (ReviewResolution::Other, false) => "settled another way",
            };
            let note = note.as_deref().filter(|n| !n.trim().is_empty());
            match (note, zh) {
                (Some(n), true) => format!("{who} 处理了核查：{how}（{n}）"),
                (None, true) => format!("{who} 处理了核查：{how}"),
                (Some(n), false) => format!("Review resolved by {who}: {how} ({n})"),
                (None, false) => format!("Review resolved by {who}: {how}"),
            }
        }
        OrderEvent::ReconciliationDiscrepancy { discrepancy, .. } => {
            let what = discrepancy_words(discrepancy, zh);
            if zh {
                format!("对账发现：{what}——需人工核查")
            } else {
                format!("Reconciliation: {what} — needs review")
            }
        }
    }
}

/// A reconciliation finding in a few words; amounts in ¥.
fn discrepancy_words(d: &Discrepancy, zh: bool) -> String {
    let money = |fen: Option<Fen>| fen.map(yuan).unwrap_or_else(|| "—".to_string());
    let (ours, theirs) = (money(d.ours_fen), money(d.theirs_fen));
    let (date, reference) = (d.date, &d.reference);
    match (d.kind, zh) {
        (DiscrepancyKind::PaymentMissingAtProvider, true) => {
            format!("微信支付 {date} 的账单中没有这笔支付 {ours}（交易号 {reference}）")
        }
        (DiscrepancyKind::PaymentMissingAtProvider, false) => format!(
            "payment of {ours} (transaction {reference}) is missing from WeChat Pay's bill of {date}"
        ),
        (DiscrepancyKind::PaymentUnconfirmed, true) => format!(
            "微信支付 {date} 的账单有一笔未记录的支付 {theirs}（交易号 {reference}），查询未能确认"
        ),
        (DiscrepancyKind::PaymentUnconfirmed, false) => format!(
            "WeChat Pay's bill of {date} has a payment of {theirs} (transaction {reference}) \
             not recorded here, and a query did not confirm it"
        ),
        (DiscrepancyKind::PaymentAmountDiffers, true) => format!(
            "支付金额不一致（交易号 {reference}）：本系统 {ours}，微信支付 {date} 账单 {theirs}"
        ),
        (DiscrepancyKind::PaymentAmountDiffers, false) => format!(
            "payment {reference} is {ours} here but {theirs} in WeChat Pay's bill of {date}"
        ),
        (DiscrepancyKind::RefundMissingAtProvider, true) => {
            format!("微信支付 {date} 的账单中没有退款 {reference}（{ours}）")
        }
        (DiscrepancyKind::RefundMissingAtProvider, false) => format!(
            "refund {reference} of {ours} is missing from WeChat Pay's bill of {date}"
        ),
        (DiscrepancyKind::RefundMissingInLog, true) => {
            format!("微信支付 {date} 的账单有一笔本系统未申请的退款 {reference}（{theirs}）")
        }
        (DiscrepancyKind::RefundMissingInLog, false) => format!(
            "WeChat Pay's bill of {date} has a refund {reference} of {theirs} never asked for here"
        ),
        (DiscrepancyKind::RefundAmountDiffers, true) => {
            format!("退款金额不一致（{reference}）：本系统 {ours}，微信支付 {date} 账单 {theirs}")
        }
        (DiscrepancyKind::RefundAmountDiffers, false) => format!(
            "refund {reference} is {ours} here but {theirs} in WeChat Pay's bill of {date}"
        ),
        (DiscrepancyKind::RefundStatusDiffers, true) => {
            format!("退款 {reference} 的结果与微信支付 {date} 的账单不一致")
        }
        (DiscrepancyKind::RefundStatusDiffers, false) => format!(
            "refund {reference} has another outcome in WeChat Pay's bill of {date}"
        ),
    }
}

/// "Refund of ¥5.00" / "退款 ¥5.00", or the refund number when the amount is unknown.
fn refund_words(out_refund_no: &str, ctx: &Context<'_>) -> String {
    match (ctx.refunds.get(out_refund_no), ctx.lang) {
        (Some(amount), Lang::ZhCn) => format!("退款 {}", yuan(*amount)),
        (Some(amount), Lang::En) => format!("Refund of {}", yuan(*amount)),
        (None, Lang::ZhCn) => format!("退款 {out_refund_no} "),
        (None, Lang::En) => format!("Refund {out_refund_no}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, TimeZone, Utc};
    use paystream_engine::order::CardRef;

    fn fen(v: i64) -> Fen {
        Fen::new(v).unwrap()
    }

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 16, 30, 5).unwrap()
    }

    fn line(name: &str, quantity: u32, price: i64) -> OrderLine {
        OrderLine {
            sku: "sku".into(),
            name: name.into(),
            quantity,
            unit_price_fen: fen(price),
            line_total_fen: fen(price * i64::from(quantity)),
        }
    }

    fn staff(name: &str) -> Actor {
        actor(
            &ActorRef::Staff(Uuid::nil()),
            &Known {
                username: Some(name.into()),
                ..Known::default()
            },
            Lang::En,
        )
    }

    fn say(event: &OrderEvent, who: &Actor, lang: Lang) -> String {
        let refunds = HashMap::from([("R1".to_string(), fen(500))]);
        sentence(
            event,
            &Context {
                lang,
                actor: who,
                refunds: &refunds,
            },
        )
    }

    /// One of every event type (the `sentence` match keeps this honest: a new type must be
    /// worded before anything compiles).
    fn every_event() -> Vec<OrderEvent> {
        let card = CardRef {
            card_id: "pCard".into(),
            code: "C0DE".into(),
        };
        vec![
            OrderEvent::OrderPlaced {
                order_id: Uuid::nil(),
                user_id: Uuid::nil(),
                openid: "o-1".into(),
                out_trade_no: "T1".into(),
                items: vec![line("西湖龙井", 2, 1250)],
                total_fen: fen(2500),
                note: None,
                placed_at: at(),
                expires_at: at(),
                card: Some(card.clone()),
            },
            OrderEvent::PaymentRequested {
                channel: PayChannel::WechatpayV3,
                requested_at: at(),
            },
            OrderEvent::PaymentSucceeded {
                channel: PayChannel::WechatpayV3,
                transaction_id: "4200001".into(),
                amount_fen: fen(2500),
                paid_at: at(),
            },
            OrderEvent::PaymentAmountMismatch {
                channel: PayChannel::WechatpayV3,
                transaction_id: "4200002".into(),
                expected_fen: fen(2500),
                received_fen: fen(2499),
                paid_at: at(),
            },
            OrderEvent::OrderClosed {
                reason: CloseReason::Expired,
                closed_at: at(),
            },
            OrderEvent::RefundRequested {
                out_refund_no: "R1".into(),
                amount_fen: fen(500),
                reason: Some("customer asked".into()),
                requested_at: at(),
            },
            OrderEvent::RefundSucceeded {
                out_refund_no: "R1".into(),
                refund_id: Some("5030".into()),
                succeeded_at: at(),
            },
            OrderEvent::RefundFailed {
                out_refund_no: "R1".into(),
                reason: "closed".into(),
                failed_at: at(),
            },
            OrderEvent::CardConsumed {
                card_id: card.card_id.clone(),
                code: card.code.clone(),
                consumed_at: at(),
            },
            OrderEvent::CardConsumeFailed {
                card_id: card.card_id.clone(),
                code: card.code.clone(),
                reason: "expired".into(),
                failed_at: at(),
            },
            OrderEvent::CardRefundFlagged {
                card_id: card.card_id.clone(),
                code: card.code.clone(),
                out_refund_no: "R1".into(),
                flagged_at: at(),
            },
            OrderEvent::ReviewResolved {
                resolution: ReviewResolution::Accepted,
                note: Some("difference waived".into()),
                resolved_at: at(),
            },
            OrderEvent::ReconciliationDiscrepancy {
                discrepancy: Discrepancy {
                    date: chrono::NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
                    kind: DiscrepancyKind::PaymentAmountDiffers,
                    reference: "4200003".into(),
                    ours_fen: Some(fen(2500)),
                    theirs_fen: Some(fen(2400)),
                    detail: None,
                },
                found_at: at(),
            },
        ]
    }

    #[test]
    fn every_event_type_has_a_distinct_sentence_in_both_languages() {
        let alice = staff("alice");
        let events = every_event();
        let types: std::collections::HashSet<_> = events.iter().map(|e| e.event_type()).collect();
        assert_eq!(types.len(), events.len(), "one sample per type");
        for lang in [Lang::ZhCn, Lang::En] {
            let texts: std::collections::HashSet<_> =
                events.iter().map(|e| say(e, &alice, lang)).collect();
            assert_eq!(texts.len(), events.len(), "{texts:?}");
            for text in &texts {
                assert!(!text.trim().is_empty());
                assert!(!text.contains("fen"), "{text}");
            }
        }
    }

    #[test]
    fn sentences_in_chinese_and_english() {
        let e = every_event();
        let alice = staff("alice");
        let customer = actor(
            &ActorRef::Customer(Uuid::nil()),
            &Known {
                openid: Some("o-1".into()),
                ..Known::default()
            },
            Lang::ZhCn,
        );
        let notify = actor(
            &ActorRef::parse("wechatpay_v3:notify"),
            &Known::default(),
            Lang::En,
        );
        let notify_zh = actor(
            &ActorRef::parse("wechatpay_v3:notify"),
            &Known::default(),
            Lang::ZhCn,
        );
        assert_eq!(
            say(&e[0], &customer, Lang::ZhCn),
            "顾客下单：西湖龙井 ×2，合计 ¥25.00，使用卡券（券码 C0DE）"
        );
        let mut placed = e[0].clone();
        if let OrderEvent::OrderPlaced { items, card, .. } = &mut placed {
            items[0].name = "Green tea".into();
            *card = None;
        }
        assert_eq!(
            say(&placed, &customer, Lang::En),
            "Order placed: Green tea ×2, total ¥25.00"
        );
        assert_eq!(
            say(&e[2], &notify, Lang::En),
            "WeChat Pay notify: paid ¥25.00 (transaction 4200001)"
        );
        assert_eq!(
            say(&e[2], &notify_zh, Lang::ZhCn),
            "微信支付通知：已支付 ¥25.00（交易号 4200001）"
        );
        assert_eq!(
            say(&e[3], &notify, Lang::En),
            "Paid ¥24.99 but the order is ¥25.00 — needs review (transaction 4200002)"
        );
        assert_eq!(
            say(&e[5], &alice, Lang::En),
            "Refund of ¥5.00 requested by alice: customer asked"
        );
        assert_eq!(
            say(&e[5], &alice, Lang::ZhCn),
            "alice 申请退款 ¥5.00：customer asked"
        );
        assert_eq!(
            say(&e[6], &notify, Lang::En),
            "Refund of ¥5.00 completed (WeChat refund 5030)"
        );
        assert_eq!(
            say(&e[6], &notify, Lang::ZhCn),
            "退款 ¥5.00已完成（微信退款单号 5030）"
        );
        assert_eq!(
            say(&e[4], &notify, Lang::En),
            "Closed: not paid in time (expired)"
        );
        let cancelled = OrderEvent::OrderClosed {
            reason: CloseReason::CancelledByCustomer,
            closed_at: at(),
        };
        assert_eq!(say(&cancelled, &customer, Lang::ZhCn), "顾客取消了订单");
        assert_eq!(say(&e[8], &notify, Lang::En), "Coupon redeemed (code C0DE)");
        assert_eq!(
            say(&e[11], &alice, Lang::En),
            "Review resolved by alice: payment accepted as is (difference waived)"
        );
    }

    #[test]
    fn money_is_yuan_with_two_decimals() {
        assert_eq!(yuan(fen(0)), "¥0.00");
        assert_eq!(yuan(fen(1)), "¥0.01");
        assert_eq!(yuan(fen(1250)), "¥12.50");
        assert_eq!(yuan(fen(100_000)), "¥1000.00");
    }

    #[test]
    fn beijing_time_crosses_midnight() {
        // 16:30 UTC on 1 December is 00:30 on 2 December in Beijing.
        assert_eq!(beijing_time(at()), "2026-12-02 00:30:05");
        let new_year = Utc.with_ymd_and_hms(2026, 12, 31, 15, 59, 59).unwrap();
        assert_eq!(beijing_time(new_year), "2026-12-31 23:59:59");
        let after = Utc.with_ymd_and_hms(2026, 12, 31, 16, 0, 0).unwrap();
        assert_eq!(beijing_time(after), "2027-01-01 00:00:00");
    }

    #[test]
    fn actors_get_names() {
        let known = Known {
            phone: Some("13800000000".into()),
            openid: Some("o-1".into()),
            username: None,
        };
        let id = Uuid::from_u128(7);
        let c = actor(
            &ActorRef::parse(&format!("customer:{id}")),
            &known,
            Lang::En,
        );
        assert_eq!(
            (c.kind, c.name.as_str()),
            (ActorKind::Customer, "13800000000")
        );
        let no_phone = Known {
            phone: None,
            ..known.clone()
        };
        let c = actor(&ActorRef::Customer(id), &no_phone, Lang::En);
        assert_eq!(c.name, "o-1");
        let q = actor(
            &ActorRef::parse("wechatpay_v2:query"),
            &Known::default(),
            Lang::En,
        );
        assert_eq!(
            (q.kind, q.name.as_str(), q.detail.as_deref()),
            (ActorKind::Wechatpay, "WeChat Pay query", Some("v2"))
        );
        let x = actor(
            &ActorRef::parse("system:expiry"),
            &Known::default(),
            Lang::En,
        );
        assert_eq!((x.kind, x.name.as_str()), (ActorKind::System, "expiry"));
        let x = actor(
            &ActorRef::parse("system:expiry"),
            &Known::default(),
            Lang::ZhCn,
        );
        assert_eq!(x.name, "超时关单");
        assert_eq!(
            actor(
                &ActorRef::parse("system:refund-poller"),
                &Known::default(),
                Lang::En
            )
            .name,
            "refund poller"
        );
        assert_eq!(
            ActorRef::parse("staff:nope"),
            ActorRef::Other("staff:nope".into())
        );
    }

    #[test]
    fn languages_parse() {
        assert_eq!(Lang::parse("zh-CN"), Some(Lang::ZhCn));
        assert_eq!(Lang::parse("en"), Some(Lang::En));
        assert_eq!(Lang::parse("EN-us"), Some(Lang::En));
        assert_eq!(Lang::parse("fr"), None);
        assert_eq!(Lang::default(), Lang::ZhCn);
    }
}
