//! WeChat Pay's trade bill (对账单, `bill_type=ALL`), read and checked — the same text for APIv3
//! (`/v3/bill/tradebill`, then the download) and APIv2 (`/pay/downloadbill`). Pure: bytes in
//! (already un-gzipped), payments and refunds out; fetching, gzip and the v3 hash are the
//! client's.
//!
//! The format, as WeChat writes it (official documentation and the samples of WxJava's
//! `WxPayBillResult`):
//!
//! ```text
//! 交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,…,订单金额,申请退款金额,费率备注
//! `2019-07-25 08:35:41,`wx…,`1900…,`0,`,`4200…,`T1,`oUpF…,`JSAPI,`SUCCESS,…,`6.00,`0.00,`
//! 总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额
//! `48,`5.76,`1.42,`0.00,`0.01000,`5.76,`1.42
//! ```
//!
//! * Header rows are plain in WeChat's samples, backquoted in some captures: either is read.
//!   Columns are found by name, never by position (the format grew columns over the years: the
//!   last three came with 免充值券; the oldest bills say 总金额 / 子商户号).
//! * Every data field starts with a backquote (so that spreadsheets keep long numbers as text).
//!   Rows are split on ``,` `` rather than `,`: a comma inside a product name (商品名称) or the
//!   merchant's data (商户数据包) then stays in its field, and anything that breaks the shape
//!   changes the field count, which is refused.
//! * Amounts are yuan with at most two decimals (read exactly, as fen); fees (手续费) have five
//!   and are negative on refund lines, so they are summed as decimals, never converted.
//! * 交易时间 is Beijing time.
//! * The summary (总交易单数 and the totals) must agree exactly with the rows: a bill that does
//!   not add up is not trusted at all (truncated, altered or misread).

use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

/// A day's bill, checked against its own summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TradeBill {
    /// Rows in state `SUCCESS`, in bill order.
    pub payments: Vec<BillPayment>,
    /// Rows in state `REFUND`, in bill order.
    pub refunds: Vec<BillRefund>,
    /// Every data row, including those of states the engine does not read (`REVOKED`, …).
    pub rows: usize,
}

/// A `SUCCESS` row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BillPayment {
    /// 商户订单号.
    pub out_trade_no: String,
    /// 微信订单号.
    pub transaction_id: String,
    /// 订单金额 in fen (older bills: 总金额, or 应结订单金额 + 代金券金额; see [`read`]).
    pub amount_fen: i64,
    /// 交易时间.
    pub at: DateTime<Utc>,
}

/// A `REFUND` row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BillRefund {
    /// 商户订单号.
    pub out_trade_no: String,
    /// 微信订单号.
    pub transaction_id: String,
    /// 商户退款单号.
    pub out_refund_no: String,
    /// 微信退款单号.
    pub refund_id: String,
    /// 申请退款金额 in fen (older bills without it: 退款金额).
    pub amount_fen: i64,
    /// 退款状态.
    pub state: BillRefundState,
    /// 交易时间 of the refund line.
    pub at: DateTime<Utc>,
}

/// 退款状态 of a refund line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BillRefundState {
    /// `SUCCESS`.
    Succeeded,
    /// `PROCESSING`; also `CHANGE` (v2) and `ABNORMAL` (v3): the money could not reach the
    /// customer and waits for the merchant's action — not final, as everywhere else in this
    /// crate.
    Processing,
    /// `FAIL`, `REFUNDCLOSE`, `CLOSED`, and any other word.
    Failed,
}

/// Why a bill is not believed. `line` is 1-based (0: the file as a whole). Never carries a
/// row's content beyond the offending value of an amount or time.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("trade bill line {line}: {reason}")]
pub struct BillError {
    /// Where.
    pub line: usize,
    /// What.
    pub reason: String,
}

fn error(line: usize, reason: impl Into<String>) -> BillError {
    BillError {
        line,
        reason: reason.into(),
    }
}

const SUMMARY_COUNT: &str = "总交易单数";

