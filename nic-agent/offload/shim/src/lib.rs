//! knic's kernel offload shim: loaded with `LD_PRELOAD` by `knic-offload`, it carries a
//! program's AF_INET/AF_INET6 TCP and UDP sockets, and its route, sock_diag and netfilter
//! netlink sockets, to the agent's library kernel (Linux's own stack); files, pipes, unix
//! sockets and other families stay on the host kernel (`knic_offload_protocol::offloaded`
//! is the rule).
//!
//! # Design
//! * **One raw-syscall entry.** Every intercepted libc function is a call of
//!   `dispatch(nr, args)` with the host syscall number glibc would use; it returns "not mine"
//!   for host fds, and the host syscall runs unchanged. `knic_offload_syscall` exports the
//!   same entry for a syscall-rewriting hook (zpoline-style) to drive later.
//! * **Offloaded sockets are real host fds.** The fd a program gets is its end of an
//!   `AF_UNIX` `SOCK_SEQPACKET` connection to the agent (the *placeholder*), and that
//!   connection is the socket's channel. The host kernel numbers it (lowest free fd),
//!   refcounts it (`dup`, `dup2`, `dup3`, `F_DUPFD_CLOEXEC`, `fork` and `exec` without
//!   CLOEXEC share one open file, so one library socket), and closes it: the agent reads
//!   end-of-file when the last reference is gone and closes the library socket. `O_NONBLOCK`
//!   and `FD_CLOEXEC` are the placeholder's own flags, so they follow dup/fork for free.
//!   After `exec` the shim's constructor finds inherited placeholders again: seqpacket
//!   sockets whose peer (`SO_PEERCRED`) is the agent's pid, asked what they are
//!   (`Describe`) — OpenOnload's `EF_PROBE` idea with the host kernel as the registry.
//! * **close is synchronous when it can be.** Closing the last fd of a socket this process
//!   made (or accepted) and has not forked since closes the library socket before `close`
//!   returns (`Op::Close`), so a port is free at once, as in Linux (iperf3 re-binds its
//!   port right after closing it). Otherwise the library socket closes when the agent sees
//!   the connection end, a moment later.
//! * **Readiness through the host kernel.** The placeholder is readable exactly while the
//!   agent has a `Ready` message queued on it, which the agent keeps true while the library
//!   socket meets the interest the shim announced (protocol crate, *Readiness*). So `poll`,
//!   `select` and `epoll` sleep in the host kernel on host fds and placeholders together; on
//!   a wake-up the shim asks the agent for the exact `revents` (IN/OUT/ERR/HUP/RDHUP/PRI) and
//!   reports those. A waiter the shim does not see (a nested epoll set, an epoll fd watched
//!   by another poll) still wakes, since the placeholder really is readable, so nothing
//!   hangs; it may wake spuriously. Edge-triggered sets get an edge per new `Ready`, which
//!   can be more edges than Linux gives (never fewer).
//! * **Kernel TLS** is the library's: `TCP_ULP` and the `SOL_TLS` keys are set on the
//!   library socket (key structs read only as far as Linux reads them, so refusals carry
//!   Linux's errno), and record types travel as control messages, so OpenSSL's own kTLS
//!   path (nginx, `SSL_sendfile`) runs unchanged.
//! * **Blocking calls** are the non-blocking library call plus a wait for readiness in the
//!   host kernel, so signals interrupt the wait on the host and no agent thread sleeps for
//!   a program. `SA_RESTART` is Linux's: a wait with nothing moved and no socket timeout is
//!   a blocking host `recv(MSG_PEEK)` on the placeholder, which the host kernel restarts
//!   exactly when it would restart the program's own call.
//!
//! # Known gaps of this slice
//! Listed in the README's *Kernel offload* section: control messages up to 1 KiB only
//! (kTLS record types, `IP_PKTINFO`, timestamps, extended errors), a negative
//! `SO_RCVTIMEO`/`SO_SNDTIMEO` is "no wait" only in the process that set it (the kernel
//! reads it back as "none"; for a shared or inherited socket positive ones are asked of
//! the library socket), one request at a time per socket per process (two
//! processes using one socket at the same instant can take each other's replies). On arm64,
//! which has no `poll`/`select`/`epoll_wait`/`dup2` syscalls, those libc functions make the
//! calls glibc makes there (`exports.rs`).
#![deny(unsafe_code)]

mod dispatch;
mod exports;
mod sys;
mod table;

pub use dispatch::dispatch;

/// Finds offloaded sockets inherited across `exec` (see the crate docs).
fn rediscover() {
    use knic_offload_protocol::{Op, Request};
    let Some(path) = std::env::var_os(knic_offload_protocol::SOCKET_ENV) else {
        return;
    };
    use std::os::unix::ffi::OsStrExt;
    let probe = sys::connect_agent(path.as_bytes(), true);
    if probe < 0 {
        return;
    }
    let agent = sys::peer_pid(probe as i32);
    sys::host(libc::SYS_close, [probe, 0, 0, 0, 0, 0]);
    let Some(agent) = agent else {
        return;
    };
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds {
        if sys::sockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN) != Some(libc::AF_UNIX)
            || sys::sockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE) != Some(libc::SOCK_SEQPACKET)
            || sys::peer_pid(fd) != Some(agent)
        {
            continue;
        }
        let probe = table::Sock::new(0, 0);
        if let Ok((domain, kind)) =
            dispatch::describe(fd, &probe, Request::new(Op::Describe, [0; 6]))
        {
            table::insert(
                i64::from(fd),
                table::Sock::with_generation(domain, kind, table::INHERITED),
            );
        }
    }
}
