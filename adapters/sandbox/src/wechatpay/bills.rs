//! Trade bills: `GET /v3/bill/tradebill` (→ a download URL and the SHA1 of the bill), the
//! download itself (`GET /v3/billdownload/file?token=`, signed request, **unsigned** answer, as
//! at WeChat), and APIv2's `/pay/downloadbill` (the CSV directly). Both APIs serve the same
//! bill, built from both books (WeChat keeps one per merchant), and the control API can make it
//! disagree with them.
//!
//! # The bill
//!
//! WeChat's trade bill CSV: a header row, one row per payment whose success time falls on the
//! Beijing day (`SUCCESS`; a payment refunded later stays `SUCCESS`) and one per refund applied
//! for that day (`REFUND`, with the payment's ids, `微信退款单号`, `商户退款单号`, `退款金额` =
//! `申请退款金额`, `退款类型` `ORIGINAL`, `退款状态` `SUCCESS`/`PROCESSING`/`REFUNDCLOSE`/`CHANGE`),
//! ordered by time; then the summary header `总交易单数,应结订单总金额,退款总金额,充值券退款总金额,
//! 手续费总金额,订单总金额,申请退款总金额` and one row of totals (the sums of the rows). Every
//! field starts with a backquote; amounts in yuan with two decimals, `手续费` with five (WeChat's
//! `0.04000`), at 0.60 % of the amount rounded half up to the fen (negative on refund rows);
//! times Beijing `yyyy-MM-dd HH:mm:ss`; lines end with `\r\n`. The columns depend on
//! `bill_type`, as at WeChat: `ALL` has the 27 columns `交易时间 … 费率备注`; `SUCCESS` (payments
//! only) drops the refund columns; `REFUND` (refunds only) adds `退款申请时间` and `退款成功时间`
//! after `代金券金额`. Parse by header name, never by position.
//!
//! # When a bill exists
//!
//! WeChat makes day D's bill after 10:00 Beijing time on D+1; until then `STATEMENT_CREATING`
//! (v2 `Bill Creating`). A day (of the requested `bill_type`) without rows: 400
//! `NO_STATEMENT_EXIST` (v2 `No Bill Exist`, `error_code` 20002). A date in the future or more
//! than three months back: `PARAM_ERROR` (v2 `invalid bill_date`, 20001). Control
//! `bills/settings {"immediate": true}` serves the bill of any day up to and including today at
//! once, made from the books as they are at the request.
//!
//! `download_url` is `<scheme>://<Host><prefix>/v3/billdownload/file?token=…` (`&tartype=gzip`
//! when `tar_type=GZIP`), built from the request's `Host` (and `X-Forwarded-Proto`, else
//! `http`) and the prefix the sandbox is mounted under; it holds the bill as it was when applied
//! for and is valid for five minutes (after that 404 `RESOURCE_NOT_EXISTS`).
//!
//! # Control API (`/control/wechatpay/bills/...`, JSON)
//!
//! | Method | Path | Body → answer |
//! |---|---|---|
//! | GET/POST | `settings` | `{"immediate"?: bool}` → `{"immediate","amounts":{out_trade_no: fen},"omitted_payments":[…],"omitted_refunds":[…]}` |
//! | POST | `unknown-payment` | `{"out_trade_no","amount_fen","success_time"?(RFC 3339, default now),"description"?,"openid"?}` → `{"out_trade_no","transaction_id","success_time"}`: a paid v3 transaction the merchant never ordered (no notification); it is in the bill and a query answers SUCCESS. 409 if the number is taken in either book. |
//! | POST | `amount` | `{"out_trade_no","amount_fen": fen \| null}` → settings: the bill shows this amount for that payment (its fee follows); queries still tell the truth. `null` undoes it. |
//! | POST | `omit` | `{"out_trade_no"? \| "out_refund_no"?, "omitted"?: bool (default true)}` → settings: leave that payment or refund out of the bill (`false` puts it back). |
//! | POST | `reset` | → settings: every disagreement undone (`immediate` kept). |
//!
//! The summary always adds up the rows actually in the file.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write as _;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{OriginalUri, Query, State};
use axum::http::header::{CONTENT_TYPE, HOST};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Duration, Months, NaiveDate, NaiveTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use sha1::{Digest, Sha1};