/// The summary's totals and the columns they add up, as WeChat names them (today's names, then
/// the oldest bills').
const TOTALS: [(&str, &str, Kind); 9] = [
    ("应结订单总金额", "应结订单金额", Kind::Money),
    ("退款总金额", "退款金额", Kind::Money),
    ("充值券退款总金额", "充值券退款金额", Kind::Money),
    ("手续费总金额", "手续费", Kind::Fee),
    ("订单总金额", "订单金额", Kind::Money),
    ("申请退款总金额", "申请退款金额", Kind::Money),
    ("总交易额", "总金额", Kind::Money),
    ("总退款金额", "退款金额", Kind::Money),
    (
        "总代金券或立减优惠退款金额",
        "代金券或立减优惠退款金额",
        Kind::Money,
    ),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Yuan, two decimals at most, never negative: read as fen.
    Money,
    /// Yuan with any number of decimals, negative on refunds (手续费): summed as decimals.
    Fee,
}

/// A summary total being checked: the column it adds up and the running sum.
struct Check {
    summary: &'static str,
    column: usize,
    kind: Kind,
    fen: i64,
    fee: Decimal,
}

/// How a payment's amount is found in this bill's columns.
enum PayAmount {
    /// 订单金额 (bills since 免充值券), or 总金额 (the oldest bills).
    Column(usize),
    /// 应结订单金额 + 代金券金额: what was paid before recharge vouchers were deducted.
    SettlementPlusCoupon(usize, usize),
}

/// Where the fields the engine reads are.
struct Columns {
    count: usize,
    time: usize,
    transaction_id: usize,
    out_trade_no: usize,
    state: usize,
    pay_amount: PayAmount,
    /// Present in ALL bills; absent only in a SUCCESS-only bill (then a REFUND row is an error).
    refund: Option<RefundColumns>,
}

struct RefundColumns {
    refund_id: usize,
    out_refund_no: usize,
    amount: usize,
    state: usize,
}

impl Columns {
    fn find(names: &[&str]) -> Result<Columns, BillError> {
        let at = |name: &str| names.iter().position(|n| *n == name);
        let need = |name: &str| at(name).ok_or_else(|| error(1, format!("no column {name}")));
        let pay_amount = match (
            at("订单金额").or_else(|| at("总金额")),
            at("应结订单金额"),
            at("代金券金额"),
        ) {
            (Some(total), _, _) => PayAmount::Column(total),
            (None, Some(settlement), Some(coupon)) => {
                PayAmount::SettlementPlusCoupon(settlement, coupon)
            }
            _ => return Err(error(1, "no column for the order amount (订单金额)")),
        };
        let refund = match (at("微信退款单号"), at("商户退款单号"), at("退款状态"))
        {
            (Some(refund_id), Some(out_refund_no), Some(state)) => Some(RefundColumns {
                refund_id,
                out_refund_no,
                amount: at("申请退款金额")
                    .or_else(|| at("退款金额"))
                    .ok_or_else(|| error(1, "no column for the refund amount (申请退款金额)"))?,
                state,
            }),
            _ => None,
        };
        Ok(Columns {
            count: names.len(),
            time: need("交易时间")?,
            transaction_id: need("微信订单号")?,
            out_trade_no: need("商户订单号")?,
            state: need("交易状态")?,
            pay_amount,
            refund,
        })
    }
}

