//! The client against the built-in simulator over real HTTP on loopback: what the engine gets
//! for each of WeChat's answers, and how the access token is renewed.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use paystream_engine::accounts::MiniProgram;
use paystream_engine::cards::{CardError, CardRef, Cards, CodeState};
use paystream_engine::subscriptions::{SendError, SubscribeMessage, SubscribeMessages};
use paystream_sandbox::{PaySandboxConfig, Sandbox, SandboxConfig, DEFAULT_CARD_ID};
use paystream_wechat::{card_signature, MiniProgramClient};
use secrecy::SecretString;
use serde_json::{json, Value};

const SECRET: &str = "sandbox-secret";
const TEMPLATE: &str = "TPL-paid";

struct World {
    client: Arc<MiniProgramClient>,
    sandbox: Sandbox,
    /// `http://127.0.0.1:port/sandbox`, what `WECHAT_API_BASE` would be.
    base: String,
    http: reqwest::Client,
}

/// Each test names its own app: forced refreshes are limited per app across the process.
async fn start(appid: &str) -> World {
    let sandbox = Sandbox::new(SandboxConfig {
        appid: appid.to_string(),
        secret: SECRET.to_string(),
        pay: PaySandboxConfig::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().nest("/sandbox", paystream_sandbox::router(sandbox.clone()));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let base = format!("http://{addr}/sandbox");
    World {
        client: Arc::new(MiniProgramClient::new(
            &base,
            appid,
            SecretString::from(SECRET),
        )),
        sandbox,
        base,
        http: reqwest::Client::new(),
    }
}

impl World {
    async fn control(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}/control/{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "control {path}");
        response.json().await.unwrap()
    }

    async fn get(&self, path: &str) -> Value {
        let url = format!("{}/control/{path}", self.base);
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The user accepts the template `n` times; their openid.
    async fn accept(&self, user: &str, n: usize) -> String {
        let answer = self
            .control(
                "subscribe-accept",
                json!({ "user": user, "template_ids": vec![TEMPLATE; n] }),
            )
            .await;
        answer["openid"].as_str().unwrap().to_string()
    }

    async fn token_stats(&self) -> Value {
        self.get("access-tokens").await
    }

    async fn give_card(&self, user: &str) -> (CardRef, String) {
        let card = self.control("cards", json!({ "user": user })).await;
        let text = |k: &str| card[k].as_str().unwrap().to_string();
        (
            CardRef {
                card_id: text("card_id"),
                code: text("code"),
            },
            text("openid"),
        )
    }
}

fn paid_message(openid: &str) -> SubscribeMessage {
    SubscribeMessage {
        openid: openid.to_string(),
        template_id: TEMPLATE.to_string(),
        page: Some("pages/order/detail?id=42".to_string()),
        data: BTreeMap::from([
            (
                "character_string1".to_string(),
                "PS20240101000042".to_string(),
            ),
            ("amount2".to_string(), "12.50".to_string()),
            ("thing3".to_string(), "拿铁 x2".to_string()),
        ]),
    }
}

#[tokio::test]
async fn a_sent_message_reaches_the_user_once_per_acceptance() {
    let w = start("wxclientsend").await;
    let openid = w.accept("alice", 1).await;
    let msgid = w.client.send(&paid_message(&openid)).await.unwrap();
    assert!(
        msgid.len() >= 18 && msgid.chars().all(|c| c.is_ascii_digit()),
        "{msgid}"
    );

    let sent = w.get(&format!("subscribe-messages?openid={openid}")).await;
    let sent = &sent["messages"][0];
    assert_eq!(
        sent["msgid"].to_string(),
        msgid,
        "the msgid WeChat gave, exactly"
    );
    assert_eq!(sent["page"], "pages/order/detail?id=42");
    assert_eq!(sent["data"]["thing3"], json!({ "value": "拿铁 x2" }));

    let again = w.client.send(&paid_message(&openid)).await;
    assert!(matches!(again, Err(SendError::NoAcceptance)), "{again:?}");
}

#[tokio::test]
async fn refusals_are_final_and_busyness_is_not() {
    let w = start("wxclientrefusals").await;
    let stranger = paystream_sandbox::openid_for("wxclientrefusals", "stranger");
    let unknown = w.client.send(&paid_message(&stranger)).await;
    assert!(
        matches!(unknown, Err(SendError::Refused { errcode: 40003, .. })),
        "{unknown:?}"
    );

    let openid = w.accept("bob", 1).await;
    let mut too_long = paid_message(&openid);
    too_long.data.insert(
        "thing3".into(),
        "这是一个超过二十个字的商品名称所以微信会拒绝它".into(),
    );
    let refused = w.client.send(&too_long).await;
    assert!(
        matches!(refused, Err(SendError::Refused { errcode: 47003, .. })),
        "{refused:?}"
    );

    w.control("faults", json!({ "subscribe_send": [-1, 45009] }))
        .await;
    for _ in 0..2 {
        let busy = w.client.send(&paid_message(&openid)).await;
        assert!(matches!(busy, Err(SendError::Unavailable(_))), "{busy:?}");
    }
    // None of that used the acceptance.
    w.client.send(&paid_message(&openid)).await.unwrap();
}

#[tokio::test]
async fn a_voided_token_is_renewed_in_normal_mode_without_forcing() {
    let w = start("wxclientvoid").await;
    let openid = w.accept("carol", 2).await;
    w.client.send(&paid_message(&openid)).await.unwrap();
    w.control("void-access-token", json!({})).await;
    w.client.send(&paid_message(&openid)).await.unwrap();
    assert_eq!(
        w.token_stats().await,
        json!({ "valid": 1, "issued": 2, "forced_refreshes": 0, "requests": 2 })
    );
}

#[tokio::test]
async fn concurrent_callers_share_one_renewal() {
    let w = start("wxclientconcurrent").await;
    let openid = w.accept("dave", 11).await;
    w.client.send(&paid_message(&openid)).await.unwrap();
    w.control("void-access-token", json!({})).await;
    let sends: Vec<_> = (0..10)
        .map(|_| {
            let client = w.client.clone();
            let message = paid_message(&openid);
            tokio::spawn(async move { client.send(&message).await })
        })
        .collect();
    for send in sends {
        send.await.unwrap().unwrap();
    }
    let stats = w.token_stats().await;
    // The first token, and one renewal that every refused caller then uses.
    assert_eq!(stats["requests"], 2, "{stats}");
    assert_eq!(stats["forced_refreshes"], 0);
}

#[tokio::test]
async fn a_refused_current_token_is_forced_once_per_30_seconds() {
    let w = start("wxclientforce").await;
    let openid = w.accept("erin", 3).await;
    w.client.send(&paid_message(&openid)).await.unwrap();

    // WeChat refuses the token normal mode still hands out: only forcing replaces it.
    w.control("faults", json!({ "subscribe_send": [40001] }))
        .await;
    w.client.send(&paid_message(&openid)).await.unwrap();
    let stats = w.token_stats().await;
    assert_eq!(stats["forced_refreshes"], 1, "{stats}");

    // Again within 30 s: no second force, the caller is told to try later.
    w.control("faults", json!({ "subscribe_send": [40001] }))
        .await;
    let refused = w.client.send(&paid_message(&openid)).await;
    assert!(
        matches!(refused, Err(SendError::Unavailable(_))),
        "{refused:?}"
    );
    assert_eq!(w.token_stats().await["forced_refreshes"], 1);
    w.client.send(&paid_message(&openid)).await.unwrap();
}

#[tokio::test]
async fn the_phone_number_call_shares_the_renewed_token() {
    let w = start("wxclientphone").await;
    let openid = w.accept("frank", 1).await;
    w.client.send(&paid_message(&openid)).await.unwrap();
    w.control("void-access-token", json!({})).await;
    let code = w.sandbox.phone_code("13900139000");
    let phone = w.client.phone_number(&code).await.unwrap();
    assert_eq!(phone.phone, "13900139000");
    assert_eq!(phone.country_code, "86");
    assert_eq!(w.token_stats().await["issued"], 2);
}

#[tokio::test]
async fn a_card_is_checked_consumed_once_and_then_refused() {
    let w = start("wxclientcards").await;
    let (card, openid) = w.give_card("grace").await;
    let code = w.client.check(&card).await.unwrap();
    assert_eq!(code.openid, openid);
    assert_eq!(code.state, CodeState::Usable);
    assert!(code.can_consume);
    assert!(code.usable_by(&openid));

    assert_eq!(w.client.consume(&card).await.unwrap(), openid);
    let after = w.client.check(&card).await.unwrap();
    assert_eq!(after.state, CodeState::Consumed);
    assert!(!after.usable_by(&openid));
    let again = w.client.consume(&card).await;
    assert!(
        matches!(again, Err(CardError::AlreadyConsumed)),
        "{again:?}"
    );

    let unknown = CardRef {
        card_id: card.card_id.clone(),
        code: "000000000000".into(),
    };
    assert!(matches!(
        w.client.check(&unknown).await,
        Err(CardError::Unknown)
    ));
    assert!(matches!(
        w.client.consume(&unknown).await,
        Err(CardError::Unknown)
    ));
    let bad_card = CardRef {
        card_id: "pNoSuchCard".into(),
        code: card.code.clone(),
    };
    assert!(matches!(
        w.client.check(&bad_card).await,
        Err(CardError::Unknown)
    ));
}

#[tokio::test]
async fn a_lost_consume_answer_is_unavailable_then_already_consumed() {
    let w = start("wxclientlost").await;
    let (card, _) = w.give_card("heidi").await;
    w.control(
        "faults",
        json!({ "card_consume_lose_answer": 1, "card_consume": [] }),
    )
    .await;
    let lost = w.client.consume(&card).await;
    assert!(matches!(lost, Err(CardError::Unavailable(_))), "{lost:?}");
    let retry = w.client.consume(&card).await;
    assert!(
        matches!(retry, Err(CardError::AlreadyConsumed)),
        "{retry:?}"
    );
}

#[tokio::test]
async fn card_calls_renew_a_voided_token() {
    let w = start("wxclientcardtoken").await;
    let (card, openid) = w.give_card("ivan").await;
    w.client.check(&card).await.unwrap();
    w.control("void-access-token", json!({})).await;
    assert_eq!(w.client.consume(&card).await.unwrap(), openid);
    w.control("faults", json!({ "card_consume": [-1] })).await;
    let (other, _) = w.give_card("ivan").await;
    let busy = w.client.consume(&other).await;
    assert!(matches!(busy, Err(CardError::Unavailable(_))), "{busy:?}");
}

#[tokio::test]
async fn card_ext_verifies_with_the_sandboxes_ticket() {
    let w = start("wxclientext").await;
    w.give_card("judy").await;
    let ext = w.client.card_ext(DEFAULT_CARD_ID).await.unwrap();
    let fields: Value = serde_json::from_str(&ext).unwrap();
    let keys: Vec<&String> = fields.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["nonce_str", "signature", "timestamp"]);
    let timestamp = fields["timestamp"].as_str().expect("timestamp is a string");
    let now = chrono::Utc::now().timestamp();
    assert!((now - timestamp.parse::<i64>().unwrap()).abs() < 60);
    assert!(fields["nonce_str"].as_str().unwrap().len() >= 16);

    let check = w
        .control(
            "cards/ext-check",
            json!({ "card_id": DEFAULT_CARD_ID, "card_ext": ext }),
        )
        .await;
    assert_eq!(check, json!({ "valid": true }));

    // A second ext comes from the cached ticket, with its own nonce.
    let second = w.client.card_ext(DEFAULT_CARD_ID).await.unwrap();
    assert_ne!(second, ext);
    let check = w
        .control(
            "cards/ext-check",
            json!({ "card_id": DEFAULT_CARD_ID, "card_ext": second }),
        )
        .await;
    assert_eq!(check["valid"], true);

    // Signed without the ticket: not valid.
    let mut forged = fields.clone();
    forged["signature"] = json!(card_signature(&[
        "not-the-ticket",
        DEFAULT_CARD_ID,
        timestamp
    ]));
    let check = w
        .control(
            "cards/ext-check",
            json!({ "card_id": DEFAULT_CARD_ID, "card_ext": forged.to_string() }),
        )
        .await;
    assert_eq!(check["valid"], false);
}
