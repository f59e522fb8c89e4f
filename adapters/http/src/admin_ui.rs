//! The back-office web UI (`GET /admin/`): plain HTML, CSS and JavaScript modules compiled into the
//! binary from `admin_ui/`, so there is no build step and nothing to deploy beside the engine.
//! Assets are served from a fixed table by name (a request never names a file on disk), each
//! with its content type, an ETag, and the same strict headers as the page: a CSP that runs only
//! scripts and styles from this origin (no inline code at all), no framing, no sniffing.
//!
//! Also `GET /admin/me`: who the token belongs to, so the UI can show the right controls for the
//! role (the API enforces the role either way).

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::StaffMember;
use crate::AppState;

/// The page and its static files: for browsers, left out of `/api/openapi.json`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/", get(index))
        .route("/admin/assets/{file}", get(asset))
}

/// `GET /admin/me`, a JSON endpoint of the API: with its OpenAPI operation.
pub fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(me))
}

/// The UI's Content-Security-Policy: scripts and styles from this origin only (no inline code,
/// no `eval`), `fetch` to this origin, no framing, no plugins, no `<base>`, forms post here.
/// Styles set through the CSSOM (`element.style.width = …`, which the chart library does) are
/// not inline styles in the CSP's sense and stay allowed.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";
const TEXT: &str = "text/plain; charset=utf-8";

/// One file of the UI: the name it is served under and its bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// `asset!("served-name", TYPE, "path under admin_ui/")`.
macro_rules! asset {
    ($name:literal, $type:expr, $path:literal) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_bytes!(concat!("admin_ui/", $path)),
        }
    };
}

const INDEX: Asset = asset!("index.html", HTML, "index.html");

/// Everything under `/admin/assets/`. The JavaScript modules import each other by these names
/// (`./api.js`), so the flat namespace is the one the browser sees.
const ASSETS: &[Asset] = &[
    asset!("style.css", CSS, "style.css"),
    asset!("favicon.svg", SVG, "favicon.svg"),
    asset!("app.js", JS, "js/app.js"),
    asset!("api.js", JS, "js/api.js"),
    asset!("dom.js", JS, "js/dom.js"),
    asset!("format.js", JS, "js/format.js"),
    asset!("i18n.js", JS, "js/i18n.js"),
    asset!("strings.js", JS, "js/strings.js"),
    asset!("view-login.js", JS, "js/view-login.js"),
    asset!("view-orders.js", JS, "js/view-orders.js"),
    asset!("view-order.js", JS, "js/view-order.js"),
    asset!("refund.js", JS, "js/refund.js"),
    asset!("view-review.js", JS, "js/view-review.js"),
    asset!("view-report.js", JS, "js/view-report.js"),
    asset!("view-reconciliation.js", JS, "js/view-reconciliation.js"),
    asset!("view-catalogue.js", JS, "js/view-catalogue.js"),
    asset!("view-staff.js", JS, "js/view-staff.js"),
    asset!("uplot.iife.min.js", JS, "vendor/uplot.iife.min.js"),
    asset!("uplot.min.css", CSS, "vendor/uplot.min.css"),
    asset!("uplot.LICENSE", TEXT, "vendor/uplot.LICENSE"),
];

/// Each asset's ETag (a hash of its bytes), computed once: the names carry no version, so
/// browsers revalidate (`no-cache`) and get a 304 while the binary is the same.
static ETAGS: LazyLock<HashMap<&'static str, HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .chain([&INDEX])
        .map(|asset| (asset.name, etag(asset.body)))
        .collect()
});

fn etag(body: &[u8]) -> HeaderValue {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(body);
    HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..12])))
        .expect("hex is a valid header value")
}

/// The answer for `asset`: 304 when the browser already holds these bytes, else the bytes.
fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let etag = ETAGS[asset.name].clone();
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .is_some_and(|tags| tags.as_bytes() == etag.as_bytes());
    let headers = [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
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
        (header::ETAG, etag),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    let content_type = [(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    )];
    (headers, content_type, asset.body).into_response()
}

