use paystream_sandbox::DEFAULT_CARD_ID;
use serde_json::{json, Value};
use sha1::{Digest, Sha1};

use crate::support::{errcode, start, Sim};

async fn give(sim: &Sim, user: &str) -> (String, String, String) {
    let card = sim.control("cards", json!({ "user": user })).await;
    let text = |k: &str| card[k].as_str().unwrap().to_string();
    (text("card_id"), text("code"), text("openid"))
}

async fn get_code(sim: &Sim, token: &str, card_id: &str, code: &str, check: bool) -> Value {
    sim.api(
        "/card/code/get",
        token,
        json!({ "card_id": card_id, "code": code, "check_consume": check }),
    )
    .await
}

async fn consume(sim: &Sim, token: &str, card_id: &str, code: &str) -> Value {
    sim.api(
        "/card/code/consume",
        token,
        json!({ "card_id": card_id, "code": code }),
    )
    .await
}

#[tokio::test]
async fn a_given_card_is_normal_until_consumed_once() {
    let sim = start().await;
    let token = sim.access_token().await;
    let (card_id, code, openid) = give(&sim, "alice").await;
    assert_eq!(card_id, DEFAULT_CARD_ID);
    assert_eq!(code.len(), 12);

    let got = get_code(&sim, &token, &card_id, &code, false).await;
    assert_eq!(errcode(&got), 0, "{got}");
    assert_eq!(got["openid"], openid.as_str());
    assert_eq!(got["user_card_status"], "NORMAL");
    assert_eq!(got["can_consume"], true);
    assert_eq!(got["card"]["card_id"], card_id.as_str());
    assert!(got["card"]["end_time"].as_i64() > got["card"]["begin_time"].as_i64());

    let consumed = consume(&sim, &token, &card_id, &code).await;
    assert_eq!(
        consumed,
        json!({ "errcode": 0, "errmsg": "ok", "card": { "card_id": card_id }, "openid": openid })
    );

    let again = consume(&sim, &token, &card_id, &code).await;
    assert_eq!(errcode(&again), 40099);
    assert!(again["errmsg"]
        .as_str()
        .unwrap()
        .starts_with("invalid code, this code has consumed."));

    let got = get_code(&sim, &token, &card_id, &code, false).await;
    assert_eq!(got["user_card_status"], "CONSUMED");
    assert_eq!(got["can_consume"], false);
    // check_consume true (WeChat's default) turns an unusable code into an errcode.
    assert_eq!(
        errcode(&get_code(&sim, &token, &card_id, &code, true).await),
        40099
    );
    let (_, default) = sim
        .post(
            &format!("/card/code/get?access_token={token}"),
            json!({ "code": code }),
        )
        .await;
    assert_eq!(errcode(&default), 40099);
}

#[tokio::test]
async fn unknown_codes_and_cards_are_refused() {
    let sim = start().await;
    let token = sim.access_token().await;
    let (card_id, code, _) = give(&sim, "bob").await;
    assert_eq!(
        errcode(&get_code(&sim, &token, &card_id, "999999999999", false).await),
        40056
    );
    assert_eq!(
        errcode(&consume(&sim, &token, &card_id, "999999999999").await),
        40056
    );
    assert_eq!(
        errcode(&get_code(&sim, &token, "pNoSuchCard", &code, false).await),
        40073
    );
    // A code of another card.
    let other = sim
        .control("cards", json!({ "user": "bob", "card_id": "pOtherCard" }))
        .await;
    let other_code = other["code"].as_str().unwrap();
    assert_eq!(
        errcode(&consume(&sim, &token, &card_id, other_code).await),
        40056
    );
    // None of that consumed anything.
    assert_eq!(
        get_code(&sim, &token, &card_id, &code, false).await["user_card_status"],
        "NORMAL"
    );
}

#[tokio::test]
async fn each_gift_is_a_new_code_of_its_owner() {
    let sim = start().await;
    let (_, a, alice) = give(&sim, "alice").await;
    let (_, b, alice_again) = give(&sim, "alice").await;
    let (_, _, bob) = give(&sim, "bob").await;
    assert_ne!(a, b);
    assert_eq!(alice, alice_again);
    assert_ne!(alice, bob);
}

#[tokio::test]
async fn a_code_used_elsewhere_is_consumed_at_the_api() {
    let sim = start().await;
    let token = sim.access_token().await;
    let (card_id, code, _) = give(&sim, "carol").await;
    let used = sim
        .control("cards/consume", json!({ "card_id": card_id, "code": code }))
        .await;
    assert_eq!(used["consumed"], true);
    let (status, _) = sim
        .post(
            "/control/cards/consume",
            json!({ "card_id": card_id, "code": code }),
        )
        .await;
    assert_eq!(status, 409);
    assert_eq!(
        errcode(&consume(&sim, &token, &card_id, &code).await),
        40099
    );
}

