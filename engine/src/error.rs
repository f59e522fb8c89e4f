//! The application layer's error: what a command or query on the engine can fail with.
//! Every variant carries a stable [`ErrorCode`]; the HTTP adapter maps kinds to statuses in one
//! place and never shows the text of an internal error.

pub use crate::error_code::ErrorCode;
use crate::order::{ErrorKind as OrderErrorKind, OrderError};
use crate::store::StoreError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Malformed or out-of-range input (400).
    Invalid,
    /// Missing credentials or a bad/expired token (401).
    Unauthenticated,
    /// Authenticated but not allowed (403).
    Forbidden,
    /// Unknown, or not the caller's (404).
    NotFound,
    /// The state does not allow it now (409).
    Conflict,
    /// Well-formed but violates a business rule (422).
    Rule,
    /// Too many requests, here or upstream (429).
    RateLimited,
    /// A dependency (WeChat, the database) is unreachable or failing (503).
    Unavailable,
    /// A dependency answered, but refused or said something we cannot use (502).
    Upstream,
    /// A bug or corrupt data (500).
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Order(#[from] OrderError),
    #[error("{message}")]
    Rejected {
        kind: Kind,
        code: ErrorCode,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Error {
    pub fn new(kind: Kind, code: ErrorCode, message: impl Into<String>) -> Error {
        Error::Rejected {
            kind,
            code,
            message: message.into(),
        }
    }

    pub fn invalid(code: ErrorCode, message: impl Into<String>) -> Error {
        Error::new(Kind::Invalid, code, message)
    }

    pub fn not_found(code: ErrorCode, message: impl Into<String>) -> Error {
        Error::new(Kind::NotFound, code, message)
    }

    /// Something of ours is broken (stored data unreadable, say): not the caller's doing.
    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(Kind::Internal, ErrorCode::InternalError, message)
    }

    pub fn kind(&self) -> Kind {
        match self {
            Error::Order(e) => match e.kind() {
                OrderErrorKind::Invalid => Kind::Invalid,
                OrderErrorKind::NotFound => Kind::NotFound,
                OrderErrorKind::Conflict => Kind::Conflict,
                OrderErrorKind::Rule => Kind::Rule,
            },
            Error::Rejected { kind, .. } => *kind,
            Error::Store(StoreError::Conflict { .. }) => Kind::Conflict,
            Error::Store(e) if e.is_unavailable() => Kind::Unavailable,
            Error::Store(_) => Kind::Internal,
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Order(e) => e.code(),
            Error::Rejected { code, .. } => *code,
            Error::Store(StoreError::Conflict { .. }) => ErrorCode::ConcurrentUpdate,
            Error::Store(e) if e.is_unavailable() => ErrorCode::DatabaseUnavailable,
            Error::Store(_) => ErrorCode::InternalError,
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Error {
        Error::Store(StoreError::Database(e))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
