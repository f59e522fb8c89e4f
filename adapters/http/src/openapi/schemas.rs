//! The OpenAPI schemas of bodies whose Rust types this crate cannot (or should not) derive
//! `ToSchema` on: the engine's and the projections' types (both stay free of OpenAPI) and the
//! answers built with `json!`. These types only describe: nothing constructs them. Their drift
//! from the real answers is caught by the unit tests below (the closed vocabularies) and by
//! tests/openapi.rs, which checks real answers against the served document.
//!
//! Money is always an integer number of fen (分); times are RFC 3339 in UTC.
#![allow(dead_code)]

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};
use uuid::Uuid;

use crate::timeline::TimelineActor;

// ---- Errors ----

/// Every error of the engine's own API (contract.md, "Errors").
#[derive(ToSchema)]
#[schema(example = json!({"error": {"code": "order_not_found", "message": "order not found"}}))]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(ToSchema)]
pub struct ErrorDetail {
    code: ErrorCode,
    /// For people, not for programs: may change at any time.
    message: String,
}

/// The stable, machine-readable error codes (engine/src/error_code.rs): clients switch on these.
pub struct ErrorCode;

impl PartialSchema for ErrorCode {
    fn schema() -> RefOr<Schema> {
        let codes = paystream_engine::ErrorCode::ALL.iter().map(|c| c.as_str());
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "Why the request failed; stable (a code is never renamed), more may be added.",
            ))
            .enum_values(Some(codes))
            .into()
    }
}

impl ToSchema for ErrorCode {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ErrorCode")
    }
}

// ---- Closed vocabularies (mirrors of the engine's enums; see the tests) ----

#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    PendingPayment,
    Paid,
    PartiallyRefunded,
    Refunded,
    Closed,
    /// Money arrived that does not match the order (wrong amount, paid after close, paid twice).
    NeedsReview,
}

#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PayChannel {
    WechatpayV3,
    WechatpayV2,
}

#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Processing,
    Succeeded,
    Failed,
}

#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    Expired,
    CancelledByCustomer,
    ClosedByStaff,
}

#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CardStatus {
    Pending,
    Consumed,
    ConsumeFailed,
}

/// A staff role: `admin` may do everything, `support` only reads.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Support,
}

// ---- Customer API ----

/// A customer's mini-program account.
#[derive(ToSchema)]
pub struct User {
    id: Uuid,
    openid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    unionid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    phone: Option<String>,
}

#[derive(ToSchema)]
pub struct CustomerSession {
    /// The bearer token for `/api/*` (`Authorization: Bearer <token>`).
    token: String,
    expires_at: DateTime<Utc>,
    user: User,
}

#[derive(ToSchema)]
pub struct PhoneNumber {
    phone: String,
    country_code: String,
}

#[derive(ToSchema)]
pub struct Product {
    sku: String,
    name: String,
    /// Integer fen.
    price_fen: i64,
    active: bool,
}

#[derive(ToSchema)]
pub struct ProductList {
    items: Vec<Product>,
}

/// A product as staff submit it; `sku` may be left out of a `PUT` (the path names it).
#[derive(ToSchema)]
pub struct ProductInput {
    #[schema(nullable = false)]
    sku: Option<String>,
    name: String,
    /// Integer fen, positive.
    price_fen: i64,
    /// Defaults to true.
    #[schema(default = true)]
    active: Option<bool>,
}

/// A line as the customer orders it; the price comes from the catalogue, never the client.
#[derive(ToSchema)]
pub struct LineRequest {
    sku: String,
    #[schema(minimum = 1)]
    quantity: i64,
}

#[derive(ToSchema)]
pub struct OrderLine {
    sku: String,
    name: String,
    quantity: u32,
    /// Integer fen.
    unit_price_fen: i64,
    /// `unit_price_fen * quantity`, integer fen.
    line_total_fen: i64,
}

/// The card (coupon) redeemed with an order, and what became of it.
#[derive(ToSchema)]
pub struct OrderCard {
    card_id: String,
    code: String,
    status: CardStatus,
    consumed_at: Option<DateTime<Utc>>,
    failure_reason: Option<String>,
    /// Money went back after the card was consumed: staff must look.
    refund_flagged: bool,
}