use super::ids::{prepay_id, transaction_id, BEIJING};
use super::keys::alphanumeric;
use super::state::{Order, OrderParams, OrderStatus, PayState, Payment};
use super::v2::state::{beijing_datetime, Fields};
use super::validate::ApiError;
use super::Pay;

/// WeChat's download URLs are valid for five minutes.
const DOWNLOAD_TTL: Duration = Duration::minutes(5);

/// An answer the `/v3` guard must leave unsigned (the bill download: WeChat signs none).
#[derive(Clone, Copy, Debug)]
pub(crate) struct UnsignedAnswer;

/// When bills are made and how they disagree with the books (control API), and the pending
/// downloads.
#[derive(Clone, Debug, Default)]
pub(crate) struct BillSettings {
    /// Serve any day's bill up to and including today at once (WeChat: after 10:00 Beijing on
    /// the next day).
    pub immediate: bool,
    /// The bill shows this amount (fen) for these `out_trade_no`s.
    pub amounts: HashMap<String, i64>,
    /// Payments (by `out_trade_no`) left out of the bill.
    pub omit_payments: HashSet<String>,
    /// Refunds (by `out_refund_no`) left out of the bill.
    pub omit_refunds: HashSet<String>,
    /// By token.
    downloads: HashMap<String, Download>,
}

#[derive(Clone, Debug)]
struct Download {
    /// The uncompressed bill.
    csv: Bytes,
    gzip: bool,
    expires: DateTime<Utc>,
}

