//! The WeChat simulator. Part of the product, not a test mock: it speaks the mini-program server
//! API as WeChat does (status codes, content types, errcodes, single-use codes that expire), so
//! code that works against it works against WeChat. A control API lets a developer play the user
//! (`wx.login`, `getPhoneNumber`) and inject trouble.
//!
//! WeChat Pay APIv3 (orders, refunds, notifications, certificates) and APIv2 (XML, MD5/HMAC-SHA256
//! signatures, refunds over mutual TLS via [`Sandbox::serve_secapi`]) are simulated by
//! [`wechatpay`], whose documentation lists its control API.
//!
//! Mount [`router`] under any prefix; `WECHAT_API_BASE` then points at that prefix.
//!
//! # Mini-program endpoints (WeChat's paths; errors are `{"errcode","errmsg"}` with HTTP 200)
//!
//! Every call after `stable_token` needs `?access_token=` of a token the sandbox issued and did
//! not void or expire, else 40001 `invalid credential, access_token is invalid or not latest`.
//!
//! | Method | Path | |
//! |---|---|---|
//! | GET | `/sns/jscode2session?appid=&secret=&js_code=&grant_type=authorization_code` | `text/plain` JSON `{"openid","session_key","unionid"?}`; 40029 unknown/expired code, 40163 used code |
//! | POST | `/cgi-bin/stable_token` `{"grant_type":"client_credential","appid","secret","force_refresh"}` | `{"access_token","expires_in"}`; normal mode gives the current token (a new one within 5 minutes of expiry); `force_refresh` voids the old ones, 20 a day and 30 s apart, else 45009 |
//! | POST | `/wxa/business/getuserphonenumber` `{"code"}` | `{"errcode":0,"errmsg":"ok","phone_info":{"phoneNumber","purePhoneNumber","countryCode","watermark"}}`; 40029 bad code |
//! | POST | `/cgi-bin/message/subscribe/send` `{"touser","template_id","page"?,"miniprogram_state"?,"lang"?,"data":{"thing1":{"value"}}}` | `{"errcode":0,"errmsg":"ok","msgid":<19-digit number>}`; 40003 unknown openid, 40037 empty template id, 47003 bad data (rules in `subscribe.rs`), 43101 no unused acceptance |
//! | POST | `/card/code/get` `{"card_id"?,"code","check_consume"?}` | `{"errcode":0,"errmsg":"ok","card":{"card_id","begin_time","end_time"},"openid","can_consume","user_card_status"}`; 40056 unknown code, 40073 unknown card id; with `check_consume` (default true) 40099 consumed |
//! | POST | `/card/code/consume` `{"code","card_id"?}` | `{"errcode":0,"errmsg":"ok","card":{"card_id"},"openid"}`; 40099 `invalid code, this code has consumed.`, 40056, 40073 |
//! | GET | `/cgi-bin/ticket/getticket?type=wx_card` | `{"errcode":0,"errmsg":"ok","ticket","expires_in"}` (7200 s; a new one within 5 minutes of expiry) |
//!
//! # Mini-program control API (`/control/...`, plain JSON; errors are 4xx `{"error"}`)
//!
//! | Method | Path | Body → answer |
//! |---|---|---|
//! | GET/POST | `login-code` | `{"user"?,"unionid"?}` → `{"code","user","openid","unionid"}`: what `wx.login` gives |
//! | GET/POST | `phone-code` | `{"phone"?}` → `{"code","phone"}`: what `getPhoneNumber` gives |
//! | POST | `faults` | `{"code2session"?:[errcode],"subscribe_send"?:[errcode],"card_consume"?:[errcode],"card_consume_lose_answer"?:n}` → `{"queued":{…the same keys}}`: the next calls answer these errcodes (-1 busy, 40001 token invalid, 45011 rate limit…); the next n consumes consume the code but answer HTTP 502 |
//! | POST | `void-access-token` | → `{"voided":n}`: every issued token is void (next call 40001) |
//! | GET | `access-tokens` | → `{"valid","issued","forced_refreshes","requests"}`: tokens valid now, issued, force-refreshed, stable_token calls answered — counts only, never tokens |
//! | POST | `subscribe-accept` | `{"user"?\|"openid"?,"template_ids":[…]}` → `{"openid","accepted":[…]}`: one send per template |
//! | GET | `subscribe-messages?openid=` | → `{"messages":[{"touser","template_id","page","data","msgid","sent_at"}]}`: what was sent, oldest first |
//! | POST | `cards` | `{"user"?\|"openid"?,"card_id"?}` → `{"card_id","code","openid"}`: a new code (default card [`DEFAULT_CARD_ID`]) |
//! | POST | `cards/consume` | `{"card_id","code"}` → `{"card_id","code","consumed":true}`; 404 unknown, 409 consumed: used elsewhere |
//! | GET/POST | `cards/ext-check` | `card_id`, and `timestamp`,`nonce_str`,`signature` or `card_ext` (the JSON string) → `{"valid","reason"?}`: signed with a current `wx_card` ticket? |
//!
//! A `user` name always maps to the same openid ([`openid_for`]).

mod cards;
mod miniprogram;
mod openids;
mod secapi;
mod subscribe;
mod tokens;
pub mod wechatpay;

pub use cards::DEFAULT_CARD_ID;
pub use miniprogram::{openid_for, Sandbox, SandboxConfig};
pub use wechatpay::{MerchantCredentials, PaySandboxConfig, VerificationMode};

/// The simulator's routes: WeChat's own paths plus `/control/...`.
pub fn router(sandbox: Sandbox) -> axum::Router {
    let pay = sandbox.pay.clone();
    miniprogram::routes(sandbox).merge(wechatpay::routes(pay))
}
