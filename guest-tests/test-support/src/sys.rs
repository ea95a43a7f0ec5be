//! The system calls tests need that take `unsafe`: entering a network namespace (on a thread
//! of its own, so the test's thread stays where it was), polling a descriptor and a TCP
//! connection from a chosen source address and port.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::net::{SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

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

/// A TCP connection from `src` (bound first, so a test picks the source port, which std's
/// `TcpStream::connect` cannot) to `dst`, given up after `timeout` (SO_SNDTIMEO bounds a
/// blocking connect on Linux).
pub fn tcp_connect_from(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    timeout: Duration,
) -> io::Result<TcpStream> {
    fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
        libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            },
            sin_zero: [0; 8],
        }
    }
    let check = |r: libc::c_int| {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    };
    // SAFETY: socket takes no pointers; the descriptor it returns is owned by `fd` at once.
    let raw =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `raw` is a fresh descriptor nothing else owns or closes.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros() as i32),
    };
    // SAFETY: setsockopt reads size_of::<timeval>() bytes of `tv`, a live local.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&raw const tv).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    })?;
    let from = sockaddr(src);
    // SAFETY: bind reads size_of::<sockaddr_in>() bytes of `from`, a live local.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const from).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    })?;
    let to = sockaddr(dst);
    // SAFETY: connect reads size_of::<sockaddr_in>() bytes of `to`, a live local.
    check(unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&raw const to).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    })?;
    Ok(TcpStream::from(fd))
}