impl BillSettings {
    fn json(&self) -> Value {
        let amounts: BTreeMap<&String, &i64> = self.amounts.iter().collect();
        let mut payments: Vec<&String> = self.omit_payments.iter().collect();
        payments.sort();
        let mut refunds: Vec<&String> = self.omit_refunds.iter().collect();
        refunds.sort();
        json!({
            "immediate": self.immediate,
            "amounts": amounts,
            "omitted_payments": payments,
            "omitted_refunds": refunds,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BillType {
    All,
    Success,
    Refund,
}

impl BillType {
    fn parse(s: Option<&str>) -> Option<BillType> {
        match s {
            None | Some("ALL") => Some(BillType::All),
            Some("SUCCESS") => Some(BillType::Success),
            Some("REFUND") => Some(BillType::Refund),
            _ => None,
        }
    }
}

/// Why there is no bill to serve.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NoBill {
    /// The date is in the future or beyond three months back.
    BadDate(&'static str),
    /// Not made yet (before 10:00 Beijing on the next day).
    Creating,
    /// Nothing happened that day.
    Empty,
}

/// Whether day `date`'s bill is made at `now`.
pub(crate) fn check_date(
    date: NaiveDate,
    now: DateTime<Utc>,
    immediate: bool,
) -> Result<(), NoBill> {
    let today = now.with_timezone(&BEIJING).date_naive();
    if date > today {
        return Err(NoBill::BadDate("账单日期不能晚于当前日期"));
    }
    if today
        .checked_sub_months(Months::new(3))
        .is_some_and(|oldest| date < oldest)
    {
        return Err(NoBill::BadDate("仅支持三个月内的账单下载申请"));
    }
    if immediate {
        return Ok(());
    }
    let made = (date + Duration::days(1))
        .and_time(NaiveTime::from_hms_opt(10, 0, 0).unwrap_or_default())
        .and_local_timezone(BEIJING)
        .single()
        .map(|t| t.with_timezone(&Utc));
    match made {
        Some(made) if now >= made => Ok(()),
        _ => Err(NoBill::Creating),
    }
}

/// One row of the bill, before rendering.
#[derive(Clone, Debug)]
struct Line {
    time: DateTime<Utc>,
    appid: String,
    transaction_id: String,
    out_trade_no: String,
    openid: String,
    description: String,
    attach: String,
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    Payment {
        amount: i64,
    },
    Refund {
        refund_id: String,
        out_refund_no: String,
        refund: i64,
        status: &'static str,
        success_time: Option<DateTime<Utc>>,
    },
}

impl Line {
    /// `(应结订单金额, 退款金额, 手续费, 订单金额, 申请退款金额)` in fen.
    fn amounts(&self) -> (i64, i64, i64, i64, i64) {
        match &self.kind {
            Kind::Payment { amount } => (*amount, 0, fee(*amount), *amount, 0),
            Kind::Refund { refund, .. } => (0, *refund, -fee(*refund), 0, *refund),
        }
    }
}

/// WeChat's fee at 0.60 %, rounded half up to the fen.
fn fee(fen: i64) -> i64 {
    (fen * 6 + 500).div_euclid(1000)
}

fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let abs = fen.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// `手续费` as WeChat writes it: five decimals (`0.04000`).
fn fee_yuan(fen: i64) -> String {
    format!("{}000", yuan(fen))
}

fn on_day(t: DateTime<Utc>, date: NaiveDate) -> bool {
    t.with_timezone(&BEIJING).date_naive() == date
}

/// The rows of day `date` from both books, with the control API's disagreements applied, in
/// time order.
fn lines(state: &PayState, appid: &str, date: NaiveDate, bill_type: BillType) -> Vec<Line> {
    let settings = &state.bills;
    let mut out = Vec::new();
    let payments = bill_type != BillType::Refund;
    let refunds = bill_type != BillType::Success;
    // (out_trade_no, appid, openid, description, attach, payment)
    let mut paid: Vec<(&str, &str, &str, &str, &str, &Payment)> = Vec::new();
    for o in state.orders.values() {
        if let Some(p) = o.payment() {
            paid.push((
                &o.out_trade_no,
                &o.params.appid,
                &o.params.openid,
                &o.params.description,
                o.params.attach.as_deref().unwrap_or(""),
                p,
            ));
        }
    }
    for o in state.v2.orders.values() {
        if let Some(p) = o.payment() {
            paid.push((
                &o.out_trade_no,
                appid,
                &o.params.openid,
                &o.params.body,
                o.params.attach.as_deref().unwrap_or(""),
                p,
            ));
        }
    }
    // By transaction: one out_trade_no may be ordered through both APIs (two payments, two
    // books), and a refund belongs to the payment it returns.
    let by_transaction: HashMap<&str, usize> = paid
        .iter()
        .enumerate()
        .map(|(i, (.., p))| (p.transaction_id.as_str(), i))
        .collect();
    let line = |transaction_id: &str, kind: Kind, time: DateTime<Utc>| {
        by_transaction.get(transaction_id).map(|&i| &paid[i]).map(
            |(n, app, openid, desc, attach, p)| Line {
                time,
                appid: app.to_string(),
                transaction_id: p.transaction_id.clone(),
                out_trade_no: n.to_string(),
                openid: openid.to_string(),
                description: desc.to_string(),
                attach: attach.to_string(),
                kind,
            },
        )
    };
    if payments {
        for (no, .., p) in &paid {
            if !on_day(p.success_time, date) || settings.omit_payments.contains(*no) {
                continue;
            }
            let amount = settings.amounts.get(*no).copied().unwrap_or(p.total);
            out.extend(line(
                &p.transaction_id,
                Kind::Payment { amount },
                p.success_time,
            ));
        }
    }
    if refunds {
        let v3 = state.refunds.values().map(|r| {
            (
                &r.transaction_id,
                &r.refund_id,
                &r.out_refund_no,
                r.refund,
                r.status,
                r.create_time,
                r.success_time,
            )
        });
        let v2 = state.v2.refunds.values().map(|r| {
            (
                &r.transaction_id,
                &r.refund_id,
                &r.out_refund_no,
                r.refund_fee,
                r.status,
                r.create_time,
                r.success_time,
            )
        });
        for (transaction_id, refund_id, out_refund_no, refund, status, created, success_time) in
            v3.chain(v2)
        {
            if !on_day(created, date) || settings.omit_refunds.contains(out_refund_no) {
                continue;
            }
            let kind = Kind::Refund {
                refund_id: refund_id.clone(),
                out_refund_no: out_refund_no.clone(),
                refund,
                status: status.v2_str(),
                success_time,
            };
            out.extend(line(transaction_id, kind, created));
        }
    }
    out.sort_by(|a, b| {
        (a.time, &a.out_trade_no, a.is_refund()).cmp(&(b.time, &b.out_trade_no, b.is_refund()))
    });
    out
}

impl Line {
    fn is_refund(&self) -> bool {
        matches!(self.kind, Kind::Refund { .. })
    }
}

/// The bill's `退款状态` (v2's spellings).
const HEADER_ALL: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";
const HEADER_SUCCESS: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,商品名称,商户数据包,手续费,费率,订单金额,费率备注";
const HEADER_REFUND: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,退款申请时间,退款成功时间,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";
const SUMMARY_HEADER: &str =
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额";
const FEE_RATE: &str = "0.60%";

/// Backquote before every field, joined by commas (WeChat quotes nothing else).
fn row(fields: &[String]) -> String {
    let cells: Vec<String> = fields
        .iter()
        .map(|f| format!("`{}", f.replace(['\r', '\n'], " ")))
        .collect();
    cells.join(",")
}

fn render_line(l: &Line, mchid: &str, bill_type: BillType) -> String {
    let (settle, refunded, fee, order, applied) = l.amounts();
    let s = |v: &str| v.to_string();
    let mut f = vec![
        beijing_datetime(l.time),
        l.appid.clone(),
        s(mchid),
        s("0"),
        s(""),
        l.transaction_id.clone(),
        l.out_trade_no.clone(),
        l.openid.clone(),
        s("JSAPI"),
        s(if l.is_refund() { "REFUND" } else { "SUCCESS" }),
        s("OTHERS"),
        s("CNY"),
        yuan(settle),
        s("0.00"),
    ];
    match (&l.kind, bill_type) {
        (Kind::Payment { .. }, BillType::Success) => {}
        (Kind::Payment { .. }, _) => f.extend([s("0"), s("0"), s("0.00"), s("0.00"), s(""), s("")]),
        (
            Kind::Refund {
                refund_id,
                out_refund_no,
                status,
                success_time,
                ..
            },
            _,
        ) => {
            if bill_type == BillType::Refund {
                f.push(beijing_datetime(l.time));
                f.push(success_time.map(beijing_datetime).unwrap_or_default());
            }
            f.extend([
                refund_id.clone(),
                out_refund_no.clone(),
                yuan(refunded),
                s("0.00"),
                s("ORIGINAL"),
                s(status),
            ]);
        }
    }
    f.extend([
        l.description.clone(),
        l.attach.clone(),
        fee_yuan(fee),
        s(FEE_RATE),
        yuan(order),
    ]);
    if bill_type != BillType::Success {
        f.push(yuan(applied));
    }
    f.push(s(""));
    row(&f)
}

/// The CSV of these rows, with the summary that adds them up.
fn render(lines: &[Line], mchid: &str, bill_type: BillType) -> String {
    let header = match bill_type {
        BillType::All => HEADER_ALL,
        BillType::Success => HEADER_SUCCESS,
        BillType::Refund => HEADER_REFUND,
    };
    let mut out = String::new();
    out.push_str(header);
    out.push_str("\r\n");
    let mut totals = (0, 0, 0, 0, 0);
    for l in lines {
        out.push_str(&render_line(l, mchid, bill_type));
        out.push_str("\r\n");
        let (a, b, c, d, e) = l.amounts();
        totals = (
            totals.0 + a,
            totals.1 + b,
            totals.2 + c,
            totals.3 + d,
            totals.4 + e,
        );
    }
    out.push_str(SUMMARY_HEADER);
    out.push_str("\r\n");
    out.push_str(&row(&[
        lines.len().to_string(),
        yuan(totals.0),
        yuan(totals.1),
        "0.00".to_string(),
        fee_yuan(totals.2),
        yuan(totals.3),
        yuan(totals.4),
    ]));
    out.push_str("\r\n");
    out
}

/// Day `date`'s bill as WeChat would serve it at `now`.
pub(crate) fn bill(
    state: &PayState,
    pay: &Pay,
    date: NaiveDate,
    bill_type: BillType,
    now: DateTime<Utc>,
) -> Result<String, NoBill> {
    check_date(date, now, state.bills.immediate)?;
    let lines = lines(state, &pay.appid, date, bill_type);
    if lines.is_empty() {
        return Err(NoBill::Empty);
    }
    Ok(render(&lines, &pay.mchid, bill_type))
}

fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes)?;
    encoder.finish()
}

// ---------------------------------------------------------------------------------------------
// APIv3
// ---------------------------------------------------------------------------------------------

/// `GET /v3/bill/tradebill?bill_date=&bill_type=&tar_type=`.
pub(crate) async fn tradebill(
    State(pay): State<Pay>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Ok(Query(q)) = query else {
        return Err(ApiError::param("查询参数格式错误"));
    };
    let raw_date = q.get("bill_date").ok_or_else(|| ApiError {
        detail: Some(json!({ "location": "query", "field": "bill_date" })),
        ..ApiError::param(
            "输入源“/query/bill_date”映射到字段“bill_date”必填性规则校验失败，此字段为必填项",
        )
    })?;
    let date = NaiveDate::parse_from_str(raw_date, "%Y-%m-%d")
        .ok()
        .filter(|_| raw_date.len() == 10)
        .ok_or_else(|| ApiError::field("bill_date", "格式应为yyyy-MM-dd"))?;
    let bill_type = BillType::parse(q.get("bill_type").map(String::as_str))
        .ok_or_else(|| ApiError::field("bill_type", "应为ALL、SUCCESS或REFUND"))?;
    let gzip = match q.get("tar_type").map(String::as_str) {
        None => false,
        Some("GZIP") => true,
        Some(_) => return Err(ApiError::field("tar_type", "仅支持GZIP")),
    };
    let now = Utc::now();
    let token = alphanumeric(64);
    let csv = {
        let mut state = pay.lock();
        let csv = bill(&state, &pay, date, bill_type, now).map_err(|e| match e {
            NoBill::BadDate(why) => ApiError::field("bill_date", why),
            NoBill::Creating => {
                ApiError::new(StatusCode::BAD_REQUEST, "STATEMENT_CREATING", "账单生成中")
            }
            NoBill::Empty => ApiError::new(
                StatusCode::BAD_REQUEST,
                "NO_STATEMENT_EXIST",
                "请求的账单文件不存在",
            ),
        })?;
        let downloads = &mut state.bills.downloads;
        downloads.retain(|_, d| d.expires > now);
        downloads.insert(
            token.clone(),
            Download {
                csv: Bytes::from(csv.clone()),
                gzip,
                expires: now + DOWNLOAD_TTL,
            },
        );
        csv
    };
    let hash = hex::encode(Sha1::digest(csv.as_bytes()));
    let url = format!(
        "{}/v3/billdownload/file?token={token}{}",
        external_base(&uri, &headers, "/v3/bill/tradebill"),
        if gzip { "&tartype=gzip" } else { "" }
    );
    Ok(Json(json!({
        "hash_type": "SHA1",
        "hash_value": hash,
        "download_url": url,
    })))
}

/// `scheme://host/prefix` of the sandbox as the caller reached it: the `Host` header (the URI's
/// authority as a fallback), `X-Forwarded-Proto` or `http`, and the path before `suffix`.
fn external_base(uri: &axum::http::Uri, headers: &HeaderMap, suffix: &str) -> String {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v: &axum::http::HeaderValue| v.to_str().ok())
    };
    let host = header(HOST)
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("localhost");
    let scheme = header(axum::http::HeaderName::from_static("x-forwarded-proto"))
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|s| *s == "https" || *s == "http")
        .unwrap_or("http");
    let prefix = uri.path().strip_suffix(suffix).unwrap_or("");
    format!("{scheme}://{host}{prefix}")
}

