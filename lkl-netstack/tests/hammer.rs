//! Sixteen host threads hammer the kernel with syscalls at once for a bounded time:
//! no deadlock (a watchdog fails the test), every host thread's task is gone after
//! the thread exits (threads of PID 1, read from procfs inside the kernel), and the kernel halts cleanly.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a failed unwrap is a failed test; results are reported on stdout

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use lkl_netstack::{BootConfig, Kernel, TcpListener, TcpStream, UdpSocket};

const THREADS: usize = 16;
const RUN_FOR: Duration = Duration::from_secs(4);
const WATCHDOG: Duration = Duration::from_secs(90);

static PROGRESS: [AtomicU64; THREADS] = [const { AtomicU64::new(0) }; THREADS];
static DONE: AtomicBool = AtomicBool::new(false);

/// A deadlock must fail the test, not hang it: abort with each thread's progress.
fn start_watchdog() {
    thread::spawn(|| {
        let start = Instant::now();
        while !DONE.load(Ordering::SeqCst) {
            if start.elapsed() > WATCHDOG {
                let progress: Vec<u64> =
                    PROGRESS.iter().map(|p| p.load(Ordering::SeqCst)).collect();
                eprintln!(
                    "hammer: still running after {WATCHDOG:?} (deadlock?); syscalls per thread: {progress:?}"
                );
                std::process::abort();
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
}

/// One thread's mix: getpid, UDP to itself, and TCP/IPv6 socket churn.
fn hammer(kernel: &Kernel, index: usize, listener: SocketAddr, stop: &AtomicBool) {
    let udp = UdpSocket::bind(kernel, "127.0.0.1:0".parse().unwrap()).expect("udp");
    let me = udp.local_addr().expect("addr");
    let mut buf = [0u8; 512];
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        assert_eq!(kernel.getpid().expect("getpid"), 1);
        udp.send_to(&n.to_le_bytes(), me).expect("send");
        let (len, _) = udp.recv_from(&mut buf).expect("recv");
        assert_eq!(&buf[..len], &n.to_le_bytes());
        if n % 16 == 0 {
            drop(TcpStream::connect(kernel, listener).expect("connect"));
            drop(UdpSocket::bind(kernel, "[::1]:0".parse().unwrap()).expect("udp6"));
        }
        n += 1;
        PROGRESS[index].store(n, Ordering::Relaxed);
    }
}

#[test]
fn sixteen_threads_hammer_then_clean_halt() {
    start_watchdog();
    let kernel = Kernel::boot(&BootConfig::default()).expect("boot");
    let listener = TcpListener::bind(&kernel, "127.0.0.1:0".parse().unwrap()).expect("listen");
    let listener_addr = listener.local_addr().expect("addr");
    let baseline = kernel.host_task_count().expect("host tasks");
    let kernel_tasks_before = kernel.task_count().expect("tasks");
    let stop = AtomicBool::new(false);
    let mut during = 0;

    thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                drop(listener.accept().expect("accept"));
            }
        });
        let workers: Vec<_> = (0..THREADS)
            .map(|i| {
                s.spawn({
                    let (k, st) = (&kernel, &stop);
                    move || hammer(k, i, listener_addr, st)
                })
            })
            .collect();
        thread::sleep(RUN_FOR);
        during = kernel.host_task_count().expect("host tasks");
        stop.store(true, Ordering::SeqCst);
        for w in workers {
            w.join().expect("worker");
        }
        drop(TcpStream::connect(&kernel, listener_addr).expect("wake the acceptor"));
    });

    let progress: Vec<u64> = PROGRESS.iter().map(|p| p.load(Ordering::SeqCst)).collect();
    let total: u64 = progress.iter().sum::<u64>() * 4;
    let after = kernel.host_task_count().expect("host tasks");
    let kernel_tasks_after = kernel.task_count().expect("tasks");
    println!(
        "~{total} syscalls from {THREADS} threads in {RUN_FOR:?}; per thread {progress:?}; \
         host tasks {baseline} -> {during} -> {after}; all tasks {kernel_tasks_before} -> {kernel_tasks_after}"
    );
    assert!(
        progress.iter().all(|&n| n > 10),
        "a thread made (almost) no progress: {progress:?}"
    );
    assert_eq!(
        during,
        baseline + THREADS as u64 + 1,
        "a task per worker and the acceptor"
    );
    // Worker and acceptor threads have exited, so their tasks must be gone.
    assert_eq!(after, baseline, "tasks leaked");

    kernel.halt().expect("halt");
    assert!(!kernel.is_running());
    let refused = thread::spawn(move || kernel.getpid())
        .join()
        .expect("probe");
    assert_eq!(
        refused.expect_err("after halt").raw_os_error(),
        Some(libc::ESHUTDOWN)
    );
    DONE.store(true, Ordering::SeqCst);
}
