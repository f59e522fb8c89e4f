//! `paystream rebuild-projections`: the rebuild of `paystream_projections`, with progress for the
//! operator. On a terminal, a bar on stderr (events done of all, rate, ETA); otherwise — a log
//! file, a CI job — a plain line every few seconds. Either way a one-line summary on stdout.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use paystream_projections::{Progress, Rebuilt};

/// How often the plain (non-terminal) report prints a line.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

pub async fn run(database_url: &str) -> anyhow::Result<()> {
    let db = paystream::connect(database_url).await?;
    let store = paystream::event_store(&db);
    let mut progress = ProgressReport::new();
    let rebuilt = paystream_projections::rebuild_with(store.as_ref(), &mut progress).await?;
    let seconds = progress.finish();
    println!("{}", summary(rebuilt, seconds));
    Ok(())
}

/// The line a finished rebuild prints (tests/rebuild.rs reads it).
pub fn summary(rebuilt: Rebuilt, seconds: f64) -> String {
    format!(
        "rebuilt read models: {} events, {} streams in {seconds:.1} s ({:.0} events/s)",
        rebuilt.events,
        rebuilt.streams,
        rebuilt.events as f64 / seconds.max(1e-9)
    )
}

/// Draws a rebuild's progress on stderr.
pub struct ProgressReport {
    bar: ProgressBar,
    started: Instant,
    total: u64,
    /// When the plain report last printed a line.
    last_line: Instant,
}

impl ProgressReport {
    pub fn new() -> ProgressReport {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40} {human_pos}/{human_len} events  {per_sec}  ETA {eta}  {msg}",
            )
            .expect("a valid template"),
        );
        let now = Instant::now();
        ProgressReport {
            bar,
            started: now,
            total: 0,
            last_line: now,
        }
    }

    /// Clears the bar; returns the seconds since the report was created.
    pub fn finish(&self) -> f64 {
        self.bar.finish_and_clear();
        self.started.elapsed().as_secs_f64()
    }
}

impl Progress for ProgressReport {
    fn started(&mut self, total_events: u64) {
        self.total = total_events;
        self.bar.set_length(total_events);
        if self.bar.is_hidden() {
            eprintln!("rebuilding read models from {total_events} events");
        }
    }

    fn advanced(&mut self, events: u64, streams: u64) {
        self.bar.set_position(events);
        self.bar.set_message(format!("{streams} streams"));
        // indicatif draws nothing when stderr is not a terminal: say something now and then.
        if self.bar.is_hidden() && self.last_line.elapsed() >= PLAIN_EVERY {
            self.last_line = Instant::now();
            let seconds = self.started.elapsed().as_secs_f64();
            eprintln!(
                "rebuilding: {events}/{} events, {streams} streams, {:.0} events/s",
                self.total,
                events as f64 / seconds.max(1e-9)
            );
        }
    }
}
