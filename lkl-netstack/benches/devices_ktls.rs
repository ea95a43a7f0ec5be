//! Benchmark (not a test), one run, one kernel:
//! - TCP host <-> library through a TAP with offloads on (eth0) vs off (eth1),
//!   each direction, the host peer in a network namespace;
//! - inside the library, one stream over loopback: plain TCP vs kernel TLS
//!   (TX only, and TX+RX; AES-GCM-128 and -256), so the crypto cost shows;
//! - the same AES-GCM in user space (ring, with AES-NI) as a reference for the
//!   kernel's generic C AES-GCM, which is what the library runs.
//!
//! `cargo bench -p lkl-netstack --bench devices_ktls` (root: it makes TAPs and
//! namespaces) prints a table, appends to `benches/results/devices_ktls.jsonl`
//! and redraws `benches/results/devices_ktls.svg`.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark program: failures abort it, results go to stdout
#![allow(unsafe_code)] // setns(2) for the namespace peer

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::thread;

use common::{BarGroup, RunInfo, Transfer, append_record, bar_chart, best, measure, results_dir};
use lkl_netstack::tls::{KtlsStream, TlsVersion, TrafficCipher, TrafficKeys};
use lkl_netstack::{
    BootConfig, Kernel, NetBackend, NetDeviceConfig, Offloads, TapConfig, TcpListener, TcpStream,
};

const TAP_BYTES: usize = 1 << 30;
const TLS_BYTES: usize = 256 << 20;
const CHUNK: usize = 256 * 1024;
const ROUNDS: usize = 2;

fn sh(cmd: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .status()
        .unwrap()
        .success();
    assert!(ok, "`{cmd}` failed (the benchmark needs root and iproute2)");
}

/// A namespace holding the host end of one TAP; deleted on drop.
struct Peer {
    netns: String,
    host_ip: String,
    lib_ip: String,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.netns])
            .status();
    }
}

impl Peer {
    /// Runs `f` on a thread inside the namespace: its sockets are the host's.
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        thread::scope(|s| {
            s.spawn(|| {
                let ns = File::open(format!("/run/netns/{}", self.netns)).unwrap();
                // SAFETY: setns on this thread only, with a namespace fd we own.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap()
        })
    }
}

fn pump(mut writer: impl Write, mut reader: impl Read + Send, bytes: usize) {
    thread::scope(|s| {
        s.spawn(move || {
            let mut buf = vec![0u8; CHUNK];
            let mut got = 0;
            while got < bytes {
                let n = reader.read(&mut buf).unwrap();
                assert!(n > 0, "stream ended after {got} bytes");
                got += n;
            }
        });
        let buf = vec![0xa5u8; CHUNK];
        for _ in 0..bytes / CHUNK {
            writer.write_all(&buf).unwrap();
        }
    });
}

/// host -> library and library -> host through one TAP.
fn tap_tcp(kernel: &Kernel, peer: &Peer, port: u16) -> (Transfer, Transfer) {
    let listener =
        TcpListener::bind(kernel, format!("{}:{port}", peer.lib_ip).parse().unwrap()).unwrap();
    let lib_addr = listener.local_addr().unwrap();
    let inbound = best((0..ROUNDS).map(|_| {
        let host = peer.run(|| std::net::TcpStream::connect(lib_addr).unwrap());
        let (lib, _) = listener.accept().unwrap();
        measure(TAP_BYTES, || pump(host, lib, TAP_BYTES))
    }));
    let host_listener =
        peer.run(|| std::net::TcpListener::bind(format!("{}:0", peer.host_ip)).unwrap());
    let host_addr = host_listener.local_addr().unwrap();
    let outbound = best((0..ROUNDS).map(|_| {
        let lib = TcpStream::connect(kernel, host_addr).unwrap();
        let (host, _) = host_listener.accept().unwrap();
        measure(TAP_BYTES, || pump(lib, host, TAP_BYTES))
    }));
    (inbound, outbound)
}

fn loopback(kernel: &Kernel) -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind(kernel, "127.0.0.1:0".parse().unwrap()).unwrap();
    let a = TcpStream::connect(kernel, listener.local_addr().unwrap()).unwrap();
    (a, listener.accept().unwrap().0)
}

fn keys(cipher: &TrafficCipher, version: TlsVersion) -> TrafficKeys {
    TrafficKeys {
        version,
        cipher: cipher.clone(),
        sequence: 0,
    }
}

