//! Start-up tells a newcomer what is missing: with no staff account and no ADMIN_USERNAME /
//! ADMIN_PASSWORD, one WARN line says how to create one; once an account exists, it is quiet.
//! (Embedded SQLite only: the check is one COUNT on the staff table of either database.)

use std::io::Write;
use std::sync::{Arc, Mutex};

use paystream::config::Settings;

/// The log lines written while `settings` start an engine (which is then stopped).
async fn start_up_log(settings: Settings) -> String {
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    // This thread only: a current-thread runtime runs `start` here.
    let _guard = tracing::subscriber::set_default(subscriber);
    let running = paystream::start(settings).await.expect("engine starts");
    running.stop().await;
    let log = capture.0.lock().unwrap().clone();
    String::from_utf8(log).unwrap()
}

fn hint_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("no staff account exists"))
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn no_staff_account_logs_how_to_create_one_until_there_is_one() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("hints.db").display());

    let log = start_up_log(Settings::local(&database_url)).await;
    let hints = hint_lines(&log);
    assert_eq!(hints.len(), 1, "one hint line:\n{log}");
    assert!(hints[0].contains("WARN"), "{}", hints[0]);
    assert!(
        hints[0].contains("set ADMIN_USERNAME and ADMIN_PASSWORD and restart"),
        "{}",
        hints[0]
    );

    // Configured: the account is created, no hint.
    let with_admin = Settings {
        admin_username: Some("admin".into()),
        admin_password: Some("change-me-now".into()),
        ..Settings::local(&database_url)
    };
    let log = start_up_log(with_admin).await;
    assert!(hint_lines(&log).is_empty(), "{log}");
    assert!(log.contains("bootstrap admin account created"), "{log}");

    // The account exists now: unset variables are no reason to warn.
    let log = start_up_log(Settings::local(&database_url)).await;
    assert!(hint_lines(&log).is_empty(), "{log}");
}