/// An order (contract.md, "Order"). Money is integer fen.
#[derive(ToSchema)]
pub struct Order {
    id: Uuid,
    out_trade_no: String,
    status: OrderStatus,
    total_fen: i64,
    paid_fen: i64,
    refunded_fen: i64,
    items: Vec<OrderLine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    note: Option<String>,
    /// The channel of the most recent payment request.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    channel: Option<PayChannel>,
    /// WeChat Pay's id of the payment.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    transaction_id: Option<String>,
    created_at: DateTime<Utc>,
    /// When an unpaid order closes.
    expires_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    paid_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    card: Option<OrderCard>,
}

/// One page of orders, newest first.
#[derive(ToSchema)]
pub struct OrderPage {
    page: u32,
    per_page: u32,
    total_items: i64,
    total_pages: i64,
    items: Vec<Order>,
}

/// Exactly what `wx.requestPayment` takes.
#[derive(ToSchema)]
pub struct PayParams {
    #[serde(rename = "timeStamp")]
    time_stamp: String,
    #[serde(rename = "nonceStr")]
    nonce_str: String,
    /// `prepay_id=…`
    package: String,
    /// `RSA` (v3) or `MD5` / `HMAC-SHA256` (v2).
    #[serde(rename = "signType")]
    sign_type: String,
    #[serde(rename = "paySign")]
    pay_sign: String,
}

#[derive(ToSchema)]
pub struct AcceptedTemplates {
    /// The template ids recorded, one send each.
    accepted: Vec<String>,
}

#[derive(ToSchema)]
pub struct CardExt {
    /// The JSON string `wx.addCard` takes as `cardExt`.
    #[serde(rename = "cardExt")]
    card_ext: String,
}

// ---- Back-office API ----

#[derive(ToSchema)]
pub struct StaffSession {
    /// The bearer token for `/admin/*` (`Authorization: Bearer <token>`).
    token: String,
    expires_at: DateTime<Utc>,
    role: Role,
}

/// The staff member a token belongs to.
#[derive(ToSchema)]
pub struct StaffMe {
    username: String,
    role: Role,
}

/// Money that arrived, as WeChat Pay reported it; recorded even when it does not match.
#[derive(ToSchema)]
pub struct Payment {
    transaction_id: String,
    channel: PayChannel,
    amount_fen: i64,
    paid_at: DateTime<Utc>,
    /// The amount equalled the order total.
    matched: bool,
}

#[derive(ToSchema)]
pub struct Refund {
    out_refund_no: String,
    amount_fen: i64,
    reason: Option<String>,
    status: RefundStatus,
    requested_at: DateTime<Utc>,
    /// WeChat Pay's refund id, once it reports success.
    refund_id: Option<String>,
    finished_at: Option<DateTime<Utc>>,
    failure_reason: Option<String>,
}

/// An order as staff see it: the customer's order plus who placed it and its money movements.
#[derive(ToSchema)]
pub struct StaffOrder {
    #[serde(flatten)]
    order: Order,
    user_id: Uuid,
    openid: String,
    payments: Vec<Payment>,
    refunds: Vec<Refund>,
    /// What may still be refunded, integer fen.
    refundable_fen: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    close_reason: Option<CloseReason>,
}

/// One event of an order's stream (contract.md, "Event catalogue").
#[derive(ToSchema)]
pub struct OrderEvent {
    event_id: Uuid,
    version: i64,
    /// `OrderPlaced`, `PaymentSucceeded`, …
    #[serde(rename = "type")]
    event_type: String,
    recorded_at: DateTime<Utc>,
    data: Value,
    /// `actor`, `request_id`, …
    metadata: Value,
}

/// An order's events, oldest first.
#[derive(ToSchema)]
pub struct OrderEvents {
    items: Vec<OrderEvent>,
}

#[derive(ToSchema)]
pub struct RefundAccepted {
    out_refund_no: String,
    amount_fen: i64,
    status: RefundStatus,
}

/// An order awaiting a staff decision.
#[derive(ToSchema)]
pub struct ReviewEntry {
    order_id: Uuid,
    out_trade_no: String,
    status: OrderStatus,
    /// Every open reason in words, oldest first.
    reason: String,
    /// The same, itemised: `{"kind", "text", "at", …details}`.
    reasons: Vec<Value>,
    /// When the oldest open reason arose.
    since: DateTime<Utc>,
    paid_fen: i64,
    total_fen: i64,
}

