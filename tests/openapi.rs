//! `GET /api/openapi.json` against the running engine: the document is OpenAPI 3, every
//! operation it lists is served (and asks for a token exactly when the engine does), every
//! endpoint of the contract is in it, and real answers have the shapes it documents.
//!
//! Routes and operations come from one declaration (`utoipa_axum::routes!`, see
//! adapters/http/src/lib.rs `api`), so a route without an operation cannot be written; these
//! tests check what that cannot: that each operation is what the engine really does.

mod common;

use std::collections::BTreeSet;

use common::{spawn_app, TestApp};
use paystream_engine::db::Backend;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Every endpoint of contract.md ("Customer API", "Back-office API", "Operations", "Notify
/// endpoints"), as `METHOD /path` with the path's parameters in OpenAPI's `{name}` form.
const CONTRACT: &[&str] = &[
    "GET /healthz",
    "POST /api/login",
    "POST /api/me/phone",
    "GET /api/products",
    "POST /api/orders",
    "GET /api/orders",
    "GET /api/orders/{id}",
    "POST /api/orders/{id}/pay",
    "POST /api/orders/{id}/cancel",
    "POST /api/subscriptions",
    "GET /api/cards/{card_id}/ext",
    "POST /admin/login",
    "GET /admin/products",
    "POST /admin/products",
    "PUT /admin/products/{sku}",
    "GET /admin/orders",
    "GET /admin/orders/{id}",
    "GET /admin/orders/{id}/events",
    "POST /admin/orders/{id}/refunds",
    "GET /admin/reports/daily",
    "GET /admin/orders.csv",
    "GET /admin/review",
    "POST /admin/orders/{id}/review",
    "GET /admin/reconciliation/{date}",
    "GET /metrics",
    "GET /api/openapi.json",
    "GET /readyz",
    "POST /notify/wechatpay/v3",
    "POST /notify/wechatpay/v2",
    "POST /notify/wechatpay/v2/refund",
];

/// In the contract but not served yet: when it is, it moves to [`CONTRACT`].
const NOT_SERVED_YET: &[&str] = &[];

/// The query filters of the contract's searches, each a query parameter of its operation.
const FILTERS: &[(&str, &[&str])] = &[
    ("GET /api/orders", &["page", "per_page", "status"]),
    (
        "GET /admin/orders",
        &[
            "status",
            "openid",
            "out_trade_no",
            "transaction_id",
            "from",
            "to",
            "page",
            "per_page",
        ],
    ),
    (
        "GET /admin/orders.csv",
        &[
            "status",
            "openid",
            "out_trade_no",
            "transaction_id",
            "from",
            "to",
        ],
    ),
    ("GET /admin/reports/daily", &["from", "to"]),
];

const TAGS: [&str; 4] = ["customer", "back-office", "notify", "operations"];

async fn document(app: &TestApp) -> Value {
    let response = app
        .http
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert_eq!(content_type, "application/json");
    response.json().await.expect("the document is JSON")
}

/// Every operation of the document: (method in capitals, path, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut all = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().unwrap() {
            if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                all.push((method.to_uppercase(), path.clone(), operation.clone()));
            }
        }
    }
    all
}

