//! Benchmark (not a test): TCP over loopback inside the library kernel vs the host
//! kernel's loopback, in the same run, plus the cost of one syscall round trip.
//!
//! `cargo bench -p lkl-netstack --bench loopback` prints a table, appends the run to
//! `benches/results/loopback.jsonl` (date, commit, numbers) and redraws
//! `benches/results/loopback.svg`.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark program: failures abort it, results go to stdout
#![allow(unsafe_code)] // the host getpid baseline is a libc call

mod common;

use std::io::{Read, Write};
use std::thread;
use std::time::Instant;

use common::{BarGroup, RunInfo, Transfer, append_record, bar_chart, best, measure, results_dir};

use lkl_netstack::{BootConfig, Kernel, TcpListener, TcpStream};

const BYTES: usize = 4 << 30;
const CHUNK: usize = 256 * 1024;
const ROUNDS: usize = 3;
const HOST: &str = "#888";
const LIBRARY: &str = "#2a7";

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
    measure(BYTES, || pump(client, server))
}

fn library_tcp(kernel: &Kernel) -> Transfer {
    let listener = TcpListener::bind(kernel, "127.0.0.1:0".parse().unwrap()).unwrap();
    let client = TcpStream::connect(kernel, listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    measure(BYTES, || pump(client, server))
}

fn ns_per_call(iterations: u32, mut call: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..iterations {
        call();
    }
    start.elapsed().as_nanos() as f64 / f64::from(iterations)
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

    let run = RunInfo::now();
    let cores = run.cores;

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

    let record = format!(
        "{{{},\"bytes\":{BYTES},\
         \"host_gbit_s\":{:.3},\"host_cpu_s_per_gb\":{:.3},\"lib_gbit_s\":{:.3},\"lib_cpu_s_per_gb\":{:.3},\
         \"host_getpid_ns\":{host_getpid:.1},\"lib_getpid_ns\":{lib_getpid:.1}}}",
        run.json_prefix(),
        host.gbit_per_s,
        host.cpu_s_per_gb,
        lib.gbit_per_s,
        lib.cpu_s_per_gb
    );
    let log = append_record("loopback", &record);
    let chart = bar_chart(
        "TCP over loopback, one stream: host kernel vs knic library kernel",
        &format!(
            "{}, commit {}; getpid: host {host_getpid:.0} ns, library {lib_getpid:.0} ns",
            run.date, run.commit
        ),
        &[
            BarGroup {
                label: "throughput (Gbit/s)",
                bars: vec![
                    ("host", host.gbit_per_s, HOST),
                    ("library", lib.gbit_per_s, LIBRARY),
                ],
            },
            BarGroup {
                label: "CPU seconds per GB",
                bars: vec![
                    ("host", host.cpu_s_per_gb, HOST),
                    ("library", lib.cpu_s_per_gb, LIBRARY),
                ],
            },
        ],
    );
    std::fs::write(results_dir().join("loopback.svg"), chart).unwrap();
    println!("recorded in {} and loopback.svg", log.display());
}
