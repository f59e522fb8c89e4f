//! Why a command was rejected. `code()` strings are a public contract
//! (clients switch on them); messages are for humans and may change.

use super::{OrderStatus, MAX_LINES, MAX_ORDER_TOTAL_FEN, MAX_QUANTITY, MAX_REFUNDS};
use crate::money::Fen;

/// Coarse category so the service layer can map errors to HTTP statuses
/// without matching every variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Malformed input (400/422).
    Invalid,
    NotFound,
    /// The request is fine but the order's state does not allow it (409).
    Conflict,
    /// A business limit was hit (422).
    Rule,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("order already exists")]
    AlreadyExists,
    #[error("order not found")]
    NotFound,
    #[error("an order needs at least one line")]
    EmptyOrder,
    #[error("an order may have at most {} lines", MAX_LINES)]
    TooManyLines,
    #[error("quantity for sku {sku} must be between 1 and {}", MAX_QUANTITY)]
    InvalidQuantity { sku: String },
    #[error("order total exceeds the maximum of {} fen", MAX_ORDER_TOTAL_FEN)]
    TotalTooLarge,
    #[error("unit price must be greater than 0 fen")]
    InvalidPrice,
    #[error("amount must be greater than 0 fen")]
    InvalidAmount,
    /// The payment window must be a positive duration that fits the calendar.
    #[error("payment window must be positive and finite")]
    InvalidTtl,
    #[error("order is already paid")]
    AlreadyPaid,
    #[error("order cannot be paid in status {status}")]
    NotPayable { status: OrderStatus },
    #[error("order payment window has expired")]
    Expired,
    #[error("order cannot be refunded in status {status}")]
    NotRefundable { status: OrderStatus },
    #[error(
        "refund of {} fen exceeds the refundable {} fen",
        .requested.get(),
        .refundable.get()
    )]
    RefundExceedsRefundable { requested: Fen, refundable: Fen },
    #[error(
        "an order may have at most {} refunds that have not failed",
        MAX_REFUNDS
    )]
    TooManyRefunds,
    #[error("refund {out_refund_no} already exists with a different amount")]
    RefundConflict { out_refund_no: String },
    #[error("refund {out_refund_no} does not exist on this order")]
    UnknownRefund { out_refund_no: String },
    #[error("refund {out_refund_no} already has a final outcome")]
    RefundAlreadyFinal { out_refund_no: String },
    #[error("the order carries no card")]
    NoCard,
    #[error("the order's card is consumed only after payment")]
    CardNotDue,
}

impl OrderError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            OrderError::AlreadyExists => "order_exists",
            OrderError::NotFound => "order_not_found",
            OrderError::EmptyOrder => "empty_order",
            OrderError::TooManyLines => "too_many_lines",
            OrderError::InvalidQuantity { .. } => "invalid_quantity",
            OrderError::TotalTooLarge => "total_too_large",
            OrderError::InvalidPrice => "invalid_price",
            OrderError::InvalidAmount => "invalid_amount",
            OrderError::InvalidTtl => "invalid_ttl",
            OrderError::AlreadyPaid => "order_already_paid",
            OrderError::NotPayable { .. } => "order_not_payable",
            OrderError::Expired => "order_expired",
            OrderError::NotRefundable { .. } => "order_not_refundable",
            OrderError::RefundExceedsRefundable { .. } => "refund_exceeds_refundable",
            OrderError::TooManyRefunds => "too_many_refunds",
            OrderError::RefundConflict { .. } => "refund_conflict",
            OrderError::UnknownRefund { .. } => "unknown_refund",
            OrderError::RefundAlreadyFinal { .. } => "refund_already_final",
            OrderError::NoCard => "no_card",
            OrderError::CardNotDue => "card_not_due",
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            OrderError::EmptyOrder
            | OrderError::TooManyLines
            | OrderError::InvalidQuantity { .. }
            | OrderError::InvalidPrice
            | OrderError::InvalidAmount
            | OrderError::InvalidTtl => ErrorKind::Invalid,
            OrderError::NotFound | OrderError::UnknownRefund { .. } | OrderError::NoCard => {
                ErrorKind::NotFound
            }
            OrderError::AlreadyExists
            | OrderError::AlreadyPaid
            | OrderError::NotPayable { .. }
            | OrderError::Expired
            | OrderError::NotRefundable { .. }
            | OrderError::RefundConflict { .. }
            | OrderError::RefundAlreadyFinal { .. }
            | OrderError::CardNotDue => ErrorKind::Conflict,
            OrderError::TotalTooLarge
            | OrderError::RefundExceedsRefundable { .. }
            | OrderError::TooManyRefunds => ErrorKind::Rule,
        }
    }
}