/// Reads and checks a bill. `bytes` is the bill itself (UTF-8, a BOM allowed, lines ending in
/// `\r\n` or `\n`), already un-gzipped.
///
/// A payment's amount is 订单金额, the figure a query or notify reports as `amount.total`; the
/// oldest bills have 总金额 instead, and a bill with neither gives 应结订单金额 + 代金券金额
/// (the settled amount plus the recharge vouchers deducted from it).
pub fn read(bytes: &[u8]) -> Result<TradeBill, BillError> {
    let text = std::str::from_utf8(bytes).map_err(|_| error(0, "not UTF-8"))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text
        .split('\n')
        .enumerate()
        .map(|(i, line)| (i + 1, line.strip_suffix('\r').unwrap_or(line)))
        .filter(|(_, line)| !line.trim().is_empty());

    let (_, header) = lines.next().ok_or_else(|| error(0, "empty"))?;
    let names: Vec<&str> = header.split(',').map(name).collect();
    if names.first() == Some(&SUMMARY_COUNT) {
        return Err(error(1, "no header: the bill starts with its summary"));
    }
    let columns = Columns::find(&names)?;

    let mut bill = TradeBill::default();
    let mut fields: Vec<&str> = Vec::with_capacity(columns.count);
    let mut summary_header = None;
    // The checks are known only once the summary header is read, after the rows: every column
    // a total could name is summed as the rows go by, the unneeded sums dropped at the end.
    let mut sums: Vec<Check> = TOTALS
        .iter()
        .filter_map(|&(summary, column, kind)| {
            let column = names.iter().position(|n| *n == column)?;
            Some(Check {
                summary,
                column,
                kind,
                fen: 0,
                fee: Decimal::ZERO,
            })
        })
        .collect();

    for (number, line) in lines.by_ref() {
        if name(line.split(',').next().unwrap_or("")) == SUMMARY_COUNT {
            summary_header = Some((number, line));
            break;
        }
        split(line, &mut fields).map_err(|reason| error(number, reason))?;
        if fields.len() != columns.count {
            return Err(error(
                number,
                format!(
                    "{} fields where the header has {}",
                    fields.len(),
                    columns.count
                ),
            ));
        }
        for sum in &mut sums {
            add(sum, fields[sum.column]).map_err(|reason| error(number, reason))?;
        }
        row(&columns, &fields, &mut bill).map_err(|reason| error(number, reason))?;
        bill.rows += 1;
    }

    let (header_line, header) =
        summary_header.ok_or_else(|| error(0, "no summary (总交易单数)"))?;
    let (values_line, values) = lines
        .next()
        .ok_or_else(|| error(header_line, "a summary header without values"))?;
    if let Some((extra, _)) = lines.next() {
        return Err(error(extra, "content after the summary"));
    }
    let summary_names: Vec<&str> = header.split(',').map(name).collect();
    split(values, &mut fields).map_err(|reason| error(values_line, reason))?;
    if fields.len() != summary_names.len() {
        return Err(error(
            values_line,
            format!(
                "{} summary values for {} summary columns",
                fields.len(),
                summary_names.len()
            ),
        ));
    }
    let count: usize = fields[0].parse().map_err(|_| {
        error(
            values_line,
            format!("{SUMMARY_COUNT} {:?} is not a count", fields[0]),
        )
    })?;
    if count != bill.rows {
        return Err(error(
            values_line,
            format!(
                "{SUMMARY_COUNT} is {count} but the bill has {} rows",
                bill.rows
            ),
        ));
    }
    // A summary that checks no amount would leave every amount of the bill unchecked.
    let mut amounts_checked = 0;
    for (summary, value) in summary_names.iter().zip(fields.iter()).skip(1) {
        let Some(&(_, column, kind)) = TOTALS.iter().find(|(s, _, _)| s == summary) else {
            // A total WeChat adds later: nothing to check it against.
            continue;
        };
        let sum = sums
            .iter()
            .find(|c| c.summary == *summary)
            .ok_or_else(|| error(values_line, format!("{summary} without a {column} column")))?;
        let agrees = match kind {
            Kind::Money => money(value).map_err(|r| error(values_line, r))? == sum.fen,
            Kind::Fee => fee(value).map_err(|r| error(values_line, r))? == sum.fee,
        };
        if !agrees {
            return Err(error(
                values_line,
                format!("{summary} {value} is not the sum of {column}"),
            ));
        }
        amounts_checked += usize::from(kind == Kind::Money);
    }
    if amounts_checked == 0 {
        return Err(error(
            values_line,
            "the summary totals no amount of the bill",
        ));
    }
    Ok(bill)
}

