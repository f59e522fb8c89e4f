//! `GET /api/openapi.json`: the OpenAPI 3.1 document of the whole HTTP API.
//!
//! Every endpoint is registered with `utoipa_axum::routes!` from its handler's
//! `#[utoipa::path]`, so the router and this document come from one declaration and an endpoint
//! cannot be served without its operation (see `crate::api`). This module holds what the
//! operations share: the info and tags, the bearer-token schemes, the error body, and the error
//! answers that every operation of a kind can give ([`complete`]). Shapes of bodies whose types
//! live elsewhere are in [`schemas`].

mod schemas;

pub(crate) use schemas::*;

use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;

/// The security scheme of `/api/*`: the token of `POST /api/login`.
pub const CUSTOMER_TOKEN: &str = "customer_token";
/// The security scheme of `/admin/*`: the token of `POST /admin/login`.
pub const STAFF_TOKEN: &str = "staff_token";

const DESCRIPTION: &str = "\
paystream: orders and WeChat Pay payments for WeChat mini-programs.

* **customer**: the mini-program's API, with the bearer token of `POST /api/login`.
* **back-office**: staff's API, with the bearer token of `POST /admin/login`; support staff \
read, admins also write (other roles get 403 `admin_only`).
* **notify**: where WeChat Pay calls back. These are authenticated by WeChat Pay's signatures \
(APIv3: the `Wechatpay-Signature` headers; APIv2: the `sign` in the XML, or the encrypted \
`req_info` of a refund notify), not by tokens, and answer in WeChat Pay's dialect.
* **operations**: health, readiness, metrics and this document.

Money is always an integer number of fen (分). Every error of the engine's own API is \
`{\"error\": {\"code\", \"message\"}}` (`ErrorBody`); clients switch on the stable `code`.

Not described here: the in-process WeChat simulator under `/sandbox` (a stand-in for WeChat in \
sandbox mode, not part of paystream's API) and the back-office web UI (`/admin/` and its static \
assets, pages for browsers).";

#[derive(OpenApi)]
#[openapi(
    info(title = "paystream", version = env!("CARGO_PKG_VERSION"), description = DESCRIPTION),
    tags(
        (name = "customer", description = "The mini-program's API (contract.md, \"Customer API\")."),
        (name = "back-office", description = "Staff's API (contract.md, \"Back-office API\")."),
        (name = "notify", description = "WeChat Pay's notifications, authenticated by its signatures."),
        (name = "operations", description = "Health, readiness, metrics, this document."),
    ),
    components(schemas(ErrorBody)),
    modifiers(&SharedParts),
)]
struct Base;

/// The document before any operation is added: info, tags, security schemes, shared answers.
pub fn base() -> utoipa::openapi::OpenApi {
    Base::openapi()
}

/// Names of the answers in `components.responses` that [`complete`] adds to operations.
const UNAUTHORIZED: &str = "Unauthorized";
const BAD_REQUEST: &str = "BadRequest";
const INTERNAL_ERROR: &str = "InternalError";
const UNAVAILABLE: &str = "Unavailable";

struct SharedParts;

impl Modify for SharedParts {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let bearer = |whose: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(whose))
                    .build(),
            )
        };
        components.add_security_scheme(
            CUSTOMER_TOKEN,
            bearer("A customer's token, from `POST /api/login`."),
        );
        components.add_security_scheme(
            STAFF_TOKEN,
            bearer("A staff member's token, from `POST /admin/login`."),
        );
        for (name, description) in [
            (
                UNAUTHORIZED,
                "No token (`missing_token`), or a bad, expired or ended one (`invalid_token`, \
                 `token_expired`): log in again.",
            ),
            (
                BAD_REQUEST,
                "Bad input: a body that is not JSON or not of the documented shape \
                 (`invalid_json`, `expected_json`, `invalid_body`, `body_too_large`), a bad \
                 query (`invalid_query`, `invalid_status`), or a field-specific code.",
            ),
            (
                INTERNAL_ERROR,
                "A bug or corrupt data (`internal_error`); the `X-Request-Id` header identifies \
                 it in the log.",
            ),
            (
                UNAVAILABLE,
                "The database or a dependency is unavailable, or the request ran past the \
                 deadline (`database_unavailable`, `timeout`, …): retry shortly.",
            ),
        ] {
            components
                .responses
                .insert(name.to_string(), error(description));
        }
    }
}

/// An error answer with the error body.
fn error(description: &str) -> RefOr<utoipa::openapi::Response> {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ErrorBody")))
        .build();
    ResponseBuilder::new()
        .description(description)
        .content("application/json", content)
        .build()
        .into()
}

/// Adds the error answers every operation of a kind can give, so that each `#[utoipa::path]`
/// lists only its own: 401 where a token is required, 400 where a body or a query is read, and
/// 500 and 503 everywhere but the notify endpoints (which answer in WeChat Pay's dialect and
/// document their own). An answer an operation documents itself is kept.
pub fn complete(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            add_shared_errors(operation);
        }
    }
    doc
}