/// `$ref` → what it points to (`#/components/…` only).
fn resolve<'a>(doc: &'a Value, node: &'a Value) -> &'a Value {
    match node["$ref"].as_str() {
        Some(target) => {
            let pointer = target.strip_prefix('#').expect("a local $ref");
            resolve(
                doc,
                doc.pointer(pointer)
                    .unwrap_or_else(|| panic!("{target} is defined")),
            )
        }
        None => node,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_document_is_openapi_3_and_served_without_a_token() {
    let app = spawn_app(Backend::Sqlite).await;
    let doc = document(&app).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let description = doc["info"]["description"].as_str().unwrap();
    assert!(
        description.contains("/sandbox"),
        "the simulator is said to be left out"
    );

    let schemes = &doc["components"]["securitySchemes"];
    for scheme in ["customer_token", "staff_token"] {
        assert_eq!(schemes[scheme]["type"], "http", "{scheme}");
        assert_eq!(schemes[scheme]["scheme"], "bearer", "{scheme}");
    }

    let mut ids = BTreeSet::new();
    for (method, path, operation) in operations(&doc) {
        let name = format!("{method} {path}");
        let id = operation["operationId"].as_str().unwrap_or_default();
        assert!(
            ids.insert(id.to_string()),
            "{name}: operationId {id:?} twice"
        );
        assert!(
            operation["summary"].as_str().is_some_and(|s| !s.is_empty()),
            "{name}"
        );
        let tags = operation["tags"].as_array().expect("tags");
        assert!(
            tags.len() == 1 && TAGS.contains(&tags[0].as_str().unwrap()),
            "{name}: {tags:?}"
        );
        let expected_scheme = if path.starts_with("/admin/") && path != "/admin/login" {
            Some("staff_token")
        } else if path.starts_with("/api/")
            && !["/api/login", "/api/products", "/api/openapi.json"].contains(&path.as_str())
        {
            Some("customer_token")
        } else {
            None
        };
        let scheme = operation["security"][0]
            .as_object()
            .map(|s| s.keys().next().unwrap().as_str());
        assert_eq!(scheme, expected_scheme, "{name}: security");

        let responses = operation["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{name}: no success answer"
        );
        if tags[0] != "notify" {
            // The engine's own errors: the error body, with the stable codes.
            let answer = resolve(&doc, &responses["500"]);
            let schema = resolve(&doc, &answer["content"]["application/json"]["schema"]);
            let error = resolve(&doc, &schema["properties"]["error"]);
            let code = resolve(&doc, &error["properties"]["code"]);
            assert!(
                code["enum"]
                    .as_array()
                    .is_some_and(|codes| codes.len() > 50),
                "{name}"
            );
        }
        if scheme.is_some() {
            assert!(responses.contains_key("401"), "{name}");
        }
    }
}

/// A request to `method path` as a client without a token would send it: path parameters
/// filled in, an empty JSON object as the body of a write.
async fn request(app: &TestApp, method: &str, path: &str) -> (StatusCode, Value) {
    let path = path
        .replace("{id}", &uuid::Uuid::new_v4().to_string())
        .replace("{sku}", "no-such-sku")
        .replace("{username}", "nobody")
        .replace("{card_id}", "pNoSuchCard");
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = app.http.request(method.clone(), app.url(&path));
    if method != Method::GET {
        request = request.json(&json!({}));
    }
    common::read(request.send().await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_operation_in_the_document_is_served_and_asks_for_its_token() {
    let app = spawn_app(Backend::Sqlite).await;
    let doc = document(&app).await;
    let operations = operations(&doc);
    assert!(operations.len() >= CONTRACT.len(), "{}", operations.len());
    for (method, path, operation) in operations {
        let (status, body) = request(&app, &method, &path).await;
        let name = format!("{method} {path}");
        // The router's own answers for what it does not serve.
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{name}: {body}");
        assert_ne!(body["error"]["code"], "no_such_endpoint", "{name}: {body}");
        assert_ne!(
            body["error"]["code"], "method_not_allowed",
            "{name}: {body}"
        );
        // A token is asked for exactly where the document says one is needed.
        let needs_token = operation["security"]
            .as_array()
            .is_some_and(|s| !s.is_empty());
        let refused =
            status == StatusCode::UNAUTHORIZED && body["error"]["code"] == "missing_token";
        assert_eq!(refused, needs_token, "{name}: {status} {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_endpoint_of_the_contract_is_in_the_document() {
    let app = spawn_app(Backend::Sqlite).await;
    let doc = document(&app).await;
    let documented: BTreeSet<String> = operations(&doc)
        .into_iter()
        .map(|(method, path, _)| format!("{method} {path}"))
        .collect();
    for endpoint in CONTRACT {
        assert!(
            documented.contains(*endpoint),
            "{endpoint} is not in the document"
        );
    }
    for endpoint in NOT_SERVED_YET {
        assert!(
            !documented.contains(*endpoint),
            "{endpoint} is served now: move it to CONTRACT"
        );
    }
    // The back-office web UI is served, for browsers, and left out on purpose.
    let page = app.http.get(app.url("/admin/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(!documented.iter().any(|e| e.ends_with(" /admin/")));
    assert!(!documented.iter().any(|e| e.contains(" /sandbox")));

    for (endpoint, filters) in FILTERS {
        let (method, path) = endpoint.split_once(' ').unwrap();
        let parameters = &doc["paths"][path][method.to_lowercase()]["parameters"];
        let names: BTreeSet<&str> = parameters
            .as_array()
            .expect("parameters")
            .iter()
            .filter(|p| p["in"] == "query")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        for filter in *filters {
            assert!(
                names.contains(filter),
                "{endpoint}: no query parameter {filter}"
            );
        }
    }
}

// ---- Real answers against their documented schemas ----

/// The `status` answer's JSON schema of `method path`.
fn answer_schema<'a>(doc: &'a Value, method: &str, path: &str, status: u16) -> &'a Value {
    let operation = &doc["paths"][path][method.to_lowercase()];
    let answer = resolve(doc, &operation["responses"][status.to_string()]);
    let schema = &answer["content"]["application/json"]["schema"];
    assert!(
        !schema.is_null(),
        "{method} {path} documents no JSON {status} answer"
    );
    schema
}

/// Whether `value` has the shape of `schema`, as far as the document's schemas go (`type`,
/// `enum`, `properties`, `required`, `items`, `additionalProperties`, `allOf`, `oneOf`); the
/// mismatches as `where: what`. Objects may hold no property their schema does not name, so an
/// answer that grows a field fails until the document has it.
fn mismatches(doc: &Value, schema: &Value, value: &Value, at: &str, found: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    if let Some(choices) = schema["oneOf"].as_array() {
        let fits = choices.iter().any(|choice| {
            let mut inner = Vec::new();
            mismatches(doc, choice, value, at, &mut inner);
            inner.is_empty()
        });
        if !fits {
            found.push(format!("{at}: {value} fits none of oneOf"));
        }
        return;
    }
    // `allOf` (a flattened struct): the union of the parts' properties.
    let parts: Vec<&Value> = match schema["allOf"].as_array() {
        Some(parts) => parts.iter().map(|p| resolve(doc, p)).collect(),
        None => vec![schema],
    };
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ if schema["allOf"].is_array() => vec!["object"],
        _ => vec![],
    };
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    // An integer is a number too.
    let documented = types.contains(&kind) || (kind == "integer" && types.contains(&"number"));
    if !types.is_empty() && !documented {
        found.push(format!("{at}: a {kind}, documented as {types:?}"));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            found.push(format!("{at}: {value} is not one of the documented values"));
        }
    }
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                mismatches(doc, &schema["items"], item, &format!("{at}[{i}]"), found);
            }
        }
        Value::Object(fields) => {
            for part in &parts {
                for required in part["required"].as_array().into_iter().flatten() {
                    let name = required.as_str().unwrap();
                    if !fields.contains_key(name) {
                        found.push(format!("{at}.{name}: required, absent"));
                    }
                }
            }
            for (name, field) in fields {
                let property = parts.iter().find_map(|p| p["properties"].get(name));
                let extra = parts.iter().find_map(|p| p.get("additionalProperties"));
                // A schema that says nothing of its fields (`{}`) is a free-form value.
                let free_form = types.is_empty() && parts.iter().all(|p| p["properties"].is_null());
                match (property, extra) {
                    (Some(property), _) => {
                        mismatches(doc, property, field, &format!("{at}.{name}"), found)
                    }
                    (None, Some(Value::Bool(true))) => {}
                    (None, Some(extra)) if extra.is_object() => {
                        mismatches(doc, extra, field, &format!("{at}.{name}"), found)
                    }
                    (None, None) if free_form => {}
                    (None, _) => found.push(format!("{at}.{name}: not documented")),
                }
            }
        }
        _ => {}
    }
}

/// Asserts that the answer to `method path` (the document's path template) fits its schema.
fn assert_fits(doc: &Value, method: &str, path: &str, status: StatusCode, body: &Value) {
    let schema = answer_schema(doc, method, path, status.as_u16());
    let mut found = Vec::new();
    mismatches(doc, schema, body, "$", &mut found);
    assert!(
        found.is_empty(),
        "{method} {path} {status}: {found:#?}\n{body:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn real_answers_have_the_documented_shapes() {
    let app = spawn_app(Backend::Sqlite).await;
    let doc = document(&app).await;
    let admin = app.admin_token().await;
    app.add_product("TEA", 1250, true).await;

    let code = app.login_code("openapi-customer", Some("union-1")).await;
    let (status, session) = app.post("/api/login", None, json!({ "code": code })).await;
    assert_fits(&doc, "POST", "/api/login", status, &session);
    let customer = session["token"].as_str().unwrap();

    let (status, order) = app
        .post(
            "/api/orders",
            Some(customer),
            json!({ "items": [{ "sku": "TEA", "quantity": 2 }], "note": "no sugar" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_fits(&doc, "POST", "/api/orders", status, &order);
    // The check itself: a field of the wrong type, an undocumented one, a missing one.
    let mut wrong = order.clone();
    wrong["total_fen"] = json!("2500");
    wrong["discount_fen"] = json!(0);
    wrong.as_object_mut().unwrap().remove("out_trade_no");
    wrong["items"][0]["quantity"] = json!(-1.5);
    wrong["status"] = json!("shipped");
    let mut found = Vec::new();
    let schema = answer_schema(&doc, "POST", "/api/orders", 201);
    mismatches(&doc, schema, &wrong, "$", &mut found);
    found.sort();
    assert_eq!(
        found,
        [
            "$.discount_fen: not documented",
            "$.items[0].quantity: a number, documented as [\"integer\"]",
            "$.out_trade_no: required, absent",
            "$.status: \"shipped\" is not one of the documented values",
            "$.total_fen: a string, documented as [\"integer\"]",
        ],
        "{wrong:#}"
    );
    let id = order["id"].as_str().unwrap();

    let (status, paid) = app
        .post(
            &format!("/api/orders/{id}/pay"),
            Some(customer),
            json!({ "channel": "wechatpay_v3" }),
        )
        .await;
    assert_fits(&doc, "POST", "/api/orders/{id}/pay", status, &paid);

    // An order paid with the wrong amount: in review, with a payment, then a refund.
    let (_, odd) = app
        .post(
            "/api/orders",
            Some(customer),
            json!({ "items": [{ "sku": "TEA", "quantity": 1 }] }),
        )
        .await;
    let odd_id = odd["id"].as_str().unwrap().to_string();
    let (status, body) = app
        .post(
            &format!("/api/orders/{odd_id}/pay"),
            Some(customer),
            json!({ "channel": "wechatpay_v3" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.sandbox(
        "/wechatpay/pay",
        json!({ "out_trade_no": odd["out_trade_no"], "amount_fen": 1300 }),
    )
    .await;
    wait_for(&app, customer, &odd_id, "needs_review").await;
    let (status, refund) = app
        .post(
            &format!("/admin/orders/{odd_id}/refunds"),
            Some(&admin),
            json!({ "amount_fen": 50, "reason": "paid too much" }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{refund}");
    assert_fits(&doc, "POST", "/admin/orders/{id}/refunds", status, &refund);

    let customer_reads = [
        ("/api/products", "/api/products".to_string()),
        (
            "/api/orders",
            "/api/orders?status=pending_payment".to_string(),
        ),
        ("/api/orders/{id}", format!("/api/orders/{id}")),
    ];
    for (template, path) in customer_reads {
        let (status, body) = app.get(&path, Some(customer)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_fits(&doc, "GET", template, status, &body);
    }

    let staff_reads = [
        ("/admin/products", "/admin/products".to_string()),
        ("/admin/orders", "/admin/orders?out_trade_no=".to_string()),
        ("/admin/orders/{id}", format!("/admin/orders/{id}")),
        (
            "/admin/orders/{id}/events",
            format!("/admin/orders/{id}/events"),
        ),
        (
            "/admin/orders/{id}/timeline",
            format!("/admin/orders/{id}/timeline?lang=en"),
        ),
        ("/admin/orders/{id}", format!("/admin/orders/{odd_id}")),
        (
            "/admin/orders/{id}/events",
            format!("/admin/orders/{odd_id}/events"),
        ),
        (
            "/admin/orders/{id}/timeline",
            format!("/admin/orders/{odd_id}/timeline"),
        ),
        ("/admin/review", "/admin/review".to_string()),
        ("/admin/payments", "/admin/payments".to_string()),
        ("/admin/refunds", "/admin/refunds".to_string()),
        ("/admin/reports/daily", "/admin/reports/daily".to_string()),
        ("/admin/staff", "/admin/staff".to_string()),
        ("/admin/me", "/admin/me".to_string()),
    ];
    for (template, path) in staff_reads {
        let (status, body) = app.get(&path, Some(&admin)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_fits(&doc, "GET", template, status, &body);
    }

    let (status, resolved) = app
        .post(
            &format!("/admin/orders/{odd_id}/review"),
            Some(&admin),
            json!({ "resolution": "refunded", "note": "the extra went back" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resolved}");
    assert_fits(&doc, "POST", "/admin/orders/{id}/review", status, &resolved);

    let (status, closed) = app
        .post(
            &format!("/api/orders/{id}/cancel"),
            Some(customer),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{closed}");
    assert_fits(&doc, "POST", "/api/orders/{id}/cancel", status, &closed);
    let (status, closed) = app.get(&format!("/admin/orders/{id}"), Some(&admin)).await;
    assert_fits(&doc, "GET", "/admin/orders/{id}", status, &closed);

    // Reconciliation: a past day without trade has no bill at WeChat Pay.
    let day = (chrono::Utc::now() + chrono::Duration::hours(8)).date_naive() - chrono::Days::new(3);
    let path = format!("/admin/reconciliation/{day}");
    let (status, report) = app.post(&path, Some(&admin), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_fits(
        &doc,
        "POST",
        "/admin/reconciliation/{date}",
        status,
        &report,
    );
    let (status, report) = app.get(&path, Some(&admin)).await;
    assert_fits(&doc, "GET", "/admin/reconciliation/{date}", status, &report);

    // Errors: the error body, its code one of the documented codes.
    let missing = format!("/api/orders/{}", uuid::Uuid::new_v4());
    let (status, error) = app.get(&missing, Some(customer)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_fits(&doc, "GET", "/api/orders/{id}", status, &error);
    let (status, error) = app.get("/api/orders", None).await;
    assert_fits(&doc, "GET", "/api/orders", status, &error);

    for (template, path) in [("/healthz", "/healthz"), ("/readyz", "/readyz")] {
        let (status, body) = app.get(path, None).await;
        assert_fits(&doc, "GET", template, status, &body);
    }
}

async fn wait_for(app: &TestApp, token: &str, id: &str, status: &str) {
    let path = format!("/api/orders/{id}");
    for _ in 0..200 {
        if app.get(&path, Some(token)).await.1["status"] == status {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("order {id} never reached {status}");
}

/// A few schemas the clients rely on, read from the served document.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn money_is_integer_fen_and_statuses_are_the_contracts() {
    let app = spawn_app(Backend::Sqlite).await;
    let doc = document(&app).await;
    let order = answer_schema(&doc, "GET", "/api/orders/{id}", 200);
    let order = resolve(&doc, order);
    for money in ["total_fen", "paid_fen", "refunded_fen"] {
        assert_eq!(order["properties"][money]["type"], "integer", "{money}");
    }
    let line = resolve(&doc, &order["properties"]["items"]["items"]);
    assert_eq!(line["properties"]["unit_price_fen"]["type"], "integer");
    let status = resolve(&doc, &order["properties"]["status"]);
    let statuses: BTreeSet<&str> = status["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let contract = [
        "pending_payment",
        "paid",
        "partially_refunded",
        "refunded",
        "closed",
        "needs_review",
    ];
    assert_eq!(statuses, contract.into_iter().collect());

    let refund = &doc["paths"]["/admin/orders/{id}/refunds"]["post"];
    let body = resolve(
        &doc,
        &refund["requestBody"]["content"]["application/json"]["schema"],
    );
    assert_eq!(body["properties"]["amount_fen"]["type"], "integer");
    assert!(body["required"]
        .as_array()
        .unwrap()
        .contains(&json!("amount_fen")));
}