/// One library-loopback stream: `tls` None is plain TCP; `rx` adds kTLS receive.
fn library_stream(
    kernel: &Kernel,
    tls: Option<(&TrafficCipher, TlsVersion)>,
    rx: bool,
) -> Transfer {
    best((0..ROUNDS).map(|_| {
        let (a, b) = loopback(kernel);
        match tls {
            None => measure(TLS_BYTES, || pump(a, b, TLS_BYTES)),
            Some((cipher, version)) => {
                let k = keys(cipher, version);
                let sender = KtlsStream::install(a, &k, &k).unwrap();
                if rx {
                    let receiver = KtlsStream::install(b, &k, &k).unwrap();
                    measure(TLS_BYTES, || pump(sender, receiver, TLS_BYTES))
                } else {
                    // The receiver reads ciphertext until the sender shuts down.
                    measure(TLS_BYTES, || {
                        thread::scope(|s| {
                            s.spawn(|| {
                                let mut b = b;
                                let mut buf = vec![0u8; CHUNK];
                                while b.read(&mut buf).unwrap() > 0 {}
                            });
                            let buf = vec![0xa5u8; CHUNK];
                            for _ in 0..TLS_BYTES / CHUNK {
                                sender.send_all(&buf).unwrap();
                            }
                            sender.tcp().shutdown(std::net::Shutdown::Write).unwrap();
                        });
                    })
                }
            }
        }
    }))
}

/// AES-GCM sealing of 16 KiB records in user space with ring (AES-NI).
fn user_space_aes_gcm(key_len: usize) -> Transfer {
    use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    let algorithm = if key_len == 16 {
        &AES_128_GCM
    } else {
        &AES_256_GCM
    };
    let key = LessSafeKey::new(UnboundKey::new(algorithm, &vec![7u8; key_len]).unwrap());
    let mut record = vec![0xa5u8; 16384];
    best((0..ROUNDS).map(|_| {
        measure(TLS_BYTES, || {
            for seq in 0..(TLS_BYTES / record.len()) as u64 {
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&seq.to_be_bytes());
                let tag = key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::empty(),
                        &mut record,
                    )
                    .unwrap();
                let _ = std::hint::black_box(tag);
            }
        })
    }))
}

/// Set in the child run that measures the kernel's generic C AES-GCM (one
/// kernel per process, so the comparison needs a second process).
const GENERIC_CHILD: &str = "KNIC_BENCH_GENERIC_CRYPTO";

const AES128: TrafficCipher = TrafficCipher::AesGcm128 {
    key: [1; 16],
    nonce: [2; 12],
};
const AES256: TrafficCipher = TrafficCipher::AesGcm256 {
    key: [1; 32],
    nonce: [2; 12],
};

/// TLS 1.3: TX only with AES-128, TX+RX with AES-128 and AES-256.
fn ktls_streams(kernel: &Kernel) -> [Transfer; 3] {
    let v = TlsVersion::Tls13;
    [
        library_stream(kernel, Some((&AES128, v)), false),
        library_stream(kernel, Some((&AES128, v)), true),
        library_stream(kernel, Some((&AES256, v)), true),
    ]
}

