//! Who is calling: mini-program customers (identified by WeChat) and back-office staff.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;
use std::sync::Arc;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::db::{from_millis, millis, Db};
use crate::error::{Error, ErrorCode, Kind, Result};

/// What `code2Session` gives for a `wx.login` code.
#[derive(Debug)]
pub struct WechatSession {
    pub openid: String,
    pub unionid: Option<String>,
    /// Decrypts the user's encrypted data; must never leave the server.
    pub session_key: SecretString,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PhoneNumber {
    pub phone: String,
    pub country_code: String,
}

/// Failures of the mini-program server API, by what the caller should do about them.
#[derive(Debug, thiserror::Error)]
pub enum WechatError {
    #[error("the code is invalid or already used (errcode {errcode})")]
    InvalidCode { errcode: i64 },
    #[error("WeChat rate limit reached")]
    RateLimited,
    #[error("WeChat refused the user (errcode {errcode}: {errmsg})")]
    Refused { errcode: i64, errmsg: String },
    #[error("WeChat is unavailable: {0}")]
    Unavailable(String),
}

impl From<WechatError> for Error {
    fn from(e: WechatError) -> Error {
        let message = e.to_string();
        match e {
            WechatError::InvalidCode { .. } => {
                Error::new(Kind::Unauthenticated, ErrorCode::InvalidCode, message)
            }
            WechatError::RateLimited => {
                Error::new(Kind::RateLimited, ErrorCode::WechatRateLimited, message)
            }
            WechatError::Refused { .. } => {
                Error::new(Kind::Forbidden, ErrorCode::WechatRefused, message)
            }
            WechatError::Unavailable(_) => {
                Error::new(Kind::Unavailable, ErrorCode::WechatUnavailable, message)
            }
        }
    }
}

/// The mini-program server API as the engine needs it. The real client and the simulator both
/// speak HTTP to an implementation of this (see `adapters/wechat`).
#[async_trait]
pub trait MiniProgram: Send + Sync {
    fn appid(&self) -> &str;
    async fn code_to_session(&self, code: &str) -> Result<WechatSession, WechatError>;
    async fn phone_number(&self, code: &str) -> Result<PhoneNumber, WechatError>;
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: Uuid,
    pub openid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unionid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including catalogue changes and refunds.
    Admin,
    /// Read-only: search orders, read histories and reports.
    Support,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Support => "support",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "support" => Some(Role::Support),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Staff {
    pub id: Uuid,
    pub username: String,
    pub role: Role,
    /// A disabled account cannot log in and its tokens are refused.
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    /// Staff tokens carry the value they were issued under; a password reset or a disable bumps
    /// it, which ends every older session. Never shown.
    #[serde(skip)]
    pub session_version: i64,
}

/// The columns [`decode_staff`] reads.
const STAFF_COLUMNS: &str =
    "id, username, password_hash, role, disabled, created_at, session_version";

fn parse_uuid(s: &str) -> Result<Uuid> {
    Uuid::parse_str(s)
        .map_err(|e| Error::new(Kind::Internal, ErrorCode::InternalError, e.to_string()))
}

fn decode_staff(row: &AnyRow) -> Result<(Staff, String)> {
    let id: String = row.try_get("id")?;
    let role: String = row.try_get("role")?;
    Ok((
        Staff {
            id: parse_uuid(&id)?,
            username: row.try_get("username")?,
            role: Role::parse(&role).unwrap_or(Role::Support),
            disabled: row.try_get::<i64, _>("disabled")? != 0,
            created_at: from_millis(row.try_get("created_at")?),
            session_version: row.try_get("session_version")?,
        },
        row.try_get("password_hash")?,
    ))
}

async fn hash_password(password: SecretString) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.expose_secret().as_bytes(), &salt)
            .map(|h| h.to_string())
    })
    .await
    .map_err(|e| Error::new(Kind::Internal, ErrorCode::InternalError, e.to_string()))?
    .map_err(|e| Error::new(Kind::Internal, ErrorCode::InternalError, e.to_string()))
}

