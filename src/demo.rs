//! `paystream demo`: a scripted checkout against the built-in simulator, printing each step —
//! the quickest way to see what the engine does. It uses only the public HTTP API, as a
//! mini-program and a back-office would.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use paystream::config::Settings;
use serde_json::{json, Value};

use crate::api_client::ApiClient;

#[derive(Args)]
pub struct DemoArgs {
    /// Database to use; default: a temporary SQLite file, removed afterwards.
    #[arg(long, env = "DEMO_DATABASE_URL", value_name = "DEMO_DATABASE_URL")]
    database_url: Option<String>,
    /// Which WeChat Pay API the checkout goes through.
    #[arg(long, value_enum, default_value_t = Channel::WechatpayV3)]
    channel: Channel,
    /// Show the engine's log lines too (by default only the demo's steps, and errors; RUST_LOG,
    /// when set, chooses the log lines instead).
    #[arg(long, short)]
    pub verbose: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Channel {
    #[value(name = "wechatpay_v3")]
    WechatpayV3,
    #[value(name = "wechatpay_v2")]
    WechatpayV2,
}

impl Channel {
    fn as_str(self) -> &'static str {
        match self {
            Channel::WechatpayV3 => "wechatpay_v3",
            Channel::WechatpayV2 => "wechatpay_v2",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Channel::WechatpayV3 => "JSAPI prepay at WeChat Pay APIv3 (JSON, RSA-signed)",
            Channel::WechatpayV2 => "unifiedorder at WeChat Pay APIv2 (XML, HMAC-SHA256-signed)",
        }
    }
}

fn step(n: u32, what: &str) {
    println!("\n{n}. {what}");
}

fn show(label: &str, value: &Value) {
    println!("     {label}: {value}");
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let database_url = args
        .database_url
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("demo.db").display()));
    let settings = Settings {
        admin_username: Some("demo-admin".into()),
        admin_password: Some("demo-password".into()),
        no_background_jobs: false,
        sandbox_notify_time_scale: 0.01,
        ..Settings::local(&database_url)
    };
    let running = paystream::start(settings).await?;
    let client = ApiClient::new(running.base_url(), true);
    println!(
        "paystream demo — engine at {} (SQLite, built-in WeChat simulator)",
        client.base
    );
    let result = walk(&client, args.channel).await;
    running.stop().await;
    result
}

async fn walk(c: &ApiClient, channel: Channel) -> anyhow::Result<()> {
    step(1, "Staff log in and put green tea in the catalogue");
    let admin = c
        .post(
            "/admin/login",
            None,
            json!({ "username": "demo-admin", "password": "demo-password" }),
        )
        .await?;
    let admin = admin["token"].as_str().context("staff token")?.to_string();
    let product = c.post("/admin/products", Some(&admin), json!({ "sku": "green-tea", "name": "西湖龙井 Green tea", "price_fen": 1250, "active": true })).await?;
    show("product", &product);

    step(
        2,
        "The mini-program logs in (wx.login → code → POST /api/login)",
    );
    let code = c
        .get("/sandbox/control/login-code?user=demo-customer", None)
        .await?;
    let login = c
        .post("/api/login", None, json!({ "code": code["code"] }))
        .await?;
    let token = login["token"]
        .as_str()
        .context("customer token")?
        .to_string();
    show("user", &login["user"]);

    step(
        3,
        "The customer orders two teas (the price comes from the catalogue)",
    );
    let order = c
        .post(
            "/api/orders",
            Some(&token),
            json!({ "items": [{ "sku": "green-tea", "quantity": 2 }] }),
        )
        .await?;
    let id = order["id"].as_str().context("order id")?.to_string();
    show(
        "order",
        &json!({ "id": id, "out_trade_no": order["out_trade_no"], "status": order["status"], "total_fen": order["total_fen"] }),
    );

    step(
        4,
        &format!(
            "Checkout: {}, parameters for wx.requestPayment",
            channel.describe()
        ),
    );
    let params = c
        .post(
            &format!("/api/orders/{id}/pay"),
            Some(&token),
            json!({ "channel": channel.as_str() }),
        )
        .await?;
    show("wx.requestPayment", &params);

    step(
        5,
        "The user pays in WeChat (simulated); WeChat Pay notifies the engine",
    );
    // `wait`: the simulator answers once the engine answered its notification.
    let paid = c
        .post(
            "/sandbox/control/wechatpay/pay",
            None,
            json!({ "out_trade_no": order["out_trade_no"], "channel": channel.as_str(), "wait": true }),
        )
        .await?;
    show("transaction_id", &paid["transaction_id"]);
    show("the engine answered the notification", &paid["notified"]);
    let order = wait(c, &token, &id, |o| o["status"] == "paid").await?;
    show(
        "order",
        &json!({ "status": order["status"], "paid_fen": order["paid_fen"], "paid_at": order["paid_at"] }),
    );

    step(6, match channel {
        Channel::WechatpayV3 => "Staff refund half (recorded first, then asked of WeChat Pay; the outcome arrives by notify)",
        Channel::WechatpayV2 => "Staff refund half (recorded first, then /secapi/pay/refund over mutual TLS; the outcome arrives by an encrypted notify)",
    });
    let refund = c
        .post(
            &format!("/admin/orders/{id}/refunds"),
            Some(&admin),
            json!({ "amount_fen": 1250, "reason": "one tea was missing" }),
        )
        .await?;
    show("refund", &refund);
    let order = wait(c, &token, &id, |o| o["refunded_fen"] == 1250).await?;
    show(
        "order",
        &json!({ "status": order["status"], "paid_fen": order["paid_fen"], "refunded_fen": order["refunded_fen"] }),
    );

    step(7, "The order's history: every change is an event");
    let events = c
        .get(&format!("/admin/orders/{id}/events"), Some(&admin))
        .await?;
    for event in events["items"].as_array().into_iter().flatten() {
        println!(
            "     v{} {:<22} by {}",
            event["version"],
            event["type"].as_str().unwrap_or_default(),
            event["metadata"]["actor"].as_str().unwrap_or_default()
        );
    }
    println!("\ndone.");
    Ok(())
}

async fn wait(
    c: &ApiClient,
    token: &str,
    id: &str,
    done: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    for _ in 0..100 {
        let response = c
            .http
            .get(format!("{}/api/orders/{id}", c.base))
            .bearer_auth(token)
            .send()
            .await?;
        let order: Value = response.json().await?;
        if done(&order) {
            return Ok(order);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the order did not get there in time")
}