/// A header name without its backquote (if any) and surrounding blanks.
fn name(field: &str) -> &str {
    field.trim().trim_start_matches('`').trim()
}

/// A backquoted line's fields, into `fields` (reused across lines: no allocation per row).
fn split<'a>(line: &'a str, fields: &mut Vec<&'a str>) -> Result<(), String> {
    let body = line
        .trim_start()
        .strip_prefix('`')
        .ok_or("a row whose first field has no backquote")?;
    fields.clear();
    // The same as `body.split(",`")`, found with a one-byte search for the backquote (memchr)
    // instead of a two-byte pattern: a day's bill has millions of fields.
    let (bytes, mut start, mut from) = (body.as_bytes(), 0, 0);
    while let Some(i) = body[from..].find('`') {
        let at = from + i;
        if at > start && bytes[at - 1] == b',' {
            fields.push(body[start..at - 1].trim());
            start = at + 1;
        }
        from = at + 1;
    }
    fields.push(body[start..].trim());
    Ok(())
}

fn add(sum: &mut Check, value: &str) -> Result<(), String> {
    match sum.kind {
        Kind::Money => {
            sum.fen = sum
                .fen
                .checked_add(money(value)?)
                .ok_or("amounts overflow")?;
        }
        Kind::Fee => {
            sum.fee = sum.fee.checked_add(fee(value)?).ok_or("fees overflow")?;
        }
    }
    Ok(())
}

/// One data row: a payment, a refund, or a row of another state (counted and summed only).
fn row(columns: &Columns, fields: &[&str], bill: &mut TradeBill) -> Result<(), String> {
    match fields[columns.state] {
        "SUCCESS" => bill.payments.push(BillPayment {
            out_trade_no: id(fields, columns.out_trade_no, "商户订单号")?,
            transaction_id: id(fields, columns.transaction_id, "微信订单号")?,
            amount_fen: match columns.pay_amount {
                PayAmount::Column(total) => money(fields[total])?,
                PayAmount::SettlementPlusCoupon(settlement, coupon) => money(fields[settlement])?
                    .checked_add(money(fields[coupon])?)
                    .ok_or("amount overflows")?,
            },
            at: beijing(fields[columns.time])?,
        }),
        "REFUND" => {
            let refund = columns
                .refund
                .as_ref()
                .ok_or("a REFUND row in a bill without refund columns")?;
            bill.refunds.push(BillRefund {
                out_trade_no: id(fields, columns.out_trade_no, "商户订单号")?,
                transaction_id: id(fields, columns.transaction_id, "微信订单号")?,
                out_refund_no: id(fields, refund.out_refund_no, "商户退款单号")?,
                refund_id: id(fields, refund.refund_id, "微信退款单号")?,
                amount_fen: money(fields[refund.amount])?,
                state: refund_state(fields[refund.state]),
                at: beijing(fields[columns.time])?,
            });
        }
        // REVOKED and whatever else a bill may hold: not a payment or a refund of ours, but
        // part of the summary all the same. The time must still read (a misread row is not
        // skipped silently).
        _ => {
            beijing(fields[columns.time])?;
        }
    }
    Ok(())
}

fn id(fields: &[&str], column: usize, name: &str) -> Result<String, String> {
    let value = fields[column];
    if value.is_empty() {
        return Err(format!("empty {name}"));
    }
    Ok(value.to_string())
}

fn refund_state(state: &str) -> BillRefundState {
    match state {
        "SUCCESS" => BillRefundState::Succeeded,
        "FAIL" | "REFUNDCLOSE" | "CLOSED" => BillRefundState::Failed,
        // Not final, and so is any word we do not know: reading an unknown state as "failed"
        // would tell staff that money we paid back never went (and invite a second refund).
        _ => BillRefundState::Processing,
    }
}