/// One page of the review queue, longest waiting first.
#[derive(ToSchema)]
pub struct ReviewPage {
    page: u32,
    per_page: u32,
    total_items: i64,
    total_pages: i64,
    items: Vec<ReviewEntry>,
}

/// What is open on an order and how earlier reviews were resolved.
#[derive(ToSchema)]
pub struct Review {
    open: Vec<Value>,
    resolved: Vec<Value>,
}

/// The order after a review resolution.
#[derive(ToSchema)]
pub struct ReviewedOrder {
    #[serde(flatten)]
    order: Order,
    review: Review,
}

/// Money of one Beijing day (or of one channel on that day), integer fen.
#[derive(ToSchema)]
pub struct ChannelTotals {
    orders_paid: i64,
    gross_fen: i64,
    refunded_fen: i64,
    /// `gross_fen - refunded_fen`.
    net_fen: i64,
    /// The part of `gross_fen` that arrived outside the happy path (in review).
    unmatched_fen: i64,
}

#[derive(ToSchema)]
pub struct DayTotals {
    /// `YYYY-MM-DD`, a Beijing day.
    #[schema(format = Date)]
    date: String,
    orders_paid: i64,
    gross_fen: i64,
    refunded_fen: i64,
    net_fen: i64,
    unmatched_fen: i64,
    /// Every channel, zero or not, by channel name.
    by_channel: BTreeMap<String, ChannelTotals>,
}

/// One item per Beijing day, oldest first; days without money are zeros.
#[derive(ToSchema)]
pub struct DailyReport {
    items: Vec<DayTotals>,
}

// ---- Reconciliation ----

/// How a day's reconciliation went.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReconciliationStatus {
    /// The bill was compared with the log.
    Reconciled,
    /// WeChat Pay keeps no bill for the day (nothing was paid or refunded there); the log's own
    /// payments and refunds of the day are then all missing at the provider.
    NoBill,
    /// The bill is not made yet (WeChat Pay makes it after 10:00 Beijing time the next day);
    /// the day is tried again later.
    NotReady,
}

/// What differs between the bill and the log.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReconciliationLineKind {
    PaymentMissingInLog,
    PaymentMissingAtProvider,
    PaymentAmountDiffers,
    RefundMissingInLog,
    RefundMissingAtProvider,
    RefundAmountDiffers,
    RefundStatusDiffers,
}

/// What reconciliation did about a difference.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReconciliationAction {
    /// The payment was confirmed by a query and recorded (as a notify would have).
    PaymentRecorded,
    /// The refund's outcome was confirmed by a query and recorded.
    RefundOutcomeRecorded,
    /// Recorded on the order as a `ReconciliationDiscrepancy`; the order is in the review queue.
    FlaggedForReview,
    /// Recorded on the order by an earlier run of the same day.
    AlreadyFlagged,
    /// The bill names an out_trade_no no order has: look at the merchant account.
    UnknownOrder,
    /// Acting on it failed (WeChat Pay or the database); the next run tries again.
    Failed,
}

/// Counts and sums of one side of the day, integer fen.
#[derive(ToSchema)]
pub struct ReconciliationTotals {
    payments: u64,
    payments_fen: i64,
    refunds: u64,
    refunds_fen: i64,
}

