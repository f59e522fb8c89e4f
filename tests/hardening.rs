//! Hardening found by an outside attack run (issue 11): login throttling, text the database
//! cannot store, no database text in answers, and the back-office page's security headers.

mod common;

use std::time::Duration;

use common::{assert_error, spawn_app, spawn_app_with, TestApp, ADMIN};
use paystream_engine::db::Backend;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The first staff lockout in these tests: long enough for a burst of requests to land inside
/// it on a busy machine, short enough to wait out.
const LOCKOUT_SECONDS: u32 = 3;

async fn spawn_with_short_lockout() -> TestApp {
    spawn_app_with(Backend::Postgres, |s| {
        s.admin_login_lockout_seconds = LOCKOUT_SECONDS
    })
    .await
}

/// A POST that also returns the answer's headers, optionally from a given client address
/// (`X-Forwarded-For`, as a proxy in front would set it).
async fn post_from(
    app: &TestApp,
    path: &str,
    client: Option<&str>,
    body: Value,
) -> (StatusCode, HeaderMap, Value) {
    let mut request = app.http.post(app.url(path)).json(&body);
    if let Some(client) = client {
        request = request.header("x-forwarded-for", client);
    }
    let response = request.send().await.expect("request");
    let headers = response.headers().clone();
    let (status, body) = common::read(response).await;
    (status, headers, body)
}

async fn staff_login(
    app: &TestApp,
    client: Option<&str>,
    username: &str,
    password: &str,
) -> (StatusCode, HeaderMap, Value) {
    post_from(
        app,
        "/admin/login",
        client,
        json!({ "username": username, "password": password }),
    )
    .await
}

fn retry_after(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().expect("Retry-After in seconds"))
}

