//! The mini-program client (`clients/miniprogram/paystream.js`) against the real engine: two
//! engines on SQLite in sandbox mode (one with the example subscribe-message templates, one whose
//! customer sessions last a second), then `node --test clients/miniprogram/test/*.test.mjs` with
//! a `wx` stand-in backed by the simulator's control API. It needs node (no npm packages);
//! without it the test fails saying what to install — it never skips.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{spawn_app_with, ADMIN};
use paystream_engine::db::Backend;

/// Customer sessions of the second engine last this long: its test waits it out.
const SHORT_SESSION_TTL_SECONDS: u32 = 1;
/// The node tests take a few seconds; this is for a slow machine, not a hung test.
const NODE_TIMEOUT: Duration = Duration::from_secs(300);

fn client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/miniprogram")
}

/// `clients/miniprogram/test/*.test.mjs`, listed here rather than globbed by node (whose
/// handling of a directory argument differs between versions).
fn test_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(client_dir().join("test"))
        .expect("clients/miniprogram/test exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with(".test.mjs"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no clients/miniprogram/test/*.test.mjs");
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_mini_program_client_against_the_engine() {
    let templates =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/subscribe-templates.example.toml");
    // The workers run in-process (background jobs on), so the subscribe message goes out.
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.no_background_jobs = false;
        s.subscribe_message_templates = Some(templates);
    })
    .await;
    let short = spawn_app_with(Backend::Sqlite, |s| {
        s.session_ttl_seconds = SHORT_SESSION_TTL_SECONDS
    })
    .await;

    let run = tokio::process::Command::new("node")
        .arg("--test")
        .args(test_files())
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .env("PAYSTREAM_BASE_URL", &app.base)
        .env("PAYSTREAM_ADMIN_USER", ADMIN.0)
        .env("PAYSTREAM_ADMIN_PASSWORD", ADMIN.1)
        .env("PAYSTREAM_SHORT_TTL_BASE_URL", &short.base)
        .env(
            "PAYSTREAM_SHORT_TTL_SECONDS",
            SHORT_SESSION_TTL_SECONDS.to_string(),
        )
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(NODE_TIMEOUT, run)
        .await
        .expect("the node tests did not finish in time")
        .unwrap_or_else(|e| {
            panic!(
                "the mini-program client tests need node 18 or later on the PATH (Debian: \
                 `apt-get install nodejs`): {e}"
            )
        });
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "node --test clients/miniprogram/test failed ({}):\n{said}",
        output.status
    );
    // A run that found no tests also exits 0: make sure they ran.
    assert!(
        said.contains("# pass") && !said.contains("# pass 0\n"),
        "{said}"
    );
    println!("{said}");
}