/// One difference between the bill and the log.
#[derive(ToSchema)]
pub struct ReconciliationLine {
    kind: ReconciliationLineKind,
    out_trade_no: String,
    /// When the out_trade_no is one of our orders.
    #[serde(skip_serializing_if = "Option::is_none")]
    order_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transaction_id: Option<String>,
    /// For a refund's line.
    #[serde(skip_serializing_if = "Option::is_none")]
    out_refund_no: Option<String>,
    /// The amount in the log, when the log has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    ours_fen: Option<i64>,
    /// The amount in the bill, when the bill has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    theirs_fen: Option<i64>,
    action: ReconciliationAction,
    /// More about the difference or about what failed, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// A Beijing day reconciled against WeChat Pay's trade bill.
#[derive(ToSchema)]
pub struct ReconciliationReport {
    /// `YYYY-MM-DD`, a Beijing day.
    #[schema(format = Date)]
    date: String,
    status: ReconciliationStatus,
    /// When the last run finished.
    ran_at: DateTime<Utc>,
    /// How many runs of this day there have been, the last one included.
    runs: u32,
    /// WeChat Pay's side (zeros when there is no bill).
    bill: ReconciliationTotals,
    /// The log's side, as it was before the run recorded anything.
    log: ReconciliationTotals,
    /// Every difference, with what was done about it; empty when both sides agree.
    lines: Vec<ReconciliationLine>,
}

/// One event of an order in plain words.
#[derive(ToSchema)]
pub struct TimelineEntry {
    version: i64,
    at: DateTime<Utc>,
    /// `yyyy-MM-dd HH:mm:ss`, Beijing time.
    at_beijing: String,
    #[serde(rename = "type")]
    event_type: String,
    text: String,
    actor: TimelineActor,
}

#[derive(ToSchema)]
pub struct Timeline {
    items: Vec<TimelineEntry>,
}

// ---- Operations ----

#[derive(ToSchema)]
pub struct Health {
    /// `ok`
    status: String,
}

#[derive(ToSchema)]
pub struct Readiness {
    /// `ready` or `unavailable`.
    status: String,
    /// Each check: `ok`, `unavailable` or `not_configured`.
    checks: BTreeMap<String, String>,
}

/// WeChat Pay APIv3's answer to a notification it must send again.
#[derive(ToSchema)]
#[schema(example = json!({"code": "FAIL", "message": "signature verification failed"}))]
pub struct NotifyFailure {
    /// Always `FAIL`.
    code: String,
    message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use paystream_engine::order;
    use serde::Serialize;

    /// The `enum` values of a string schema.
    fn values<T: PartialSchema>() -> Vec<String> {
        let RefOr::T(Schema::Object(object)) = T::schema() else {
            panic!("not an inline object schema");
        };
        let values = object.enum_values.expect("an enum");
        values
            .into_iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }

    /// How the engine writes each of `all`.
    fn engine<T: Serialize>(all: &[T]) -> Vec<String> {
        all.iter()
            .map(|v| {
                serde_json::to_value(v)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    /// Every variant of one of the engine's enums, in a list the compiler checks: a variant
    /// added there makes the `match` non-exhaustive, so it cannot be missed here (nor, through
    /// the comparison, in the mirror).
    macro_rules! every {
        ($enum:ident: $($variant:ident),+) => {{
            let all = [$($enum::$variant),+];
            for v in all {
                match v {
                    $($enum::$variant)|+ => {}
                }
            }
            engine(&all)
        }};
    }

    #[test]
    fn the_mirrored_vocabularies_are_the_engines() {
        use order::{CardStatus as C, CloseReason as R, PayChannel as P, RefundStatus as S};
        use paystream_engine::accounts::Role as Staff;
        assert_eq!(values::<OrderStatus>(), engine(&order::OrderStatus::ALL));
        assert_eq!(values::<PayChannel>(), every!(P: WechatpayV3, WechatpayV2));
        assert_eq!(
            values::<RefundStatus>(),
            every!(S: Processing, Succeeded, Failed)
        );
        assert_eq!(
            values::<CloseReason>(),
            every!(R: Expired, CancelledByCustomer, ClosedByStaff)
        );
        assert_eq!(
            values::<CardStatus>(),
            every!(C: Pending, Consumed, ConsumeFailed)
        );
        assert_eq!(values::<Role>(), every!(Staff: Admin, Support));
        use paystream_engine::reconciliation::{Action as A, LineKind as K, ReportStatus as RS};
        assert_eq!(
            values::<ReconciliationStatus>(),
            every!(RS: Reconciled, NoBill, NotReady)
        );
        assert_eq!(
            values::<ReconciliationLineKind>(),
            every!(
                K: PaymentMissingInLog,
                PaymentMissingAtProvider,
                PaymentAmountDiffers,
                RefundMissingInLog,
                RefundMissingAtProvider,
                RefundAmountDiffers,
                RefundStatusDiffers
            )
        );
        assert_eq!(
            values::<ReconciliationAction>(),
            every!(
                A: PaymentRecorded,
                RefundOutcomeRecorded,
                FlaggedForReview,
                AlreadyFlagged,
                UnknownOrder,
                Failed
            )
        );
    }

    #[test]
    fn every_error_code_is_in_the_error_code_schema() {
        let codes = values::<ErrorCode>();
        assert_eq!(codes.len(), paystream_engine::ErrorCode::ALL.len());
        assert!(codes.contains(&"order_not_found".to_string()));
        assert!(codes.contains(&"no_such_endpoint".to_string()));
    }
}
