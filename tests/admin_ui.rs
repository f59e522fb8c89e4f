//! How the back-office UI is served (`adapters/http/src/admin_ui.rs`): its assets from a fixed
//! table with their types and the UI's headers, and `GET /admin/me` for the role-aware controls.
//! The UI itself is walked in a browser by `tests/browser.rs`.

mod common;

use common::{assert_error, spawn_app, ADMIN};
use paystream_engine::accounts::{Accounts, Role};
use paystream_engine::db::Backend;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn me_says_who_the_token_belongs_to() {
    let app = spawn_app(Backend::Sqlite).await;
    let admin = app.admin_token().await;
    let (status, body) = app.get("/admin/me", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "username": ADMIN.0, "role": "admin" }));

    Accounts::new(app.running().db.clone())
        .create_staff("sue", "support-password".to_string().into(), Role::Support)
        .await
        .unwrap();
    let (_, login) = app
        .post(
            "/admin/login",
            None,
            json!({ "username": "sue", "password": "support-password" }),
        )
        .await;
    let sue = login["token"].as_str().unwrap();
    let (status, body) = app.get("/admin/me", Some(sue)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "username": "sue", "role": "support" }));

    let (status, body) = app.get("/admin/me", None).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "missing_token");
    let (status, body) = app.get("/admin/me", Some("forged")).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "invalid_token");
    // A customer's token is not a staff token.
    let (customer, _) = app.login("alice").await;
    let (status, _) = app.get("/admin/me", Some(&customer)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn assets_are_served_by_name_with_their_type_and_the_ui_headers() {
    let app = spawn_app(Backend::Sqlite).await;
    for (path, content_type) in [
        ("/admin/", "text/html; charset=utf-8"),
        ("/admin/assets/app.js", "text/javascript; charset=utf-8"),
        ("/admin/assets/style.css", "text/css; charset=utf-8"),
        (
            "/admin/assets/uplot.iife.min.js",
            "text/javascript; charset=utf-8",
        ),
        ("/admin/assets/favicon.svg", "image/svg+xml"),
    ] {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .unwrap_or_else(|| panic!("{path}: no {name}"))
                .to_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(header("content-type"), content_type, "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("cache-control"), "no-cache", "{path}");
        let csp = header("content-security-policy");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("style-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe"), "{path}: {csp}");

        // Unchanged since the browser last fetched it: 304, no body.
        let etag = header("etag");
        let again = app
            .http
            .get(app.url(path))
            .header("If-None-Match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert!(again.bytes().await.unwrap().is_empty());
    }

    // Only names in the table: nothing else, and never a path.
    for path in [
        "/admin/assets/nope.js",
        "/admin/assets/..%2Fadmin.rs",
        "/admin/assets/js%2Fapp.js",
        "/admin/assets/index.html",
    ] {
        let (status, body) = app.get(path, None).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "no_such_endpoint");
    }
}
