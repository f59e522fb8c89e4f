//! `SUBSCRIBE_MESSAGE_TEMPLATES`: which subscribe-message template each event type sends, and
//! how its fields are filled from the order (contract.md, "Subscribe-message templates").
//! Everything is checked when the file is loaded, so a typo stops start-up instead of failing
//! the first customer's message.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// The event types of the catalogue (contract.md, "Event catalogue").
pub const EVENT_TYPES: &[&str] = &[
    "OrderPlaced",
    "PaymentRequested",
    "PaymentSucceeded",
    "PaymentAmountMismatch",
    "OrderClosed",
    "RefundRequested",
    "RefundSucceeded",
    "RefundFailed",
    "CardConsumed",
    "CardConsumeFailed",
    "CardRefundFlagged",
    "ReviewResolved",
    "ReconciliationDiscrepancy",
];

/// What a template may say about the order.
pub const PLACEHOLDERS: &[&str] = &[
    "order_id",
    "out_trade_no",
    "total_yuan",
    "paid_yuan",
    "refunded_yuan",
    "refund_yuan",
    "status",
    "paid_at",
    "closed_at",
    "item_names",
];

/// WeChat's kinds of template field (`thing1`, `amount2`, …) and the most characters each takes.
/// Longer text is refused by WeChat with 47003, so it is cut here (`None`: formatted, never long).
pub const FIELD_KINDS: &[(&str, Option<usize>)] = &[
    ("character_string", Some(32)),
    ("phone_number", Some(17)),
    ("car_number", Some(8)),
    ("thing", Some(20)),
    ("number", Some(32)),
    ("letter", Some(32)),
    ("symbol", Some(5)),
    ("phrase", Some(5)),
    ("name", Some(10)),
    ("amount", None),
    ("time", None),
    ("date", None),
];

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    pub template_id: String,
    #[serde(default)]
    pub page: Option<String>,
    /// Template field → text with placeholders.
    pub data: BTreeMap<String, String>,
}

/// The templates, by event type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Templates {
    by_event: BTreeMap<String, Template>,
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("SUBSCRIBE_MESSAGE_TEMPLATES={path}: cannot read: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("SUBSCRIBE_MESSAGE_TEMPLATES: {0}")]
    Syntax(String),
    #[error("SUBSCRIBE_MESSAGE_TEMPLATES: [{0}] is not an event type of the catalogue")]
    UnknownEvent(String),
    #[error("SUBSCRIBE_MESSAGE_TEMPLATES: [{event}] template field {field:?} is not a WeChat field (thing1, amount2, time3, …)")]
    UnknownField { event: String, field: String },
    #[error("SUBSCRIBE_MESSAGE_TEMPLATES: [{event}] unknown placeholder {{{placeholder}}}")]
    UnknownPlaceholder { event: String, placeholder: String },
    #[error("SUBSCRIBE_MESSAGE_TEMPLATES: [{event}] {what}")]
    Invalid { event: String, what: String },
}

