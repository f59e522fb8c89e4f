//! `paystream reconcile --date YYYY-MM-DD`: one Beijing day against WeChat Pay's bills, on
//! demand, with progress on stderr and the report on stdout. In sandbox mode it asks the
//! simulator of the engine running at `LISTEN_ADDR` (where the sandbox's payments are).

use chrono::{NaiveDate, Utc};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use paystream_engine::money::Fen;
use paystream_engine::reconciliation::{Action, Progress, Report};

use paystream::config::Settings;

pub async fn run(settings: &Settings, date: NaiveDate) -> anyhow::Result<()> {
    let reconciler = paystream::reconciler_for(settings).await?;
    let bar = Bar::new();
    let report = reconciler.run(date, Utc::now(), &bar).await;
    bar.0.finish_and_clear();
    print!("{}", render(&report?));
    Ok(())
}

/// The report as an operator reads it: totals of both sides, then one line per finding.
pub fn render(report: &Report) -> String {
    use std::fmt::Write;
    // The domain's own conversion; the totals are plain sums of fen, never negative.
    let yuan = |fen: i64| {
        Fen::new(fen).map_or_else(|| format!("{fen} fen"), |f| format!("¥{}", f.to_yuan()))
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "reconciliation of {}: {} (run {})",
        report.date,
        serde_json::to_value(report.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        report.runs
    );
    for (side, t) in [("WeChat Pay bill", &report.bill), ("log", &report.log)] {
        let _ = writeln!(
            out,
            "  {side:<15} {} payments {}, {} refunds {}",
            t.payments,
            yuan(t.payments_fen),
            t.refunds,
            yuan(t.refunds_fen)
        );
    }
    let _ = writeln!(
        out,
        "  {} discrepancies, {} need staff",
        report.lines.len(),
        report.open_lines()
    );
    for line in &report.lines {
        let amounts = match (line.ours_fen, line.theirs_fen) {
            (Some(o), Some(t)) => format!("log {} / bill {}", yuan(o.get()), yuan(t.get())),
            (Some(o), None) => format!("log {}", yuan(o.get())),
            (None, Some(t)) => format!("bill {}", yuan(t.get())),
            (None, None) => String::new(),
        };
        let reference = line
            .out_refund_no
            .as_deref()
            .or(line.transaction_id.as_deref())
            .unwrap_or("");
        let _ = writeln!(
            out,
            "  - {:?}: {} {reference} {amounts} → {}{}",
            line.kind,
            line.out_trade_no,
            action(line.action),
            line.detail
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        );
    }
    out
}

fn action(action: Action) -> &'static str {
    match action {
        Action::PaymentRecorded => "payment confirmed by query and recorded",
        Action::RefundOutcomeRecorded => "refund outcome confirmed by query and recorded",
        Action::FlaggedForReview => "recorded on the order, in the review queue",
        Action::AlreadyFlagged => "already recorded on the order by an earlier run",
        Action::UnknownOrder => "no such order here: check the merchant account",
        Action::Failed => "could not be acted on; the next run tries again",
    }
}

struct Bar(ProgressBar);

impl Bar {
    fn new() -> Bar {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{msg:30} {bar:40} {human_pos}/{human_len}")
                .expect("a valid template"),
        );
        Bar(bar)
    }
}

impl Progress for Bar {
    fn stage(&self, what: &str, total: u64) {
        self.0.set_length(total);
        self.0.set_position(0);
        self.0.set_message(what.to_string());
        if self.0.is_hidden() {
            eprintln!("{what}…");
        }
    }

    fn advance(&self, steps: u64) {
        self.0.inc(steps);
    }
}
