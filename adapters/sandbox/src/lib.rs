//! The WeChat simulator. Part of the product, not a test mock: it speaks the mini-program server
//! API as WeChat does (status codes, content types, errcodes, single-use codes that expire), so
//! code that works against it works against WeChat. A control API lets a developer play the user
//! (`wx.login`, `getPhoneNumber`) and inject trouble.
//!
//! WeChat Pay APIv3 (orders, refunds, notifications, certificates) is simulated by [`wechatpay`],
//! whose documentation lists its control API.
//!
//! Mount [`router`] under any prefix; `WECHAT_API_BASE` then points at that prefix.

mod miniprogram;
pub mod wechatpay;

pub use miniprogram::{openid_for, Sandbox, SandboxConfig};
pub use wechatpay::{MerchantCredentials, PaySandboxConfig, VerificationMode};

/// The simulator's routes: WeChat's own paths plus `/control/...`.
pub fn router(sandbox: Sandbox) -> axum::Router {
    let pay = sandbox.pay.clone();
    miniprogram::routes(sandbox).merge(wechatpay::routes(pay))
}
