//! Boot, syscalls and halt of the library kernel. One kernel per process, so each
//! test binary boots once; this file holds the boot-and-halt lifecycle.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a failed unwrap is a failed test; results are reported on stdout

use lkl_netstack::{BootConfig, BootError, Kernel};

#[test]
fn boots_logs_debian_version_refuses_second_boot_and_halts() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let kernel = Kernel::boot(&BootConfig::default()).expect("boot");
    println!("boot took {:?}", kernel.boot_time());

    let log = kernel.kernel_log().expect("syslog");
    assert!(
        log.contains(&format!("Linux version {}", lkl_sys::KERNEL_VERSION)),
        "kernel log lacks the version banner:\n{log}"
    );
    assert_eq!(
        kernel.getpid().expect("getpid"),
        1,
        "host threads are threads of PID 1"
    );

    // The library's wall clock is the host's (SO_TIMESTAMPING, SO_TIMESTAMP are on it).
    let host = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let library = kernel.wall_clock().expect("clock_gettime");
    assert!(
        host.abs_diff(library) < std::time::Duration::from_secs(5),
        "the library's CLOCK_REALTIME is {library:?} since the epoch, the host's {host:?}"
    );

    let second = Kernel::boot(&BootConfig::default());
    assert!(
        matches!(second, Err(BootError::AlreadyBooted)),
        "{second:?}"
    );

    kernel.halt().expect("halt");
}