async fn password_matches(password: SecretString, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.expose_secret().as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

/// A staff password: at least 8 characters.
fn check_password(password: &SecretString) -> Result<()> {
    if password.expose_secret().chars().count() < 8 {
        return Err(Error::invalid(
            ErrorCode::WeakPassword,
            "a staff password needs at least 8 characters",
        ));
    }
    Ok(())
}

fn staff_not_found(username: &str) -> Error {
    Error::not_found(
        ErrorCode::StaffNotFound,
        format!("no staff account {username}"),
    )
}

/// A hash of a random password, checked when the username is unknown so that a wrong username
/// takes as long as a wrong password.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Ifn8VnXkqUQdFZZ3iMPN8yWAgZUGmkR7uO0LmwH2LzA";

#[derive(Clone)]
pub struct Accounts {
    db: Db,
    /// Each password check costs ~19 MiB and a core for tens of milliseconds; unbounded, a
    /// stream of login attempts would exhaust the machine. Beyond this many at once: 429.
    hashing: Arc<Semaphore>,
}

impl Accounts {
    pub fn new(db: Db) -> Accounts {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Accounts {
            db,
            hashing: Arc::new(Semaphore::new(cores * 2)),
        }
    }

    fn hashing_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        self.hashing.clone().try_acquire_owned().map_err(|_| {
            Error::new(
                Kind::RateLimited,
                ErrorCode::RateLimited,
                "too many login attempts at once; try again shortly",
            )
        })
    }

    /// Finds or creates the user behind a WeChat session. Users are keyed by (appid, openid) and
    /// merged by unionid: the same person arriving through another mini-program of the same
    /// WeChat Open account is the same user.
    pub async fn login_wechat(&self, appid: &str, session: &WechatSession) -> Result<User> {
        match self.try_login_wechat(appid, session).await {
            // Two first logins of one new user raced to create it: the loser now finds it.
            Err(Error::Store(crate::store::StoreError::Database(sqlx::Error::Database(e))))
                if e.is_unique_violation() =>
            {
                self.try_login_wechat(appid, session).await
            }
            other => other,
        }
    }

    async fn try_login_wechat(&self, appid: &str, session: &WechatSession) -> Result<User> {
        let now = millis(Utc::now());
        let mut tx = self.db.begin_write().await?;
        let known: Option<String> = sqlx::query_scalar(
            "SELECT user_id FROM wechat_identities WHERE appid = $1 AND openid = $2",
        )
        .bind(appid)
        .bind(&session.openid)
        .fetch_optional(&mut *tx)
        .await?;
        let user_id = match known {
            Some(user_id) => user_id,
            None => {
                let by_union: Option<String> = match &session.unionid {
                    Some(unionid) => {
                        sqlx::query_scalar("SELECT id FROM users WHERE unionid = $1")
                            .bind(unionid)
                            .fetch_optional(&mut *tx)
                            .await?
                    }
                    None => None,
                };
                let user_id = match by_union {
                    Some(id) => id,
                    None => {
                        let id = Uuid::now_v7().to_string();
                        sqlx::query(
                            "INSERT INTO users (id, unionid, created_at, updated_at) \
                             VALUES ($1, $2, $3, $3)",
                        )
                        .bind(&id)
                        .bind(session.unionid.clone())
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                        id
                    }
                };
                sqlx::query(
                    "INSERT INTO wechat_identities (appid, openid, user_id, updated_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(appid)
                .bind(&session.openid)
                .bind(&user_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                user_id
            }
        };
        sqlx::query(
            "UPDATE wechat_identities SET session_key = $1, updated_at = $2 \
             WHERE appid = $3 AND openid = $4",
        )
        .bind(session.session_key.expose_secret())
        .bind(now)
        .bind(appid)
        .bind(&session.openid)
        .execute(&mut *tx)
        .await?;
        if let Some(unionid) = &session.unionid {
            // A user first seen without unionid learns it now, unless another user holds it.
            sqlx::query(
                "UPDATE users SET unionid = $1, updated_at = $2 WHERE id = $3 AND unionid IS NULL \
                 AND NOT EXISTS (SELECT 1 FROM users WHERE unionid = $1)",
            )
            .bind(unionid)
            .bind(now)
            .bind(&user_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.user(appid, parse_uuid(&user_id)?)
            .await?
            .ok_or_else(|| Error::new(Kind::Internal, ErrorCode::InternalError, "user vanished"))
    }

    /// The user as seen from one mini-program (its openid there).
    pub async fn user(&self, appid: &str, id: Uuid) -> Result<Option<User>> {
        let row = sqlx::query(
            "SELECT u.id, u.unionid, u.phone, w.openid FROM users u \
             JOIN wechat_identities w ON w.user_id = u.id AND w.appid = $1 \
             WHERE u.id = $2 ORDER BY w.updated_at DESC LIMIT 1",
        )
        .bind(appid)
        .bind(id.to_string())
        .fetch_optional(&self.db.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let id: String = row.try_get("id")?;
        Ok(Some(User {
            id: parse_uuid(&id)?,
            openid: row.try_get("openid")?,
            unionid: row.try_get("unionid")?,
            phone: row.try_get("phone")?,
        }))
    }

    pub async fn set_phone(&self, user_id: Uuid, phone: &PhoneNumber) -> Result<()> {
        sqlx::query(
            "UPDATE users SET phone = $1, country_code = $2, updated_at = $3 WHERE id = $4",
        )
        .bind(&phone.phone)
        .bind(&phone.country_code)
        .bind(millis(Utc::now()))
        .bind(user_id.to_string())
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    pub async fn create_staff(
        &self,
        username: &str,
        password: SecretString,
        role: Role,
    ) -> Result<Staff> {
        let username = username.trim();
        if username.is_empty() || username.len() > 64 || username.chars().any(char::is_control) {
            return Err(Error::invalid(
                ErrorCode::InvalidUsername,
                "username must be 1-64 characters",
            ));
        }
        check_password(&password)?;
        let _permit = self.hashing_permit()?;
        let hash = hash_password(password).await?;
        let now = Utc::now();
        let staff = Staff {
            id: Uuid::now_v7(),
            username: username.to_string(),
            role,
            disabled: false,
            created_at: from_millis(millis(now)),
            session_version: 0,
        };
        let inserted = sqlx::query(
            "INSERT INTO staff (id, username, password_hash, role, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (username) DO NOTHING",
        )
        .bind(staff.id.to_string())
        .bind(&staff.username)
        .bind(hash)
        .bind(role.as_str())
        .bind(millis(now))
        .execute(&self.db.pool)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(Error::new(
                Kind::Conflict,
                ErrorCode::StaffExists,
                format!("staff account {username} already exists"),
            ));
        }
        Ok(staff)
    }

    /// Creates the bootstrap admin unless an account of that name exists (its password is then
    /// left alone: start-up must not reset what an admin changed).
    pub async fn ensure_admin(&self, username: &str, password: SecretString) -> Result<bool> {
        match self.create_staff(username, password, Role::Admin).await {
            Ok(_) => Ok(true),
            Err(e) if e.code() == ErrorCode::StaffExists => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn verify_staff(&self, username: &str, password: SecretString) -> Result<Staff> {
        let invalid = || {
            Error::new(
                Kind::Unauthenticated,
                ErrorCode::InvalidCredentials,
                "wrong username or password",
            )
        };
        if username.chars().any(char::is_control) {
            return Err(invalid());
        }
        let _permit = self.hashing_permit()?;
        let row = sqlx::query(&format!(
            "SELECT {STAFF_COLUMNS} FROM staff WHERE username = $1"
        ))
        .bind(username.trim())
        .fetch_optional(&self.db.pool)
        .await?;
        let found = row.as_ref().map(decode_staff).transpose()?;
        let hash = found
            .as_ref()
            .map(|(_, h)| h.clone())
            .unwrap_or_else(|| DUMMY_HASH.to_string());
        let matches = password_matches(password, hash).await;
        // A disabled account is refused exactly like a wrong password (after the same work).
        match found {
            Some((staff, _)) if matches && !staff.disabled => Ok(staff),
            _ => Err(invalid()),
        }
    }

    pub async fn staff(&self, id: Uuid) -> Result<Option<Staff>> {
        let row = sqlx::query(&format!("SELECT {STAFF_COLUMNS} FROM staff WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.db.pool)
            .await?;
        Ok(row.as_ref().map(decode_staff).transpose()?.map(|(s, _)| s))
    }

    pub async fn staff_by_username(&self, username: &str) -> Result<Option<Staff>> {
        let row = sqlx::query(&format!(
            "SELECT {STAFF_COLUMNS} FROM staff WHERE username = $1"
        ))
        .bind(username)
        .fetch_optional(&self.db.pool)
        .await?;
        Ok(row.as_ref().map(decode_staff).transpose()?.map(|(s, _)| s))
    }

    /// How many staff accounts exist, disabled ones included (start-up says how to create the
    /// first one when there is none).
    pub async fn staff_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM staff")
            .fetch_one(&self.db.pool)
            .await?)
    }

    /// Every staff account, oldest first.
    pub async fn list_staff(&self) -> Result<Vec<Staff>> {
        let rows = sqlx::query(&format!(
            "SELECT {STAFF_COLUMNS} FROM staff ORDER BY created_at, username"
        ))
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|row| decode_staff(row).map(|(s, _)| s))
            .collect()
    }

    /// Sets a new password and ends every session of the account.
    pub async fn reset_staff_password(
        &self,
        username: &str,
        password: SecretString,
    ) -> Result<Staff> {
        check_password(&password)?;
        if self.staff_by_username(username).await?.is_none() {
            return Err(staff_not_found(username));
        }
        let _permit = self.hashing_permit()?;
        let hash = hash_password(password).await?;
        let updated = sqlx::query(
            "UPDATE staff SET password_hash = $1, session_version = session_version + 1 \
             WHERE username = $2",
        )
        .bind(hash)
        .bind(username)
        .execute(&self.db.pool)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(staff_not_found(username));
        }
        self.staff_by_username(username)
            .await?
            .ok_or_else(|| staff_not_found(username))
    }

    /// Disables an account (ending its sessions) or enables it again; `actor` is the admin
    /// doing it. Nobody disables their own account, and the last enabled admin stays enabled.
    /// Disabling a disabled account (or enabling an enabled one) changes nothing.
    pub async fn set_staff_disabled(
        &self,
        actor: Uuid,
        username: &str,
        disabled: bool,
    ) -> Result<Staff> {
        let mut tx = self.db.begin_write().await?;
        if disabled {
            // Serialises every change that could leave no enabled admin: on PostgreSQL this
            // locks the admin rows until commit (SQLite's BEGIN IMMEDIATE already serialises).
            // Two admins disabling each other at once: the second finds no other admin.
            sqlx::query("UPDATE staff SET role = role WHERE role = 'admin'")
                .execute(&mut *tx)
                .await?;
        }
        let row = sqlx::query(&format!(
            "SELECT {STAFF_COLUMNS} FROM staff WHERE username = $1"
        ))
        .bind(username)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((target, _)) = row.as_ref().map(decode_staff).transpose()? else {
            return Err(staff_not_found(username));
        };
        if target.disabled == disabled {
            return Ok(target);
        }
        if disabled {
            if target.id == actor {
                return Err(Error::new(
                    Kind::Conflict,
                    ErrorCode::CannotDisableSelf,
                    "an admin cannot disable their own account",
                ));
            }
            if target.role == Role::Admin {
                let others: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM staff WHERE role = 'admin' AND disabled = 0 AND id <> $1",
                )
                .bind(target.id.to_string())
                .fetch_one(&mut *tx)
                .await?;
                if others == 0 {
                    return Err(Error::new(
                        Kind::Conflict,
                        ErrorCode::LastAdmin,
                        format!("{username} is the last enabled admin"),
                    ));
                }
            }
            sqlx::query(
                "UPDATE staff SET disabled = 1, session_version = session_version + 1 \
                 WHERE id = $1",
            )
            .bind(target.id.to_string())
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query("UPDATE staff SET disabled = 0 WHERE id = $1")
                .bind(target.id.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        let session_version = target.session_version + i64::from(disabled);
        Ok(Staff {
            disabled,
            session_version,
            ..target
        })
    }

    /// The key that signs session tokens: shared by every engine on this database and kept across
    /// restarts, generated on first use.
    pub async fn token_secret(&self) -> Result<SecretString> {
        let mut bytes = [0_u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ('token_secret', $1) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(hex::encode(bytes))
        .execute(&self.db.pool)
        .await?;
        let secret: String =
            sqlx::query_scalar("SELECT value FROM settings WHERE name = 'token_secret'")
                .fetch_one(&self.db.pool)
                .await?;
        Ok(SecretString::from(secret))
    }
}
