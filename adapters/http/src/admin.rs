//! The back-office API (contract.md, "Back-office API"). Support staff read; admins also write.

use std::sync::LazyLock;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Days, NaiveDate, Utc};
use paystream_engine::catalogue::ProductInput;
use paystream_engine::money::Fen;
use paystream_engine::orders::Metadata;
use paystream_engine::{ErrorCode, Kind};
use paystream_projections::{OrderFilter, OrderView};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;

use crate::auth::StaffMember;
use crate::customer::{parse_order_id, parse_status};
use crate::error::{ApiError, ApiResult, RetryLater};
use crate::extract::{empty_as_none, ApiJson, ApiQuery, ClientIp, RequestId};
use crate::text::{PRODUCT_NAME, REFUND_REASON};
use crate::throttle::{client_key, username_key};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/", get(ui))
        .route("/admin/login", post(login))
        .route("/admin/products", get(list_products).post(create_product))
        .route("/admin/products/{sku}", put(put_product))
        .route("/admin/orders", get(search_orders))
        .route("/admin/orders/{id}", get(get_order))
        .route("/admin/orders/{id}/events", get(order_events))
        .route("/admin/orders/{id}/refunds", post(refund_order))
}

const ADMIN_HTML: &str = include_str!("admin.html");

/// The page's Content-Security-Policy: nothing but its own inline script and style (allowed by
/// their SHA-256, computed from the page itself so an edit cannot leave a stale hash) and
/// `fetch` to this origin; no framing, no plugins, no `<base>`, forms post here only.
static ADMIN_CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    let script = inline_hashes(ADMIN_HTML, "script");
    let style = inline_hashes(ADMIN_HTML, "style");
    let policy = format!(
        "default-src 'none'; script-src {script}; style-src {style}; connect-src 'self'; \
         img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    );
    HeaderValue::from_str(&policy).expect("a CSP is ASCII")
});

/// The CSP sources (`'sha256-…'`) of every inline `<tag>…</tag>` in `html`, space-separated.
fn inline_hashes(html: &str, tag: &str) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut sources = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find(&open) {
        let body = &rest[start + open.len()..];
        let Some(end) = body.find(&close) else { break };
        let digest = Sha256::digest(&body.as_bytes()[..end]);
        sources.push(format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest)
        ));
        rest = &body[end + close.len()..];
    }
    if sources.is_empty() {
        "'none'".to_string()
    } else {
        sources.join(" ")
    }
}

/// The back-office page, with the headers that keep it from being framed, sniffed, or leaking
/// its URL, and a CSP that lets it run only its own code.
async fn ui() -> impl IntoResponse {
    (
        [
            (header::CONTENT_SECURITY_POLICY, ADMIN_CSP.clone()),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Html(ADMIN_HTML),
    )
}

#[derive(Deserialize)]
struct LoginRequest {
    username: String,
    password: SecretString,
}

const LOCKED_OUT: &str = "too many failed logins; try again after the time in Retry-After";

/// Staff login, throttled (`throttle.rs`): after 5 failures for one username, or 20 from one
/// client address, every attempt for it (whatever the password, and whether or not the username
/// exists) answers 429 `too_many_attempts` with `Retry-After` until the lockout ends; lockouts
/// double while failures go on, and a successful login clears its username's count. Refused
/// attempts check no password (and cost no hashing). Failures are logged at WARN.
async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<LoginRequest>,
) -> axum::response::Result<impl IntoResponse> {
    let throttles = &state.throttles;
    let (username, address) = (username_key(&req.username), client_key(ip));
    let now = Instant::now();
    let locked = [
        throttles.staff_by_username.locked(&username, now),
        throttles.staff_by_address.locked(&address, now),
    ];
    if let Some(wait) = locked.into_iter().flatten().max() {
        tracing::warn!(username = ?username, client = %ip, retry_after_s = wait.as_secs(), "staff login refused: locked out");
        return Err(RetryLater {
            code: ErrorCode::TooManyAttempts,
            message: LOCKED_OUT,
            after: wait,
        }
        .into());
    }
    let staff = match state
        .accounts
        .verify_staff(&req.username, req.password)
        .await
    {
        Ok(staff) => staff,
        Err(e) if e.code() == ErrorCode::InvalidCredentials => {
            let by_name = throttles.staff_by_username.fail(username.clone(), now);
            let by_address = throttles.staff_by_address.fail(address, now);
            tracing::warn!(username = ?username, client = %ip, "staff login failed: wrong username or password");
            if let Some(lockout) = by_name.max(by_address) {
                tracing::warn!(username = ?username, client = %ip, lockout_s = lockout.as_secs(), by_username = by_name.is_some(), by_address = by_address.is_some(), "staff login locked out");
            }
            return Err(ApiError(e).into());
        }
        Err(e) => return Err(ApiError(e).into()),
    };
    throttles.staff_by_username.forgive(&username);
    let issued = state.tokens.issue_session(
        staff.id,
        crate::tokens::STAFF,
        staff.session_version,
        state.staff_session_ttl,
    )?;
    tracing::info!(staff_id = %staff.id, role = staff.role.as_str(), "staff logged in");
    Ok(Json(json!({
        "token": issued.token,
        "expires_at": issued.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "role": staff.role,
    })))
}

