//! A small client of the engine's own HTTP API, for `paystream demo` and `paystream bench`: JSON
//! in and out, bearer tokens, any non-2xx answer an error naming the call.

use anyhow::{bail, Context};
use serde_json::Value;

pub struct ApiClient {
    /// For calls that should not be printed (polling).
    pub http: reqwest::Client,
    pub base: String,
    /// Print each call and its status (the demo shows its steps; a benchmark stays quiet).
    verbose: bool,
}

impl ApiClient {
    pub fn new(base: String, verbose: bool) -> ApiClient {
        ApiClient {
            http: reqwest::Client::new(),
            base,
            verbose,
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = &body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let text = response.text().await?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if self.verbose {
            println!("  {method} {path} → {status}");
        }
        if !status.is_success() {
            bail!("{method} {path} answered {status}: {value}");
        }
        Ok(value)
    }

    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, token, None).await
    }
}
