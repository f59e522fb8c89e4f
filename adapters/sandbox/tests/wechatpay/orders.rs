//! JSAPI ordering (validation, idempotency), query and close.

use serde_json::json;

use crate::support::{jsapi_body, start, APPID, MCHID, PAYER};
use paystream_sandbox::openid_for;

const NOTIFY: &str = "https://shop.example.com/wechatpay/notify";
const JSAPI: &str = "/v3/pay/transactions/jsapi";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_parameters_same_prepay_id_changed_parameters_refused() {
    let h = start().await;
    let first = h
        .merchant
        .post(JSAPI, &jsapi_body("ORD0000001", 100, NOTIFY))
        .await;
    assert_eq!(first.status, 200, "{}", first.text());
    h.merchant.verify_answer(&first).await.unwrap();
    let prepay = first.json()["prepay_id"].as_str().unwrap().to_string();
    assert!(prepay.starts_with("wx") && prepay.len() == 30, "{prepay}");
    assert!(prepay[2..].bytes().all(|b| b.is_ascii_hexdigit()));

    // A retry (e.g. after a timeout) with the same parameters, keys in another order.
    let mut reordered = jsapi_body("ORD0000001", 100, NOTIFY);
    reordered["amount"] = json!({ "currency": "CNY", "total": 100 });
    let again = h.merchant.post(JSAPI, &reordered).await;
    assert_eq!(again.json()["prepay_id"], prepay.as_str());

    let changed = h
        .merchant
        .post(JSAPI, &jsapi_body("ORD0000001", 101, NOTIFY))
        .await;
    assert_eq!(
        (changed.status, changed.code()),
        (400, "INVALID_REQUEST".into())
    );
    h.merchant.verify_answer(&changed).await.unwrap();

    // Another order number is another order.
    let other = h
        .merchant
        .post(JSAPI, &jsapi_body("ORD0000002", 100, NOTIFY))
        .await;
    assert_ne!(other.json()["prepay_id"], prepay.as_str());

    // Once paid: the number is used up.
    h.control_ok("pay", json!({ "out_trade_no": "ORD0000001" }))
        .await;
    let changed = h
        .merchant
        .post(JSAPI, &jsapi_body("ORD0000001", 101, NOTIFY))
        .await;
    assert_eq!(
        (changed.status, changed.code()),
        (403, "OUT_TRADE_NO_USED".into())
    );
    let same = h
        .merchant
        .post(JSAPI, &jsapi_body("ORD0000001", 100, NOTIFY))
        .await;
    assert_eq!((same.status, same.code()), (400, "ORDERPAID".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsapi_fields_are_validated() {
    let h = start().await;
    let base = jsapi_body("ORD0000003", 100, NOTIFY);
    let with = |path: &[&str], value: serde_json::Value| {
        let mut body = base.clone();
        let (last, parents) = path.split_last().unwrap();
        let mut slot = &mut body;
        for p in parents {
            slot = &mut slot[*p];
        }
        slot[*last] = value;
        body
    };
    let without = |field: &str| {
        let mut body = base.clone();
        body.as_object_mut().unwrap().remove(field);
        body
    };
    let cases = [
        (
            "other appid",
            with(&["appid"], json!("wx0000000000000000")),
            400,
            "APPID_MCHID_NOT_MATCH",
        ),
        (
            "other mchid",
            with(&["mchid"], json!("1900000999")),
            400,
            "PARAM_ERROR",
        ),
        ("no description", without("description"), 400, "PARAM_ERROR"),
        (
            "empty description",
            with(&["description"], json!("")),
            400,
            "PARAM_ERROR",
        ),
        (
            "long description",
            with(&["description"], json!("字".repeat(128))),
            400,
            "PARAM_ERROR",
        ),
        (
            "emoji description",
            with(&["description"], json!("奶茶🧋")),
            400,
            "PARAM_ERROR",
        ),
        (
            "short out_trade_no",
            with(&["out_trade_no"], json!("A1234")),
            400,
            "PARAM_ERROR",
        ),
        (
            "bad out_trade_no",
            with(&["out_trade_no"], json!("ORD.000001")),
            400,
            "PARAM_ERROR",
        ),
        (
            "zero total",
            with(&["amount", "total"], json!(0)),
            400,
            "PARAM_ERROR",
        ),
        (
            "yuan not fen",
            with(&["amount", "total"], json!(1.5)),
            400,
            "PARAM_ERROR",
        ),
        (
            "total as string",
            with(&["amount", "total"], json!("100")),
            400,
            "PARAM_ERROR",
        ),
        (
            "USD",
            with(&["amount", "currency"], json!("USD")),
            400,
            "PARAM_ERROR",
        ),
        ("no openid", with(&["payer"], json!({})), 400, "PARAM_ERROR"),
        (
            "empty openid",
            with(&["payer", "openid"], json!("")),
            400,
            "PARAM_ERROR",
        ),
        (
            "notify_url with query",
            with(&["notify_url"], json!("https://shop.example.com/n?o=1")),
            400,
            "PARAM_ERROR",
        ),
        (
            "plain http notify_url",
            with(&["notify_url"], json!("http://shop.example.com/n")),
            400,
            "PARAM_ERROR",
        ),
        (
            "bad time_expire",
            with(&["time_expire"], json!("2030-01-01 00:00:00")),
            400,
            "PARAM_ERROR",
        ),
        (
            "past time_expire",
            with(&["time_expire"], json!("2020-01-01T00:00:00+08:00")),
            400,
            "PARAM_ERROR",
        ),
    ];
    for (what, body, status, code) in cases {
        let answer = h.merchant.post(JSAPI, &body).await;
        assert_eq!(
            (answer.status, answer.code()),
            (status, code.to_string()),
            "{what}: {}",
            answer.text()
        );
        h.merchant.verify_answer(&answer).await.unwrap();
    }
    let malformed = h
        .merchant
        .send("POST", JSAPI, "{\"appid\":", Default::default())
        .await;
    assert_eq!(
        (malformed.status, malformed.code()),
        (400, "PARAM_ERROR".into())
    );

    // Loopback http (the sandbox's one allowance), currency omitted, a future time_expire.
    let mut ok = with(&["notify_url"], json!("http://127.0.0.1:9/notify"));
    ok["amount"] = json!({ "total": 100 });
    ok["time_expire"] = json!("2099-06-08T10:34:56+08:00");
    ok["attach"] = json!("cart=42");
    let answer = h.merchant.post(JSAPI, &ok).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_shows_wechats_shapes_before_and_after_payment() {
    let h = start().await;
    let mut body = jsapi_body("ORD0000004", 250, NOTIFY);
    body["attach"] = json!("cart=42");
    h.merchant.post(JSAPI, &body).await;
    let path = format!("/v3/pay/transactions/out-trade-no/ORD0000004?mchid={MCHID}");

    let unpaid = h.merchant.get(&path).await.json();
    assert_eq!(unpaid["trade_state"], "NOTPAY");
    assert_eq!(unpaid["appid"], APPID);
    assert_eq!(unpaid["mchid"], MCHID);
    assert_eq!(unpaid["attach"], "cart=42");
    assert_eq!(unpaid["amount"]["total"], 250);
    // As at WeChat, nothing about a payment before there is one.
    for absent in ["transaction_id", "payer", "success_time", "bank_type"] {
        assert!(unpaid.get(absent).is_none(), "{absent} in {unpaid}");
    }

    let paid = h
        .control_ok("pay", json!({ "out_trade_no": "ORD0000004" }))
        .await;
    let transaction_id = paid["transaction_id"].as_str().unwrap();
    assert!(transaction_id.len() == 28 && transaction_id.starts_with("4200"));
    let answer = h.merchant.get(&path).await;
    h.merchant.verify_answer(&answer).await.unwrap();
    let v = answer.json();
    assert_eq!(v["trade_state"], "SUCCESS");
    assert_eq!(v["trade_type"], "JSAPI");
    assert_eq!(v["transaction_id"], transaction_id);
    assert_eq!(v["payer"]["openid"], openid_for(APPID, PAYER).as_str());
    assert_eq!(
        v["amount"],
        json!({ "total": 250, "payer_total": 250, "currency": "CNY", "payer_currency": "CNY" })
    );
    assert!(v["success_time"].as_str().unwrap().ends_with("+08:00"));

    let by_id = h
        .merchant
        .get(&format!(
            "/v3/pay/transactions/id/{transaction_id}?mchid={MCHID}"
        ))
        .await;
    assert_eq!(by_id.json()["out_trade_no"], "ORD0000004");

    let no_mchid = h
        .merchant
        .get("/v3/pay/transactions/out-trade-no/ORD0000004")
        .await;
    assert_eq!(
        (no_mchid.status, no_mchid.code()),
        (400, "PARAM_ERROR".into())
    );
    let other_mchid = h
        .merchant
        .get("/v3/pay/transactions/out-trade-no/ORD0000004?mchid=1900000999")
        .await;
    assert_eq!(
        (other_mchid.status, other_mchid.code()),
        (400, "PARAM_ERROR".into())
    );
    let unknown = h
        .merchant
        .get(&format!(
            "/v3/pay/transactions/out-trade-no/ORD9999999?mchid={MCHID}"
        ))
        .await;
    assert_eq!(
        (unknown.status, unknown.code()),
        (404, "ORDER_NOT_EXIST".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_unpaid_once_then_order_closed_but_never_a_paid_order() {
    let h = start().await;
    h.order("ORD0000005", NOTIFY).await;
    let close = |no: &'static str| {
        let m = &h.merchant;
        async move {
            m.post(
                &format!("/v3/pay/transactions/out-trade-no/{no}/close"),
                &json!({ "mchid": MCHID }),
            )
            .await
        }
    };
    let answer = close("ORD0000005").await;
    assert_eq!(answer.status, 204, "{}", answer.text());
    h.merchant.verify_answer(&answer).await.unwrap();
    // Closing again is WeChat's "already closed", signed like any error.
    let again = close("ORD0000005").await;
    assert_eq!((again.status, again.code()), (400, "ORDER_CLOSED".into()));
    h.merchant.verify_answer(&again).await.unwrap();
    let (_, t) = h
        .control("GET", "transactions/ORD0000005", json!(null))
        .await;
    assert_eq!(t["transaction"]["trade_state"], "CLOSED");
    let reorder = h
        .merchant
        .post(JSAPI, &jsapi_body("ORD0000005", 100, NOTIFY))
        .await;
    assert_eq!(
        (reorder.status, reorder.code()),
        (400, "ORDER_CLOSED".into())
    );
    let (status, _) = h
        .control("POST", "pay", json!({ "out_trade_no": "ORD0000005" }))
        .await;
    assert_eq!(status, 409, "a closed order cannot be paid");

    h.paid_order("ORD0000006", NOTIFY).await;
    let answer = close("ORD0000006").await;
    assert_eq!((answer.status, answer.code()), (400, "ORDERPAID".into()));
    h.merchant.verify_answer(&answer).await.unwrap();

    let answer = close("ORD0000007").await;
    assert_eq!(
        (answer.status, answer.code()),
        (404, "ORDER_NOT_EXIST".into())
    );
    let wrong = h
        .merchant
        .post(
            "/v3/pay/transactions/out-trade-no/ORD0000005/close",
            &json!({ "mchid": "1900000999" }),
        )
        .await;
    assert_eq!((wrong.status, wrong.code()), (400, "PARAM_ERROR".into()));
}