fn add_shared_errors(operation: &mut Operation) {
    let tagged = |tag: &str| operation.tags.iter().flatten().any(|t| t == tag);
    if tagged("notify") {
        return;
    }
    let needs_token = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    let reads_input = operation.request_body.is_some()
        || operation
            .parameters
            .iter()
            .flatten()
            .any(|p| p.parameter_in == ParameterIn::Query);
    let mut shared = vec![("500", INTERNAL_ERROR), ("503", UNAVAILABLE)];
    if needs_token {
        shared.push(("401", UNAUTHORIZED));
    }
    if reads_input {
        shared.push(("400", BAD_REQUEST));
    }
    let responses = &mut operation.responses.responses;
    for (status, name) in shared {
        responses
            .entry(status.to_string())
            .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
    }
}

/// The document as served: serialised once, when the router is built.
#[derive(Clone)]
pub struct Served(pub Bytes);

impl Served {
    pub fn new(doc: &utoipa::openapi::OpenApi) -> Served {
        Served(Bytes::from(
            serde_json::to_vec(doc).expect("an OpenAPI document serialises"),
        ))
    }
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(document))
}

#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "operations",
    summary = "This document: the OpenAPI 3.1 description of the HTTP API",
    responses((status = 200, description = "The OpenAPI document", body = Object, content_type = "application/json")),
)]
async fn document(Extension(Served(json)): Extension<Served>) -> Response {
    ([(CONTENT_TYPE, "application/json")], json).into_response()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    fn document() -> Value {
        serde_json::to_value(crate::openapi_document()).unwrap()
    }

    fn responses<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
        &doc["paths"][path][method]["responses"]
    }

    #[test]
    fn shared_errors_go_where_they_can_happen() {
        let doc = document();
        let unauthorized = "#/components/responses/Unauthorized";
        let bad_request = "#/components/responses/BadRequest";
        // A token and a query: 401 and 400.
        let search = responses(&doc, "get", "/admin/orders");
        assert_eq!(search["401"]["$ref"], unauthorized);
        assert_eq!(search["400"]["$ref"], bad_request);
        assert!(search["503"]["$ref"].is_string());
        // No token, no input: neither.
        let products = responses(&doc, "get", "/api/products");
        assert!(products.get("401").is_none() && products.get("400").is_none());
        // An answer documented by the operation itself is kept.
        let login = responses(&doc, "post", "/api/login");
        assert!(login["401"]["description"]
            .as_str()
            .unwrap()
            .contains("invalid_code"));
        // WeChat Pay's notifications answer in its dialect, not with the error body.
        let v3 = responses(&doc, "post", "/notify/wechatpay/v3");
        assert!(v3.get("500").is_none());
        assert!(v3["401"]["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .unwrap()
            .ends_with("/NotifyFailure"));
        for name in ["Unauthorized", "BadRequest", "InternalError", "Unavailable"] {
            let schema = &doc["components"]["responses"][name]["content"]["application/json"];
            assert_eq!(schema["schema"]["$ref"], "#/components/schemas/ErrorBody");
        }
    }

    /// `OpenApiRouter` still takes plain `.route(…)`s, which would be served undocumented. Only
    /// the web UI's pages (for browsers, left out on purpose) may be registered that way.
    #[test]
    fn endpoints_are_registered_only_with_their_operations() {
        // Spelled without the parenthesis, so that this test does not find itself.
        let calls = [".route", ".route_service", ".nest"].map(|method| format!("{method}("));
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![src.clone()];
        let mut undocumented = Vec::new();
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || path.ends_with("admin_ui.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = !line.trim_start().starts_with("//");
                if code && calls.iter().any(|call| line.contains(call.as_str())) {
                    undocumented.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
        assert!(
            undocumented.is_empty(),
            "register endpoints with `.routes(routes!(handler))` and a `#[utoipa::path]` on the \
             handler, so that /api/openapi.json describes them:\n{}",
            undocumented.join("\n")
        );
    }

    #[test]
    fn the_order_schema_keeps_money_in_integer_fen() {
        let doc = document();
        let order = &doc["components"]["schemas"]["Order"];
        for money in ["total_fen", "paid_fen", "refunded_fen"] {
            assert_eq!(order["properties"][money]["type"], "integer", "{money}");
            assert!(order["required"]
                .as_array()
                .unwrap()
                .contains(&money.into()));
        }
        // Absent when unknown, never null.
        assert_eq!(order["properties"]["paid_at"]["type"], "string");
        let error = &doc["components"]["schemas"]["ErrorDetail"]["properties"]["code"];
        assert_eq!(error["$ref"], "#/components/schemas/ErrorCode");
    }
}