async fn list_products(
    State(state): State<AppState>,
    _staff: StaffMember,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(json!({ "items": state.catalogue.list(false).await? })))
}

async fn create_product(
    State(state): State<AppState>,
    staff: StaffMember,
    ApiJson(input): ApiJson<ProductInput>,
) -> ApiResult<impl IntoResponse> {
    staff.require_admin()?;
    PRODUCT_NAME.required(&input.name)?;
    let product = state.catalogue.create(input).await?;
    tracing::info!(sku = %product.sku, staff_id = %staff.0.id, "product created");
    Ok((StatusCode::CREATED, Json(product)))
}

async fn put_product(
    State(state): State<AppState>,
    staff: StaffMember,
    Path(sku): Path<String>,
    ApiJson(input): ApiJson<ProductInput>,
) -> ApiResult<impl IntoResponse> {
    staff.require_admin()?;
    PRODUCT_NAME.required(&input.name)?;
    let product = state.catalogue.put(&sku, input).await?;
    tracing::info!(sku = %product.sku, staff_id = %staff.0.id, "product saved");
    Ok(Json(product))
}

#[derive(Deserialize)]
struct SearchQuery {
    status: Option<String>,
    openid: Option<String>,
    out_trade_no: Option<String>,
    transaction_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    #[serde(default, deserialize_with = "empty_as_none")]
    page: Option<u32>,
    #[serde(default, deserialize_with = "empty_as_none")]
    per_page: Option<u32>,
}

/// An RFC 3339 instant, or a date meaning that day in Beijing time; `end` makes a date inclusive
/// (the bound becomes the start of the next day).
fn parse_bound(value: Option<&str>, name: &str, end: bool) -> ApiResult<Option<DateTime<Utc>>> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if let Ok(at) = DateTime::parse_from_rfc3339(value) {
        return Ok(Some(at.with_timezone(&Utc)));
    }
    let date = NaiveDate::parse_from_str(value, "%Y-%m-%d").map_err(|_| {
        ApiError::new(
            Kind::Invalid,
            ErrorCode::InvalidQuery,
            format!("{name} must be YYYY-MM-DD or an RFC 3339 time"),
        )
    })?;
    let date = if end {
        date.checked_add_days(Days::new(1)).unwrap_or(date)
    } else {
        date
    };
    let start = date
        .and_hms_opt(0, 0, 0)
        .and_then(|t| {
            t.and_local_timezone(paystream_engine::beijing::OFFSET)
                .single()
        })
        .map(|t| t.with_timezone(&Utc));
    Ok(start)
}

/// A text filter: blank means no filter; control characters (which PostgreSQL text cannot hold)
/// are bad input.
fn text_filter(v: Option<String>, name: &str) -> ApiResult<Option<String>> {
    let v = v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    if v.as_ref()
        .is_some_and(|s| s.len() > 128 || !crate::text::clean(s))
    {
        return Err(ApiError::new(
            Kind::Invalid,
            ErrorCode::InvalidQuery,
            format!("{name} is not a valid value"),
        ));
    }
    Ok(v)
}

