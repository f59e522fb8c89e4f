//! The back-office web UI in a real browser: the engine on PostgreSQL with seeded staff, products
//! and orders, walked by `tests/browser/backoffice.mjs` (node + playwright-core driving Debian's
//! chromium). It needs node, npm and chromium; without them the test fails saying what to install
//! (`.ci/run` installs them) — it never skips. Screenshots land in `target/browser-screenshots/`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{spawn_app, TestApp, ADMIN};
use paystream_engine::accounts::{Accounts, Role};
use paystream_engine::db::Backend;
use reqwest::StatusCode;
use serde_json::{json, Value};

const SUPPORT: (&str, &str) = ("sue", "support-password");
/// Two of these make every seeded order ¥25.00.
const TEA_FEN: i64 = 1250;
const TOTAL_FEN: i64 = 2 * TEA_FEN;
/// The walk takes some 20 s; this is for a slow machine, not a hung browser.
const WALK_TIMEOUT: Duration = Duration::from_secs(300);

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// The chromium to drive: `$CHROMIUM`, else `chromium` on the PATH.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMIUM").map(PathBuf::from) {
        assert!(path.is_file(), "CHROMIUM={} is not a file", path.display());
        return path;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("chromium"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the browser test needs Chromium and found none: install it (Debian: \
                 `apt-get install chromium`; .ci/run does) or point CHROMIUM at the binary"
            )
        })
}

/// playwright-core from tests/browser/package-lock.json, installed when missing.
async fn npm_ci_if_needed() {
    let dir = browser_dir();
    if dir.join("node_modules/playwright-core").is_dir() {
        return;
    }
    let output = tokio::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!("the browser test needs npm (Debian: `apt-get install nodejs npm`): {e}")
        });
    assert!(
        output.status.success(),
        "npm ci in tests/browser failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A customer's order of two teas; paid at WeChat Pay (the simulator) with `paid_fen` unless
/// `None`. Waits until the order shows `status`.
async fn order(app: &TestApp, user: &str, paid_fen: Option<i64>, status: &str) -> Value {
    let (token, _) = app.login(user).await;
    let (code, order) = app
        .post(
            "/api/orders",
            Some(&token),
            json!({ "items": [{ "sku": "tea", "quantity": 2 }] }),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{order}");
    let id = order["id"].as_str().unwrap();
    if let Some(amount) = paid_fen {
        let (code, body) = app
            .post(
                &format!("/api/orders/{id}/pay"),
                Some(&token),
                json!({ "channel": "wechatpay_v3" }),
            )
            .await;
        assert_eq!(code, StatusCode::OK, "{body}");
        app.sandbox(
            "/wechatpay/pay",
            json!({ "out_trade_no": order["out_trade_no"], "amount_fen": amount }),
        )
        .await;
    }
    for _ in 0..200 {
        let (_, now) = app.get(&format!("/api/orders/{id}"), Some(&token)).await;
        if now["status"] == status {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("order {id} never became {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_back_office_in_a_real_browser() {
    let chromium = chromium();
    npm_ci_if_needed().await;

    let app = spawn_app(Backend::Postgres).await;
    Accounts::new(app.running().db.clone())
        .create_staff(SUPPORT.0, SUPPORT.1.to_string().into(), Role::Support)
        .await
        .unwrap();
    app.add_product("tea", TEA_FEN, true).await;
    let paid = order(&app, "alice", Some(TOTAL_FEN), "paid").await;
    order(&app, "bob", Some(TOTAL_FEN), "paid").await;
    order(&app, "carol", Some(TOTAL_FEN), "paid").await;
    order(&app, "dave", None, "pending_payment").await;
    // A fen short: the admin resolves this one; the other stays for support staff to see.
    let short = order(&app, "erin", Some(TOTAL_FEN - 1), "needs_review").await;
    order(&app, "frank", Some(TOTAL_FEN + 100), "needs_review").await;

    let screenshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-screenshots");
    let walk = tokio::process::Command::new("node")
        .arg("backoffice.mjs")
        .current_dir(browser_dir())
        .env("BASE_URL", &app.base)
        .env("ADMIN_USER", ADMIN.0)
        .env("ADMIN_PASSWORD", ADMIN.1)
        .env("SUPPORT_USER", SUPPORT.0)
        .env("SUPPORT_PASSWORD", SUPPORT.1)
        .env("ORDER_NO", paid["out_trade_no"].as_str().unwrap())
        .env("REVIEW_ORDER_NO", short["out_trade_no"].as_str().unwrap())
        .env("SCREENSHOT_DIR", &screenshots)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(WALK_TIMEOUT, walk)
        .await
        .expect("the browser walk did not finish in time")
        .unwrap_or_else(|e| {
            panic!("the browser test needs node (Debian: `apt-get install nodejs`): {e}")
        });
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "the browser walk failed ({}); screenshots in {}:\n{said}",
        output.status,
        screenshots.display()
    );
    println!("{said}");
}