#[derive(Deserialize)]
pub(crate) struct DownloadQuery {
    token: Option<String>,
}

/// `GET /v3/billdownload/file?token=`: the bill's bytes (gzip if applied for so), unsigned.
pub(crate) async fn download(
    State(pay): State<Pay>,
    query: Result<Query<DownloadQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let token = query.ok().and_then(|Query(q)| q.token);
    let now = Utc::now();
    let found = token.and_then(|t| {
        pay.lock()
            .bills
            .downloads
            .get(&t)
            .filter(|d| d.expires > now)
            .cloned()
    });
    let Some(d) = found else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "RESOURCE_NOT_EXISTS",
            "账单下载地址不存在或已过期",
        ));
    };
    let (body, content_type) = if d.gzip {
        let zipped = gzip(&d.csv).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "SYSTEM_ERROR",
                e.to_string(),
            )
        })?;
        (Bytes::from(zipped), "application/octet-stream")
    } else {
        (d.csv, "text/plain; charset=utf-8")
    };
    let mut response = ([(CONTENT_TYPE, content_type)], body).into_response();
    response.extensions_mut().insert(UnsignedAnswer);
    Ok(response)
}

// ---------------------------------------------------------------------------------------------
// APIv2
// ---------------------------------------------------------------------------------------------