#[tokio::test]
async fn a_lost_consume_answer_still_consumed_the_code() {
    let sim = start().await;
    let token = sim.access_token().await;
    let (card_id, code, _) = give(&sim, "dave").await;
    sim.control("faults", json!({ "card_consume_lose_answer": 1 }))
        .await;
    let (status, _) = sim
        .post(
            &format!("/card/code/consume?access_token={token}"),
            json!({ "card_id": card_id, "code": code }),
        )
        .await;
    assert_eq!(status, 502);
    assert_eq!(
        errcode(&consume(&sim, &token, &card_id, &code).await),
        40099,
        "the retry finds it consumed"
    );
}

#[tokio::test]
async fn injected_consume_errcodes_do_not_consume() {
    let sim = start().await;
    let token = sim.access_token().await;
    let (card_id, code, openid) = give(&sim, "erin").await;
    sim.control("faults", json!({ "card_consume": [-1] })).await;
    assert_eq!(errcode(&consume(&sim, &token, &card_id, &code).await), -1);
    let answer = consume(&sim, &token, &card_id, &code).await;
    assert_eq!(answer["openid"], openid.as_str(), "{answer}");
}

async fn ext_check(sim: &Sim, ext: Value) -> Value {
    let (status, answer) = sim.post("/control/cards/ext-check", ext).await;
    assert_eq!(status, 200);
    answer
}

fn sign(values: &[&str]) -> String {
    let mut values = values.to_vec();
    values.sort();
    hex::encode(Sha1::digest(values.concat()))
}

#[tokio::test]
async fn a_card_ext_signed_with_the_current_ticket_checks() {
    let sim = start().await;
    let token = sim.access_token().await;
    let (_, answer) = sim
        .get(&format!(
            "/cgi-bin/ticket/getticket?access_token={token}&type=wx_card"
        ))
        .await;
    assert_eq!(errcode(&answer), 0, "{answer}");
    assert_eq!(answer["expires_in"], 7200);
    let ticket = answer["ticket"].as_str().unwrap();
    let (_, again) = sim
        .get(&format!(
            "/cgi-bin/ticket/getticket?access_token={token}&type=wx_card"
        ))
        .await;
    assert_eq!(again["ticket"], ticket, "the ticket lasts its 7200 s");
    let (_, wrong_type) = sim
        .get(&format!(
            "/cgi-bin/ticket/getticket?access_token={token}&type=other"
        ))
        .await;
    assert_ne!(errcode(&wrong_type), 0);

    let (timestamp, nonce) = ("1700000000", "abcdefghijklmnop");
    let signature = sign(&[ticket, DEFAULT_CARD_ID, timestamp, nonce]);
    // The default card is known once given.
    give(&sim, "frank").await;
    let fields = json!({ "card_id": DEFAULT_CARD_ID, "timestamp": timestamp,
                         "nonce_str": nonce, "signature": signature });
    assert_eq!(
        ext_check(&sim, fields.clone()).await,
        json!({ "valid": true })
    );
    let card_ext = json!({ "timestamp": timestamp, "nonce_str": nonce, "signature": signature });
    assert_eq!(
        ext_check(
            &sim,
            json!({ "card_id": DEFAULT_CARD_ID, "card_ext": card_ext.to_string() })
        )
        .await["valid"],
        true
    );
    let (_, by_query) = sim
        .get(&format!(
            "/control/cards/ext-check?card_id={DEFAULT_CARD_ID}&timestamp={timestamp}&nonce_str={nonce}&signature={signature}"
        ))
        .await;
    assert_eq!(by_query["valid"], true);

    let mut tampered = fields.clone();
    tampered["timestamp"] = json!("1700000001");
    assert_eq!(ext_check(&sim, tampered).await["valid"], false);
    let unsorted = {
        let joined = format!("{ticket}{DEFAULT_CARD_ID}{timestamp}{nonce}");
        hex::encode(Sha1::digest(joined))
    };
    let mut wrong_order = fields.clone();
    wrong_order["signature"] = json!(unsorted);
    assert_eq!(ext_check(&sim, wrong_order).await["valid"], false);
    let mut unknown_card = fields;
    unknown_card["card_id"] = json!("pNeverGiven");
    assert_eq!(ext_check(&sim, unknown_card).await["valid"], false);
}