/// Yuan with at most two decimals, not negative (`6`, `6.0`, `6.00`), as fen. Read by hand:
/// digits, one point, nothing else (no sign, `_` or exponent, which no bill has).
fn money(text: &str) -> Result<i64, String> {
    let bad = || format!("{text:?} is not an amount in yuan");
    let (whole, cents) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !cents.bytes().all(|b| b.is_ascii_digit())
        || (text.contains('.') && cents.is_empty())
    {
        return Err(bad());
    }
    if cents.len() > 2 {
        return Err(format!("{text:?} has more than two decimals"));
    }
    // Digits only, at most two decimals: exact in integers, and cheaper than a `Decimal` parse
    // for the five amounts on each of a day's 100,000 rows.
    let whole: i64 = whole.parse().map_err(|_| bad())?;
    let cents: i64 = match cents.len() {
        0 => 0,
        1 => cents.parse::<i64>().map_err(|_| bad())? * 10,
        _ => cents.parse().map_err(|_| bad())?,
    };
    whole
        .checked_mul(100)
        .and_then(|fen| fen.checked_add(cents))
        .ok_or_else(bad)
}

/// A fee (手续费): yuan with any number of decimals, negative on refunds.
fn fee(text: &str) -> Result<Decimal, String> {
    let bad = || format!("{text:?} is not a fee in yuan");
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, decimals) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !decimals.bytes().all(|b| b.is_ascii_digit())
        || (digits.contains('.') && decimals.is_empty())
    {
        return Err(bad());
    }
    Decimal::from_str(text).map_err(|_| bad())
}

