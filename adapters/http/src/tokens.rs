//! Signed, expiring session tokens (JWT, HS256). The audience separates customer tokens from
//! staff tokens so that one can never be used as the other.

use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use paystream_engine::{ErrorCode, Kind};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;

pub const CUSTOMER: &str = "paystream-customer";
pub const STAFF: &str = "paystream-staff";

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Uuid,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    /// Staff tokens: the account's session version when issued (a password reset or a disable
    /// bumps it, ending older tokens). Absent, that is 0, elsewhere.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sv: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

pub struct Issued {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

impl Tokens {
    pub fn new(secret: &[u8]) -> Tokens {
        Tokens {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    pub fn issue(&self, subject: Uuid, audience: &str, ttl: Duration) -> Result<Issued, ApiError> {
        self.issue_session(subject, audience, 0, ttl)
    }

    /// A token that also carries the account's session version (claim `sv`).
    pub fn issue_session(
        &self,
        subject: Uuid,
        audience: &str,
        session_version: i64,
        ttl: Duration,
    ) -> Result<Issued, ApiError> {
        let now = Utc::now();
        let expires_at = now + ttl;
        let claims = Claims {
            sub: subject,
            aud: audience.to_string(),
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
            sv: session_version,
        };
        let token = encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| ApiError::new(Kind::Internal, ErrorCode::InternalError, e.to_string()))?;
        Ok(Issued { token, expires_at })
    }

    pub fn verify(&self, token: &str, audience: &str) -> Result<Claims, ApiError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[audience]);
        validation.leeway = 0;
        decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| {
                let code = match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => ErrorCode::TokenExpired,
                    _ => ErrorCode::InvalidToken,
                };
                ApiError::new(
                    Kind::Unauthenticated,
                    code,
                    "log in again: the token is expired or invalid",
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_check_audience_expiry_and_signature() {
        let tokens = Tokens::new(b"0123456789abcdef0123456789abcdef");
        let id = Uuid::new_v4();
        let issued = tokens.issue(id, CUSTOMER, Duration::hours(1)).unwrap();
        assert_eq!(tokens.verify(&issued.token, CUSTOMER).unwrap().sub, id);
        assert_eq!(
            tokens.verify(&issued.token, STAFF).unwrap_err().0.code(),
            ErrorCode::InvalidToken
        );

        let expired = tokens.issue(id, CUSTOMER, Duration::seconds(-10)).unwrap();
        assert_eq!(
            tokens
                .verify(&expired.token, CUSTOMER)
                .unwrap_err()
                .0
                .code(),
            ErrorCode::TokenExpired
        );

        let other = Tokens::new(b"another secret, another signature");
        assert_eq!(
            other.verify(&issued.token, CUSTOMER).unwrap_err().0.code(),
            ErrorCode::InvalidToken
        );

        let mut tampered = issued.token.clone();
        tampered.pop();
        assert!(tokens.verify(&tampered, CUSTOMER).is_err());
    }
}
