//! Trade bills (`/v3/bill/tradebill` and its download, v2 `/pay/downloadbill`), the control
//! API's disagreements between the bill and the books, the query counter and lost
//! notifications.

use std::collections::HashMap;
use std::io::Read as _;
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use paystream_wechatpay::v2::sign::SignType;
use paystream_wechatpay::v2::xml;
use serde_json::{json, Value};
use sha1::{Digest, Sha1};

use crate::support::{eventually, start, Answer, Harness, Receiver, Spoil, MCHID, PREFIX};
use crate::v2::{call_fields, paid_order as v2_paid_order, V2Client, XmlReceiver};

async fn queries(h: &Harness, out_trade_no: &str, channel: &str) -> u64 {
    let (status, answer) = h
        .control(
            "GET",
            &format!("transactions/{out_trade_no}?channel={channel}"),
            json!(null),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    answer["queries"].as_u64().expect("queries")
}

#[tokio::test]
async fn v3_queries_are_counted_per_order() {
    let h = start().await;
    let receiver = Receiver::start(&[]).await;
    let transaction_id = h.paid_order("COUNT001", &receiver.url).await;
    h.order("COUNT002", &receiver.url).await;
    assert_eq!(queries(&h, "COUNT001", "wechatpay_v3").await, 0);

    let by_no = "/v3/pay/transactions/out-trade-no/COUNT001?mchid=1230000109";
    assert_eq!(h.merchant.get(by_no).await.status, 200);
    assert_eq!(h.merchant.get(by_no).await.status, 200);
    let by_id = format!("/v3/pay/transactions/id/{transaction_id}?mchid=1230000109");
    assert_eq!(h.merchant.get(&by_id).await.status, 200);
    assert_eq!(queries(&h, "COUNT001", "wechatpay_v3").await, 3);
    assert_eq!(queries(&h, "COUNT002", "wechatpay_v3").await, 0);
}

#[tokio::test]
async fn v2_orderqueries_are_counted_per_order() {
    let h = start().await;
    let v2 = V2Client::over_http(&h);
    let receiver = XmlReceiver::start(&[]).await;
    v2_paid_order(&h, &v2, "V2COUNT001", &receiver.url).await;
    assert_eq!(queries(&h, "V2COUNT001", "wechatpay_v2").await, 0);
    v2.query("V2COUNT001").await;
    v2.query("V2COUNT001").await;
    assert_eq!(queries(&h, "V2COUNT001", "wechatpay_v2").await, 2);
}

#[tokio::test]
async fn a_lost_notification_is_never_sent_but_the_order_is_paid() {
    let h = start().await;
    let receiver = Receiver::start(&[]).await;
    h.order("LOST001", &receiver.url).await;
    h.control_ok("pay", json!({ "out_trade_no": "LOST001", "notify": false }))
        .await;
    let answer = h
        .merchant
        .get("/v3/pay/transactions/out-trade-no/LOST001?mchid=1230000109")
        .await;
    assert_eq!(answer.json()["trade_state"], "SUCCESS");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.count(), 0);
    let (_, deliveries) = h.control("GET", "notifications", json!(null)).await;
    assert_eq!(deliveries["deliveries"].as_array().unwrap().len(), 0);

    // The same on the v2 channel.
    let v2 = V2Client::over_http(&h);
    let xml = XmlReceiver::start(&[]).await;
    v2.order("V2LOST001", &xml.url, SignType::HmacSha256).await;
    h.control_ok(
        "pay",
        json!({ "out_trade_no": "V2LOST001", "channel": "wechatpay_v2", "notify": false }),
    )
    .await;
    assert_eq!(v2.query("V2LOST001").await["trade_state"], "SUCCESS");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(xml.count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Bills
// ---------------------------------------------------------------------------------------------

fn beijing_today() -> NaiveDate {
    (Utc::now() + chrono::Duration::hours(8)).date_naive()
}

fn days_ago(n: i64) -> NaiveDate {
    beijing_today() - chrono::Duration::days(n)
}

async fn immediate(h: &Harness, on: bool) {
    let answer = h
        .control_ok("bills/settings", json!({ "immediate": on }))
        .await;
    assert_eq!(answer["immediate"], on);
}

async fn apply(h: &Harness, query: &str) -> Answer {
    h.merchant.get(&format!("/v3/bill/tradebill?{query}")).await
}

/// A parsed bill: rows by header name, and the summary by its header names.
#[derive(Debug)]
struct Bill {
    header: Vec<String>,
    rows: Vec<HashMap<String, String>>,
    summary: HashMap<String, String>,
}

impl Bill {
    fn parse(csv: &str) -> Bill {
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(lines.last(), Some(&""), "ends with CRLF");
        let lines = &lines[..lines.len() - 1];
        let cells = |line: &str| -> Vec<String> {
            line.split(",`")
                .map(|c| c.trim_start_matches('`').to_string())
                .collect()
        };
        let header: Vec<String> = lines[0].split(',').map(str::to_string).collect();
        let n = lines.len();
        assert!(lines[n - 2].starts_with("总交易单数,"), "{csv}");
        let mut rows = Vec::new();
        for line in &lines[1..n - 2] {
            assert!(line.starts_with('`'), "{line}");
            let values = cells(line);
            assert_eq!(values.len(), header.len(), "{line}");
            rows.push(header.iter().cloned().zip(values).collect());
        }
        assert!(lines[n - 1].starts_with('`'));
        let summary = lines[n - 2]
            .split(',')
            .map(str::to_string)
            .zip(cells(lines[n - 1]))
            .collect();
        Bill {
            header,
            rows,
            summary,
        }
    }

    fn row(&self, out_trade_no: &str, state: &str) -> Option<&HashMap<String, String>> {
        self.rows
            .iter()
            .find(|r| r["商户订单号"] == out_trade_no && r["交易状态"] == state)
    }

    /// The summary is the sum of the rows.
    fn assert_consistent(&self) {
        let fen = |s: &str| -> i64 {
            let negative = s.starts_with('-');
            let s = s.trim_start_matches('-');
            let (int, frac) = s.split_once('.').unwrap();
            let v = int.parse::<i64>().unwrap() * 100 + frac[..2].parse::<i64>().unwrap();
            assert!(frac[2..].bytes().all(|b| b == b'0'), "{s}");
            if negative {
                -v
            } else {
                v
            }
        };
        let sum = |column: &str| -> i64 {
            self.rows
                .iter()
                .map(|r| r.get(column).map_or(0, |v| fen(v)))
                .sum()
        };
        assert_eq!(self.summary["总交易单数"], self.rows.len().to_string());
        for (total, column) in [
            ("应结订单总金额", "应结订单金额"),
            ("退款总金额", "退款金额"),
            ("充值券退款总金额", "充值券退款金额"),
            ("手续费总金额", "手续费"),
            ("订单总金额", "订单金额"),
            ("申请退款总金额", "申请退款金额"),
        ] {
            assert_eq!(fen(&self.summary[total]), sum(column), "{total}: {self:?}");
        }
    }
}

/// Apply for a bill, check the signed answer, download it (signed request, unsigned answer).
/// Returns the application and the downloaded bytes.
async fn fetch(h: &Harness, query: &str) -> (Value, Vec<u8>) {
    let answer = apply(h, query).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    h.merchant.verify_answer(&answer).await.unwrap();
    let application = answer.json();
    assert_eq!(application["hash_type"], "SHA1");
    let url = application["download_url"].as_str().unwrap();
    let base = format!("{}{PREFIX}", h.origin);
    let path = url.strip_prefix(&base).unwrap_or_else(|| panic!("{url}"));
    assert!(path.starts_with("/v3/billdownload/file?token="), "{url}");
    let download = h.merchant.get(path).await;
    assert_eq!(download.status, 200, "{}", download.text());
    assert!(download.header("wechatpay-signature").is_none());
    (application, download.body)
}

async fn fetch_bill(h: &Harness, query: &str) -> Bill {
    let (application, bytes) = fetch(h, query).await;
    assert_eq!(
        application["hash_value"],
        hex::encode(Sha1::digest(&bytes)),
        "hash_value is the SHA1 of the bill"
    );
    Bill::parse(std::str::from_utf8(&bytes).unwrap())
}

async fn refund(h: &Harness, out_trade_no: &str, out_refund_no: &str, fen: i64) {
    let answer = h
        .merchant
        .post(
            "/v3/refund/domestic/refunds",
            &json!({
                "out_trade_no": out_trade_no,
                "out_refund_no": out_refund_no,
                "amount": { "refund": fen, "total": 100, "currency": "CNY" },
            }),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
}

async fn refund_settled(h: &Harness, out_refund_no: &str) {
    let path = format!("/v3/refund/domestic/refunds/{out_refund_no}");
    assert!(eventually(async || h.merchant.get(&path).await.json()["status"] == "SUCCESS").await);
}

#[tokio::test]
async fn a_payment_and_a_refund_are_in_the_days_bill() {
    let h = start().await;
    let receiver = Receiver::start(&[]).await;
    let tx1 = h.paid_order("BILL001", &receiver.url).await;
    let tx2 = h.paid_order("BILL002", &receiver.url).await;
    refund(&h, "BILL001", "BILLR001", 30).await;
    refund_settled(&h, "BILLR001").await;
    immediate(&h, true).await;

    let today = beijing_today();
    let bill = fetch_bill(&h, &format!("bill_date={today}&bill_type=ALL")).await;
    assert_eq!(bill.header.len(), 27);
    assert_eq!(bill.header[0], "交易时间");
    assert_eq!(bill.header[26], "费率备注");
    assert_eq!(bill.rows.len(), 3, "{bill:?}");

    let p = bill.row("BILL001", "SUCCESS").expect("payment row");
    assert_eq!(p["微信订单号"], tx1);
    assert_eq!(p["商户号"], MCHID);
    assert_eq!(p["公众账号ID"], crate::support::APPID);
    assert_eq!(p["特约商户号"], "0");
    assert_eq!(p["交易类型"], "JSAPI");
    assert_eq!(p["货币种类"], "CNY");
    assert_eq!(p["应结订单金额"], "1.00");
    assert_eq!(p["订单金额"], "1.00");
    assert_eq!(p["手续费"], "0.01000", "0.6 fen rounds to 1");
    assert_eq!(p["费率"], "0.60%");
    assert_eq!(p["微信退款单号"], "0");
    assert_eq!(p["退款金额"], "0.00");
    assert!(p["交易时间"].starts_with(&today.to_string()));
    assert_eq!(p["交易时间"].len(), 19);
    assert_eq!(bill.row("BILL002", "SUCCESS").unwrap()["微信订单号"], tx2);

    let r = bill.row("BILL001", "REFUND").expect("refund row");
    assert_eq!(r["微信订单号"], tx1);
    assert_eq!(r["商户退款单号"], "BILLR001");
    assert!(r["微信退款单号"].starts_with("50"));
    assert_eq!(r["退款金额"], "0.30");
    assert_eq!(r["申请退款金额"], "0.30");
    assert_eq!(r["应结订单金额"], "0.00");
    assert_eq!(r["退款类型"], "ORIGINAL");
    assert_eq!(r["退款状态"], "SUCCESS");
    assert_eq!(r["手续费"], "0.00000", "0.18 fen rounds to 0");

    bill.assert_consistent();
    assert_eq!(bill.summary["总交易单数"], "3");
    assert_eq!(bill.summary["应结订单总金额"], "2.00");
    assert_eq!(bill.summary["退款总金额"], "0.30");
    assert_eq!(bill.summary["手续费总金额"], "0.02000");
    assert_eq!(bill.summary["订单总金额"], "2.00");
    assert_eq!(bill.summary["申请退款总金额"], "0.30");

    // SUCCESS: payments only (WeChat's narrower header); REFUND: refunds only.
    let success = fetch_bill(&h, &format!("bill_date={today}&bill_type=SUCCESS")).await;
    assert_eq!(success.rows.len(), 2);
    assert!(!success.header.contains(&"退款金额".to_string()));
    success.assert_consistent();
    let refunds = fetch_bill(&h, &format!("bill_date={today}&bill_type=REFUND")).await;
    assert_eq!(refunds.rows.len(), 1);
    assert_eq!(refunds.rows[0]["商户退款单号"], "BILLR001");
    assert!(refunds.header.contains(&"退款成功时间".to_string()));
    refunds.assert_consistent();

    // bill_type defaults to ALL.
    let default = fetch_bill(&h, &format!("bill_date={today}")).await;
    assert_eq!(default.rows.len(), 3);
}

#[tokio::test]
async fn gzip_bills_hash_the_uncompressed_file() {
    let h = start().await;
    let receiver = Receiver::start(&[]).await;
    h.paid_order("GZIP001", &receiver.url).await;
    immediate(&h, true).await;
    let today = beijing_today();
    let (application, bytes) = fetch(
        &h,
        &format!("bill_date={today}&bill_type=ALL&tar_type=GZIP"),
    )
    .await;
    assert!(application["download_url"]
        .as_str()
        .unwrap()
        .ends_with("&tartype=gzip"));
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip magic");
    let mut csv = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut csv)
        .unwrap();
    assert_eq!(
        application["hash_value"],
        hex::encode(Sha1::digest(csv.as_bytes()))
    );
    let bill = Bill::parse(&csv);
    assert!(bill.row("GZIP001", "SUCCESS").is_some());
    bill.assert_consistent();
    let bad = apply(&h, &format!("bill_date={today}&tar_type=ZIP")).await;
    assert_eq!((bad.status, bad.code()), (400, "PARAM_ERROR".to_string()));
}

#[tokio::test]
async fn no_statement_for_an_empty_day_and_param_error_for_bad_dates() {
    let h = start().await;
    // A day long past: made (after 10:00 the next day) and empty.
    let answer = apply(&h, &format!("bill_date={}&bill_type=ALL", days_ago(10))).await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert_eq!(answer.code(), "NO_STATEMENT_EXIST");
    assert_eq!(answer.json()["message"], "请求的账单文件不存在");
    h.merchant.verify_answer(&answer).await.unwrap();

    immediate(&h, true).await;
    let answer = apply(&h, &format!("bill_date={}", days_ago(1))).await;
    assert_eq!(answer.code(), "NO_STATEMENT_EXIST");

    for date in [
        "2026-13-01".to_string(),
        "20261201".to_string(),
        (beijing_today() + chrono::Duration::days(1)).to_string(),
        days_ago(120).to_string(),
    ] {
        let answer = apply(&h, &format!("bill_date={date}")).await;
        assert_eq!(
            (answer.status, answer.code()),
            (400, "PARAM_ERROR".to_string()),
            "{date}"
        );
    }
    let answer = apply(&h, "bill_type=ALL").await;
    assert_eq!(answer.code(), "PARAM_ERROR");
    let answer = apply(&h, &format!("bill_date={}&bill_type=NEW", days_ago(1))).await;
    assert_eq!(answer.code(), "PARAM_ERROR");
}

#[tokio::test]
async fn todays_bill_is_being_made_unless_immediate() {
    let h = start().await;
    let receiver = Receiver::start(&[]).await;
    h.paid_order("TODAY001", &receiver.url).await;
    let query = format!("bill_date={}&bill_type=ALL", beijing_today());
    let answer = apply(&h, &query).await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert_eq!(answer.code(), "STATEMENT_CREATING");
    assert_eq!(answer.json()["message"], "账单生成中");
    immediate(&h, true).await;
    let bill = fetch_bill(&h, &query).await;
    assert!(bill.row("TODAY001", "SUCCESS").is_some());
    immediate(&h, false).await;
    assert_eq!(apply(&h, &query).await.code(), "STATEMENT_CREATING");
}

#[tokio::test]
async fn unsigned_requests_are_refused() {
    let h = start().await;
    let receiver = Receiver::start(&[]).await;
    h.paid_order("SIGN001", &receiver.url).await;
    immediate(&h, true).await;
    let query = format!("/v3/bill/tradebill?bill_date={}", beijing_today());
    let unsigned = Spoil {
        no_authorization: true,
        ..Spoil::default()
    };
    let refused = h.merchant.send("GET", &query, "", unsigned.clone()).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.code(), "SIGN_ERROR");

    let application = apply(&h, &query["/v3/bill/tradebill?".len()..])
        .await
        .json();
    let url = application["download_url"].as_str().unwrap();
    let path = &url[format!("{}{PREFIX}", h.origin).len()..];
    let refused = h.merchant.send("GET", path, "", unsigned).await;
    assert_eq!(refused.status, 401);
    let tampered = h.merchant.get(&format!("{path}x")).await;
    assert_eq!(tampered.status, 404);
    assert_eq!(tampered.code(), "RESOURCE_NOT_EXISTS");
    assert_eq!(h.merchant.get(path).await.status, 200);
}

#[tokio::test]
async fn disagreements_on_command_show_in_the_bill() {
    let h = start().await;
    let receiver = Receiver::start(&[]).await;
    let today = beijing_today();
    let query = format!("bill_date={today}&bill_type=ALL");
    immediate(&h, true).await;
    h.paid_order("AGREE001", &receiver.url).await;
    h.paid_order("AMOUNT001", &receiver.url).await;
    h.paid_order("OMIT001", &receiver.url).await;
    refund(&h, "AGREE001", "OMITR001", 10).await;
    refund(&h, "AGREE001", "KEEPR001", 20).await;

    // (a) A payment WeChat has and the merchant never ordered.
    let ghost = h
        .control_ok(
            "bills/unknown-payment",
            json!({ "out_trade_no": "GHOST001", "amount_fen": 1234 }),
        )
        .await;
    let ghost_tx = ghost["transaction_id"].as_str().unwrap().to_string();
    let query_ghost = h
        .merchant
        .get("/v3/pay/transactions/out-trade-no/GHOST001?mchid=1230000109")
        .await;
    assert_eq!(query_ghost.json()["trade_state"], "SUCCESS");
    assert_eq!(query_ghost.json()["amount"]["total"], 1234);
    assert_eq!(query_ghost.json()["transaction_id"], ghost_tx);
    let (status, _) = h
        .control(
            "POST",
            "bills/unknown-payment",
            json!({ "out_trade_no": "AGREE001", "amount_fen": 1 }),
        )
        .await;
    assert_eq!(status, 409);

    // (b) The bill shows another amount; the query still tells the truth.
    h.control_ok(
        "bills/amount",
        json!({ "out_trade_no": "AMOUNT001", "amount_fen": 90 }),
    )
    .await;
    // (c) A payment and a refund left out.
    h.control_ok("bills/omit", json!({ "out_trade_no": "OMIT001" }))
        .await;
    let settings = h
        .control_ok("bills/omit", json!({ "out_refund_no": "OMITR001" }))
        .await;
    assert_eq!(settings["omitted_payments"], json!(["OMIT001"]));
    assert_eq!(settings["omitted_refunds"], json!(["OMITR001"]));
    assert_eq!(settings["amounts"], json!({ "AMOUNT001": 90 }));

    let bill = fetch_bill(&h, &query).await;
    let g = bill
        .row("GHOST001", "SUCCESS")
        .expect("the unknown payment");
    assert_eq!(g["应结订单金额"], "12.34");
    assert_eq!(g["手续费"], "0.07000");
    assert_eq!(g["微信订单号"], ghost_tx);
    assert_eq!(
        bill.row("AMOUNT001", "SUCCESS").unwrap()["订单金额"],
        "0.90"
    );
    assert_eq!(
        bill.row("AMOUNT001", "SUCCESS").unwrap()["应结订单金额"],
        "0.90"
    );
    assert!(bill.row("OMIT001", "SUCCESS").is_none());
    assert!(bill.row("AGREE001", "SUCCESS").is_some());
    let refunds: Vec<&str> = bill
        .rows
        .iter()
        .filter(|r| r["交易状态"] == "REFUND")
        .map(|r| r["商户退款单号"].as_str())
        .collect();
    assert_eq!(refunds, vec!["KEEPR001"]);
    bill.assert_consistent();
    assert_eq!(bill.summary["总交易单数"], "4");
    assert_eq!(bill.summary["应结订单总金额"], "14.24");

    let truth = h
        .merchant
        .get("/v3/pay/transactions/out-trade-no/AMOUNT001?mchid=1230000109")
        .await;
    assert_eq!(truth.json()["amount"]["total"], 100);

    // Undone, the bill agrees with the books again.
    h.control_ok("bills/reset", json!({})).await;
    let bill = fetch_bill(&h, &query).await;
    assert!(bill.row("OMIT001", "SUCCESS").is_some());
    assert_eq!(
        bill.row("AMOUNT001", "SUCCESS").unwrap()["订单金额"],
        "1.00"
    );
    assert!(bill.row("AGREE001", "REFUND").is_some());
    assert_eq!(bill.summary["总交易单数"], "6");
    bill.assert_consistent();
}

#[tokio::test]
async fn v2_downloadbill_serves_the_same_bill() {
    let h = start().await;
    let v2 = V2Client::over_http(&h);
    let xml_receiver = XmlReceiver::start(&[]).await;
    let tx = v2_paid_order(&h, &v2, "V2BILL001", &xml_receiver.url).await;
    let receiver = Receiver::start(&[]).await;
    h.paid_order("V3BILL001", &receiver.url).await;
    let today = beijing_today().format("%Y%m%d").to_string();
    let download = |date: String, extra: &'static [(&'static str, &'static str)]| {
        let v2 = &v2;
        async move {
            let mut fields = call_fields(&[("bill_date", &date)]);
            for (k, v) in extra {
                fields.insert(k.to_string(), v.to_string());
            }
            v2.post("/pay/downloadbill", fields, SignType::Md5).await
        }
    };

    // Not made yet today.
    let creating = download(today.clone(), &[("bill_type", "ALL")]).await;
    let fail = xml::parse(&creating.body).unwrap();
    assert_eq!(fail["return_code"], "FAIL");
    assert_eq!(fail["return_msg"], "Bill Creating");

    immediate(&h, true).await;
    let raw = download(today.clone(), &[("bill_type", "ALL")]).await;
    assert_eq!(raw.status, 200);
    assert!(raw.content_type.starts_with("text/plain"), "{raw:?}");
    let bill = Bill::parse(&raw.text());
    let row = bill.row("V2BILL001", "SUCCESS").expect("the v2 payment");
    assert_eq!(row["微信订单号"], tx);
    assert!(
        bill.row("V3BILL001", "SUCCESS").is_some(),
        "one bill for both APIs"
    );
    bill.assert_consistent();

    let zipped = download(
        today.clone(),
        &[("bill_type", "SUCCESS"), ("tar_type", "GZIP")],
    )
    .await;
    assert_eq!(&zipped.body[..2], &[0x1f, 0x8b]);
    let mut csv = String::new();
    flate2::read::GzDecoder::new(&zipped.body[..])
        .read_to_string(&mut csv)
        .unwrap();
    assert_eq!(Bill::parse(&csv).rows.len(), 2);

    let yesterday = days_ago(1).format("%Y%m%d").to_string();
    let none = download(yesterday, &[("bill_type", "ALL")]).await;
    let fail = xml::parse(&none.body).unwrap();
    assert_eq!(fail["return_code"], "FAIL");
    assert_eq!(fail["return_msg"], "No Bill Exist");
    assert_eq!(fail["error_code"], "20002");

    let bad = download("2026-12-01".to_string(), &[]).await;
    assert_eq!(
        xml::parse(&bad.body).unwrap()["return_msg"],
        "invalid bill_date"
    );

    // A wrong signature is refused like every v2 call.
    let mut fields = call_fields(&[("bill_date", &today)]);
    fields.insert("sign".into(), "0".repeat(32));
    let body = xml::render(&fields).unwrap();
    let refused = v2.post_raw("/pay/downloadbill", body).await;
    assert_eq!(xml::parse(&refused.body).unwrap()["return_msg"], "签名错误");
}