/// `yyyy-MM-dd HH:mm:ss` in Beijing time (UTC+8, no daylight saving), as UTC. Read by hand:
/// it is on every row. WeChat's oldest sample bills write the time with full-width colons
/// (`16：33：45`); those are read too.
fn beijing(text: &str) -> Result<DateTime<Utc>, String> {
    if text.contains('：') {
        return beijing(&text.replace('：', ":"));
    }
    let bad = || format!("{text:?} is not a time (yyyy-MM-dd HH:mm:ss)");
    let b = text.as_bytes();
    if b.len() != 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b' '
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    let number = |from: usize, to: usize| -> Result<u32, String> {
        let digits = &text[from..to];
        if !digits.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        digits.parse().map_err(|_| bad())
    };
    let (year, month, day) = (number(0, 4)?, number(5, 7)?, number(8, 10)?);
    let (hour, minute, second) = (number(11, 13)?, number(14, 16)?, number(17, 19)?);
    let local = NaiveDate::from_ymd_opt(year as i32, month, day)
        .and_then(|d| d.and_hms_opt(hour, minute, second))
        .ok_or_else(bad)?;
    Ok((local - chrono::Duration::hours(8)).and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The columns of a `bill_type=ALL` bill today, v2 and v3 alike (plain, as WeChat writes
    /// the header).
    const HEADER: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";
    const SUMMARY: &str = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额";

    /// A day with a payment, a payment partly paid with a recharge voucher, and a refund of
    /// the first; shaped like WeChat's own samples (fees with five decimals, negative on the
    /// refund line; `0` for the refund ids of a payment line; an empty 费率备注).
    fn sample(eol: &str) -> String {
        [
            HEADER,
            "`2026-12-01 08:35:41,`wxd678efh567hg6787,`1900000001,`0,`,`4200000215202612010261405420,`PS20261201000001,`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`JSAPI,`SUCCESS,`CMB_DEBIT,`CNY,`25.00,`0.00,`0,`0,`0.00,`0.00,`,`,`咖啡, 大杯,`order=1,`0.15000,`0.60%,`25.00,`0.00,`",
            "`2026-12-01 09:10:02,`wxd678efh567hg6787,`1900000001,`0,`,`4200000215202612010261405421,`PS20261201000002,`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`JSAPI,`SUCCESS,`OTHERS,`CNY,`8.00,`2.00,`0,`0,`0.00,`0.00,`,`,`拿铁,`,`0.05000,`0.60%,`10.00,`0.00,`",
            "`2026-12-01 20:53:36,`wxd678efh567hg6787,`1900000001,`0,`,`4200000215202612010261405420,`PS20261201000001,`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`JSAPI,`REFUND,`CMB_DEBIT,`CNY,`0.00,`0.00,`50000408942026120107145868882,`RF20261201000001,`5.00,`0.00,`ORIGINAL,`SUCCESS,`咖啡, 大杯,`order=1,`-0.03000,`0.60%,`0.00,`5.00,`",
            SUMMARY,
            "`3,`33.00,`5.00,`0.00,`0.17000,`35.00,`5.00",
            "",
        ]
        .join(eol)
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn a_day_of_payments_and_refunds() {
        let bill = read(sample("\n").as_bytes()).unwrap();
        assert_eq!(bill.rows, 3);
        assert_eq!(
            bill.payments,
            vec![
                BillPayment {
                    out_trade_no: "PS20261201000001".into(),
                    transaction_id: "4200000215202612010261405420".into(),
                    amount_fen: 2500,
                    at: utc("2026-12-01T00:35:41Z"),
                },
                BillPayment {
                    out_trade_no: "PS20261201000002".into(),
                    transaction_id: "4200000215202612010261405421".into(),
                    // 订单金额, not what was settled after the voucher.
                    amount_fen: 1000,
                    at: utc("2026-12-01T01:10:02Z"),
                },
            ]
        );
        assert_eq!(
            bill.refunds,
            vec![BillRefund {
                out_trade_no: "PS20261201000001".into(),
                transaction_id: "4200000215202612010261405420".into(),
                out_refund_no: "RF20261201000001".into(),
                refund_id: "50000408942026120107145868882".into(),
                amount_fen: 500,
                state: BillRefundState::Succeeded,
                at: utc("2026-12-01T12:53:36Z"),
            }]
        );
    }

    #[test]
    fn fields_split_only_at_comma_backquote() {
        let mut fields = Vec::new();
        split("`a,`咖啡, 大杯,`x`y,`,`z", &mut fields).unwrap();
        assert_eq!(fields, vec!["a", "咖啡, 大杯", "x`y", "", "z"]);
        split("`,`b", &mut fields).unwrap();
        assert_eq!(fields, vec!["", "b"]);
        assert!(split("a,`b", &mut fields).is_err());
    }

    #[test]
    fn bom_crlf_and_backquoted_headers_read_the_same() {
        let plain = read(sample("\n").as_bytes()).unwrap();
        assert_eq!(read(sample("\r\n").as_bytes()).unwrap(), plain);
        let bom = format!("\u{feff}{}", sample("\r\n"));
        assert_eq!(read(bom.as_bytes()).unwrap(), plain);
        let quoted = sample("\r\n")
            .replace(HEADER, &format!("`{}", HEADER.replace(',', ",`")))
            .replace(SUMMARY, &format!("`{}", SUMMARY.replace(',', ",`")));
        assert_eq!(read(quoted.as_bytes()).unwrap(), plain);
        // Without the last line break.
        assert_eq!(read(sample("\n").trim_end().as_bytes()).unwrap(), plain);
    }

    #[test]
    fn columns_are_found_by_name() {
        // The same bill with two columns swapped.
        let swapped = sample("\n")
            .lines()
            .map(|line| {
                let mut fields: Vec<&str> = line.split(",`").collect();
                if line.starts_with('`') && fields.len() == 27 {
                    fields.swap(5, 6);
                    fields.join(",`")
                } else if line.starts_with("交易时间") {
                    let mut names: Vec<&str> = line.split(',').collect();
                    names.swap(5, 6);
                    names.join(",")
                } else {
                    line.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(
            read(swapped.as_bytes()).unwrap(),
            read(sample("\n").as_bytes()).unwrap()
        );
    }

    /// WeChat's oldest documented sample (24 columns, 总金额, full-width colons in the time,
    /// another summary), as WxJava keeps it in its tests.
    #[test]
    fn the_oldest_format_reads() {
        let bill = "交易时间,公众账号ID,商户号,子商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,总金额,代金券或立减优惠金额,微信退款单号,商户退款单号,退款金额,代金券或立减优惠退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率\n\
            `2014-11-10 16：33：45,`wx2421b1c4370ec43b,`10000100,`0,`1000,`1001690740201411100005734289,`1415640626,`085e9858e3ba5186aafcbaed1,`MICROPAY,`SUCCESS,`OTHERS,`CNY,`0.01,`0.0,`0,`0,`0,`0,`,`,`被扫支付测试,`订单额外描述,`0,`0.60%\n\
            `2014-11-10 16：46：14,`wx2421b1c4370ec43b,`10000100,`0,`1000,`1002780740201411100005729794,`1415635270,`085e9858e90ca40c0b5aee463,`MICROPAY,`SUCCESS,`OTHERS,`CNY,`0.01,`0.0,`0,`0,`0,`0,`,`,`被扫支付测试,`订单额外描述,`0,`0.60%\n\
            总交易单数,总交易额,总退款金额,总代金券或立减优惠退款金额,手续费总金额\n\
            `2,`0.02,`0.0,`0.0,`0";
        let bill = read(bill.as_bytes()).unwrap();
        assert_eq!(bill.payments.len(), 2);
        assert_eq!(bill.payments[0].amount_fen, 1);
        assert_eq!(bill.payments[0].out_trade_no, "1415640626");
        assert_eq!(bill.payments[0].at, utc("2014-11-10T08:33:45Z"));
    }

    #[test]
    fn an_empty_day_is_a_header_and_a_zero_summary() {
        let bill =
            format!("{HEADER}\r\n{SUMMARY}\r\n`0,`0.00,`0.00,`0.00,`0.00000,`0.00,`0.00\r\n");
        assert_eq!(read(bill.as_bytes()).unwrap(), TradeBill::default());
    }

    #[test]
    fn other_states_are_counted_and_summed_but_not_read() {
        let revoked = "`2026-12-01 10:00:00,`wxd678efh567hg6787,`1900000001,`0,`,`4200000215202612010261405422,`PS20261201000003,`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`MICROPAY,`REVOKED,`OTHERS,`CNY,`0.00,`0.00,`0,`0,`0.00,`0.00,`,`,`拿铁,`,`0.00000,`0.60%,`0.00,`0.00,`";
        let bill = sample("\n")
            .replace(SUMMARY, &format!("{revoked}\n{SUMMARY}"))
            .replace("`3,`33.00", "`4,`33.00");
        let bill = read(bill.as_bytes()).unwrap();
        assert_eq!(
            (bill.rows, bill.payments.len(), bill.refunds.len()),
            (4, 2, 1)
        );
    }

    #[test]
    fn refund_states_read_as_the_rest_of_the_crate_reads_them() {
        for (word, state) in [
            ("SUCCESS", BillRefundState::Succeeded),
            ("PROCESSING", BillRefundState::Processing),
            ("CHANGE", BillRefundState::Processing),
            ("ABNORMAL", BillRefundState::Processing),
            ("FAIL", BillRefundState::Failed),
            ("REFUNDCLOSE", BillRefundState::Failed),
            ("CLOSED", BillRefundState::Failed),
            ("SOMETHING_NEW", BillRefundState::Processing),
        ] {
            let bill = sample("\n").replace("`ORIGINAL,`SUCCESS", &format!("`ORIGINAL,`{word}"));
            assert_eq!(
                read(bill.as_bytes()).unwrap().refunds[0].state,
                state,
                "{word}"
            );
        }
    }

    fn refused(bill: &str) -> BillError {
        read(bill.as_bytes()).expect_err("must be refused")
    }

    #[test]
    fn a_summary_that_does_not_add_up_is_refused() {
        let bill = sample("\n");
        for (from, to) in [
            ("`3,`33.00", "`2,`33.00"),               // the count
            ("`3,`33.00", "`4,`33.00"),               // a row missing (truncated bill)
            ("`3,`33.00", "`3,`33.01"),               // 应结订单总金额
            ("`33.00,`5.00", "`33.00,`5.01"),         // 退款总金额
            ("`0.17000", "`0.17001"),                 // 手续费总金额
            ("`0.17000,`35.00", "`0.17000,`34.99"),   // 订单总金额
            ("`35.00,`5.00", "`35.00,`4.00"),         // 申请退款总金额
            ("`CNY,`8.00,`2.00", "`CNY,`8.01,`2.00"), // a row altered
        ] {
            assert!(bill.contains(from), "{from}");
            let error = refused(&bill.replacen(from, to, 1));
            assert!(error.line > 0, "{error}");
        }
        // Equal as numbers is equal: 0.17 is 0.17000.
        assert!(read(bill.replace("`0.17000", "`0.17").as_bytes()).is_ok());
    }

    #[test]
    fn a_summary_that_totals_no_amount_is_refused() {
        let bill = sample("\n")
            .replace(SUMMARY, "总交易单数,手续费总金额")
            .replace("`3,`33.00,`5.00,`0.00,`0.17000,`35.00,`5.00", "`3,`0.17000");
        let error = refused(&bill);
        assert!(error.reason.contains("no amount"), "{error}");
        // Only the count and a total WeChat might add later: no amount checked either.
        let bill = sample("\n")
            .replace(SUMMARY, "总交易单数,某个新总额")
            .replace("`3,`33.00,`5.00,`0.00,`0.17000,`35.00,`5.00", "`3,`1.00");
        assert!(refused(&bill).reason.contains("no amount"));
    }

    #[test]
    fn bad_amounts_and_times_are_refused() {
        let bill = sample("\n");
        for bad in [
            "`25.001",
            "`-25.00",
            "`25.",
            "`.25",
            "`2_5.00",
            "`+25.00",
            "`1e3",
            "`",
            "`二十五",
        ] {
            let error = refused(&bill.replacen("`25.00", bad, 1));
            assert_eq!(error.line, 2, "{bad}: {error}");
        }
        for bad in [
            "`2026-12-01T08:35:41",
            "`2026-13-01 08:35:41",
            "`2026-12-01 8:35:41",
        ] {
            let error = refused(&bill.replacen("`2026-12-01 08:35:41", bad, 1));
            assert_eq!(error.line, 2, "{bad}: {error}");
        }
    }

    #[test]
    fn malformed_bills_are_refused() {
        let bill = sample("\n");
        // No summary at all (cut short).
        let cut = bill.split(SUMMARY).next().unwrap();
        assert!(refused(cut).reason.contains("no summary"));
        // A field too many or too few; a field without its backquote.
        refused(&bill.replacen("`order=1", "`order=1,`x", 1));
        refused(&bill.replacen(",`order=1", "", 1));
        refused(&bill.replacen("`order=1", "order=1", 1));
        // Something after the summary.
        refused(&format!("{bill}`1,`2\n"));
        // An empty identifier on a payment.
        refused(&bill.replacen("`PS20261201000002", "`", 1));
        // Not UTF-8, empty, no header.
        assert_eq!(refused("").line, 0);
        read(b"\xff\xfe").unwrap_err();
        refused(&format!(
            "{SUMMARY}\n`0,`0.00,`0.00,`0.00,`0.00000,`0.00,`0.00\n"
        ));
        // A header without the columns we read.
        refused(&bill.replace("商户订单号", "商户订单"));
    }

    #[test]
    fn a_hundred_thousand_rows() {
        let row = sample("\n").lines().nth(1).unwrap().to_string();
        let mut bill = String::with_capacity(row.len() * 100_001);
        bill.push_str(HEADER);
        bill.push('\n');
        for _ in 0..100_000 {
            bill.push_str(&row);
            bill.push('\n');
        }
        bill.push_str(SUMMARY);
        bill.push_str("\n`100000,`2500000.00,`0.00,`0.00,`15000.00000,`2500000.00,`0.00\n");
        let started = std::time::Instant::now();
        let read = read(bill.as_bytes()).unwrap();
        eprintln!("100,000 rows read in {:?}", started.elapsed());
        assert_eq!(read.payments.len(), 100_000);
    }
}