/// WeChat's downloadbill failure: `return_code` FAIL, `return_msg`, `error_code`; no `sign`.
fn v2_fail(return_msg: &str, error_code: &str) -> Response {
    let mut fields = Fields::new();
    fields.insert("return_code".into(), "FAIL".into());
    fields.insert("return_msg".into(), return_msg.into());
    fields.insert("error_code".into(), error_code.into());
    match paystream_wechatpay::v2::xml::render(&fields) {
        Ok(body) => super::v2::wire::xml_response(body),
        Err(_) => super::v2::wire::not_taken(return_msg),
    }
}

/// `POST /pay/downloadbill` (`bill_date` `yyyyMMdd`, `bill_type`?, `tar_type`?): the CSV itself,
/// gzip with `tar_type=GZIP`, or an XML FAIL.
pub(crate) async fn downloadbill_handler(
    State(pay): State<Pay>,
    method: Method,
    body: Bytes,
) -> Response {
    use super::v2::wire::{self, V2Error};
    let req = match wire::read(&pay, &method, &body) {
        Ok(req) => req,
        Err(V2Error::NotTaken(msg)) => return wire::not_taken(&msg),
        Err(V2Error::Refused { err_code_des, .. }) => return v2_fail(&err_code_des, "20001"),
    };
    let Some(raw_date) = req.get("bill_date") else {
        return v2_fail("missing parameter", "20001");
    };
    let date = NaiveDate::parse_from_str(raw_date, "%Y%m%d")
        .ok()
        .filter(|_| raw_date.len() == 8 && raw_date.bytes().all(|b| b.is_ascii_digit()));
    let Some(date) = date else {
        return v2_fail("invalid bill_date", "20001");
    };
    let Some(bill_type) = BillType::parse(req.get("bill_type")) else {
        return v2_fail("invalid bill_type", "20001");
    };
    let gzip_it = match req.get("tar_type") {
        None => false,
        Some("GZIP") => true,
        Some(_) => return v2_fail("invalid tar_type", "20001"),
    };
    let csv = {
        let state = pay.lock();
        bill(&state, &pay, date, bill_type, Utc::now())
    };
    match csv {
        Err(NoBill::BadDate(_)) => v2_fail("invalid bill_date", "20001"),
        Err(NoBill::Creating) => v2_fail("Bill Creating", "20002"),
        Err(NoBill::Empty) => v2_fail("No Bill Exist", "20002"),
        Ok(csv) if gzip_it => match gzip(csv.as_bytes()) {
            Ok(zipped) => ([(CONTENT_TYPE, "application/octet-stream")], zipped).into_response(),
            Err(_) => v2_fail("CompressGZip Error", "20007"),
        },
        Ok(csv) => ([(CONTENT_TYPE, "text/plain; charset=utf-8")], csv).into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// Control API
// ---------------------------------------------------------------------------------------------

/// Mounted under `/control/wechatpay`.
pub(crate) fn control_routes() -> Router<Pay> {
    Router::new()
        .route("/bills/settings", get(get_settings).post(set_settings))
        .route("/bills/unknown-payment", post(unknown_payment))
        .route("/bills/amount", post(amount))
        .route("/bills/omit", post(omit))
        .route("/bills/reset", post(reset))
}

type ControlResult = Result<Json<Value>, (StatusCode, Json<Value>)>;

fn control_error(status: StatusCode, message: impl Into<String>) -> (StatusCode, Json<Value>) {
    (status, Json(json!({ "error": message.into() })))
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, (StatusCode, Json<Value>)> {
    let body = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| control_error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

async fn get_settings(State(pay): State<Pay>) -> Json<Value> {
    Json(pay.lock().bills.json())
}

#[derive(Deserialize)]
struct SettingsRequest {
    immediate: Option<bool>,
}

async fn set_settings(State(pay): State<Pay>, body: Bytes) -> ControlResult {
    let req: SettingsRequest = parse(&body)?;
    let mut state = pay.lock();
    if let Some(immediate) = req.immediate {
        state.bills.immediate = immediate;
    }
    Ok(Json(state.bills.json()))
}

#[derive(Deserialize)]
struct UnknownPaymentRequest {
    out_trade_no: String,
    amount_fen: i64,
    success_time: Option<String>,
    description: Option<String>,
    openid: Option<String>,
}

/// A payment WeChat has and the merchant never ordered: a paid v3 order, never notified.
async fn unknown_payment(State(pay): State<Pay>, body: Bytes) -> ControlResult {
    let req: UnknownPaymentRequest = parse(&body)?;
    if req.amount_fen < 1 {
        return Err(control_error(
            StatusCode::BAD_REQUEST,
            "amount_fen must be at least 1",
        ));
    }
    if req.out_trade_no.is_empty() || req.out_trade_no.len() > 32 {
        return Err(control_error(
            StatusCode::BAD_REQUEST,
            "out_trade_no must be 1 to 32 characters",
        ));
    }
    let now = Utc::now();
    let success_time = match &req.success_time {
        None => now,
        Some(t) => DateTime::parse_from_rfc3339(t)
            .map_err(|_| control_error(StatusCode::BAD_REQUEST, "success_time must be RFC 3339"))?
            .with_timezone(&Utc),
    };
    if success_time > now {
        return Err(control_error(
            StatusCode::BAD_REQUEST,
            "success_time must not be in the future",
        ));
    }
    let mut state = pay.lock();
    if state.orders.contains_key(&req.out_trade_no)
        || state.v2.orders.contains_key(&req.out_trade_no)
    {
        return Err(control_error(
            StatusCode::CONFLICT,
            "that out_trade_no is already an order",
        ));
    }
    let transaction = transaction_id(success_time);
    state.orders.insert(
        req.out_trade_no.clone(),
        Order {
            out_trade_no: req.out_trade_no.clone(),
            params: OrderParams {
                appid: pay.appid.clone(),
                description: req
                    .description
                    .unwrap_or_else(|| "商户未知的交易".to_string()),
                time_expire: None,
                attach: None,
                notify_url: String::new(),
                total: req.amount_fen,
                openid: req
                    .openid
                    .unwrap_or_else(|| crate::openid_for(&pay.appid, "unknown-payer")),
            },
            prepay_id: prepay_id(success_time),
            prepay_issued: success_time,
            status: OrderStatus::Paid(Payment {
                transaction_id: transaction.clone(),
                success_time,
                total: req.amount_fen,
                payer_total: req.amount_fen,
            }),
            refunded: false,
            notification: None,
        },
    );
    Ok(Json(json!({
        "out_trade_no": req.out_trade_no,
        "transaction_id": transaction,
        "success_time": super::ids::wechat_time(success_time),
    })))
}

#[derive(Deserialize)]
struct AmountRequest {
    out_trade_no: String,
    /// `null` undoes the change.
    amount_fen: Option<i64>,
}

async fn amount(State(pay): State<Pay>, body: Bytes) -> ControlResult {
    let req: AmountRequest = parse(&body)?;
    let mut state = pay.lock();
    match req.amount_fen {
        Some(fen) if fen < 0 => {
            return Err(control_error(
                StatusCode::BAD_REQUEST,
                "amount_fen must not be negative",
            ))
        }
        Some(fen) => {
            state.bills.amounts.insert(req.out_trade_no, fen);
        }
        None => {
            state.bills.amounts.remove(&req.out_trade_no);
        }
    }
    Ok(Json(state.bills.json()))
}

#[derive(Deserialize)]
struct OmitRequest {
    out_trade_no: Option<String>,
    out_refund_no: Option<String>,
    omitted: Option<bool>,
}

async fn omit(State(pay): State<Pay>, body: Bytes) -> ControlResult {
    let req: OmitRequest = parse(&body)?;
    let omitted = req.omitted.unwrap_or(true);
    let mut state = pay.lock();
    let (set, key) = match (req.out_trade_no, req.out_refund_no) {
        (Some(no), None) => (&mut state.bills.omit_payments, no),
        (None, Some(no)) => (&mut state.bills.omit_refunds, no),
        _ => {
            return Err(control_error(
                StatusCode::BAD_REQUEST,
                "give exactly one of out_trade_no and out_refund_no",
            ))
        }
    };
    if omitted {
        set.insert(key);
    } else {
        set.remove(&key);
    }
    Ok(Json(state.bills.json()))
}

async fn reset(State(pay): State<Pay>) -> Json<Value> {
    let mut state = pay.lock();
    let b = &mut state.bills;
    b.amounts.clear();
    b.omit_payments.clear();
    b.omit_refunds.clear();
    Json(b.json())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn fees_round_half_up_to_the_fen() {
        assert_eq!(fee(1), 0);
        assert_eq!(fee(600), 4); // 3.6 fen
        assert_eq!(fee(5000), 30);
        assert_eq!(fee(250), 2); // 1.5 fen → 2
        assert_eq!(fee(249), 1);
        assert_eq!(fee_yuan(4), "0.04000");
        assert_eq!(fee_yuan(-27), "-0.27000");
        assert_eq!(yuan(123456), "1234.56");
        assert_eq!(yuan(-5), "-0.05");
    }

    #[test]
    fn a_bill_is_made_at_ten_beijing_the_next_day() {
        let date = NaiveDate::from_ymd_opt(2026, 5, 1).unwrap();
        // 09:59 and 10:00 Beijing on 2 May.
        let before = utc("2026-05-02T01:59:59Z");
        let after = utc("2026-05-02T02:00:00Z");
        assert_eq!(check_date(date, before, false), Err(NoBill::Creating));
        assert_eq!(check_date(date, after, false), Ok(()));
        assert_eq!(check_date(date, before, true), Ok(()));
        // Today (Beijing) is 2 May: 3 May is the future.
        let tomorrow = NaiveDate::from_ymd_opt(2026, 5, 3).unwrap();
        assert!(matches!(
            check_date(tomorrow, after, true),
            Err(NoBill::BadDate(_))
        ));
        let old = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        assert!(matches!(
            check_date(old, after, true),
            Err(NoBill::BadDate(_))
        ));
    }

    fn payment(no: &str, amount: i64, time: &str) -> Line {
        Line {
            time: utc(time),
            appid: "wxapp".into(),
            transaction_id: format!("4200{no}"),
            out_trade_no: no.into(),
            openid: "o1".into(),
            description: "咖啡".into(),
            attach: String::new(),
            kind: Kind::Payment { amount },
        }
    }

    #[test]
    fn rows_and_summary_as_wechat_writes_them() {
        let mut refund = payment("A1", 0, "2026-05-01T04:00:00Z");
        refund.kind = Kind::Refund {
            refund_id: "503R".into(),
            out_refund_no: "R1".into(),
            refund: 250,
            status: "SUCCESS",
            success_time: Some(utc("2026-05-01T04:00:05Z")),
        };
        let lines = vec![payment("A1", 600, "2026-05-01T02:00:00Z"), refund];
        let csv = render(&lines, "1900000001", BillType::All);
        let rows: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(rows[0], HEADER_ALL);
        assert_eq!(
            rows[1],
            "`2026-05-01 10:00:00,`wxapp,`1900000001,`0,`,`4200A1,`A1,`o1,`JSAPI,`SUCCESS,`OTHERS,`CNY,`6.00,`0.00,`0,`0,`0.00,`0.00,`,`,`咖啡,`,`0.04000,`0.60%,`6.00,`0.00,`"
        );
        assert_eq!(
            rows[2],
            "`2026-05-01 12:00:00,`wxapp,`1900000001,`0,`,`4200A1,`A1,`o1,`JSAPI,`REFUND,`OTHERS,`CNY,`0.00,`0.00,`503R,`R1,`2.50,`0.00,`ORIGINAL,`SUCCESS,`咖啡,`,`-0.02000,`0.60%,`0.00,`2.50,`"
        );
        assert_eq!(rows[3], SUMMARY_HEADER);
        assert_eq!(rows[4], "`2,`6.00,`2.50,`0.00,`0.02000,`6.00,`2.50");
        assert_eq!(rows[5], "");
        for (header, line) in [(rows[0], rows[1]), (rows[0], rows[2])] {
            assert_eq!(header.split(',').count(), line.split(",`").count());
        }

        let success = render(&lines[..1], "1900000001", BillType::Success);
        let r: Vec<&str> = success.split("\r\n").collect();
        assert_eq!(r[0].split(',').count(), r[1].split(",`").count());
        let refunds = render(&lines[1..], "1900000001", BillType::Refund);
        let r: Vec<&str> = refunds.split("\r\n").collect();
        assert_eq!(r[0].split(',').count(), r[1].split(",`").count());
        assert!(r[1].contains("`2026-05-01 12:00:00,`2026-05-01 12:00:05,`503R"));
    }
}