/// A throttled answer: 429 `code` in the contract's shape, with a `Retry-After` no longer than
/// `max_seconds`. Returns the Retry-After.
fn assert_throttled(
    (status, headers, body): &(StatusCode, HeaderMap, Value),
    code: &str,
    max_seconds: u64,
) -> u64 {
    assert_error(*status, body, StatusCode::TOO_MANY_REQUESTS, code);
    let seconds = retry_after(headers).unwrap_or_else(|| panic!("no Retry-After: {body}"));
    assert!(
        (1..=max_seconds).contains(&seconds),
        "Retry-After {seconds}"
    );
    seconds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn staff_lockout_refuses_even_the_right_password_until_it_ends() {
    let app = spawn_with_short_lockout().await;
    let lockout = u64::from(LOCKOUT_SECONDS);
    let mut last = None;
    for attempt in 1..=20 {
        let answer = staff_login(&app, None, ADMIN.0, &format!("wrong-{attempt}")).await;
        if attempt <= 5 {
            // The fifth failure starts the lockout; it was still a checked password.
            assert_error(
                answer.0,
                &answer.2,
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
            );
            assert!(retry_after(&answer.1).is_none());
        } else {
            assert_throttled(&answer, "too_many_attempts", lockout);
        }
        last = Some(answer);
    }
    assert!(last.is_some());

    // A lockout means the right password is refused too.
    let refused = staff_login(&app, None, ADMIN.0, ADMIN.1).await;
    let wait = assert_throttled(&refused, "too_many_attempts", lockout);

    tokio::time::sleep(Duration::from_secs(wait) + Duration::from_millis(200)).await;
    let (status, _, body) = staff_login(&app, None, ADMIN.0, ADMIN.1).await;
    assert_eq!(status, StatusCode::OK, "after the lockout: {body}");
    assert!(body["token"].is_string());

    // The successful login cleared the count (and the doubling): four failures are just 401s.
    for _ in 0..4 {
        let (status, _, body) = staff_login(&app, None, ADMIN.0, "wrong-again").await;
        assert_error(
            status,
            &body,
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        );
    }
    let (status, _, body) = staff_login(&app, None, ADMIN.0, ADMIN.1).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lockout_does_not_tell_whether_the_username_exists() {
    let app = spawn_with_short_lockout().await;
    let mut answers = Vec::new();
    for username in [ADMIN.0, "no-such-staff"] {
        let mut seen = Vec::new();
        for attempt in 0..8 {
            let (status, headers, body) =
                staff_login(&app, None, username, &format!("guess-{attempt}")).await;
            seen.push((status, retry_after(&headers).is_some(), body));
        }
        answers.push(seen);
    }
    assert_eq!(
        answers[0], answers[1],
        "a known and an unknown username are throttled alike"
    );
    let statuses: Vec<_> = answers[0].iter().map(|(s, ..)| s.as_u16()).collect();
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429, 429, 429]);
    assert_eq!(answers[1][7].2["error"]["code"], "too_many_attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_address_spraying_many_usernames_is_locked_out() {
    let app = spawn_with_short_lockout().await;
    let sprayer = Some("198.51.100.7");
    for n in 0..20 {
        let (status, _, body) =
            staff_login(&app, sprayer, &format!("staff-{n}"), "Password1!").await;
        assert_error(
            status,
            &body,
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        );
    }
    // A username never tried, and even the right credentials: the address is locked.
    let answer = staff_login(&app, sprayer, "staff-new", "Password1!").await;
    assert_throttled(&answer, "too_many_attempts", u64::from(LOCKOUT_SECONDS));
    let answer = staff_login(&app, sprayer, ADMIN.0, ADMIN.1).await;
    assert_throttled(&answer, "too_many_attempts", u64::from(LOCKOUT_SECONDS));
    // Another address is not.
    let (status, _, body) = staff_login(&app, Some("198.51.100.8"), ADMIN.0, ADMIN.1).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// The simulator's queue of injected code2Session answers (posting none adds none).
async fn queued_login_faults(app: &TestApp) -> Value {
    app.sandbox("/faults", json!({ "code2session": [] })).await["queued"]["code2session"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn customer_login_over_the_limit_is_refused_before_wechat() {
    let app = spawn_app(Backend::Postgres).await;
    let client = Some("203.0.113.9");

    // Logins that succeed do not count: many customers may share one address.
    for n in 0..25 {
        let code = app.login_code(&format!("shopper-{n}"), None).await;
        let (status, _, body) =
            post_from(&app, "/api/login", client, json!({ "code": code })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // Codes WeChat refuses do: 20 in a burst …
    for n in 0..20 {
        let (status, _, body) = post_from(
            &app,
            "/api/login",
            client,
            json!({ "code": format!("made-up-{n}") }),
        )
        .await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED, "invalid_code");
    }
    // … then 429, and WeChat is not asked: an answer queued at the simulator stays queued.
    app.sandbox("/faults", json!({ "code2session": [45011] }))
        .await;
    let code = app.login_code("latecomer", None).await;
    let answer = post_from(&app, "/api/login", client, json!({ "code": code })).await;
    assert_throttled(&answer, "rate_limited", 6);
    assert_eq!(queued_login_faults(&app).await, json!([45011]));

    // Another address still reaches WeChat (and meets the queued answer, then logs in).
    let other = Some("203.0.113.10");
    let (status, _, body) = post_from(&app, "/api/login", other, json!({ "code": code })).await;
    assert_error(
        status,
        &body,
        StatusCode::TOO_MANY_REQUESTS,
        "wechat_rate_limited",
    );
    assert_eq!(queued_login_faults(&app).await, json!([]));
    let code = app.login_code("latecomer", None).await;
    let (status, _, body) = post_from(&app, "/api/login", other, json!({ "code": code })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// No answer may carry the database's own words.
fn assert_no_database_text(body: &Value) {
    let text = body.to_string().to_lowercase();
    for leak in [
        "postgres",
        "sqlstate",
        "invalid byte sequence",
        "sqlite",
        "22021",
    ] {
        assert!(!text.contains(leak), "{leak} in {body}");
    }
}

async fn nul_text_is_bad_input_and_stores_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin_token().await;

    for name in ["Te\u{0}a", "\u{0}", "Tea\u{0}"] {
        let product = json!({ "sku": "tea", "name": name, "price_fen": 100 });
        let (status, body) = app.post("/admin/products", Some(&admin), product).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_name");
        assert_no_database_text(&body);
    }
    let response = app
        .http
        .put(app.url("/admin/products/tea"))
        .bearer_auth(&admin)
        .json(&json!({ "name": "Te\u{0}a", "price_fen": 100 }))
        .send()
        .await
        .unwrap();
    let (status, body) = common::read(response).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_name");
    assert_no_database_text(&body);
    let (status, body) = app
        .post(
            "/admin/products",
            Some(&admin),
            json!({ "sku": "t\u{0}", "name": "Tea", "price_fen": 100 }),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_sku");
    let (_, products) = app.get("/admin/products", Some(&admin)).await;
    assert_eq!(products["items"], json!([]), "nothing stored");

    // The same for every other text that reaches the database.
    app.add_product("tea", 100, true).await;
    let (alice, _) = app.login("alice").await;
    let (status, body) = app
        .post(
            "/api/orders",
            Some(&alice),
            json!({ "items": [{ "sku": "tea", "quantity": 1 }], "note": "no\u{0}sugar" }),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_note");
    assert_no_database_text(&body);
    assert_eq!(app.event_count().await, 0, "no order placed");
    let (status, body) = app
        .post(
            "/admin/orders/00000000-0000-7000-8000-000000000000/refunds",
            Some(&admin),
            json!({ "amount_fen": 1, "reason": "oops\u{0}" }),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_reason");
    let (status, body) = app
        .get("/admin/orders?out_trade_no=%00", Some(&admin))
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_query");
    let (status, body) = app
        .post(
            "/admin/login",
            None,
            json!({ "username": "ad\u{0}min", "password": "x" }),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
    assert_no_database_text(&body);
}

on_both_backends!(nul_text_is_bad_input_and_stores_nothing);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_back_office_page_carries_security_headers() {
    let app = spawn_app(Backend::Postgres).await;
    let response = app.http.get(app.url("/admin/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .unwrap_or_else(|| panic!("no {name}"))
            .to_str()
            .unwrap()
            .to_string()
    };
    let csp = header("content-security-policy");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} missing: {csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(header("x-frame-options"), "DENY");
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("referrer-policy"), "no-referrer");
    assert!(header("content-type").starts_with("text/html"));
    let page = response.text().await.unwrap();
    assert!(page.contains(r#"src="/admin/assets/app.js""#), "{page}");
}

/// Should text the database cannot store slip past the input checks (an engine caller, a field
/// added later), the answer is still a 400 the client will not retry, without the database's
/// words — not a 503 with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_refusal_of_text_answers_400_without_its_words() {
    use axum::response::IntoResponse;
    use paystream_engine::catalogue::{Catalogue, ProductInput};

    let app = spawn_app(Backend::Postgres).await;
    let refused = Catalogue::new(app.running().db.clone())
        .create(ProductInput {
            sku: Some("tea".into()),
            name: "Te\u{0}a".into(),
            price_fen: 100,
            active: true,
        })
        .await
        .expect_err("PostgreSQL cannot store NUL in text");
    let response = paystream_http::error::ApiError(refused).into_response();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status.as_u16(), 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_body");
    assert_no_database_text(&body);
}
