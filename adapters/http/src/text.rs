//! Free text from clients (names, notes, reasons, filters), checked before it goes anywhere near
//! the database. PostgreSQL's `text` and `jsonb` cannot hold U+0000 (a JSON `"\u0000"` arrives as
//! that character): such a statement fails with SQLSTATE 22021 / 22P05 instead of storing it. So
//! NUL, and every other control character (which no name, note or reason needs), is a 400 with
//! the field's own code, the same on both backends.

use paystream_engine::{ErrorCode, Kind};

use crate::error::{ApiError, ApiResult};

/// One kind of free-text input: what it is called in messages, its error code, its length limit.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TextField {
    pub name: &'static str,
    pub code: ErrorCode,
    /// In characters (not bytes): WeChat counts characters.
    pub max_chars: usize,
}

/// A product's name. WeChat Pay's `description` holds at most 127 characters and is built from
/// names.
pub(crate) const PRODUCT_NAME: TextField = TextField {
    name: "name",
    code: ErrorCode::InvalidName,
    max_chars: 127,
};

/// The customer's note on an order.
pub(crate) const ORDER_NOTE: TextField = TextField {
    name: "note",
    code: ErrorCode::InvalidNote,
    max_chars: 200,
};

/// A refund's reason: WeChat Pay's `reason` holds at most 80 characters.
pub(crate) const REFUND_REASON: TextField = TextField {
    name: "reason",
    code: ErrorCode::InvalidReason,
    max_chars: 80,
};

/// A staff account's username (the engine also caps it at 64 bytes, with the same code).
pub(crate) const STAFF_USERNAME: TextField = TextField {
    name: "username",
    code: ErrorCode::InvalidUsername,
    max_chars: 64,
};

/// Whether PostgreSQL can store `s` as text (and inside jsonb).
pub(crate) fn storable(s: &str) -> bool {
    !s.contains('\0')
}

/// No character that the database cannot store or that has no business in a name or a note.
pub(crate) fn clean(s: &str) -> bool {
    storable(s) && !s.chars().any(char::is_control)
}

impl TextField {
    fn invalid(&self) -> ApiError {
        ApiError::new(
            Kind::Invalid,
            self.code,
            format!(
                "{} must be 1-{} characters, without control characters",
                self.name, self.max_chars
            ),
        )
    }

    /// Required text, trimmed: blank, too long or not [`clean`] is a 400 with the field's code.
    pub(crate) fn required(&self, value: &str) -> ApiResult<String> {
        let value = value.trim();
        if value.is_empty() {
            return Err(self.invalid());
        }
        self.checked(value).map(str::to_string)
    }

    /// Optional text, trimmed; blank means absent.
    pub(crate) fn optional(&self, value: Option<&str>) -> ApiResult<Option<String>> {
        match value.map(str::trim).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(value) => self.checked(value).map(|v| Some(v.to_string())),
        }
    }

    fn checked<'a>(&self, value: &'a str) -> ApiResult<&'a str> {
        if value.chars().count() > self.max_chars || !clean(value) {
            return Err(self.invalid());
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(result: ApiResult<impl std::fmt::Debug>) -> ErrorCode {
        result.unwrap_err().0.code()
    }

    #[test]
    fn nul_and_control_characters_are_refused_with_the_fields_code() {
        assert_eq!(code(PRODUCT_NAME.required("Tea\0")), ErrorCode::InvalidName);
        assert_eq!(
            code(PRODUCT_NAME.required("T\u{0}ea")),
            ErrorCode::InvalidName
        );
        assert_eq!(
            code(PRODUCT_NAME.required("Tea\nCake")),
            ErrorCode::InvalidName
        );
        assert_eq!(
            code(PRODUCT_NAME.required("Tea\u{7f}")),
            ErrorCode::InvalidName
        );
        assert_eq!(
            code(PRODUCT_NAME.required("T\u{85}ea")),
            ErrorCode::InvalidName
        );
        assert_eq!(
            code(ORDER_NOTE.optional(Some("a\0b"))),
            ErrorCode::InvalidNote
        );
        assert_eq!(
            code(REFUND_REASON.optional(Some("\0"))),
            ErrorCode::InvalidReason
        );
        assert!(!storable("\0"));
        assert!(storable("名字 ☕"));
    }

    #[test]
    fn text_is_trimmed_and_limited_in_characters() {
        assert_eq!(PRODUCT_NAME.required("  绿茶 ").unwrap(), "绿茶");
        assert_eq!(code(PRODUCT_NAME.required("   ")), ErrorCode::InvalidName);
        assert!(PRODUCT_NAME.required(&"名".repeat(127)).is_ok());
        assert_eq!(
            code(PRODUCT_NAME.required(&"名".repeat(128))),
            ErrorCode::InvalidName
        );
        assert_eq!(ORDER_NOTE.optional(Some("  ")).unwrap(), None);
        assert_eq!(ORDER_NOTE.optional(None).unwrap(), None);
        assert_eq!(
            ORDER_NOTE.optional(Some(" no sugar ")).unwrap().as_deref(),
            Some("no sugar")
        );
        assert_eq!(
            code(REFUND_REASON.optional(Some(&"x".repeat(81)))),
            ErrorCode::InvalidReason
        );
    }
}
