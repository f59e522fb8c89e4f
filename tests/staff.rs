//! Staff management (issue 11): admins create, list, disable and enable staff accounts and reset
//! their passwords; support staff may do none of it; a disabled account or a reset password ends
//! the account's sessions at once.

mod common;

use common::{assert_error, spawn_app, TestApp, ADMIN};
use paystream_engine::accounts::Accounts;
use paystream_engine::db::Backend;
use paystream_engine::ErrorCode;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// No password, no hash, in any answer.
fn assert_no_secret(body: &Value) {
    let text = body.to_string();
    assert!(!text.contains("argon2"), "{text}");
    assert!(!text.contains("password"), "{text}");
    assert!(!text.contains("session_version"), "{text}");
}

async fn create(app: &TestApp, admin: &str, username: &str, password: &str, role: &str) -> Value {
    let (status, body) = app
        .post(
            "/admin/staff",
            Some(admin),
            json!({ "username": username, "password": password, "role": role }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_no_secret(&body);
    body
}

async fn staff_login(app: &TestApp, username: &str, password: &str) -> (StatusCode, Value) {
    app.post(
        "/admin/login",
        None,
        json!({ "username": username, "password": password }),
    )
    .await
}

async fn token(app: &TestApp, username: &str, password: &str) -> String {
    let (status, body) = staff_login(app, username, password).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["token"].as_str().unwrap().to_string()
}

async fn list(app: &TestApp, admin: &str) -> Vec<Value> {
    let (status, body) = app.get("/admin/staff", Some(admin)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_no_secret(&body);
    body["items"].as_array().unwrap().clone()
}

async fn support_staff_log_in_and_are_refused_staff_management(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin_token().await;

    let alice = create(&app, &admin, "alice", "alice-password", "support").await;
    assert_eq!(alice["username"], "alice");
    assert_eq!(alice["role"], "support");
    assert_eq!(alice["disabled"], false);
    assert!(alice["created_at"].is_string(), "{alice}");

    let items = list(&app, &admin).await;
    let names: Vec<&str> = items
        .iter()
        .map(|s| s["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, [ADMIN.0, "alice"]);
    assert_eq!(items[0]["role"], "admin");
    for item in &items {
        let mut keys: Vec<&str> = item
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["created_at", "disabled", "role", "username"],
            "{item}"
        );
    }

    let support = token(&app, "alice", "alice-password").await;
    let (status, body) = app.get("/admin/orders", Some(&support)).await;
    assert_eq!(status, StatusCode::OK, "support still reads: {body}");

    let (status, body) = app.get("/admin/staff", Some(&support)).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "admin_only");
    let new = json!({ "username": "mallory", "password": "mallory-password", "role": "admin" });
    let (status, body) = app.post("/admin/staff", Some(&support), new).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "admin_only");
    let password = json!({ "password": "taken-over-1" });
    for (path, body) in [
        (
            format!("/admin/staff/{}/password", ADMIN.0),
            password.clone(),
        ),
        ("/admin/staff/alice/password".to_string(), password),
        (format!("/admin/staff/{}/disable", ADMIN.0), json!({})),
        ("/admin/staff/alice/enable".to_string(), json!({})),
    ] {
        let (status, body) = app.post(&path, Some(&support), body).await;
        assert_error(status, &body, StatusCode::FORBIDDEN, "admin_only");
    }
    // Nothing changed: the admin's password still works, mallory does not exist.
    app.admin_token().await;
    assert_eq!(list(&app, &admin).await.len(), 2);

    // Bad input.
    let attempt = |username: &str, password: &str, role: &str| json!({ "username": username, "password": password, "role": role });
    let (status, body) = app
        .post(
            "/admin/staff",
            Some(&admin),
            attempt("alice", "another-password", "admin"),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "staff_exists");
    let (status, body) = app
        .post(
            "/admin/staff",
            Some(&admin),
            attempt("bob", "short", "support"),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "weak_password");
    for username in ["", "   ", "bo\u{0}b", "bo\nb", &"b".repeat(65)] {
        let (status, body) = app
            .post(
                "/admin/staff",
                Some(&admin),
                attempt(username, "bob-password", "support"),
            )
            .await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_username");
    }
    let (status, body) = app
        .post(
            "/admin/staff",
            Some(&admin),
            attempt("bob", "bob-password", "root"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(list(&app, &admin).await.len(), 2);
}

async fn a_password_reset_ends_the_old_password_and_sessions(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin_token().await;
    create(&app, &admin, "bob", "bob-password-1", "support").await;
    let old_session = token(&app, "bob", "bob-password-1").await;

    let (status, body) = app
        .post(
            "/admin/staff/bob/password",
            Some(&admin),
            json!({ "password": "short" }),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "weak_password");
    let (status, body) = app
        .post(
            "/admin/staff/nobody/password",
            Some(&admin),
            json!({ "password": "bob-password-2" }),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "staff_not_found");

    let (status, body) = app
        .post(
            "/admin/staff/bob/password",
            Some(&admin),
            json!({ "password": "bob-password-2" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["username"], "bob");
    assert_no_secret(&body);

    let (status, body) = staff_login(&app, "bob", "bob-password-1").await;
    assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
    let (status, body) = app.get("/admin/orders", Some(&old_session)).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "invalid_token");
    let new_session = token(&app, "bob", "bob-password-2").await;
    let (status, body) = app.get("/admin/orders", Some(&new_session)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The admin's own session is untouched by resetting someone else's password.
    let (status, body) = app.get("/admin/staff", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn a_disabled_account_cannot_log_in_and_its_tokens_stop(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin_token().await;
    create(&app, &admin, "carol", "carol-password", "support").await;
    let session = token(&app, "carol", "carol-password").await;

    let (status, body) = app
        .post("/admin/staff/carol/disable", Some(&admin), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["disabled"], true);
    assert_no_secret(&body);
    // Again: nothing more to do.
    let (status, body) = app
        .post("/admin/staff/carol/disable", Some(&admin), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The right password is refused exactly like a wrong one.
    let (status, right) = staff_login(&app, "carol", "carol-password").await;
    assert_error(
        status,
        &right,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
    let (_, wrong) = staff_login(&app, "carol", "not-her-password").await;
    assert_eq!(right, wrong);
    let (status, body) = app.get("/admin/orders", Some(&session)).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "invalid_token");
    let carol = list(&app, &admin).await;
    assert_eq!(carol[1]["username"], "carol");
    assert_eq!(carol[1]["disabled"], true);

    let (status, body) = app
        .post("/admin/staff/carol/enable", Some(&admin), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["disabled"], false);
    let fresh = token(&app, "carol", "carol-password").await;
    let (status, body) = app.get("/admin/orders", Some(&fresh)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A session ended by the disable stays ended.
    let (status, body) = app.get("/admin/orders", Some(&session)).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "invalid_token");

    let (status, body) = app
        .post("/admin/staff/nobody/disable", Some(&admin), json!({}))
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "staff_not_found");
}

async fn no_admin_disables_themselves_or_the_last_admin(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin_token().await;
    let (status, body) = app
        .post(
            &format!("/admin/staff/{}/disable", ADMIN.0),
            Some(&admin),
            json!({}),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "cannot_disable_self");

    // Through the engine, by someone who is not the account: the last enabled admin stays.
    let accounts = Accounts::new(app.running().db.clone());
    let err = accounts
        .set_staff_disabled(uuid::Uuid::now_v7(), ADMIN.0, true)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::LastAdmin);

    // A second admin may disable the first, then cannot disable themselves.
    create(&app, &admin, "dave", "dave-password", "admin").await;
    let dave = token(&app, "dave", "dave-password").await;
    let disable_first = format!("/admin/staff/{}/disable", ADMIN.0);
    let (status, body) = app.post(&disable_first, Some(&dave), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .post("/admin/staff/dave/disable", Some(&dave), json!({}))
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "cannot_disable_self");
    let err = accounts
        .set_staff_disabled(uuid::Uuid::now_v7(), "dave", true)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::LastAdmin);
    let (status, body) = app
        .post(
            &format!("/admin/staff/{}/enable", ADMIN.0),
            Some(&dave),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Two admins disabling each other at once: one of them stays enabled.
    let admin = app.admin_token().await;
    let (a, b) = tokio::join!(
        app.post("/admin/staff/dave/disable", Some(&admin), json!({})),
        app.post(&disable_first, Some(&dave), json!({})),
    );
    let ok = [&a, &b]
        .iter()
        .filter(|(s, _)| *s == StatusCode::OK)
        .count();
    assert_eq!(ok, 1, "{a:?} {b:?}");
    for (status, body) in [&a, &b] {
        if *status != StatusCode::OK {
            let code = body["error"]["code"].as_str().unwrap();
            assert!(code == "last_admin" || code == "invalid_token", "{body}");
        }
    }
    let enabled_admins = accounts
        .list_staff()
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.role == paystream_engine::accounts::Role::Admin && !s.disabled)
        .count();
    assert_eq!(enabled_admins, 1);
}

on_both_backends!(
    support_staff_log_in_and_are_refused_staff_management,
    a_password_reset_ends_the_old_password_and_sessions,
    a_disabled_account_cannot_log_in_and_its_tokens_stop,
    no_admin_disables_themselves_or_the_last_admin,
);
