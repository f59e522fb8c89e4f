use paystream_sandbox::openid_for;
use serde_json::{json, Value};

use crate::support::{errcode, start, Sim, APPID};

const SEND: &str = "/cgi-bin/message/subscribe/send";
const PAID: &str = "TPL-payment-succeeded";

fn message(openid: &str, data: Value) -> Value {
    json!({ "touser": openid, "template_id": PAID, "page": "pages/order/detail?id=1",
            "lang": "zh_CN", "data": data })
}

fn good_data() -> Value {
    json!({ "character_string1": { "value": "PS20240101000001" },
            "amount2": { "value": "12.50" },
            "thing3": { "value": "拿铁 x2" } })
}

async fn accept(sim: &Sim, user: &str, templates: &[&str]) -> String {
    let answer = sim
        .control(
            "subscribe-accept",
            json!({ "user": user, "template_ids": templates }),
        )
        .await;
    assert_eq!(answer["accepted"], json!(templates));
    answer["openid"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn each_acceptance_allows_exactly_one_message() {
    let sim = start().await;
    let token = sim.access_token().await;
    let openid = accept(&sim, "alice", &[PAID]).await;
    assert_eq!(openid, openid_for(APPID, "alice"));

    let answer = sim.api(SEND, &token, message(&openid, good_data())).await;
    assert_eq!(errcode(&answer), 0, "{answer}");
    assert_eq!(answer["errmsg"], "ok");
    let msgid = answer["msgid"].as_u64().expect("msgid is a number");

    let again = sim.api(SEND, &token, message(&openid, good_data())).await;
    assert_eq!(errcode(&again), 43101, "the acceptance was used: {again}");
    assert!(again["errmsg"]
        .as_str()
        .unwrap()
        .starts_with("user refuse to accept the msg"));

    let (_, sent) = sim
        .get(&format!("/control/subscribe-messages?openid={openid}"))
        .await;
    let sent = sent["messages"].as_array().unwrap();
    assert_eq!(sent.len(), 1, "only the accepted message is recorded");
    assert_eq!(sent[0]["msgid"], msgid);
    assert_eq!(sent[0]["touser"], openid.as_str());
    assert_eq!(sent[0]["template_id"], PAID);
    assert_eq!(sent[0]["page"], "pages/order/detail?id=1");
    assert_eq!(sent[0]["data"], good_data());
    assert!(sent[0]["sent_at"].is_string());

    // Two acceptances, two sends.
    accept(&sim, "alice", &[PAID, PAID]).await;
    for _ in 0..2 {
        let answer = sim.api(SEND, &token, message(&openid, good_data())).await;
        assert_eq!(errcode(&answer), 0, "{answer}");
    }
    let answer = sim.api(SEND, &token, message(&openid, good_data())).await;
    assert_eq!(errcode(&answer), 43101);
}

#[tokio::test]
async fn an_acceptance_of_one_template_does_not_cover_another() {
    let sim = start().await;
    let token = sim.access_token().await;
    let openid = accept(&sim, "bob", &["TPL-other"]).await;
    let answer = sim.api(SEND, &token, message(&openid, good_data())).await;
    assert_eq!(errcode(&answer), 43101);
}

#[tokio::test]
async fn unknown_openids_and_empty_templates_are_refused() {
    let sim = start().await;
    let token = sim.access_token().await;
    let stranger = openid_for(APPID, "never-seen");
    let answer = sim.api(SEND, &token, message(&stranger, good_data())).await;
    assert_eq!(errcode(&answer), 40003, "{answer}");

    let openid = accept(&sim, "carol", &[PAID]).await;
    let mut body = message(&openid, good_data());
    body["template_id"] = json!("");
    assert_eq!(errcode(&sim.api(SEND, &token, body).await), 40037);
    // The refusals did not use the acceptance.
    let answer = sim.api(SEND, &token, message(&openid, good_data())).await;
    assert_eq!(errcode(&answer), 0, "{answer}");
}

#[tokio::test]
async fn bad_data_is_47003_and_keeps_the_acceptance() {
    let sim = start().await;
    let token = sim.access_token().await;
    let openid = accept(&sim, "dave", &[PAID]).await;
    let too_long = "这是一个超过二十个字的商品名称所以微信会拒绝它";
    for data in [
        json!({ "thing3": { "value": too_long } }),
        json!({ "character_string1": { "value": "x".repeat(33) } }),
        json!({ "thing3": { "value": "" } }),
        json!({ "thing3": "not an object" }),
        json!({}),
        Value::Null,
    ] {
        let answer = sim.api(SEND, &token, message(&openid, data.clone())).await;
        assert_eq!(errcode(&answer), 47003, "{data}: {answer}");
    }
    let mut body = message(&openid, good_data());
    body["miniprogram_state"] = json!("beta");
    assert_eq!(errcode(&sim.api(SEND, &token, body).await), 47003);
    let answer = sim.api(SEND, &token, message(&openid, good_data())).await;
    assert_eq!(errcode(&answer), 0, "{answer}");
    let (_, sent) = sim.get("/control/subscribe-messages").await;
    assert_eq!(sent["messages"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn injected_errcodes_answer_the_next_sends_in_order() {
    let sim = start().await;
    let token = sim.access_token().await;
    let openid = accept(&sim, "erin", &[PAID]).await;
    let queued = sim
        .control("faults", json!({ "subscribe_send": [-1, 40001] }))
        .await;
    assert_eq!(queued["queued"]["subscribe_send"], json!([-1, 40001]));
    assert_eq!(
        errcode(&sim.api(SEND, &token, message(&openid, good_data())).await),
        -1
    );
    assert_eq!(
        errcode(&sim.api(SEND, &token, message(&openid, good_data())).await),
        40001
    );
    // The token was not really voided, and the faults did not use the acceptance.
    let answer = sim.api(SEND, &token, message(&openid, good_data())).await;
    assert_eq!(errcode(&answer), 0, "{answer}");
}

#[tokio::test]
async fn opening_the_app_makes_an_openid_known() {
    let sim = start().await;
    let token = sim.access_token().await;
    let stranger = openid_for(APPID, "never-opened-the-app");
    let answer = sim.api(SEND, &token, message(&stranger, good_data())).await;
    assert_eq!(errcode(&answer), 40003, "nobody of that name used the app");
    // `wx.login` (a login code) means the user opened the mini-program: WeChat knows them.
    let login = sim.control("login-code", json!({ "user": "frank" })).await;
    let openid = login["openid"].as_str().unwrap().to_string();
    let answer = sim.api(SEND, &token, message(&openid, good_data())).await;
    assert_eq!(errcode(&answer), 43101, "known now, but accepted nothing");
}

#[tokio::test]
async fn subscribe_accept_needs_a_user() {
    let sim = start().await;
    let (status, _) = sim
        .post(
            "/control/subscribe-accept",
            json!({ "template_ids": [PAID] }),
        )
        .await;
    assert_eq!(status, 400);
}
