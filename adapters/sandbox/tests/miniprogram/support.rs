//! A sandbox on loopback, mounted under a prefix as the engine mounts it, and plain HTTP calls.

use axum::Router;
use paystream_sandbox::{PaySandboxConfig, Sandbox, SandboxConfig};
use serde_json::{json, Value};

pub const APPID: &str = "wxminiprogramtest01";
pub const SECRET: &str = "sandbox-secret";

pub struct Sim {
    /// `http://127.0.0.1:port/sandbox`
    pub base: String,
    http: reqwest::Client,
}

pub async fn start() -> Sim {
    let sandbox = Sandbox::new(SandboxConfig {
        appid: APPID.to_string(),
        secret: SECRET.to_string(),
        pay: PaySandboxConfig::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().nest("/sandbox", paystream_sandbox::router(sandbox));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Sim {
        base: format!("http://{addr}/sandbox"),
        http: reqwest::Client::new(),
    }
}

impl Sim {
    /// POSTs JSON; answers (status, body as JSON or Null).
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A WeChat API answer, which is always HTTP 200.
    pub async fn api(&self, path: &str, token: &str, body: Value) -> Value {
        let (status, answer) = self
            .post(&format!("{path}?access_token={token}"), body)
            .await;
        assert_eq!(status, 200, "{path} answered {status}: {answer}");
        answer
    }

    pub async fn token(&self, force_refresh: bool) -> Value {
        let (_, answer) = self
            .post(
                "/cgi-bin/stable_token",
                json!({ "grant_type": "client_credential", "appid": APPID, "secret": SECRET,
                        "force_refresh": force_refresh }),
            )
            .await;
        answer
    }

    /// A valid access token (normal mode).
    pub async fn access_token(&self) -> String {
        let answer = self.token(false).await;
        answer["access_token"].as_str().unwrap().to_string()
    }

    pub async fn control(&self, path: &str, body: Value) -> Value {
        let (status, answer) = self.post(&format!("/control/{path}"), body).await;
        assert_eq!(status, 200, "control {path} answered {status}: {answer}");
        answer
    }
}

pub fn errcode(answer: &Value) -> i64 {
    answer["errcode"].as_i64().unwrap_or(0)
}