async fn index(request: HeaderMap) -> Response {
    serve(&INDEX, &request)
}

async fn asset(Path(file): Path<String>, request: HeaderMap) -> Response {
    match ASSETS.iter().find(|asset| asset.name == file) {
        Some(asset) => serve(asset, &request),
        None => crate::error::no_such_endpoint().await.into_response(),
    }
}

/// `GET /admin/me`: the logged-in staff member's username and role.
#[utoipa::path(
    get,
    path = "/admin/me",
    tag = "back-office",
    operation_id = "current_staff",
    summary = "Who the staff token belongs to: username and role",
    security(("staff_token" = [])),
    responses((status = 200, description = "The staff member", body = crate::openapi::StaffMe)),
)]
async fn me(staff: StaffMember) -> impl IntoResponse {
    Json(json!({ "username": staff.0.username, "role": staff.0.role }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(asset: &Asset) -> &'static str {
        std::str::from_utf8(asset.body).expect("UTF-8")
    }

    /// The CSP allows no inline code, so none may be written: no `<script>` or `<style>` with a
    /// body, no handler attributes, no `style="…"`, no `javascript:` URLs, nothing from another
    /// origin. The JavaScript builds elements with `textContent` and properties, never HTML
    /// strings, which is checked too.
    #[test]
    fn the_page_runs_only_code_its_csp_allows() {
        assert!(!CSP.contains("unsafe"), "{CSP}");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ] {
            assert!(CSP.contains(directive), "{directive} missing: {CSP}");
        }
        HeaderValue::from_static(CSP);

        let page = text(&INDEX).to_lowercase();
        assert!(!page.contains("<style"), "inline <style> in the page");
        for script in page.split("<script").skip(1) {
            let open = &script[..script.find('>').expect("a closed <script> tag")];
            assert!(
                open.contains(" src=\"/admin/assets/"),
                "inline <script{open}>"
            );
            assert!(script[open.len() + 1..].starts_with("</script>"));
        }
        for forbidden in [
            " onclick=",
            " onsubmit=",
            " onload=",
            " onerror=",
            " oninput=",
            " style=",
            "javascript:",
            "http://",
            "https://",
            "<iframe",
        ] {
            assert!(!page.contains(forbidden), "{forbidden} in the page");
        }
        for asset in ASSETS.iter().filter(|a| a.content_type == JS) {
            if asset.name.starts_with("uplot") {
                continue;
            }
            let code = text(asset);
            for forbidden in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "eval(",
                "new Function",
            ] {
                assert!(!code.contains(forbidden), "{forbidden} in {}", asset.name);
            }
        }
    }

    /// Every module a module imports is in the table, under the name the browser will ask for.
    #[test]
    fn every_imported_module_is_served() {
        for asset in ASSETS.iter().filter(|a| a.content_type == JS) {
            for line in text(asset).lines().map(str::trim) {
                let Some(rest) = line.strip_prefix("import ") else {
                    continue;
                };
                let Some(start) = rest.find("\"./") else {
                    continue;
                };
                let name = &rest[start + 3..];
                let name = &name[..name.find('"').expect("a closed string")];
                assert!(
                    ASSETS.iter().any(|a| a.name == name),
                    "{} imports {name}, which is not served",
                    asset.name
                );
            }
        }
        let names: std::collections::HashSet<_> = ASSETS.iter().map(|a| a.name).collect();
        assert_eq!(names.len(), ASSETS.len(), "two assets share a name");
    }

    #[test]
    fn a_known_etag_answers_304() {
        let first = serve(&ASSETS[0], &HeaderMap::new());
        assert_eq!(first.status(), StatusCode::OK);
        let tag = first.headers()[header::ETAG].clone();
        let mut again = HeaderMap::new();
        again.insert(header::IF_NONE_MATCH, tag);
        assert_eq!(serve(&ASSETS[0], &again).status(), StatusCode::NOT_MODIFIED);
    }
}