impl Templates {
    pub fn load(path: &Path) -> Result<Templates, TemplateError> {
        let text = std::fs::read_to_string(path).map_err(|e| TemplateError::Unreadable {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Templates::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Templates, TemplateError> {
        let by_event: BTreeMap<String, Template> =
            toml::from_str(text).map_err(|e| TemplateError::Syntax(e.to_string()))?;
        for (event, template) in &by_event {
            check(event, template)?;
        }
        Ok(Templates { by_event })
    }

    pub fn get(&self, event_type: &str) -> Option<&Template> {
        self.by_event.get(event_type)
    }

    /// The event types that send a message: the routing keys the worker's queue needs.
    pub fn event_types(&self) -> Vec<String> {
        self.by_event.keys().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.by_event.is_empty()
    }
}

fn check(event: &str, template: &Template) -> Result<(), TemplateError> {
    if !EVENT_TYPES.contains(&event) {
        return Err(TemplateError::UnknownEvent(event.to_string()));
    }
    let invalid = |what: &str| TemplateError::Invalid {
        event: event.to_string(),
        what: what.to_string(),
    };
    if !paystream_engine::subscriptions::valid_template_id(&template.template_id) {
        return Err(invalid("template_id must be 1-128 printable characters"));
    }
    if template.data.is_empty() {
        return Err(invalid("data needs at least one template field"));
    }
    for field in template.data.keys() {
        if field_limit(field).is_none() {
            return Err(TemplateError::UnknownField {
                event: event.to_string(),
                field: field.clone(),
            });
        }
    }
    let texts = template.data.values().chain(template.page.iter());
    for text in texts {
        for placeholder in placeholders(text).map_err(|e| invalid(&e))? {
            if !PLACEHOLDERS.contains(&placeholder) {
                return Err(TemplateError::UnknownPlaceholder {
                    event: event.to_string(),
                    placeholder: placeholder.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// `Some(limit)` for a WeChat field name (kind + number), `None` for anything else.
pub fn field_limit(field: &str) -> Option<Option<usize>> {
    FIELD_KINDS.iter().find_map(|(kind, limit)| {
        let number = field.strip_prefix(kind)?;
        (!number.is_empty() && number.chars().all(|c| c.is_ascii_digit())).then_some(*limit)
    })
}

/// The `{names}` in a text, in order.
pub fn placeholders(text: &str) -> Result<Vec<&str>, String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("unclosed {{ in {text:?}"))?;
        found.push(&after[..close]);
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("stray }} in {text:?}"));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTRACT_EXAMPLE: &str = r#"
[PaymentSucceeded]
template_id = "TPL-paid"
page = "pages/order/detail?id={order_id}"
[PaymentSucceeded.data]
character_string1 = "{out_trade_no}"
amount2 = "{paid_yuan}"
time3 = "{paid_at}"
"#;

    #[test]
    fn the_contract_example_loads() {
        let templates = Templates::parse(CONTRACT_EXAMPLE).unwrap();
        let paid = templates.get("PaymentSucceeded").unwrap();
        assert_eq!(paid.template_id, "TPL-paid");
        assert_eq!(paid.data["amount2"], "{paid_yuan}");
        assert_eq!(
            templates.event_types(),
            vec!["PaymentSucceeded".to_string()]
        );
        assert!(templates.get("OrderClosed").is_none());
    }

    #[test]
    fn an_unknown_placeholder_is_named() {
        let text = CONTRACT_EXAMPLE.replace("{paid_yuan}", "{paid_yen}");
        let err = Templates::parse(&text).unwrap_err().to_string();
        assert!(err.contains("paid_yen"), "{err}");
        assert!(err.contains("PaymentSucceeded"), "{err}");
    }

    #[test]
    fn an_unknown_placeholder_in_the_page_is_named() {
        let text = CONTRACT_EXAMPLE.replace("{order_id}", "{orderid}");
        assert!(Templates::parse(&text)
            .unwrap_err()
            .to_string()
            .contains("orderid"));
    }

    #[test]
    fn an_unknown_template_field_is_named() {
        let text = CONTRACT_EXAMPLE.replace("amount2", "price2");
        let err = Templates::parse(&text).unwrap_err().to_string();
        assert!(err.contains("price2"), "{err}");
        let text = CONTRACT_EXAMPLE.replace("amount2", "amount");
        assert!(Templates::parse(&text).is_err(), "a field needs its number");
    }

    #[test]
    fn an_unknown_event_type_or_key_is_refused() {
        let text = CONTRACT_EXAMPLE.replace("PaymentSucceeded", "PaymentSucceded");
        assert!(Templates::parse(&text)
            .unwrap_err()
            .to_string()
            .contains("PaymentSucceded"));
        let text = CONTRACT_EXAMPLE.replace("page =", "pages =");
        assert!(Templates::parse(&text).is_err());
        assert!(
            Templates::parse(&CONTRACT_EXAMPLE.replace("}\"\namount2", "\"\namount2")).is_err()
        );
    }

    #[test]
    fn the_shipped_example_loads() {
        let example = include_str!("../../../docs/subscribe-templates.example.toml");
        let templates = Templates::parse(example).unwrap();
        assert_eq!(
            templates.event_types(),
            vec!["OrderClosed", "PaymentSucceeded", "RefundSucceeded"]
        );
    }

    #[test]
    fn field_names_follow_wechat_kinds() {
        assert_eq!(field_limit("thing1"), Some(Some(20)));
        assert_eq!(field_limit("character_string12"), Some(Some(32)));
        assert_eq!(field_limit("time3"), Some(None));
        assert_eq!(field_limit("thing"), None);
        assert_eq!(field_limit("thingx"), None);
    }
}
