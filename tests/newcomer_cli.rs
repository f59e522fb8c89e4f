//! What a newcomer sees of the binary (issue 13): `paystream sandbox` prints everything an engine
//! needs to use it, and `paystream demo` prints its steps without the engine's log lines unless
//! asked.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

const ENGINE_SETTINGS: [&str; 15] = [
    "WECHAT_APPID",
    "WECHAT_SECRET",
    "WECHAT_API_BASE",
    "WECHATPAY_API_BASE",
    "WECHATPAY_MCHID",
    "WECHATPAY_APIV3_KEY",
    "WECHATPAY_MCH_SERIAL",
    "WECHATPAY_MCH_PRIVATE_KEY",
    "WECHATPAY_PUBLIC_KEY_ID",
    "WECHATPAY_PUBLIC_KEY",
    "WECHATPAY_API_KEY",
    "WECHATPAY_V2_SECAPI_BASE",
    "WECHATPAY_V2_ROOT_CA",
    "WECHATPAY_V2_CLIENT_CERT",
    "WECHATPAY_V2_CLIENT_KEY",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stand_alone_simulator_prints_what_an_engine_needs() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_paystream"))
        .arg("sandbox")
        .env("SANDBOX_LISTEN_ADDR", "127.0.0.1:0")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run paystream sandbox");
    let pid = child.id();
    let (lines, got) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    loop {
        let line = got
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no end of the settings in:\n{}", printed.join("\n")));
        let end = line.starts_with("Ctrl-C");
        printed.push(line);
        if end {
            break;
        }
    }
    let text = printed.join("\n");
    let exports: HashMap<&str, &str> = printed
        .iter()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .collect();
    for name in ENGINE_SETTINGS {
        assert!(exports.contains_key(name), "no {name} in:\n{text}");
    }
    assert!(text.contains("open nothing at WeChat"), "{text}");
    let base = exports["WECHAT_API_BASE"];
    assert_eq!(exports["WECHATPAY_API_BASE"], base);
    assert!(text.contains(&format!("{base}/control/")), "{text}");
    for file in [
        "WECHATPAY_MCH_PRIVATE_KEY",
        "WECHATPAY_PUBLIC_KEY",
        "WECHATPAY_V2_ROOT_CA",
        "WECHATPAY_V2_CLIENT_CERT",
        "WECHATPAY_V2_CLIENT_KEY",
    ] {
        let pem = std::fs::read_to_string(exports[file]).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(pem.starts_with("-----BEGIN "), "{file}: {pem}");
    }

    // The printed settings are the simulator's own: its control API agrees, at the root.
    let http = reqwest::Client::new();
    let merchant: Value = http
        .get(format!("{base}/control/wechatpay/merchant"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(merchant["mchid"], exports["WECHATPAY_MCHID"]);
    assert_eq!(merchant["appid"], exports["WECHAT_APPID"]);
    assert_eq!(merchant["apiv3_key"], exports["WECHATPAY_APIV3_KEY"]);
    assert_eq!(merchant["apiv2_key"], exports["WECHATPAY_API_KEY"]);
    assert_eq!(merchant["merchant_serial"], exports["WECHATPAY_MCH_SERIAL"]);
    assert_eq!(
        merchant["public_key_id"],
        exports["WECHATPAY_PUBLIC_KEY_ID"]
    );
    assert_eq!(
        std::fs::read_to_string(exports["WECHATPAY_MCH_PRIVATE_KEY"]).unwrap(),
        merchant["merchant_private_key_pem"].as_str().unwrap()
    );
    let code = http
        .get(format!("{base}/control/login-code?user=alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(code.status(), 200);

    // Stopped, it removes the key files.
    let key_file = exports["WECHATPAY_MCH_PRIVATE_KEY"].to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!std::path::Path::new(&key_file).exists());
}

fn demo(args: &[&str], rust_log: Option<&str>) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_paystream"));
    command.arg("demo").args(args).env_remove("DATABASE_URL");
    match rust_log {
        Some(filter) => command.env("RUST_LOG", filter),
        None => command.env_remove("RUST_LOG"),
    };
    let output = command.output().expect("run paystream demo");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("done."), "{stdout}");
    stdout
}

/// A log line of the engine: `<timestamp>  INFO target: …` (or WARN, DEBUG, …).
fn log_lines(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter(|l| {
            [" TRACE ", " DEBUG ", " INFO ", " WARN ", " ERROR "]
                .iter()
                .any(|level| l.contains(level))
        })
        .collect()
}

#[test]
fn the_demo_prints_only_its_steps_unless_asked() {
    let quiet = demo(&[], None);
    assert_eq!(log_lines(&quiet), Vec::<&str>::new(), "{quiet}");
    assert!(quiet.contains("PaymentSucceeded"), "{quiet}");
    // The simulator's answer carries the engine's answer to its notification.
    assert!(quiet.contains(r#""acknowledged":true"#), "{quiet}");

    let verbose = demo(&["--verbose"], None);
    assert!(
        log_lines(&verbose)
            .iter()
            .any(|l| l.contains("SANDBOX MODE")),
        "{verbose}"
    );

    // RUST_LOG, when set, chooses.
    let chosen = demo(&[], Some("warn"));
    let lines = log_lines(&chosen);
    assert!(!lines.is_empty(), "{chosen}");
    assert!(lines.iter().all(|l| !l.contains(" INFO ")), "{chosen}");
}
