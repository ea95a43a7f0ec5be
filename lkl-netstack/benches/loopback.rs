//! Benchmark (not a test): TCP over loopback inside the library kernel vs the host
//! kernel's loopback, in the same run, plus the cost of one syscall round trip.
//!
//! `cargo bench -p lkl-netstack --bench loopback` prints a table, appends the run to
//! `benches/results/loopback.jsonl` (date, commit, numbers) and redraws
//! `benches/results/loopback.svg`.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark program: failures abort it, results go to stdout
#![allow(unsafe_code)] // getrusage and the host getpid baseline are libc calls

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use lkl_netstack::{BootConfig, Kernel, TcpListener, TcpStream};

const BYTES: usize = 4 << 30;
const CHUNK: usize = 256 * 1024;
const ROUNDS: usize = 3;

/// CPU time of the whole process (all threads, user + system).
fn cpu_time() -> Duration {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `ru` is a writable struct rusage.
    let ru = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr());
        ru.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[derive(Debug, Clone, Copy)]
struct Transfer {
    gbit_per_s: f64,
    cpu_s_per_gb: f64,
}

fn measure(run: impl FnOnce()) -> Transfer {
    let (wall, cpu) = (Instant::now(), cpu_time());
    run();
    let (wall, cpu) = (
        wall.elapsed().as_secs_f64(),
        (cpu_time() - cpu).as_secs_f64(),
    );
    let gb = BYTES as f64 / 1e9;
    Transfer {
        gbit_per_s: gb * 8.0 / wall,
        cpu_s_per_gb: cpu / gb,
    }
}

fn pump<W: Write, R: Read + Send>(mut writer: W, mut reader: R) {
    thread::scope(|s| {
        s.spawn(move || {
            let mut buf = vec![0u8; CHUNK];
            let mut got = 0;
            while got < BYTES {
                let n = reader.read(&mut buf).unwrap();
                assert!(n > 0);
                got += n;
            }
        });
        let buf = vec![0xa5u8; CHUNK];
        for _ in 0..BYTES / CHUNK {
            writer.write_all(&buf).unwrap();
        }
    });
}

fn host_tcp() -> Transfer {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    measure(|| pump(client, server))
}

fn library_tcp(kernel: &Kernel) -> Transfer {
    let listener = TcpListener::bind(kernel, "127.0.0.1:0".parse().unwrap()).unwrap();
    let client = TcpStream::connect(kernel, listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    measure(|| pump(client, server))
}

fn ns_per_call(iterations: u32, mut call: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..iterations {
        call();
    }
    start.elapsed().as_nanos() as f64 / f64::from(iterations)
}

fn best(runs: impl Iterator<Item = Transfer>) -> Transfer {
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

fn git_commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

fn main() {
    let kernel = Kernel::boot(&BootConfig {
        memory_bytes: 512 << 20,
        cmdline: "quiet".into(),
        ..BootConfig::default()
    })
    .unwrap();

    let host = best((0..ROUNDS).map(|_| host_tcp()));
    let lib = best((0..ROUNDS).map(|_| library_tcp(&kernel)));
    // SAFETY: getpid has no arguments and no side effects.
    let host_getpid = ns_per_call(1_000_000, || unsafe {
        libc::syscall(libc::SYS_getpid);
    });
    let lib_getpid = ns_per_call(100_000, || {
        kernel.getpid().unwrap();
    });
    kernel.halt().unwrap();

    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    let date = String::from_utf8_lossy(&date.stdout).trim().to_owned();
    let commit = git_commit();
    let cores = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);

    println!(
        "TCP over loopback, one stream, {} GiB, best of {ROUNDS} ({cores} cores):",
        BYTES >> 30
    );
    println!(
        "  host kernel     {:6.2} Gbit/s  {:5.2} CPU-s/GB",
        host.gbit_per_s, host.cpu_s_per_gb
    );
    println!(
        "  library kernel  {:6.2} Gbit/s  {:5.2} CPU-s/GB",
        lib.gbit_per_s, lib.cpu_s_per_gb
    );
    println!(
        "  ratio library/host: throughput {:.2}, CPU per GB {:.2}",
        lib.gbit_per_s / host.gbit_per_s,
        lib.cpu_s_per_gb / host.cpu_s_per_gb
    );
    println!("getpid round trip: host {host_getpid:.0} ns, library {lib_getpid:.0} ns");

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results");
    std::fs::create_dir_all(&dir).unwrap();
    let record = format!(
        "{{\"date\":\"{date}\",\"commit\":\"{commit}\",\"cores\":{cores},\"bytes\":{BYTES},\
         \"host_gbit_s\":{:.3},\"host_cpu_s_per_gb\":{:.3},\"lib_gbit_s\":{:.3},\"lib_cpu_s_per_gb\":{:.3},\
         \"host_getpid_ns\":{host_getpid:.1},\"lib_getpid_ns\":{lib_getpid:.1}}}\n",
        host.gbit_per_s, host.cpu_s_per_gb, lib.gbit_per_s, lib.cpu_s_per_gb
    );
    let log = dir.join("loopback.jsonl");
    let mut all = std::fs::read_to_string(&log).unwrap_or_default();
    all.push_str(&record);
    std::fs::write(&log, &all).unwrap();
    std::fs::write(
        dir.join("loopback.svg"),
        svg(&date, &commit, host, lib, host_getpid, lib_getpid),
    )
    .unwrap();
    println!("recorded in {} and loopback.svg", log.display());
}

/// Two bar groups (throughput, CPU per GB), host vs library, with values printed.
fn svg(
    date: &str,
    commit: &str,
    host: Transfer,
    lib: Transfer,
    host_ns: f64,
    lib_ns: f64,
) -> String {
    let mut s = String::new();
    let w = 640;
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"300\" font-family=\"sans-serif\" font-size=\"12\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <text x=\"10\" y=\"20\" font-size=\"14\">TCP over loopback, one stream: host kernel vs knic library kernel</text>\
         <text x=\"10\" y=\"38\" fill=\"#555\">{date}, commit {commit}; getpid: host {host_ns:.0} ns, library {lib_ns:.0} ns</text>"
    );
    let groups = [
        ("throughput (Gbit/s)", host.gbit_per_s, lib.gbit_per_s, 40.0),
        (
            "CPU seconds per GB",
            host.cpu_s_per_gb,
            lib.cpu_s_per_gb,
            340.0,
        ),
    ];
    for (label, h, l, x) in groups {
        let max = h.max(l).max(1e-9);
        for (i, (name, v, color)) in [("host", h, "#888"), ("library", l, "#2a7")]
            .into_iter()
            .enumerate()
        {
            let height = 180.0 * v / max;
            let bx = x + 20.0 + i as f64 * 110.0;
            let _ = write!(
                s,
                "<rect x=\"{bx}\" y=\"{}\" width=\"80\" height=\"{height}\" fill=\"{color}\"/>\
                 <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{v:.2}</text>\
                 <text x=\"{}\" y=\"285\" text-anchor=\"middle\">{name}</text>",
                260.0 - height,
                bx + 40.0,
                255.0 - height,
                bx + 40.0
            );
        }
        let _ = write!(s, "<text x=\"{}\" y=\"60\">{label}</text>", x + 20.0);
    }
    s.push_str("</svg>\n");
    s
}
