//! Why a command was rejected. `code()` is a public contract (clients switch on its string);
//! messages are for humans and may change.

use super::{
    OrderStatus, ReviewResolution, MAX_LINES, MAX_ORDER_TOTAL_FEN, MAX_QUANTITY, MAX_REFUNDS,
};
use crate::error_code::ErrorCode;
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
    #[error("the order has nothing in review to resolve")]
    NothingToReview,
    #[error("the order's review was already resolved as {resolution}")]
    ReviewAlreadyResolved { resolution: ReviewResolution },
    #[error("a resolution of {resolution} needs a note saying what was done")]
    ReviewNoteRequired { resolution: ReviewResolution },
    #[error("resolved as refunded, but the order has no refund that has not failed")]
    NothingRefunded,
}

impl OrderError {
    /// Stable machine-readable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            OrderError::AlreadyExists => ErrorCode::OrderExists,
            OrderError::NotFound => ErrorCode::OrderNotFound,
            OrderError::EmptyOrder => ErrorCode::EmptyOrder,
            OrderError::TooManyLines => ErrorCode::TooManyLines,
            OrderError::InvalidQuantity { .. } => ErrorCode::InvalidQuantity,
            OrderError::TotalTooLarge => ErrorCode::TotalTooLarge,
            OrderError::InvalidPrice => ErrorCode::InvalidPrice,
            OrderError::InvalidAmount => ErrorCode::InvalidAmount,
            OrderError::InvalidTtl => ErrorCode::InvalidTtl,
            OrderError::AlreadyPaid => ErrorCode::OrderAlreadyPaid,
            OrderError::NotPayable { .. } => ErrorCode::OrderNotPayable,
            OrderError::Expired => ErrorCode::OrderExpired,
            OrderError::NotRefundable { .. } => ErrorCode::OrderNotRefundable,
            OrderError::RefundExceedsRefundable { .. } => ErrorCode::RefundExceedsRefundable,
            OrderError::TooManyRefunds => ErrorCode::TooManyRefunds,
            OrderError::RefundConflict { .. } => ErrorCode::RefundConflict,
            OrderError::UnknownRefund { .. } => ErrorCode::UnknownRefund,
            OrderError::RefundAlreadyFinal { .. } => ErrorCode::RefundAlreadyFinal,
            OrderError::NoCard => ErrorCode::NoCard,
            OrderError::CardNotDue => ErrorCode::CardNotDue,
            OrderError::NothingToReview => ErrorCode::NothingToReview,
            OrderError::ReviewAlreadyResolved { .. } => ErrorCode::ReviewAlreadyResolved,
            OrderError::ReviewNoteRequired { .. } => ErrorCode::ReviewNoteRequired,
            OrderError::NothingRefunded => ErrorCode::NothingRefunded,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            OrderError::EmptyOrder
            | OrderError::TooManyLines
            | OrderError::InvalidQuantity { .. }
            | OrderError::InvalidPrice
            | OrderError::InvalidAmount
            | OrderError::InvalidTtl
            | OrderError::ReviewNoteRequired { .. } => ErrorKind::Invalid,
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
            | OrderError::CardNotDue
            | OrderError::NothingToReview
            | OrderError::ReviewAlreadyResolved { .. } => ErrorKind::Conflict,
            OrderError::TotalTooLarge
            | OrderError::RefundExceedsRefundable { .. }
            | OrderError::TooManyRefunds
            | OrderError::NothingRefunded => ErrorKind::Rule,
        }
    }
}