/// The filters of an order search as the query string has them (`/admin/orders`, and its CSV).
pub(crate) struct OrderFilterQuery {
    pub status: Option<String>,
    pub openid: Option<String>,
    pub out_trade_no: Option<String>,
    pub transaction_id: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// The search those filters ask for; bad values are a 400 `invalid_query` naming the field.
pub(crate) fn order_filter(q: OrderFilterQuery) -> ApiResult<OrderFilter> {
    Ok(OrderFilter {
        user_id: None,
        status: parse_status(q.status.as_deref())?,
        openid: text_filter(q.openid, "openid")?,
        out_trade_no: text_filter(q.out_trade_no, "out_trade_no")?,
        transaction_id: text_filter(q.transaction_id, "transaction_id")?,
        from: parse_bound(q.from.as_deref(), "from", false)?,
        to: parse_bound(q.to.as_deref(), "to", true)?,
    })
}

async fn search_orders(
    State(state): State<AppState>,
    _staff: StaffMember,
    ApiQuery(q): ApiQuery<SearchQuery>,
) -> ApiResult<impl IntoResponse> {
    let filter = order_filter(OrderFilterQuery {
        status: q.status,
        openid: q.openid,
        out_trade_no: q.out_trade_no,
        transaction_id: q.transaction_id,
        from: q.from,
        to: q.to,
    })?;
    let page = state
        .orders_view
        .search(&filter, q.page.unwrap_or(1), q.per_page.unwrap_or(20))
        .await?;
    Ok(Json(page))
}

async fn get_order(
    State(state): State<AppState>,
    _staff: StaffMember,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let order = state.orders.get(parse_order_id(&id)?).await?;
    let mut body = serde_json::to_value(OrderView::from(&order))
        .map_err(|e| ApiError::new(Kind::Internal, ErrorCode::InternalError, e.to_string()))?;
    body["user_id"] = json!(order.user_id);
    body["openid"] = json!(order.openid);
    body["payments"] = json!(order.payments);
    body["refunds"] = json!(order.refunds);
    body["refundable_fen"] = json!(order.refundable_fen());
    if let Some(reason) = order.close_reason {
        body["close_reason"] = json!(reason);
    }
    Ok(Json(body))
}

async fn order_events(
    State(state): State<AppState>,
    _staff: StaffMember,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let id = parse_order_id(&id)?;
    let events = state.orders.history(id).await?;
    if events.is_empty() {
        return Err(crate::customer::order_not_found());
    }
    let items: Vec<_> = events
        .iter()
        .map(|e| {
            json!({
                "event_id": e.event_id,
                "version": e.version,
                "type": e.event_type,
                "recorded_at": e.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "data": e.data,
                "metadata": e.metadata,
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefundRequest {
    amount_fen: i64,
    #[serde(default)]
    reason: Option<String>,
}

/// 202: the refund is recorded and asked for; its outcome arrives by notice or query.
async fn refund_order(
    State(state): State<AppState>,
    staff: StaffMember,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    ApiJson(req): ApiJson<RefundRequest>,
) -> ApiResult<impl IntoResponse> {
    staff.require_admin()?;
    let order_id = parse_order_id(&id)?;
    let amount = Fen::new(req.amount_fen)
        .filter(|a| a.get() > 0)
        .ok_or_else(|| {
            ApiError::new(
                Kind::Invalid,
                ErrorCode::InvalidAmount,
                "amount_fen must be a positive number of fen",
            )
        })?;
    let reason = REFUND_REASON.optional(req.reason.as_deref())?;
    let key = crate::customer::idempotency_key(&headers)?;
    let meta = Metadata::actor(format!("staff:{}", staff.0.id)).with_request_id(request_id);
    let refund = state
        .payments
        .refund(order_id, amount, reason, key.as_deref(), &meta)
        .await?;
    tracing::info!(order_id = %order_id, out_refund_no = %refund.out_refund_no, amount_fen = refund.amount_fen.get(), "refund requested");
    Ok((
        StatusCode::ACCEPTED,
        Json(
            json!({ "out_refund_no": refund.out_refund_no, "amount_fen": refund.amount_fen, "status": refund.status }),
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CSP allows the page's inline code by hash only, so the page must keep all of its code
    /// in its one `<script>` and `<style>`: an inline handler (`onclick="…"`), a `style="…"`
    /// attribute, a `javascript:` URL or anything loaded from elsewhere would be blocked.
    #[test]
    fn the_page_runs_only_code_its_csp_allows() {
        let csp = ADMIN_CSP.to_str().unwrap();
        assert!(!csp.contains("unsafe"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert_eq!(ADMIN_HTML.matches("<script").count(), 1);
        assert_eq!(ADMIN_HTML.matches("<style").count(), 1);
        let script = inline_hashes(ADMIN_HTML, "script");
        let style = inline_hashes(ADMIN_HTML, "style");
        assert!(script.starts_with("'sha256-") && !script.contains(' '));
        assert!(csp.contains(&format!("script-src {script};")), "{csp}");
        assert!(csp.contains(&format!("style-src {style};")), "{csp}");

        let start = ADMIN_HTML.find("<script>").unwrap();
        let end = ADMIN_HTML.find("</script>").unwrap();
        let markup = format!("{}{}", &ADMIN_HTML[..start], &ADMIN_HTML[end..]).to_lowercase();
        for attribute in [
            " onclick=",
            " onsubmit=",
            " onload=",
            " onerror=",
            " oninput=",
        ] {
            assert!(!markup.contains(attribute), "inline handler {attribute}");
        }
        for forbidden in [
            " style=",
            "javascript:",
            " src=",
            "<link",
            "<iframe",
            "<img",
        ] {
            assert!(!markup.contains(forbidden), "{forbidden} in the page");
        }
    }

    #[test]
    fn inline_hashes_hash_each_element_body() {
        use base64::Engine;
        use sha2::{Digest, Sha256};
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(Sha256::digest(s));
        let html = "<script>a()</script><p></p><script>\nb()\n</script>";
        assert_eq!(
            inline_hashes(html, "script"),
            format!("'sha256-{}' 'sha256-{}'", b64("a()"), b64("\nb()\n"))
        );
        assert_eq!(inline_hashes(html, "style"), "'none'");
        // The well-known hash of an empty script.
        assert_eq!(
            inline_hashes("<script></script>", "script"),
            "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='"
        );
    }
}
