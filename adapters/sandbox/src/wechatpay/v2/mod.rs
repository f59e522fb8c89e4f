//! WeChat Pay APIv2 simulator: XML bodies signed with the APIv2 key (MD5 or HMAC-SHA256), JSAPI
//! orders, query, close, refunds over mutual TLS, and the pay and refund notifications.
//!
//! # WeChat's endpoints
//!
//! All `POST` with an XML body `<xml>…</xml>`, mounted next to `/v3` under the sandbox's prefix
//! (point the client's v2 base, WeChat's `https://api.mch.weixin.qq.com`, at that prefix), and at
//! the root of [`Sandbox::serve_secapi`](crate::Sandbox::serve_secapi)'s HTTPS port. Every answer
//! is HTTP 200 `text/xml` (except the nginx pages of a bad client certificate, below).
//!
//! Every request is read the way WeChat reads it, in this order; the first failure answers
//! `<xml><return_code>FAIL</return_code><return_msg>…</return_msg></xml>` **without** `sign`:
//! not POST (`请使用post方法`), empty (`post数据为空`), not flat XML or a DTD/entity/oversized
//! body (`XML格式错误`), a `sign_type` other than `MD5`/`HMAC-SHA256` (`sign_type参数错误`;
//! absent means MD5), `mch_id` missing or not the merchant's, a `sign` that does not verify over
//! every field received with that sign type (`签名错误`), `appid` missing or not the
//! mini-program's (`appid和mch_id不匹配`). After that the answer is `return_code` SUCCESS with
//! `appid`, `mch_id`, a fresh `nonce_str`, `result_code` (FAIL with `err_code` and
//! `err_code_des`) and the business fields, and a `sign` made with **the request's** sign type.
//! A missing or malformed field is `PARAM_ERROR` naming the field.
//!
//! | Path | Fields | Answer / `err_code` |
//! |---|---|---|
//! | `/pay/unifiedorder` | `body`(≤128), `out_trade_no`(≤32 of `[0-9A-Za-z_-\|*]`), `total_fee`(digits, >0), `spbill_create_ip`(an IP), `notify_url`(https; http for loopback), `trade_type`=JSAPI, `openid`(known to the app), `attach`?, `fee_type`?=CNY, `time_expire`? (`yyyyMMddHHmmss` Beijing, ≥ 1 minute ahead: `time_expire时间过短…`) | `trade_type`, `prepay_id`. Again with the same parameters: the same `prepay_id` (a new one after 2 h); different: `OUT_TRADE_NO_USED`; paid: `ORDERPAID`; closed: `ORDERCLOSED`. The first order's `sign_type` signs its pay notification |
//! | `/pay/orderquery` | `out_trade_no` or `transaction_id` | `out_trade_no`, `trade_state` (SUCCESS, REFUND, NOTPAY, CLOSED, USERPAYING, PAYERROR), `trade_state_desc`; once paid also `openid`, `is_subscribe`, `trade_type`, `bank_type`, `total_fee`, `cash_fee`, `fee_type`, `transaction_id`, `time_end`, `attach`. `ORDERNOTEXIST` |
//! | `/pay/closeorder` | `out_trade_no` | closed; `ORDERPAID`, `ORDERCLOSED`, `USERPAYING` (the user is entering the password: not closed), `ORDERNOTEXIST` |
//! | `/secapi/pay/refund` | client certificate; `out_trade_no` or `transaction_id`, `out_refund_no`(≤64), `total_fee` (= the paid total, else `PARAM_ERROR`), `refund_fee`(>0), `refund_fee_type`?, `refund_desc`?, `notify_url`? | accepted (processing): `transaction_id`, `out_trade_no`, `out_refund_no`, `refund_id`, `refund_fee`, `total_fee`, `cash_fee`, …. The same `out_refund_no` again: the same refund; with other amounts `REFUND_FEE_MISMATCH`. Unpaid or unknown order `ORDERNOTEXIST`; beyond what is left `ERROR` `申请退款金额超过订单可退金额`; more than 50 `ERROR`; balance `NOTENOUGH`; older than a year `TRADE_OVERDUE` |
//! | `/pay/refundquery` | `refund_id`, `out_refund_no`, `transaction_id` or `out_trade_no` | `out_trade_no`, `transaction_id`, `total_fee`, `cash_fee`, `refund_count`, and per refund `out_refund_no_$n`, `refund_id_$n`, `refund_fee_$n`, `refund_status_$n` (PROCESSING, SUCCESS, REFUNDCLOSE, CHANGE), `refund_success_time_$n` (`yyyy-MM-dd HH:mm:ss` Beijing), …. `REFUNDNOTEXIST` |
//! | `/pay/downloadbill` | `bill_date` (`yyyyMMdd`), `bill_type`? (ALL, SUCCESS, REFUND), `tar_type`? (GZIP) | the trade bill CSV itself (`text/plain`; gzip bytes with GZIP), the same as v3's (see `bills`); else `return_code` FAIL, no `sign`, with `error_code`: `No Bill Exist` / `Bill Creating` (20002), `invalid bill_date` / `invalid bill_type` / `invalid tar_type` / `missing parameter` (20001). Faults are not applied |
//!
//! **Client certificate** (`/secapi/...`), judged as WeChat's nginx (`ssl_verify_client
//! optional`) does, before the body is read: none, or the plain-HTTP route → HTTP 400 HTML
//! `No required SSL certificate was sent`; not issued by the WeChat CA, or expired → HTTP 400
//! HTML `The SSL certificate error`; WeChat's but `CN` ≠ mchid → `return_code` FAIL
//! `certificate not match`. Nothing is refunded in any of these cases.
//!
//! **Notifications.** Paying a v2 order (control `pay`) POSTs `text/xml` to its `notify_url`:
//! `return_code`, `result_code` SUCCESS, `appid`, `mch_id`, `nonce_str`, `openid`,
//! `is_subscribe`, `trade_type`, `bank_type`, `total_fee`, `cash_fee`, `fee_type`,
//! `transaction_id`, `out_trade_no`, `time_end`, `attach`?, and `sign` with the order's sign type;
//! no `sign_type`. A v2 refund with a `notify_url` notifies when it settles: `return_code`,
//! `appid`, `mch_id`, `nonce_str`, `req_info` (AES-256-ECB of `<root>` with `out_trade_no`,
//! `transaction_id`, `out_refund_no`, `refund_id`, `total_fee`, `refund_fee`,
//! `settlement_total_fee`, `settlement_refund_fee`, `refund_status`, `success_time`,
//! `refund_recv_accout`, `refund_account`, `refund_request_source`), no `sign`. Both are retried
//! on v3's schedule until an HTTP 200 answer whose body is XML with `return_code` SUCCESS.
//!
//! # Control API
//!
//! The v3 endpoints (`/control/wechatpay/...`) act on the v2 books with `"channel":
//! "wechatpay_v2"` in the body (`?channel=wechatpay_v2` for `GET transactions/{out_trade_no}`);
//! see `wechatpay`'s documentation. Faults are shared: `fail_next` answers a signed
//! `result_code` FAIL with `code` in v2's spelling (`SYSTEMERROR` by default), `unsigned_next`
//! leaves `sign` off, `path_contains`, `after_processing`, `delay_ms`, `hold_refunds`,
//! `refund_settle_ms`, `refund_lag_ms` (→ `ORDERNOTEXIST`) and `balance_fen` (→ `NOTENOUGH`)
//! apply as in v3; `status`, `probe_share` and `unsigned_errors` are v3's only. Two are v2's
//! only: `v2_notify_sign_type` (`"MD5"`, `"HMAC-SHA256"` or `null`) signs pay notifications with
//! that type instead of the order's, and `v2_notify_with_sign_type` adds the `sign_type` field.
//!
//! # Deliberate differences from WeChat
//!
//! * **Books kept apart, numbers shared.** WeChat keeps one order book per merchant for both
//!   APIs. The sandbox keeps v2's orders and refunds apart from v3's, but an `out_trade_no`
//!   ordered through one API is taken for the other (`OUT_TRADE_NO_USED`, as at WeChat), so a
//!   client cannot order one number through both here either.
//! * `trade_type` must be JSAPI (mini-program payments are all the sandbox simulates).
//! * The HTTPS port's certificate is issued by a sandbox CA ([`MerchantCredentials::secapi_ca_pem`](crate::MerchantCredentials)),
//!   not one chaining to public roots.
//! * The rest as in v3: loopback `http://` notify URLs, refunds settling in `refund_settle_ms`, no
//!   refund notification without `notify_url`, scaled retry intervals.

pub(crate) mod control;
mod notify;
mod orders;
pub(crate) mod pki;
mod refunds;
pub(crate) mod state;
pub(crate) mod wire;

use axum::routing::any;
use axum::Router;

pub(crate) use notify::attempt_once;

use super::Pay;

/// The v2 endpoints at WeChat's paths. Every method is routed so a GET gets WeChat's XML refusal
/// rather than a 405.
pub(crate) fn routes(pay: Pay) -> Router {
    Router::new()
        .route("/pay/unifiedorder", any(orders::unifiedorder_handler))
        .route("/pay/orderquery", any(orders::orderquery_handler))
        .route("/pay/closeorder", any(orders::closeorder_handler))
        .route("/pay/refundquery", any(refunds::refundquery_handler))
        .route("/secapi/pay/refund", any(refunds::refund_handler))
        .route("/pay/downloadbill", any(super::bills::downloadbill_handler))
        .with_state(pay)
}
