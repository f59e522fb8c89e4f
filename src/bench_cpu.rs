//! Where a benchmark's CPU went, from Linux's /proc: the engine process, PostgreSQL's processes
//! and the machine as a whole. Throughput on a shared two-core machine swings by a third from
//! run to run; CPU time per operation is the steadier figure to compare changes by.

use std::fs;

/// Clock ticks per second of /proc's counters (USER_HZ, 100 on every mainstream Linux build).
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Clone, Copy, Debug, Default)]
pub struct CpuSample {
    engine: u64,
    postgres: u64,
    busy: u64,
    total: u64,
}

/// utime + stime of one process, from /proc/<pid>/stat.
fn process_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn postgres_ticks() -> u64 {
    let Ok(entries) = fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            fs::read_to_string(e.path().join("comm")).is_ok_and(|comm| comm.trim() == "postgres")
        })
        .filter_map(|e| process_ticks(&fs::read_to_string(e.path().join("stat")).ok()?))
        .sum()
}

/// (busy, total) ticks of all CPUs, from the first line of /proc/stat.
fn machine_ticks() -> (u64, u64) {
    let Ok(stat) = fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let counters: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|n| n.parse().ok())
        .collect();
    let total: u64 = counters.iter().sum();
    // idle and iowait
    let idle = counters.get(3).copied().unwrap_or(0) + counters.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

impl CpuSample {
    pub fn now() -> CpuSample {
        let (busy, total) = machine_ticks();
        CpuSample {
            engine: fs::read_to_string("/proc/self/stat")
                .ok()
                .and_then(|s| process_ticks(&s))
                .unwrap_or(0),
            postgres: postgres_ticks(),
            busy,
            total,
        }
    }

    /// One line: CPU per operation in the engine (with the senders, which share its process)
    /// and in PostgreSQL, and how busy the machine was.
    pub fn report_since(&self, start: &CpuSample, operations: usize) -> String {
        let per_op = |ticks: u64| ticks as f64 / TICKS_PER_SECOND * 1e6 / operations.max(1) as f64;
        let busy = (self.busy - start.busy) as f64 / (self.total - start.total).max(1) as f64;
        format!(
            "CPU per notice: engine + senders {:.0} µs, PostgreSQL {:.0} µs; machine busy {:.0} %",
            per_op(self.engine - start.engine),
            per_op(self.postgres - start.postgres),
            busy * 100.0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_ticks_reads_utime_and_stime_after_a_name_with_spaces() {
        let stat = "42 (tokio rt) S 1 42 42 0 -1 4194560 100 0 0 0 250 17 0 0 20 0 3 0";
        assert_eq!(process_ticks(stat), Some(267));
    }
}
