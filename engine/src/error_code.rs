//! The machine-readable code of every error the engine and its adapters report.
//!
//! The snake_case strings returned by [`ErrorCode::as_str`] are a public, stable contract:
//! clients switch on `{"error":{"code":"…"}}`. Rename a variant freely, never its string. Code
//! compares `ErrorCode`s, never strings.

use std::fmt;

/// Declares [`ErrorCode`], its string and [`ErrorCode::ALL`] from one list, so that no variant
/// can be left out of `ALL` (and thus out of the uniqueness test).
macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident => $code:literal,)+) => {
        /// Why a request failed, as clients see it. See the module documentation.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)+
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)+];

            /// The code as clients see it (`order_already_paid`, …).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)+
                }
            }
        }
    };
}

error_codes! {
    // ---- The order aggregate (`OrderError`) ----
    /// An order with this id already exists (placing it again).
    OrderExists => "order_exists",
    /// No order with this id (or not the caller's).
    OrderNotFound => "order_not_found",
    /// An order with no lines / items.
    EmptyOrder => "empty_order",
    /// An order with more lines (distinct items) than allowed.
    TooManyLines => "too_many_lines",
    /// A line's quantity is zero or above the per-line maximum.
    InvalidQuantity => "invalid_quantity",
    /// The order total is above the maximum an order may have.
    TotalTooLarge => "total_too_large",
    /// A unit or product price that is not a positive number of fen (or is too large).
    InvalidPrice => "invalid_price",
    /// A payment or refund amount that is not a positive number of fen.
    InvalidAmount => "invalid_amount",
    /// A payment window that is not a positive duration that fits the calendar.
    InvalidTtl => "invalid_ttl",
    /// The order is paid already: paying it again, or closing/expiring a paid order.
    OrderAlreadyPaid => "order_already_paid",
    /// The order's status does not allow paying it (closed, refunded, …).
    OrderNotPayable => "order_not_payable",
    /// The order's payment window has passed.
    OrderExpired => "order_expired",
    /// The order's status does not allow a refund (not paid).
    OrderNotRefundable => "order_not_refundable",
    /// A refund larger than what is left to refund on the order.
    RefundExceedsRefundable => "refund_exceeds_refundable",
    /// The order already has the maximum number of refunds that have not failed.
    TooManyRefunds => "too_many_refunds",
    /// A refund number reused with a different amount.
    RefundConflict => "refund_conflict",
    /// No refund with this number on the order.
    UnknownRefund => "unknown_refund",
    /// The refund already succeeded or failed; its outcome cannot change.
    RefundAlreadyFinal => "refund_already_final",
    /// A card operation on an order that carries no card.
    NoCard => "no_card",
    /// Consuming an order's card before the order is paid.
    CardNotDue => "card_not_due",
    /// Resolving the review of an order that has nothing in review.
    NothingToReview => "nothing_to_review",
    /// Resolving an order's review again, differently from how it was just resolved.
    ReviewAlreadyResolved => "review_already_resolved",
    /// A review resolution of `other` without a note saying what was done.
    ReviewNoteRequired => "review_note_required",
    /// A review resolved as `refunded` on an order with no refund that has not failed.
    NothingRefunded => "nothing_refunded",

    // ---- Catalogue and placing orders ----
    /// A sku that is not 1-64 characters of A-Z, a-z, 0-9, '-' and '_'.
    InvalidSku => "invalid_sku",
    /// The sku in a product's body differs from the one in the path.
    SkuMismatch => "sku_mismatch",
    /// A product name that is blank or longer than allowed.
    InvalidName => "invalid_name",
    /// Creating a product whose sku is taken.
    ProductExists => "product_exists",
    /// An order line names a sku no product has.
    UnknownSku => "unknown_sku",
    /// An order line names a product that is not for sale now.
    ProductInactive => "product_inactive",
    /// The order's card is unknown, consumed, not the customer's, refused by WeChat, or cards
    /// are not enabled.
    CardNotUsable => "card_not_usable",
    /// An Idempotency-Key already used for a different request.
    IdempotencyKeyReused => "idempotency_key_reused",

    // ---- Payments ----
    /// The customer is entering the password at WeChat Pay, so the order cannot be closed now.
    PaymentInProgress => "payment_in_progress",
    /// The order is ordered at the provider through another channel already (WeChat keeps one
    /// order book per merchant: the same out_trade_no cannot be ordered through the other API).
    PaymentChannelFixed => "payment_channel_fixed",
    /// The requested payment channel is not configured on this engine.
    ChannelUnavailable => "channel_unavailable",
    /// WeChat Pay answered, but refused the request for good.
    WechatpayRejected => "wechatpay_rejected",
    /// WeChat Pay is unreachable, failing, or its answer could not be verified.
    WechatpayUnavailable => "wechatpay_unavailable",

    // ---- Reconciliation ----
    /// No reconciliation report for the Beijing day: it was never reconciled.
    ReconciliationNotFound => "reconciliation_not_found",
    /// Reconciling a Beijing day that has not ended (today or later): its bill does not exist yet.
    DayNotOver => "day_not_over",

    // ---- Accounts and WeChat ----
    /// WeChat rejected a `wx.login` / phone-number code (expired, used, or made up).
    InvalidCode => "invalid_code",
    /// WeChat's rate limit was reached.
    WechatRateLimited => "wechat_rate_limited",
    /// WeChat refused the user for good.
    WechatRefused => "wechat_refused",
    /// WeChat (login, phone numbers, cards) is unreachable or failing.
    WechatUnavailable => "wechat_unavailable",
    /// Too many requests of one kind: staff logins being checked at once, or `wx.login` codes
    /// WeChat refused from one client address (`POST /api/login`). Comes with `Retry-After`
    /// where the wait is known.
    RateLimited => "rate_limited",
    /// Too many failed staff logins for this username or from this client address: every
    /// attempt, even with the right password, is refused until the `Retry-After` has passed.
    TooManyAttempts => "too_many_attempts",
    /// A staff username that is blank or too long.
    InvalidUsername => "invalid_username",
    /// A staff password that is too short.
    WeakPassword => "weak_password",
    /// Creating a staff account whose username is taken.
    StaffExists => "staff_exists",
    /// Wrong staff username or password.
    InvalidCredentials => "invalid_credentials",
    /// No staff account with this username.
    StaffNotFound => "staff_not_found",
    /// An admin disabling their own account.
    CannotDisableSelf => "cannot_disable_self",
    /// Disabling the last enabled admin account.
    LastAdmin => "last_admin",

    // ---- HTTP: authentication ----
    /// No `Authorization: Bearer` token was sent.
    MissingToken => "missing_token",
    /// The token is malformed, badly signed, for another audience, or its account is gone.
    InvalidToken => "invalid_token",
    /// The token has expired.
    TokenExpired => "token_expired",
    /// The staff member is not an admin.
    AdminOnly => "admin_only",

    // ---- HTTP: request input ----
    /// A login or phone code that is empty, too long, or not printable.
    InvalidCodeFormat => "invalid_code_format",
    /// An order's card whose card_id or code is not 1-64 letters, digits, '-' or '_'.
    InvalidCard => "invalid_card",
    /// A card_id in the path that is not a WeChat card id.
    InvalidCardId => "invalid_card_id",
    /// An Idempotency-Key header that is empty or too long.
    InvalidIdempotencyKey => "invalid_idempotency_key",
    /// An order note that is too long or holds control characters.
    InvalidNote => "invalid_note",
    /// A status filter (of orders, payments or refunds) that names no status.
    InvalidStatus => "invalid_status",
    /// A refund reason that is too long or holds control characters.
    InvalidReason => "invalid_reason",
    /// A review resolution that is not one of `refunded`, `accepted`, `other`.
    InvalidResolution => "invalid_resolution",
    /// Subscription template ids that are missing, too many, or not printable.
    InvalidTemplateIds => "invalid_template_ids",
    /// A query string that does not parse, or a query filter with a bad value.
    InvalidQuery => "invalid_query",
    /// A JSON body of the wrong shape (missing, unknown or mistyped fields).
    InvalidBody => "invalid_body",
    /// A body that is not JSON.
    InvalidJson => "invalid_json",
    /// A body sent without `Content-Type: application/json`.
    ExpectedJson => "expected_json",
    /// A request body above the size limit.
    BodyTooLarge => "body_too_large",
    /// No endpoint at this path.
    NoSuchEndpoint => "no_such_endpoint",
    /// The endpoint exists but does not take this method.
    MethodNotAllowed => "method_not_allowed",
    /// The request ran past the server's deadline.
    Timeout => "timeout",

    // ---- Infrastructure ----
    /// Another writer kept changing the order; the request may be retried.
    ConcurrentUpdate => "concurrent_update",
    /// The database is unreachable or failing.
    DatabaseUnavailable => "database_unavailable",
    /// A bug or corrupt data; details are logged, never returned.
    InternalError => "internal_error",
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;
    use std::collections::HashSet;

    fn is_snake_case(s: &str) -> bool {
        s.starts_with(|c: char| c.is_ascii_lowercase())
            && !s.ends_with('_')
            && !s.contains("__")
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    }

    #[test]
    fn codes_are_snake_case_and_unique() {
        let mut seen = HashSet::new();
        for &code in ErrorCode::ALL {
            assert!(
                is_snake_case(code.as_str()),
                "{code:?} is {:?}",
                code.as_str()
            );
            assert!(
                seen.insert(code.as_str()),
                "{code:?}: {} twice",
                code.as_str()
            );
        }
        assert_eq!(seen.len(), ErrorCode::ALL.len());
    }

    #[test]
    fn display_and_serialize_write_the_code() {
        let code = ErrorCode::OrderAlreadyPaid;
        assert_eq!(code.to_string(), "order_already_paid");
        assert_eq!(
            serde_json::to_value(code).unwrap(),
            serde_json::json!("order_already_paid")
        );
        assert_eq!(ErrorCode::InternalError.as_str(), "internal_error");
    }
}