/// The rest of the matrix (host AES only): TX only with AES-256 on TLS 1.3, and
/// TLS 1.2 TX only and TX+RX with both key sizes.
fn ktls_more_streams(kernel: &Kernel) -> [(&'static str, Transfer); 5] {
    let (v13, v12) = (TlsVersion::Tls13, TlsVersion::Tls12);
    [
        (
            "lib_ktls_tx_aes256",
            library_stream(kernel, Some((&AES256, v13)), false),
        ),
        (
            "lib_ktls12_tx_aes128",
            library_stream(kernel, Some((&AES128, v12)), false),
        ),
        (
            "lib_ktls12_tx_aes256",
            library_stream(kernel, Some((&AES256, v12)), false),
        ),
        (
            "lib_ktls12_txrx_aes128",
            library_stream(kernel, Some((&AES128, v12)), true),
        ),
        (
            "lib_ktls12_txrx_aes256",
            library_stream(kernel, Some((&AES256, v12)), true),
        ),
    ]
}

/// Set to run only plain TCP and the kTLS streams (host AES) and print them,
/// recording nothing: for profiling (`perf record`) the kTLS path alone.
const KTLS_ONLY: &str = "KNIC_BENCH_KTLS_ONLY";

fn ktls_only() {
    let kernel = Kernel::boot(&BootConfig {
        memory_bytes: 1 << 30,
        cmdline: "quiet".into(),
        net_devices: Vec::new(),
        host_crypto: true,
    })
    .unwrap();
    let plain = library_stream(&kernel, None, false);
    let [tx128, both128, both256] = ktls_streams(&kernel);
    let more = ktls_more_streams(&kernel);
    kernel.halt().unwrap();
    let rows = [
        ("lib_plain_tcp", plain),
        ("lib_ktls_tx_aes128", tx128),
        ("lib_ktls_txrx_aes128", both128),
        ("lib_ktls_txrx_aes256", both256),
    ];
    for (name, t) in rows.into_iter().chain(more) {
        println!(
            "  {name:30} {:7.3} GB/s  {:6.2} CPU-s/GB  {:5.2} x plain",
            t.gbyte_per_s(),
            t.cpu_s_per_gb,
            t.gbit_per_s / plain.gbit_per_s
        );
    }
    println!("  host AES-GCM: {:?}", lkl_netstack::host_crypto_counters());
}

/// The child: kTLS with the generic C AES-GCM; prints "gbit cpu" per stream.
fn generic_crypto_child() {
    let kernel = Kernel::boot(&BootConfig {
        memory_bytes: 1 << 30,
        cmdline: "quiet".into(),
        net_devices: Vec::new(),
        host_crypto: false,
    })
    .unwrap();
    for t in ktls_streams(&kernel) {
        println!("{} {}", t.gbit_per_s, t.cpu_s_per_gb);
    }
    kernel.halt().unwrap();
}

fn generic_crypto_in_child() -> [Transfer; 3] {
    let out = Command::new(std::env::current_exe().unwrap())
        .env(GENERIC_CHILD, "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "generic-crypto child failed");
    let text = String::from_utf8(out.stdout).unwrap();
    let runs: Vec<Transfer> = text
        .lines()
        .map(|line| {
            let mut v = line.split(' ').map(|x| x.parse::<f64>().unwrap());
            Transfer {
                gbit_per_s: v.next().unwrap(),
                cpu_s_per_gb: v.next().unwrap(),
            }
        })
        .collect();
    [runs[0], runs[1], runs[2]]
}

fn main() {
    if std::env::var_os(GENERIC_CHILD).is_some() {
        return generic_crypto_child();
    }
    if std::env::var_os(KTLS_ONLY).is_some() {
        return ktls_only();
    }
    let id = std::process::id() % 100_000;
    let peers: Vec<Peer> = [241u8, 242]
        .iter()
        .map(|subnet| Peer {
            netns: format!("knic-bench-{subnet}-{id}"),
            host_ip: format!("10.{subnet}.0.1"),
            lib_ip: format!("10.{subnet}.0.2"),
        })
        .collect();
    let taps: Vec<String> = [241u8, 242]
        .iter()
        .map(|s| format!("knb{s}-{id}"))
        .collect();
    let kernel = Kernel::boot(&BootConfig {
        memory_bytes: 1 << 30,
        cmdline: "quiet".into(),
        host_crypto: true,
        net_devices: vec![
            NetDeviceConfig {
                backend: NetBackend::Tap(TapConfig {
                    name: taps[0].clone(),
                }),
                mac: [0x52, 0x54, 0x00, 0x6b, 0x6e, 0x41],
                mtu: 1500,
                offloads: Offloads::Tso,
                queue_pairs: 1,
            },
            NetDeviceConfig {
                backend: NetBackend::Tap(TapConfig {
                    name: taps[1].clone(),
                }),
                mac: [0x52, 0x54, 0x00, 0x6b, 0x6e, 0x42],
                mtu: 1500,
                offloads: Offloads::Off,
                queue_pairs: 1,
            },
        ],
    })
    .unwrap();
    for (i, (peer, tap)) in peers.iter().zip(&taps).enumerate() {
        sh(&format!("ip netns add {}", peer.netns));
        sh(&format!(
            "ip link set {tap} netns {0} && ip -n {0} link set lo up && ip -n {0} link set {tap} up \
             && ip -n {0} addr add {1}/24 dev {tap}",
            peer.netns, peer.host_ip
        ));
        let eth = format!("eth{i}");
        kernel.set_link_up(&eth, true).unwrap();
        kernel
            .add_address(&eth, peer.lib_ip.parse().unwrap(), 24)
            .unwrap();
    }
    sh(&format!(
        "ip netns exec {} ping -c 1 -W 5 {} >/dev/null",
        peers[0].netns, peers[0].lib_ip
    ));
    sh(&format!(
        "ip netns exec {} ping -c 1 -W 5 {} >/dev/null",
        peers[1].netns, peers[1].lib_ip
    ));

    let (on_in, on_out) = tap_tcp(&kernel, &peers[0], 5201);
    let (off_in, off_out) = tap_tcp(&kernel, &peers[1], 5202);
    let plain = library_stream(&kernel, None, false);
    let [tx128, both128, both256] = ktls_streams(&kernel);
    let more = ktls_more_streams(&kernel);
    let ring128 = user_space_aes_gcm(16);
    let ring256 = user_space_aes_gcm(32);
    kernel.halt().unwrap();
    let [gen_tx128, gen_both128, gen_both256] = generic_crypto_in_child();

    let run = RunInfo::now();
    let rows = [
        ("tap_offloads_on_host_to_lib", on_in),
        ("tap_offloads_on_lib_to_host", on_out),
        ("tap_offloads_off_host_to_lib", off_in),
        ("tap_offloads_off_lib_to_host", off_out),
        ("lib_plain_tcp", plain),
        ("lib_ktls_tx_aes128", tx128),
        ("lib_ktls_txrx_aes128", both128),
        ("lib_ktls_txrx_aes256", both256),
        ("lib_ktls_tx_aes128_generic_c", gen_tx128),
        ("lib_ktls_txrx_aes128_generic_c", gen_both128),
        ("lib_ktls_txrx_aes256_generic_c", gen_both256),
        ("user_ring_aes128_seal", ring128),
        ("user_ring_aes256_seal", ring256),
    ];
    let rows = rows.into_iter().chain(more);
    println!(
        "One stream each, best of {ROUNDS} ({} cores), GB/s and CPU-seconds per GB:",
        run.cores
    );
    let mut json = format!(
        "{{{},\"tap_bytes\":{TAP_BYTES},\"tls_bytes\":{TLS_BYTES}",
        run.json_prefix()
    );
    for (name, t) in rows {
        println!(
            "  {name:30} {:7.3} GB/s  {:6.2} CPU-s/GB  {:5.2} x plain",
            t.gbyte_per_s(),
            t.cpu_s_per_gb,
            t.gbit_per_s / plain.gbit_per_s
        );
        json.push_str(&format!(
            ",\"{name}_gbyte_s\":{:.4},\"{name}_cpu_s_per_gb\":{:.3}",
            t.gbyte_per_s(),
            t.cpu_s_per_gb
        ));
    }
    json.push('}');
    println!(
        "  offloads on/off: host->lib {:.2}x, lib->host {:.2}x; kTLS AES-128 (TX+RX) / plain TCP: {:.3}; \
         host AES-GCM / kernel C AES-GCM (kTLS TX+RX 128): {:.1}x",
        on_in.gbit_per_s / off_in.gbit_per_s,
        on_out.gbit_per_s / off_out.gbit_per_s,
        both128.gbit_per_s / plain.gbit_per_s,
        both128.gbit_per_s / gen_both128.gbit_per_s
    );
    let log = append_record("devices_ktls", &json);
    let (grey, green, blue, orange) = ("#888", "#2a7", "#37c", "#d83");
    let chart = bar_chart(
        "knic library kernel: TAP offloads on vs off, and kernel TLS vs plain TCP (GB/s)",
        &format!(
            "{}, commit {}, {} cores, one stream each",
            run.date, run.commit, run.cores
        ),
        &[
            BarGroup {
                label: "host -> library over TAP",
                bars: vec![
                    ("offloads on", on_in.gbyte_per_s(), green),
                    ("off", off_in.gbyte_per_s(), grey),
                ],
            },
            BarGroup {
                label: "library -> host over TAP",
                bars: vec![
                    ("offloads on", on_out.gbyte_per_s(), green),
                    ("off", off_out.gbyte_per_s(), grey),
                ],
            },
            BarGroup {
                label: "library loopback",
                bars: vec![
                    ("plain TCP", plain.gbyte_per_s(), grey),
                    ("kTLS TX 128", tx128.gbyte_per_s(), blue),
                    ("kTLS 128", both128.gbyte_per_s(), blue),
                    ("kTLS 256", both256.gbyte_per_s(), blue),
                    ("C TX 128", gen_tx128.gbyte_per_s(), orange),
                    ("C 128", gen_both128.gbyte_per_s(), orange),
                    ("C 256", gen_both256.gbyte_per_s(), orange),
                ],
            },
            BarGroup {
                label: "AES-GCM seal, user space (ring)",
                bars: vec![
                    ("128", ring128.gbyte_per_s(), orange),
                    ("256", ring256.gbyte_per_s(), orange),
                ],
            },
        ],
    );
    std::fs::write(results_dir().join("devices_ktls.svg"), chart).unwrap();
    println!("recorded in {} and devices_ktls.svg", log.display());
}
