//! Measuring and recording shared by the benchmarks: CPU time, throughput
//! records appended to `benches/results/*.jsonl`, and a bar-chart SVG.
#![allow(dead_code)] // each benchmark uses part of this module
#![allow(clippy::unwrap_used, clippy::print_stdout)] // benchmark code: failures abort it

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// CPU time of the whole process (all threads, user + system).
pub fn cpu_time() -> Duration {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `ru` is a writable struct rusage.
    let ru = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr());
        ru.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Throughput of one transfer and the CPU it took, per GB moved.
#[derive(Debug, Clone, Copy)]
pub struct Transfer {
    pub gbit_per_s: f64,
    pub cpu_s_per_gb: f64,
}

impl Transfer {
    pub fn gbyte_per_s(&self) -> f64 {
        self.gbit_per_s / 8.0
    }
}

/// Times `run`, which moves `bytes`.
pub fn measure(bytes: usize, run: impl FnOnce()) -> Transfer {
    let (wall, cpu) = (Instant::now(), cpu_time());
    run();
    let (wall, cpu) = (
        wall.elapsed().as_secs_f64(),
        (cpu_time() - cpu).as_secs_f64(),
    );
    let gb = bytes as f64 / 1e9;
    Transfer {
        gbit_per_s: gb * 8.0 / wall,
        cpu_s_per_gb: cpu / gb,
    }
}

/// The best throughput and the lowest CPU cost of several runs.
pub fn best(runs: impl Iterator<Item = Transfer>) -> Transfer {
    runs.fold(
        Transfer {
            gbit_per_s: 0.0,
            cpu_s_per_gb: f64::MAX,
        },
        |a, b| Transfer {
            gbit_per_s: a.gbit_per_s.max(b.gbit_per_s),
            cpu_s_per_gb: a.cpu_s_per_gb.min(b.cpu_s_per_gb),
        },
    )
}

/// Date, commit and core count of this run, for the record.
pub struct RunInfo {
    pub date: String,
    pub commit: String,
    pub cores: usize,
}

impl RunInfo {
    pub fn now() -> RunInfo {
        let out = |cmd: &str, args: &[&str]| {
            Command::new(cmd)
                .args(args)
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_else(|| "unknown".into())
        };
        RunInfo {
            date: out("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
            commit: out("git", &["rev-parse", "--short", "HEAD"]),
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        }
    }

    /// The record's leading fields, to which a benchmark adds its own.
    pub fn json_prefix(&self) -> String {
        format!(
            "\"date\":\"{}\",\"commit\":\"{}\",\"cores\":{}",
            self.date, self.commit, self.cores
        )
    }
}

pub fn results_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Appends one JSON line to `benches/results/<name>.jsonl`.
pub fn append_record(name: &str, json: &str) -> PathBuf {
    let log = results_dir().join(format!("{name}.jsonl"));
    let mut all = std::fs::read_to_string(&log).unwrap_or_default();
    all.push_str(json);
    all.push('\n');
    std::fs::write(&log, &all).unwrap();
    log
}

pub use test_support::chart::{BarGroup, bar_chart};
