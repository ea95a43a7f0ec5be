//! The system calls tests need that take `unsafe`: entering a network namespace (on a thread
//! of its own, so the test's thread stays where it was) and polling a descriptor.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};

/// Runs `f` on a new thread that has joined network namespace `name` (as `ip netns add`
/// makes it, under /run/netns). Sockets `f` opens belong to that namespace for good and can
/// be used from any thread once returned. Panics (failing the test) when the namespace is
/// missing or cannot be entered.
pub fn in_netns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = File::open(format!("/run/netns/{name}"))
        .unwrap_or_else(|e| panic!("network namespace {name}: {e}"));
    std::thread::spawn(move || {
        // SAFETY: setns only reads the fd, a live namespace file; it moves this (fresh,
        // single-purpose) thread alone into the namespace, touching no memory of ours.
        let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap_or_else(|_| panic!("the thread in namespace {name} failed"))
}

/// Whether `fd` becomes readable within `timeout_ms` (one `poll`).
pub fn poll_readable(fd: RawFd, timeout_ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll reads and writes exactly one pollfd, `p`, a live local.
    let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    r > 0 && p.revents & libc::POLLIN != 0
}
