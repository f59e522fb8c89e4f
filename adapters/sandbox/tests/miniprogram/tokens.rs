use serde_json::json;

use crate::support::{errcode, start};

#[tokio::test]
async fn normal_mode_keeps_the_token_and_a_forced_refresh_voids_it_at_most_every_30_s() {
    let sim = start().await;
    let first = sim.token(false).await;
    let token = first["access_token"].as_str().unwrap().to_string();
    assert!(first["expires_in"].as_u64().unwrap() > 7000);
    assert_eq!(
        sim.access_token().await,
        token,
        "normal mode gives the current token"
    );

    let forced = sim.token(true).await;
    let new = forced["access_token"].as_str().unwrap().to_string();
    assert_ne!(new, token);
    let answer = sim
        .api("/card/code/get", &token, json!({ "code": "000000000000" }))
        .await;
    assert_eq!(
        errcode(&answer),
        40001,
        "the forced refresh voided the old token"
    );
    assert_eq!(sim.access_token().await, new);

    let again = sim.token(true).await;
    assert_eq!(
        errcode(&again),
        45009,
        "second forced refresh within 30 s: {again}"
    );
    assert_eq!(
        sim.access_token().await,
        new,
        "a refused force changes nothing"
    );

    let (_, stats) = sim.get("/control/access-tokens").await;
    assert_eq!(
        stats,
        json!({ "valid": 1, "issued": 2, "forced_refreshes": 1, "requests": 5 })
    );
}

#[tokio::test]
async fn a_voided_token_is_refused_and_normal_mode_then_issues_a_fresh_one() {
    let sim = start().await;
    let token = sim.access_token().await;
    let voided = sim.control("void-access-token", json!({})).await;
    assert_eq!(voided["voided"], 1);
    let answer = sim
        .api("/cgi-bin/message/subscribe/send", &token, json!({}))
        .await;
    assert_eq!(errcode(&answer), 40001);
    assert!(answer["errmsg"]
        .as_str()
        .unwrap()
        .starts_with("invalid credential, access_token is invalid or not latest"));
    let fresh = sim.access_token().await;
    assert_ne!(fresh, token);
    let (_, stats) = sim.get("/control/access-tokens").await;
    assert_eq!(stats["forced_refreshes"], 0);
}

#[tokio::test]
async fn every_api_refuses_a_missing_or_unknown_token() {
    let sim = start().await;
    for path in [
        "/cgi-bin/message/subscribe/send",
        "/card/code/get",
        "/card/code/consume",
        "/wxa/business/getuserphonenumber",
    ] {
        let (_, answer) = sim.post(path, json!({})).await;
        assert_eq!(errcode(&answer), 40001, "{path} without a token");
        let answer = sim.api(path, "not-a-token", json!({})).await;
        assert_eq!(errcode(&answer), 40001, "{path} with an unknown token");
    }
    let (_, answer) = sim
        .get("/cgi-bin/ticket/getticket?access_token=nope&type=wx_card")
        .await;
    assert_eq!(errcode(&answer), 40001);
}

#[tokio::test]
async fn stable_token_checks_the_app_credentials() {
    let sim = start().await;
    let (_, answer) = sim
        .post(
            "/cgi-bin/stable_token",
            json!({ "grant_type": "client_credential", "appid": crate::support::APPID,
                    "secret": "wrong" }),
        )
        .await;
    assert_eq!(errcode(&answer), 40125);
    assert!(answer.get("access_token").is_none());
}
