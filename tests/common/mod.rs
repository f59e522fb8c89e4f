//! Test support: `spawn_app` starts the real engine on port 0 against a fresh database of the
//! chosen backend, with the in-process WeChat sandbox, and drops the database afterwards.
#![allow(dead_code)]

pub mod amqp;

use paystream::config::Settings;
use paystream::Running;
use paystream_engine::accounts::{Accounts, Role};
use paystream_engine::db::Backend;
use paystream_engine::testing::TestDb;
use reqwest::StatusCode;
use serde_json::{json, Value};

pub const ADMIN: (&str, &str) = ("admin", "admin-password-1");

pub struct TestApp {
    pub running: Option<Running>,
    /// What the engine was started with; a restart uses the same.
    pub settings: Settings,
    pub db: TestDb,
    pub base: String,
    pub http: reqwest::Client,
    /// A stand-alone WeChat simulator the engine is configured against, instead of its built-in
    /// one under `/sandbox`: users log in there.
    pub wechat_base: Option<String>,
}

pub fn settings(database_url: &str) -> Settings {
    Settings {
        admin_username: Some(ADMIN.0.into()),
        admin_password: Some(ADMIN.1.into()),
        session_ttl_seconds: 3600,
        staff_session_ttl_seconds: 3600,
        // Tests drive expiry explicitly; the loop must not race them.
        expiry_interval_seconds: 3600,
        wechatpay_cert_refetch_seconds: 1,
        // WeChat's retry schedule, a thousand times faster.
        sandbox_notify_time_scale: 0.001,
        ..Settings::local(database_url)
    }
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// Like [`spawn_app`], with settings adjusted first.
pub async fn spawn_app_with(backend: Backend, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let db = TestDb::new(backend).await;
    let mut settings = settings(&db.url);
    adjust(&mut settings);
    let running = paystream::start(settings.clone())
        .await
        .expect("engine starts");
    let base = running.base_url();
    TestApp {
        running: Some(running),
        settings,
        db,
        base,
        http: reqwest::Client::new(),
        wechat_base: None,
    }
}

impl TestApp {
    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    /// Stops the engine and starts a new one on the same database.
    pub async fn restart(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
        let running = paystream::start(self.settings.clone())
            .await
            .expect("engine restarts");
        self.base = running.base_url();
        self.running = Some(running);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        read(req.send().await.expect("request")).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        let mut req = self.http.post(self.url(path)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        read(req.send().await.expect("request")).await
    }

    /// What the mini-program's `wx.login` would return for this simulated user.
    pub async fn login_code(&self, user: &str, unionid: Option<&str>) -> String {
        let wechat = self
            .wechat_base
            .clone()
            .unwrap_or_else(|| self.url("/sandbox"));
        let response = self
            .http
            .post(format!("{wechat}/control/login-code"))
            .json(&json!({ "user": user, "unionid": unionid }))
            .send()
            .await
            .expect("request");
        let (status, body) = read(response).await;
        assert_eq!(status, StatusCode::OK);
        body["code"].as_str().unwrap().to_string()
    }

    /// Logs a simulated user in; returns (token, user JSON).
    pub async fn login(&self, user: &str) -> (String, Value) {
        let code = self.login_code(user, None).await;
        let (status, body) = self.post("/api/login", None, json!({ "code": code })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        (
            body["token"].as_str().unwrap().to_string(),
            body["user"].clone(),
        )
    }

    pub async fn admin_token(&self) -> String {
        let (status, body) = self
            .post(
                "/admin/login",
                None,
                json!({ "username": ADMIN.0, "password": ADMIN.1 }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["token"].as_str().unwrap().to_string()
    }

    /// Polls the customer's view of an order until `done` holds (notifications and refunds
    /// settle asynchronously); returns it then. Panics after 10 s.
    pub async fn wait_for_order(
        &self,
        token: &str,
        order: &Value,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let path = format!("/api/orders/{}", order["id"].as_str().unwrap());
        let mut last = Value::Null;
        for _ in 0..200 {
            last = self.get(&path, Some(token)).await.1;
            if done(&last) {
                return last;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("order never reached the expected state: {last}");
    }

    /// A support (read-only) staff member's token (the account `sue`, created now).
    pub async fn support_token(&self) -> String {
        Accounts::new(self.running().db.clone())
            .create_staff("sue", "support-password".to_string().into(), Role::Support)
            .await
            .unwrap();
        let (status, login) = self
            .post(
                "/admin/login",
                None,
                json!({ "username": "sue", "password": "support-password" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{login}");
        login["token"].as_str().unwrap().to_string()
    }

    pub async fn add_product(&self, sku: &str, price_fen: i64, active: bool) {
        let admin = self.admin_token().await;
        let (status, body) = self
            .post(
                "/admin/products",
                Some(&admin),
                json!({ "sku": sku, "name": format!("Product {sku}"), "price_fen": price_fen, "active": active }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    /// Places an order of `quantity` × `sku` as the customer holding `token`; the order placed.
    pub async fn place_order(&self, token: &str, sku: &str, quantity: u32) -> Value {
        let (status, order) = self
            .post(
                "/api/orders",
                Some(token),
                json!({ "items": [{ "sku": sku, "quantity": quantity }] }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        order
    }

    /// The order's event stream as the back-office shows it (`GET /admin/orders/{id}/events`).
    pub async fn order_events(&self, order: &Value) -> Vec<Value> {
        let admin = self.admin_token().await;
        let path = format!("/admin/orders/{}/events", order["id"].as_str().unwrap());
        self.get(&path, Some(&admin)).await.1["items"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Waits until the order's history holds `event_type` (workers and notifications run
    /// asynchronously); returns the history.
    pub async fn wait_for_event(&self, order: &Value, event_type: &str) -> Vec<Value> {
        for _ in 0..400 {
            let history = self.order_events(order).await;
            if count(&history, event_type) > 0 {
                return history;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!(
            "{event_type} never recorded: {:?}",
            self.order_events(order).await
        );
    }

    /// A call to the simulator's control API (`/sandbox/control…`) that must succeed.
    pub async fn sandbox(&self, path: &str, body: Value) -> Value {
        let (status, body) = self
            .post(&format!("/sandbox/control{path}"), None, body)
            .await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        body
    }

    /// One pass of the payment and refund pollers, asking about everything at once; returns
    /// how many items were checked.
    pub async fn reconcile_now(&self) -> usize {
        let timing = paystream::jobs::ReconcileTiming {
            payment_after: chrono::Duration::zero(),
            refund_after: chrono::Duration::zero(),
        };
        let checks = paystream_projections::Checks::new(self.running().db.clone());
        paystream::jobs::reconcile(
            &self.running().payments,
            &checks,
            timing,
            chrono::Utc::now(),
        )
        .await
        .unwrap()
    }

    /// One expiry sweep as if every order's time were up; returns how many it closed.
    pub async fn expire_all_now(&self) -> usize {
        let running = self.running();
        let view = paystream_projections::OrdersView::new(running.db.clone());
        let checks = paystream_projections::Checks::new(running.db.clone());
        let later = chrono::Utc::now() + chrono::Duration::seconds(1801);
        paystream::jobs::expire_due_orders(&running.payments, &view, &checks, later)
            .await
            .unwrap()
    }

    /// The subscribe messages WeChat (the simulator) took for this user.
    pub async fn subscribe_messages(&self, openid: &str) -> Vec<Value> {
        let path = format!("/sandbox/control/subscribe-messages?openid={openid}");
        let (status, body) = self.get(&path, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["messages"].as_array().cloned().unwrap_or_default()
    }

    /// How many events the whole log holds.
    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM events")
            .fetch_one(&self.running().db.pool)
            .await
            .unwrap()
    }
}

/// How many of `events` are of this type.
pub fn count(events: &[Value], event_type: &str) -> usize {
    events.iter().filter(|e| e["type"] == event_type).count()
}

pub async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// Runs an async test body once per backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(paystream_engine::db::Backend::Postgres).await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(paystream_engine::db::Backend::Sqlite).await
                }
            )*
        }
    };
}

/// The contract's error shape: this status, this stable code, and a message for people.
pub fn assert_error(status: StatusCode, body: &Value, want_status: StatusCode, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}
