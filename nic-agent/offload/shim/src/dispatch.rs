//! The raw-syscall entry: [`dispatch`] takes a host syscall number and its six arguments and
//! either carries the call out on the agent (an offloaded socket) or says "not mine" so the
//! caller makes the host syscall. The libc symbol overrides (`exports`) call it; a
//! syscall-rewriting hook (zpoline-style) can call the same function for static binaries.
//!
//! Blocking: the library sockets are non-blocking; a blocking call here is a loop of the
//! non-blocking call and a wait for readiness on the placeholder (see the protocol crate),
//! so a signal interrupts the wait on the host and the agent never holds a thread for a
//! sleeping program. Signals follow Linux's rule for socket calls (signal(7)): a handler
//! with `SA_RESTART` restarts a call that has moved nothing yet and has no
//! `SO_RCVTIMEO`/`SO_SNDTIMEO` (the wait is then a host call the host kernel restarts);
//! otherwise the call ends with `EINTR`, or with the bytes it moved.

use std::cell::RefCell;
use std::sync::{Arc, MutexGuard, OnceLock};

use knic_offload_protocol::{
    ADDR_SLOT, IFREQ_LEN, Kind, MAX_CONTROL, MAX_PAYLOAD, MAX_RECV, Op, REPLY_LEN, REQUEST_LEN,
    Reply, Request, SOCKET_ENV, SOL_TLS, TLS_RX, TLS_TX, check_control, tls_crypto_info_len,
};

use crate::sys::{self, UserPtr, host};
use crate::table::{self, EpollReg, Sock};

const fn neg(e: i32) -> i64 {
    -(e as i64)
}
const EAGAIN: i64 = neg(libc::EAGAIN);
const EINTR: i64 = neg(libc::EINTR);
const EINVAL: i64 = neg(libc::EINVAL);
const EINPROGRESS: i64 = neg(libc::EINPROGRESS);
const ECONNRESET: i64 = neg(libc::ECONNRESET);

/// The most bytes of an address or option value the shim carries.
const MAX_OPTION: usize = 4096;
const ADDR_MAX: usize = 128;

/// The agent's socket path from the environment (none: the shim offloads nothing).
fn agent_path() -> Option<&'static [u8]> {
    static PATH: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    PATH.get_or_init(|| {
        use std::os::unix::ffi::OsStringExt;
        std::env::var_os(SOCKET_ENV)
            .map(|p| p.into_vec())
            .filter(|p| !p.is_empty())
    })
    .as_deref()
}

thread_local! {
    /// Staging for readv/writev/sendmsg/recvmsg/sendfile (one per thread, made once).
    static STAGE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn with_stage<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    STAGE.with(|s| match s.try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < MAX_PAYLOAD {
                v.resize(MAX_PAYLOAD, 0);
            }
            f(&mut v[..])
        }
        // Re-entered from a signal handler: a buffer of its own.
        Err(_) => f(&mut vec![0u8; MAX_PAYLOAD][..]),
    })
}

fn lock(sock: &Sock) -> MutexGuard<'_, ()> {
    sock.lock.lock().unwrap_or_else(|p| p.into_inner())
}

/// One exchange's result: the reply, its payload length and a passed fd.
struct Answer {
    reply: Reply,
    payload: usize,
    fd: Option<i32>,
}

/// Sends a request (header + `send` parts) on placeholder `fd` and waits for its reply,
/// scattering the reply's payload over `recv`. Ready messages before it are skipped.
fn call(
    fd: i32,
    sock: &Sock,
    req: Request,
    send: &[(usize, usize)],
    recv: &[(usize, usize)],
    cloexec: bool,
) -> Result<Answer, i64> {
    let _g = lock(sock);
    let mut head = [0u8; REQUEST_LEN];
    req.encode(&mut head);
    let mut parts = [(0usize, 0usize); 4];
    parts[0] = (head.as_ptr() as usize, REQUEST_LEN);
    let n = send.len().min(3);
    parts[1..=n].copy_from_slice(&send[..n]);
    loop {
        let r = sys::send_parts(fd, &parts[..=n]);
        if r >= 0 {
            break;
        }
        if r == EAGAIN {
            sys::poll_one(fd, libc::POLLOUT, -1);
            continue;
        }
        if r == EINTR {
            continue;
        }
        return Err(ECONNRESET);
    }
    let mut rhead = [0u8; REPLY_LEN];
    let mut rparts = [(0usize, 0usize); 4];
    rparts[0] = (rhead.as_mut_ptr() as usize, REPLY_LEN);
    let m = recv.len().min(3);
    rparts[1..=m].copy_from_slice(&recv[..m]);
    loop {
        let mut passed = None;
        let r = sys::recv_parts(fd, &rparts[..=m], cloexec, &mut passed);
        if r == EAGAIN || r == EINTR {
            sys::poll_one(fd, libc::POLLIN, -1);
            continue;
        }
        if r <= 0 {
            // End of file: the agent is gone (stopped or restarted).
            return Err(ECONNRESET);
        }
        let len = r as usize;
        let reply = match Reply::decode(&rhead[..len.min(REPLY_LEN)]) {
            Ok((reply, _)) => reply,
            Err(_) => return Err(neg(libc::EPROTO)),
        };
        if reply.kind == Kind::Ready {
            if let Some(p) = passed {
                host(libc::SYS_close, [i64::from(p), 0, 0, 0, 0, 0]);
            }
            continue;
        }
        if reply.ready_follows {
            // Return once the Ready is queued (not read): the placeholder is then readable,
            // as the socket is ready, before the program's next call.
            while sys::poll_one(fd, libc::POLLIN, -1) == EINTR {}
        }
        return Ok(Answer {
            reply,
            payload: len - REPLY_LEN,
            fd: passed,
        });
    }
}

/// A request without payloads; the reply's `ret`.
fn simple(fd: i32, sock: &Sock, op: Op, args: [i64; 6]) -> i64 {
    match call(fd, sock, Request::new(op, args), &[], &[], false) {
        Ok(a) => a.reply.ret,
        Err(e) => e,
    }
}

/// The socket's revents now; arms `oneshot` as the interest of a waiter.
fn query(fd: i32, sock: &Sock, persistent: i16, oneshot: i16) -> i64 {
    simple(
        fd,
        sock,
        Op::Poll,
        [i64::from(persistent), i64::from(oneshot), 0, 0, 0, 0],
    )
}

const WAITABLE: i16 = libc::POLLIN | libc::POLLOUT | libc::POLLPRI | libc::POLLRDHUP;

/// Sets O_NONBLOCK on a new placeholder (SOCK_NONBLOCK asked at creation).
fn set_nonblocking(fd: i64) {
    host(
        libc::SYS_fcntl,
        [
            fd,
            i64::from(libc::F_SETFL),
            i64::from(libc::O_NONBLOCK),
            0,
            0,
            0,
        ],
    );
}

fn nonblocking(fd: i32) -> bool {
    let fl = host(
        libc::SYS_fcntl,
        [i64::from(fd), i64::from(libc::F_GETFL), 0, 0, 0, 0],
    );
    fl >= 0 && fl & i64::from(libc::O_NONBLOCK) != 0
}

/// Blocks until the socket meets `events` (or has an error or hang-up); `Err(EAGAIN)` when
/// `deadline` (the call's `SO_RCVTIMEO` or `SO_SNDTIMEO`, [`deadline`]) passes first.
/// A signal first: `Err(EINTR)`, unless `restartable` (the call has moved nothing yet),
/// there is no deadline and its handler has `SA_RESTART`, when the wait goes on.
fn wait(
    fd: i32,
    sock: &Sock,
    events: i16,
    deadline: Option<i64>,
    restartable: bool,
) -> Result<(), i64> {
    loop {
        let r = query(fd, sock, 0, events);
        if r < 0 {
            return Err(r);
        }
        if r as i16 & (events | libc::POLLERR | libc::POLLHUP) != 0 {
            return Ok(());
        }
        let timeout_ms = match deadline {
            None => -1,
            Some(d) => {
                let left = d - sys::now_ns();
                if left <= 0 {
                    return Err(EAGAIN);
                }
                i32::try_from(left.saturating_add(999_999) / 1_000_000).unwrap_or(i32::MAX)
            }
        };
        let mut p = if restartable && deadline.is_none() {
            sys::wait_message(fd)
        } else {
            sys::poll_one(fd, libc::POLLIN, timeout_ms)
        };
        if p == EAGAIN {
            // A placeholder made non-blocking meanwhile (another thread's fcntl).
            p = sys::poll_one(fd, libc::POLLIN, timeout_ms);
        }
        if p == EINTR {
            return Err(EINTR);
        }
    }
}

/// Reads a socket address argument (at most 128 bytes).
fn read_addr(ptr: i64, len: i64, out: &mut [u8; ADDR_MAX]) -> Result<usize, i64> {
    let len = usize::try_from(len).map_err(|_| EINVAL)?;
    if len > ADDR_MAX {
        return Err(EINVAL);
    }
    UserPtr(ptr as usize).read(&mut out[..len])?;
    Ok(len)
}

/// Reads an optional destination address (null: none, length 0).
fn read_dest(ptr: i64, len: i64, out: &mut [u8; ADDR_MAX]) -> Result<usize, i64> {
    if ptr == 0 {
        Ok(0)
    } else {
        read_addr(ptr, len, out)
    }
}

/// Writes an address result the way the kernel does: at most `*lenp` bytes, then the full
/// length into `*lenp`.
fn write_addr(ptr: i64, lenp: i64, addr: &[u8]) -> Result<(), i64> {
    if ptr == 0 {
        return Ok(());
    }
    let lp = UserPtr(lenp as usize);
    let room = lp.read_u32()? as usize;
    UserPtr(ptr as usize).write(&addr[..addr.len().min(room)])?;
    lp.write_u32(addr.len() as u32)
}

/// The one entry: `Some(result)` (kernel convention, `-errno`) when the call was ours,
/// `None` when the host kernel should run it unchanged.
pub fn dispatch(nr: i64, a: [i64; 6]) -> Option<i64> {
    match nr {
        libc::SYS_socket => socket(a[0], a[1], a[2]),
        libc::SYS_close => {
            if let Some(sock) = table::get(a[0]) {
                // This clone and the table's entry: no other fd of this process has it.
                if Arc::strong_count(&sock) == 2 && sock.private() {
                    let _ = simple(a[0] as i32, &sock, Op::Close, [0; 6]);
                }
            }
            table::remove(a[0]);
            table::epoll_forget_set(a[0] as i32);
            None
        }
        libc::SYS_close_range => {
            if a[2] & i64::from(libc::CLOSE_RANGE_CLOEXEC) == 0 {
                let last = a[1].min(table::MAX_FDS as i64 - 1);
                for fd in a[0]..=last {
                    table::remove(fd);
                }
            }
            None
        }
        libc::SYS_dup => dup_like(a[0], host(libc::SYS_dup, a)),
        #[cfg(target_arch = "x86_64")]
        libc::SYS_dup2 => dup_onto(nr, a),
        libc::SYS_dup3 => dup_onto(nr, a),
        libc::SYS_fcntl => {
            let cmd = a[1] as i32;
            if cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC {
                table::get(a[0])?;
                dup_like(a[0], host(nr, a))
            } else {
                None
            }
        }
        #[cfg(target_arch = "x86_64")]
        libc::SYS_poll => poll_call(a[0], a[1], timeout_ms(a[2]), 0),
        libc::SYS_ppoll => {
            let t = match read_timespec(a[2]) {
                Ok(t) => t,
                Err(e) => return Some(e),
            };
            poll_call(a[0], a[1], t, a[3])
        }
        #[cfg(target_arch = "x86_64")]
        libc::SYS_select => select_call(a, false),
        libc::SYS_pselect6 => select_call(a, true),
        libc::SYS_epoll_ctl => epoll_ctl(a),
        #[cfg(target_arch = "x86_64")]
        libc::SYS_epoll_wait => epoll_wait(a[0], a[1], a[2], a[3], 0),
        libc::SYS_epoll_pwait => epoll_wait(a[0], a[1], a[2], a[3], a[4]),
        libc::SYS_sendfile => {
            let sock = table::get(a[0])?;
            Some(sendfile(a[0] as i32, &sock, a[1], a[2], a[3]))
        }
        _ => {
            let fd = a[0];
            let sock = table::get(fd)?;
            Some(socket_call(nr, fd as i32, &sock, a))
        }
    }
}

/// `dup2`/`dup3`: the placeholder `a[1]` had goes, `a[0]`'s socket follows to it.
fn dup_onto(nr: i64, a: [i64; 6]) -> Option<i64> {
    if a[0] != a[1] {
        table::remove(a[1]);
    }
    let sock = table::get(a[0]);
    let r = host(nr, a);
    if let Some(s) = sock.filter(|_| r >= 0) {
        table::insert(r, s);
    }
    sock_or_none(a[0], r)
}

fn sock_or_none(_fd: i64, r: i64) -> Option<i64> {
    Some(r)
}

fn dup_like(old: i64, r: i64) -> Option<i64> {
    if r >= 0 {
        if let Some(s) = table::get(old) {
            table::insert(r, s);
        }
    }
    Some(r)
}

fn socket(domain: i64, kind: i64, protocol: i64) -> Option<i64> {
    if !knic_offload_protocol::offloaded(domain, kind, protocol) {
        return None;
    }
    let base = kind & 0xf;
    let path = agent_path()?;
    let cloexec = kind & i64::from(libc::SOCK_CLOEXEC) != 0;
    let fd = sys::connect_agent(path, cloexec);
    if fd < 0 {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            sys::warn(&format!(
                "knic-offload: no agent answers at {} (errno {}); AF_INET/AF_INET6/AF_NETLINK \
                 sockets fail with ENETDOWN until knic-agent runs\n",
                String::from_utf8_lossy(path),
                -fd
            ));
        });
        return Some(neg(libc::ENETDOWN));
    }
    if fd as usize >= table::MAX_FDS {
        host(libc::SYS_close, [fd, 0, 0, 0, 0, 0]);
        return Some(neg(libc::EMFILE));
    }
    let sock = Sock::new(domain as i32, base as i32);
    let r = simple(
        fd as i32,
        &sock,
        Op::Open,
        [domain, kind, protocol, 0, 0, 0],
    );
    if r < 0 {
        host(libc::SYS_close, [fd, 0, 0, 0, 0, 0]);
        return Some(r);
    }
    if kind & i64::from(libc::SOCK_NONBLOCK) != 0 {
        set_nonblocking(fd);
    }
    table::insert(fd, sock);
    Some(fd)
}

/// Calls on an offloaded fd (the first argument).
fn socket_call(nr: i64, fd: i32, sock: &Arc<Sock>, a: [i64; 6]) -> i64 {
    match nr {
        libc::SYS_bind | libc::SYS_connect => {
            let mut addr = [0u8; ADDR_MAX];
            let len = match read_addr(a[1], a[2], &mut addr) {
                Ok(l) => l,
                Err(e) => return e,
            };
            let op = if nr == libc::SYS_bind {
                Op::Bind
            } else {
                Op::Connect
            };
            let parts = [(addr.as_ptr() as usize, len)];
            let r = match call(fd, sock, Request::new(op, [0; 6]), &parts, &[], false) {
                Ok(ans) => ans.reply.ret,
                Err(e) => e,
            };
            if op == Op::Connect && r == EINPROGRESS && !nonblocking(fd) {
                // SO_SNDTIMEO bounds a blocking connect; Linux then says EINPROGRESS.
                match wait(
                    fd,
                    sock,
                    libc::POLLOUT,
                    deadline(fd, sock, libc::POLLOUT),
                    true,
                ) {
                    Ok(()) => {}
                    Err(e) if e == EAGAIN => return EINPROGRESS,
                    Err(e) => return e,
                }
                let mut err = [0u8; 4];
                let got = get_option(fd, sock, libc::SOL_SOCKET, libc::SO_ERROR, &mut err);
                return match got {
                    Ok(_) => -i64::from(i32::from_ne_bytes(err)),
                    Err(e) => e,
                };
            }
            r
        }
        libc::SYS_listen => simple(fd, sock, Op::Listen, [a[1], 0, 0, 0, 0, 0]),
        libc::SYS_shutdown => simple(fd, sock, Op::Shutdown, [a[1], 0, 0, 0, 0, 0]),
        libc::SYS_accept => accept(fd, sock, a[1], a[2], 0),
        libc::SYS_accept4 => accept(fd, sock, a[1], a[2], a[3]),
        libc::SYS_getsockname | libc::SYS_getpeername => {
            let which = i64::from(nr == libc::SYS_getpeername);
            let mut addr = [0u8; ADDR_MAX];
            let parts = [(addr.as_mut_ptr() as usize, ADDR_MAX)];
            match call(
                fd,
                sock,
                Request::new(Op::Name, [which, 0, 0, 0, 0, 0]),
                &[],
                &parts,
                false,
            ) {
                Ok(ans) if ans.reply.ret < 0 => ans.reply.ret,
                Ok(ans) => match write_addr(a[1], a[2], &addr[..ans.payload.min(ADDR_MAX)]) {
                    Ok(()) => 0,
                    Err(e) => e,
                },
                Err(e) => e,
            }
        }
        libc::SYS_setsockopt => {
            // optlen is an int: the kernel refuses a negative one.
            let len = a[4] as i32 as i64;
            if a[1] == SOL_TLS && (a[2] == TLS_TX || a[2] == TLS_RX) && len >= 0 {
                return set_tls_keys(fd, sock, a[1], a[2], a[3], len as usize);
            }
            if !(0..=MAX_OPTION as i64).contains(&len) {
                return EINVAL;
            }
            let mut val = [0u8; MAX_OPTION];
            if let Err(e) = UserPtr(a[3] as usize).read(&mut val[..len as usize]) {
                return e;
            }
            let r = set_option(fd, sock, [a[1], a[2], 0], &val[..len as usize]);
            if r == 0 {
                note_timeout(sock, a[1], a[2], &val[..len as usize]);
            }
            r
        }
        libc::SYS_getsockopt => {
            let lp = UserPtr(a[4] as usize);
            let room = match lp.read_u32() {
                Ok(r) => (r as usize).min(MAX_OPTION),
                Err(e) => return e,
            };
            let mut val = [0u8; MAX_OPTION];
            match get_option(fd, sock, a[1] as i32, a[2] as i32, &mut val[..room]) {
                Ok(n) => match UserPtr(a[3] as usize)
                    .write(&val[..n])
                    .and_then(|()| lp.write_u32(n as u32))
                {
                    Ok(()) => 0,
                    Err(e) => e,
                },
                Err(e) => e,
            }
        }
        libc::SYS_ioctl => {
            let req = a[1] as u64;
            if req == libc::FIONBIO {
                return host(nr, a);
            }
            if req == libc::FIONREAD || req == libc::TIOCOUTQ || req == 0x894b {
                let r = simple(fd, sock, Op::IoctlInt, [req as i64, 0, 0, 0, 0, 0]);
                if r < 0 {
                    return r;
                }
                return match UserPtr(a[2] as usize).write(&(r as i32).to_ne_bytes()) {
                    Ok(()) => 0,
                    Err(e) => e,
                };
            }
            if knic_offload_protocol::ifreq_ioctl(req) {
                return ioctl_ifreq(fd, sock, req, a[2]);
            }
            if req == libc::SIOCGIFCONF {
                return ioctl_ifconf(fd, sock, a[2]);
            }
            neg(libc::ENOTTY)
        }
        libc::SYS_read => recv(fd, sock, a[1], a[2], 0, (0, 0), &mut []).ret,
        libc::SYS_recvfrom => recv(fd, sock, a[1], a[2], a[3], (a[4], a[5]), &mut []).ret,
        libc::SYS_write => send(fd, sock, a[1], a[2], 0, 0, 0),
        libc::SYS_sendto => send(fd, sock, a[1], a[2], a[3], a[4], a[5]),
        libc::SYS_readv => readv(fd, sock, a[1], a[2], 0, None),
        libc::SYS_writev => writev(fd, sock, a[1], a[2], 0, (0, 0), &[]),
        libc::SYS_recvmsg => recvmsg(fd, sock, a[1], a[2]),
        libc::SYS_sendmsg => sendmsg(fd, sock, a[1], a[2]),
        libc::SYS_sendmmsg => sendmmsg(fd, sock, a[1], a[2], a[3]),
        libc::SYS_recvmmsg => recvmmsg(fd, sock, a[1], a[2], a[3], a[4]),
        libc::SYS_socketpair => neg(libc::EOPNOTSUPP),
        // Calls the placeholder answers correctly itself (fstat, fcntl flags, ...).
        _ => host(nr, a),
    }
}

/// `SO_RCVTIMEO_NEW`/`SO_SNDTIMEO_NEW` (asm-generic/socket.h): a 64-bit `timeval` on every
/// architecture.
const SO_RCVTIMEO_NEW: i32 = 66;
const SO_SNDTIMEO_NEW: i32 = 67;

/// The wait bound of a blocking call waiting for `events` (POLLOUT: the send timeout, else
/// the receive one) as a deadline on [`sys::now_ns`]'s clock, `None` for none. A socket
/// only this process holds has the timeouts it set ([`Sock::timeout_ns`]); one that came
/// across an `exec` or a `fork` asks the library socket when the call first has to wait, so
/// a timeout another process set counts too. The kernel reports "no timeout" and "no wait
/// at all" (a negative time set) both as zero: the second is then known only when this
/// process set it.
fn deadline(fd: i32, sock: &Sock, events: i16) -> Option<i64> {
    let mine = sock.timeout_ns(events);
    let ns = if sock.private() {
        mine
    } else {
        let name = if events & libc::POLLOUT != 0 {
            SO_SNDTIMEO_NEW
        } else {
            SO_RCVTIMEO_NEW
        };
        let mut tv = [0u8; 16];
        match get_option(fd, sock, libc::SOL_SOCKET, name, &mut tv) {
            Ok(16) => {
                let s = i64::from_ne_bytes(tv[..8].try_into().unwrap_or_default());
                let us = i64::from_ne_bytes(tv[8..].try_into().unwrap_or_default());
                match s
                    .saturating_mul(1_000_000_000)
                    .saturating_add(us.saturating_mul(1000))
                {
                    0 if mine == 0 => 0,
                    0 => table::FOREVER,
                    ns => ns,
                }
            }
            // The agent is gone or the answer is odd: the wait itself will see it.
            _ => mine,
        }
    };
    (ns != table::FOREVER).then(|| sys::now_ns().saturating_add(ns))
}

/// An interface ioctl (`SIOCGIFINDEX`, `SIOCGIFFLAGS`, ...) on the library socket: the
/// program's `struct ifreq` goes over and comes back as the library kernel left it, so the
/// program sees the library's interfaces, as its sockets do.
fn ioctl_ifreq(fd: i32, sock: &Sock, req: u64, arg: i64) -> i64 {
    let mut ifreq = [0u8; IFREQ_LEN];
    let user = UserPtr(arg as usize);
    if let Err(e) = user.read(&mut ifreq) {
        return e;
    }
    let back = ifreq;
    let parts_in = [(back.as_ptr() as usize, IFREQ_LEN)];
    let parts_out = [(ifreq.as_mut_ptr() as usize, IFREQ_LEN)];
    let req = Request::new(Op::IoctlIfreq, [req as i64, 0, 0, 0, 0, 0]);
    match call(fd, sock, req, &parts_in, &parts_out, false) {
        Ok(ans) if ans.reply.ret < 0 => ans.reply.ret,
        Ok(ans) if ans.payload != IFREQ_LEN => neg(libc::EPROTO),
        Ok(ans) => match user.write(&ifreq) {
            Ok(()) => ans.reply.ret,
            Err(e) => e,
        },
        Err(e) => e,
    }
}

/// `SIOCGIFCONF` (`struct ifconf`: `int ifc_len`, padding, `char *ifc_buf` at 8): the
/// library's interfaces with IPv4 addresses, at most [`MAX_PAYLOAD`] bytes of them; a null
/// `ifc_buf` asks for the size, as in Linux.
fn ioctl_ifconf(fd: i32, sock: &Sock, arg: i64) -> i64 {
    let conf = UserPtr(arg as usize);
    let mut head = [0u8; 16];
    if let Err(e) = conf.read(&mut head) {
        return e;
    }
    let len = i32::from_ne_bytes([head[0], head[1], head[2], head[3]]);
    let buf = u64::from_ne_bytes(head[8..16].try_into().unwrap_or_default()) as usize;
    let room = if buf == 0 {
        0
    } else {
        usize::try_from(len).unwrap_or(0).min(MAX_PAYLOAD)
    };
    with_stage(|stage| {
        let parts = [(stage.as_mut_ptr() as usize, room)];
        let req = Request::new(Op::IoctlIfconf, [room as i64, 0, 0, 0, 0, 0]);
        let ans = match call(fd, sock, req, &[], &parts, false) {
            Ok(a) if a.reply.ret < 0 => return a.reply.ret,
            Ok(a) => a,
            Err(e) => return e,
        };
        let used = ans.payload.min(room);
        if used > 0 {
            if let Err(e) = UserPtr(buf).write(&stage[..used]) {
                return e;
            }
        }
        let len = i32::try_from(ans.reply.aux[0]).unwrap_or(0);
        match UserPtr(arg as usize).write(&len.to_ne_bytes()) {
            Ok(()) => ans.reply.ret,
            Err(e) => e,
        }
    })
}

/// Keeps a `SO_RCVTIMEO`/`SO_SNDTIMEO` the library kernel took, for the shim's own waits
/// (the library's sockets never block). A `timeval` as `sock_set_timeout` reads it: zero is
/// for ever, a negative second count is no wait at all.
fn note_timeout(sock: &Sock, level: i64, name: i64, value: &[u8]) {
    if level != i64::from(libc::SOL_SOCKET) {
        return;
    }
    let slot = match name {
        n if n == i64::from(libc::SO_RCVTIMEO) || n == i64::from(SO_RCVTIMEO_NEW) => {
            &sock.rcv_timeout_ns
        }
        n if n == i64::from(libc::SO_SNDTIMEO) || n == i64::from(SO_SNDTIMEO_NEW) => {
            &sock.snd_timeout_ns
        }
        _ => return,
    };
    let (Some(s), Some(us)) = (value.get(..8), value.get(8..16)) else {
        return;
    };
    let s = i64::from_ne_bytes(s.try_into().unwrap_or_default());
    let us = i64::from_ne_bytes(us.try_into().unwrap_or_default());
    let ns = match (s, us) {
        (s, _) if s < 0 => 0,
        (0, 0) => table::FOREVER,
        (s, us) => s
            .saturating_mul(1_000_000_000)
            .saturating_add(us.saturating_mul(1000)),
    };
    slot.store(ns, std::sync::atomic::Ordering::Relaxed);
}

fn set_option(fd: i32, sock: &Sock, args: [i64; 3], value: &[u8]) -> i64 {
    let parts = [(value.as_ptr() as usize, value.len())];
    let req = Request::new(Op::SetOption, [args[0], args[1], args[2], 0, 0, 0]);
    match call(fd, sock, req, &parts, &[], false) {
        Ok(ans) => ans.reply.ret,
        Err(e) => e,
    }
}

/// `setsockopt(SOL_TLS, TLS_TX | TLS_RX, crypto_info, optlen)`: the kernel TLS keys.
/// Reads from the program only what `do_tls_setsockopt_conf` reads: the 4-byte
/// `tls_crypto_info` header, and the rest only when `optlen` is the size of the struct of
/// the cipher it names. A value of any other size travels as its header plus the caller's
/// `optlen`, so the library kernel refuses it with Linux's own errno and order of checks
/// (ENOPROTOOPT without the `tls` ULP, EBUSY when keys are set, else EINVAL). One
/// difference: an unreadable value is EFAULT at once, where Linux checks the ULP and EBUSY
/// first.
fn set_tls_keys(fd: i32, sock: &Sock, level: i64, name: i64, ptr: i64, len: usize) -> i64 {
    const HEADER: usize = 4;
    let mut val = [0u8; 64];
    let user = UserPtr(ptr as usize);
    // A null value or one shorter than the header: the kernel refuses it unread.
    if ptr == 0 || len < HEADER {
        return set_option(fd, sock, [level, name, len as i64], &[]);
    }
    if let Err(e) = user.read(&mut val[..HEADER]) {
        return e;
    }
    let whole = tls_crypto_info_len([val[0], val[1], val[2], val[3]]);
    match whole {
        Some(n) if n == len && n <= val.len() => {
            if let Err(e) = user.add(HEADER).read(&mut val[HEADER..n]) {
                return e;
            }
            let r = set_option(fd, sock, [level, name, 0], &val[..n]);
            // The keys are secrets: leave no copy on the stack.
            val.fill(0);
            r
        }
        _ => set_option(fd, sock, [level, name, len as i64], &val[..HEADER]),
    }
}

fn get_option(fd: i32, sock: &Sock, level: i32, name: i32, out: &mut [u8]) -> Result<usize, i64> {
    let parts = [(out.as_mut_ptr() as usize, out.len())];
    let req = Request::new(
        Op::GetOption,
        [i64::from(level), i64::from(name), out.len() as i64, 0, 0, 0],
    );
    let ans = call(fd, sock, req, &[], &parts, false)?;
    if ans.reply.ret < 0 {
        return Err(ans.reply.ret);
    }
    Ok(ans.payload.min(out.len()))
}

fn accept(fd: i32, sock: &Sock, addr: i64, lenp: i64, flags: i64) -> i64 {
    if flags & !i64::from(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) != 0 {
        return EINVAL;
    }
    let cloexec = flags & i64::from(libc::SOCK_CLOEXEC) != 0;
    let mut peer = [0u8; ADDR_MAX];
    // The call's SO_RCVTIMEO/SO_SNDTIMEO runs from its first wait, over all of them.
    let mut deadline = None;
    loop {
        let parts = [(peer.as_mut_ptr() as usize, ADDR_MAX)];
        let ans = match call(
            fd,
            sock,
            Request::new(Op::Accept, [0; 6]),
            &[],
            &parts,
            cloexec,
        ) {
            Ok(a) => a,
            Err(e) => return e,
        };
        let r = ans.reply.ret;
        if r == EAGAIN && !nonblocking(fd) {
            let d = *deadline.get_or_insert_with(|| self::deadline(fd, sock, libc::POLLIN));
            if let Err(e) = wait(fd, sock, libc::POLLIN, d, true) {
                return e;
            }
            continue;
        }
        if r < 0 {
            return r;
        }
        let Some(new) = ans.fd else {
            return neg(libc::EPROTO);
        };
        let new = i64::from(new);
        if new as usize >= table::MAX_FDS {
            host(libc::SYS_close, [new, 0, 0, 0, 0, 0]);
            return neg(libc::EMFILE);
        }
        if flags & i64::from(libc::SOCK_NONBLOCK) != 0 {
            set_nonblocking(new);
        }
        if let Err(e) = write_addr(addr, lenp, &peer[..ans.payload.min(ADDR_MAX)]) {
            host(libc::SYS_close, [new, 0, 0, 0, 0, 0]);
            return e;
        }
        table::insert(new, Sock::new(sock.domain, sock.kind));
        return new;
    }
}

/// What a receive gave: the result (bytes or `-errno`), `msg_flags`, and how many bytes of
/// control messages the kernel wrote into the caller's control slot.
struct Received {
    ret: i64,
    flags: i64,
    control: usize,
}

impl Received {
    fn err(ret: i64) -> Received {
        Received {
            ret,
            flags: 0,
            control: 0,
        }
    }
}

/// recvmsg into the program's buffer, the source address to `name` (`(addr, lenp)`, null
/// addr: not asked) and control messages into `control` (at most [`MAX_CONTROL`] bytes;
/// empty: none asked).
fn recv(
    fd: i32,
    sock: &Sock,
    buf: i64,
    len: i64,
    flags: i64,
    name: (i64, i64),
    control: &mut [u8],
) -> Received {
    let (addr, lenp) = name;
    let Ok(len) = usize::try_from(len) else {
        return Received::err(EINVAL);
    };
    if buf == 0 && len > 0 {
        return Received::err(sys::EFAULT);
    }
    let control_room = control.len().min(MAX_CONTROL);
    let block = flags & i64::from(libc::MSG_DONTWAIT) == 0 && !nonblocking(fd);
    // With control messages each call is one kernel recvmsg (a TLS record type per call).
    let waitall =
        flags & i64::from(libc::MSG_WAITALL) != 0 && sock.stream() && block && control_room == 0;
    let want_addr = addr != 0;
    let mut done = 0usize;
    // The call's SO_RCVTIMEO/SO_SNDTIMEO runs from its first wait, over all of them.
    let mut deadline = None;
    loop {
        let room = (len - done).min(MAX_RECV - control_room);
        let mut slot = [0u8; ADDR_SLOT];
        let mut parts = [(0usize, 0usize); 3];
        let mut n = 0;
        if want_addr {
            parts[n] = (slot.as_mut_ptr() as usize, ADDR_SLOT);
            n += 1;
        }
        if control_room > 0 {
            parts[n] = (control.as_mut_ptr() as usize, control_room);
            n += 1;
        }
        parts[n] = (buf as usize + done, room);
        n += 1;
        let req = Request::new(
            Op::Recv,
            [
                room as i64,
                flags & !i64::from(libc::MSG_WAITALL),
                i64::from(want_addr),
                control_room as i64,
                0,
                0,
            ],
        );
        let ans = match call(fd, sock, req, &[], &parts[..n], false) {
            Ok(a) => a,
            Err(e) => return Received::err(if done > 0 { done as i64 } else { e }),
        };
        let r = ans.reply.ret;
        if r == EAGAIN && block {
            let d = *deadline.get_or_insert_with(|| self::deadline(fd, sock, libc::POLLIN));
            if let Err(e) = wait(fd, sock, libc::POLLIN, d, done == 0) {
                return Received::err(if done > 0 { done as i64 } else { e });
            }
            continue;
        }
        if r < 0 {
            return Received::err(if done > 0 { done as i64 } else { r });
        }
        let (alen, clen) = (ans.reply.aux[0] & 0xffff_ffff, ans.reply.aux[0] >> 32);
        if want_addr {
            let alen = alen.clamp(0, ADDR_SLOT as i64) as usize;
            if let Err(e) = write_addr(addr, lenp, &slot[..alen]) {
                return Received::err(e);
            }
        }
        let got = Received {
            ret: done as i64 + r,
            flags: ans.reply.aux[1],
            control: clen.clamp(0, control_room as i64) as usize,
        };
        if !waitall || r == 0 {
            return got;
        }
        done += (r as usize).min(room);
        if done >= len {
            return Received {
                ret: done as i64,
                ..got
            };
        }
    }
}

/// sendto from the program's buffer.
fn send(fd: i32, sock: &Sock, buf: i64, len: i64, flags: i64, addr: i64, alen: i64) -> i64 {
    let Ok(len) = usize::try_from(len) else {
        return EINVAL;
    };
    if buf == 0 && len > 0 {
        return sys::EFAULT;
    }
    let mut to = [0u8; ADDR_MAX];
    let tolen = match read_dest(addr, alen, &mut to) {
        Ok(l) => l,
        Err(e) => return e,
    };
    send_from(
        fd,
        sock,
        (buf as usize, len),
        flags,
        &to[..tolen],
        &[],
        true,
    )
}

/// Sends `data` (`(address, length)` in the program or a staging buffer), with `control`
/// (checked control messages) on every request, as one `sendmsg` of the kernel carries them
/// for all its bytes (a TLS record type, for one). `restartable`: nothing of the program's
/// call has moved yet (see [`wait`]).
fn send_from(
    fd: i32,
    sock: &Sock,
    data: (usize, usize),
    flags: i64,
    to: &[u8],
    control: &[u8],
    restartable: bool,
) -> i64 {
    let (buf, len) = data;
    let room = MAX_PAYLOAD - to.len() - control.len();
    if !sock.stream() && len > room {
        return neg(libc::EMSGSIZE);
    }
    let block = flags & i64::from(libc::MSG_DONTWAIT) == 0 && !nonblocking(fd);
    let mut done = 0usize;
    // The call's SO_RCVTIMEO/SO_SNDTIMEO runs from its first wait, over all of them.
    let mut deadline = None;
    loop {
        let chunk = (len - done).min(room);
        let parts = [
            (to.as_ptr() as usize, to.len()),
            (control.as_ptr() as usize, control.len()),
            (buf + done, chunk),
        ];
        let req = Request::new(
            Op::Send,
            [flags, to.len() as i64, control.len() as i64, 0, 0, 0],
        );
        let r = match call(fd, sock, req, &parts, &[], false) {
            Ok(a) => a.reply.ret,
            Err(e) => e,
        };
        if r == EAGAIN && block {
            let d = *deadline.get_or_insert_with(|| self::deadline(fd, sock, libc::POLLOUT));
            if let Err(e) = wait(fd, sock, libc::POLLOUT, d, restartable && done == 0) {
                return if done > 0 { done as i64 } else { e };
            }
            continue;
        }
        if r < 0 {
            if done > 0 {
                return done as i64;
            }
            if r == neg(libc::EPIPE) && flags & i64::from(libc::MSG_NOSIGNAL) == 0 {
                sys::raise_sigpipe();
            }
            return r;
        }
        done += r as usize;
        // Datagrams are one message; a stream's short write returns unless the caller blocks.
        if !sock.stream() || done >= len || (!block && (r as usize) < chunk) {
            return done as i64;
        }
    }
}

/// Reads an iovec array: (base, len) pairs.
fn read_iovs(iov: i64, cnt: i64, out: &mut [(usize, usize); 64]) -> Result<usize, i64> {
    if !(0..=1024).contains(&cnt) {
        return Err(EINVAL);
    }
    let n = (cnt as usize).min(64);
    for (i, o) in out.iter_mut().enumerate().take(n) {
        let p = UserPtr(iov as usize).add(i * 16);
        *o = (p.read_u64()? as usize, p.add(8).read_u64()? as usize);
    }
    Ok(n)
}

fn readv(fd: i32, sock: &Sock, iov: i64, cnt: i64, flags: i64, name: Option<(i64, i64)>) -> i64 {
    recv_iov(fd, sock, iov, cnt, flags, name, &mut []).ret
}

fn recv_iov(
    fd: i32,
    sock: &Sock,
    iov: i64,
    cnt: i64,
    flags: i64,
    name: Option<(i64, i64)>,
    control: &mut [u8],
) -> Received {
    let mut v = [(0usize, 0usize); 64];
    let n = match read_iovs(iov, cnt, &mut v) {
        Ok(n) => n,
        Err(e) => return Received::err(e),
    };
    let total: usize = v[..n].iter().map(|x| x.1).sum::<usize>().min(MAX_RECV);
    with_stage(|stage| {
        let got = recv(
            fd,
            sock,
            stage.as_mut_ptr() as i64,
            total as i64,
            flags,
            name.unwrap_or((0, 0)),
            control,
        );
        let r = got.ret;
        if r <= 0 {
            return got;
        }
        let mut left = (r as usize).min(total);
        let mut at = 0;
        for &(base, l) in &v[..n] {
            if left == 0 {
                break;
            }
            let k = l.min(left);
            if let Err(e) = UserPtr(base).write(&stage[at..at + k]) {
                return Received::err(e);
            }
            at += k;
            left -= k;
        }
        got
    })
}

fn writev(
    fd: i32,
    sock: &Sock,
    iov: i64,
    cnt: i64,
    flags: i64,
    dest: (i64, i64),
    control: &[u8],
) -> i64 {
    let (addr, alen) = dest;
    let mut v = [(0usize, 0usize); 64];
    let n = match read_iovs(iov, cnt, &mut v) {
        Ok(n) => n,
        Err(e) => return e,
    };
    let mut to = [0u8; ADDR_MAX];
    let tolen = match read_dest(addr, alen, &mut to) {
        Ok(l) => l,
        Err(e) => return e,
    };
    with_stage(|stage| {
        let cap = MAX_PAYLOAD - tolen - control.len();
        let mut at = 0;
        for &(base, l) in &v[..n] {
            let k = l.min(cap - at);
            if let Err(e) = UserPtr(base).read(&mut stage[at..at + k]) {
                return e;
            }
            at += k;
            if at == cap {
                break;
            }
        }
        send_from(
            fd,
            sock,
            (stage.as_ptr() as usize, at),
            flags,
            &to[..tolen],
            control,
            true,
        )
    })
}

// struct msghdr (x86-64 / arm64 LP64): name 0, namelen 8, iov 16, iovlen 24, control 32,
// controllen 40, flags 48.
fn recvmsg(fd: i32, sock: &Sock, msg: i64, flags: i64) -> i64 {
    let m = UserPtr(msg as usize);
    let (Ok(name), Ok(iov), Ok(iovlen)) =
        (m.read_u64(), m.add(16).read_u64(), m.add(24).read_u64())
    else {
        return sys::EFAULT;
    };
    let (Ok(cptr), Ok(croom)) = (m.add(32).read_u64(), m.add(40).read_u64()) else {
        return sys::EFAULT;
    };
    let name_arg = (name != 0).then_some((name as i64, msg + 8));
    // Room beyond MAX_CONTROL is not offered: the kernel then truncates (MSG_CTRUNC) what
    // would not fit, as it does for a short buffer.
    let room = if cptr == 0 {
        0
    } else {
        usize::try_from(croom)
            .unwrap_or(usize::MAX)
            .min(MAX_CONTROL)
    };
    let mut control = [0u8; MAX_CONTROL];
    let got = recv_iov(
        fd,
        sock,
        iov as i64,
        iovlen as i64,
        flags,
        name_arg,
        &mut control[..room],
    );
    if got.ret >= 0 {
        if got.control > 0 {
            if let Err(e) = UserPtr(cptr as usize).write(&control[..got.control]) {
                return e;
            }
        }
        if m.add(40).write_u64(got.control as u64).is_err()
            || m.add(48).write_u32(got.flags as u32).is_err()
        {
            return sys::EFAULT;
        }
    }
    got.ret
}

fn sendmsg(fd: i32, sock: &Sock, msg: i64, flags: i64) -> i64 {
    let m = UserPtr(msg as usize);
    let (Ok(name), Ok(namelen), Ok(iov), Ok(iovlen), Ok(clen)) = (
        m.read_u64(),
        m.add(8).read_u32(),
        m.add(16).read_u64(),
        m.add(24).read_u64(),
        m.add(40).read_u64(),
    ) else {
        return sys::EFAULT;
    };
    let mut control = [0u8; MAX_CONTROL];
    let clen = match read_control(m, clen, &mut control) {
        Ok(n) => n,
        Err(e) => return e,
    };
    writev(
        fd,
        sock,
        iov as i64,
        iovlen as i64,
        flags,
        (name as i64, i64::from(namelen)),
        &control[..clen],
    )
}

/// `struct mmsghdr` on LP64: a `struct msghdr` (56 bytes), `unsigned int msg_len`, padding.
const MMSGHDR_LEN: usize = 64;
const MMSG_LEN_OFFSET: usize = 56;
/// The kernel's bound on a `sendmmsg`/`recvmmsg` vector (`UIO_MAXIOV`): longer ones are cut.
const MMSG_MAX: u32 = 1024;

/// Records `len` in the `msg_len` of `hdr`.
fn set_msg_len(hdr: UserPtr, len: i64) -> Result<(), i64> {
    hdr.add(MMSG_LEN_OFFSET)
        .write(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes())
}

/// `sendmmsg` as the kernel's `__sys_sendmmsg`: one `sendmsg` per entry, each entry's
/// `msg_len` set; the first failure ends the batch and is returned only if nothing was sent
/// (otherwise the count is, and the error shows on the next call, as in Linux).
fn sendmmsg(fd: i32, sock: &Sock, vec: i64, vlen: i64, flags: i64) -> i64 {
    let n = (vlen as u32).min(MMSG_MAX) as usize;
    let mut sent = 0;
    while sent < n {
        let hdr = UserPtr(vec as usize).add(sent * MMSGHDR_LEN);
        let r = sendmsg(fd, sock, hdr.0 as i64, flags);
        let r = if r >= 0 {
            set_msg_len(hdr, r).map(|()| r)
        } else {
            Err(r)
        };
        if let Err(e) = r {
            return if sent == 0 { e } else { sent as i64 };
        }
        sent += 1;
    }
    sent as i64
}

/// `recvmmsg` as the kernel's `do_recvmmsg`: one `recvmsg` per entry until the vector is
/// full or a receive fails (EAGAIN after the first datagram is the usual end); with
/// `MSG_WAITFORONE` every receive after the first does not wait. A `timeout` is checked
/// after each datagram, not while one is awaited (the kernel's own, documented, behaviour),
/// and the time left is written back when a datagram was received.
fn recvmmsg(fd: i32, sock: &Sock, vec: i64, vlen: i64, flags: i64, timeout: i64) -> i64 {
    let deadline = if timeout == 0 {
        None
    } else {
        match read_timespec(timeout) {
            Ok(Some(t)) => Some(
                std::time::Instant::now()
                    + std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32),
            ),
            Ok(None) => None,
            Err(e) => return e,
        }
    };
    let n = (vlen as u32).min(MMSG_MAX) as usize;
    let wait_for_one = flags & i64::from(libc::MSG_WAITFORONE) != 0;
    let mut flags = flags & !i64::from(libc::MSG_WAITFORONE);
    let mut got = 0;
    let mut left = None;
    while got < n {
        let hdr = UserPtr(vec as usize).add(got * MMSGHDR_LEN);
        let r = recvmsg(fd, sock, hdr.0 as i64, flags);
        let r = if r >= 0 {
            set_msg_len(hdr, r).map(|()| r)
        } else {
            Err(r)
        };
        if let Err(e) = r {
            if got == 0 {
                return e;
            }
            break;
        }
        got += 1;
        if wait_for_one {
            flags |= i64::from(libc::MSG_DONTWAIT);
        }
        if let Some(d) = deadline {
            let now = std::time::Instant::now();
            let rest = d.saturating_duration_since(now);
            left = Some(rest);
            if rest.is_zero() {
                break;
            }
        }
    }
    if let Some(rest) = left {
        let mut ts = [0u8; 16];
        ts[..8].copy_from_slice(&(rest.as_secs() as i64).to_ne_bytes());
        ts[8..].copy_from_slice(&i64::from(rest.subsec_nanos()).to_ne_bytes());
        if let Err(e) = UserPtr(timeout as usize).write(&ts) {
            return e;
        }
    }
    got as i64
}

/// Copies a `sendmsg` caller's control messages (`msg_control`, `clen` bytes) into `out`
/// and checks them as the kernel does: more than [`MAX_CONTROL`] bytes is `ENOBUFS` (the
/// kernel's answer when it cannot hold them), a malformed `cmsg_len` is `EINVAL`.
fn read_control(m: UserPtr, clen: u64, out: &mut [u8; MAX_CONTROL]) -> Result<usize, i64> {
    if clen == 0 {
        return Ok(0);
    }
    let clen = usize::try_from(clen).map_err(|_| neg(libc::ENOBUFS))?;
    if clen > MAX_CONTROL {
        return Err(neg(libc::ENOBUFS));
    }
    let ptr = m.add(32).read_u64()?;
    UserPtr(ptr as usize).read(&mut out[..clen])?;
    check_control(&out[..clen]).map_err(|_| EINVAL)?;
    Ok(clen)
}

/// sendfile(out=offloaded socket, in=host fd): the data crosses the channel.
fn sendfile(fd: i32, sock: &Sock, in_fd: i64, offp: i64, count: i64) -> i64 {
    if table::get(in_fd).is_some() {
        return EINVAL;
    }
    let Ok(count) = usize::try_from(count) else {
        return EINVAL;
    };
    let off = UserPtr(offp as usize);
    let mut pos = if offp != 0 {
        match off.read_u64() {
            Ok(p) => Some(p as i64),
            Err(e) => return e,
        }
    } else {
        None
    };
    let mut done = 0usize;
    let r = with_stage(|stage| {
        while done < count {
            let want = (count - done).min(MAX_PAYLOAD);
            let got = match pos {
                Some(p) => host(
                    libc::SYS_pread64,
                    [in_fd, stage.as_mut_ptr() as i64, want as i64, p, 0, 0],
                ),
                None => host(
                    libc::SYS_read,
                    [in_fd, stage.as_mut_ptr() as i64, want as i64, 0, 0, 0],
                ),
            };
            if got <= 0 {
                return if done > 0 { 0 } else { got };
            }
            let data = (stage.as_ptr() as usize, got as usize);
            let sent = send_from(fd, sock, data, 0, &[], &[], done == 0);
            if sent < 0 {
                if pos.is_none() {
                    host(
                        libc::SYS_lseek,
                        [in_fd, -got, i64::from(libc::SEEK_CUR), 0, 0, 0],
                    );
                }
                return if done > 0 { 0 } else { sent };
            }
            let sent = sent as usize;
            if let Some(p) = pos.as_mut() {
                *p += sent as i64;
            } else if sent < got as usize {
                host(
                    libc::SYS_lseek,
                    [in_fd, sent as i64 - got, i64::from(libc::SEEK_CUR), 0, 0, 0],
                );
            }
            done += sent;
            if sent < got as usize {
                break;
            }
        }
        0
    });
    if let Some(p) = pos {
        let _ = off.write_u64(p as u64);
    }
    if r < 0 { r } else { done as i64 }
}

#[cfg(target_arch = "x86_64")]
fn timeout_ms(ms: i64) -> Option<libc::timespec> {
    let ms = ms as i32;
    (ms >= 0).then(|| libc::timespec {
        tv_sec: i64::from(ms / 1000),
        tv_nsec: i64::from(ms % 1000) * 1_000_000,
    })
}

fn read_timespec(p: i64) -> Result<Option<libc::timespec>, i64> {
    if p == 0 {
        return Ok(None);
    }
    let u = UserPtr(p as usize);
    let s = u.read_u64()? as i64;
    let ns = u.add(8).read_u64()? as i64;
    if s < 0 || !(0..1_000_000_000).contains(&ns) {
        return Err(EINVAL);
    }
    Ok(Some(libc::timespec {
        tv_sec: s,
        tv_nsec: ns,
    }))
}

/// `select`'s timeval as the kernel reads it (`kern_select`): negative parts are EINVAL,
/// microseconds past a second carry into the seconds.
pub(crate) fn read_timeval(p: i64) -> Result<Option<libc::timespec>, i64> {
    if p == 0 {
        return Ok(None);
    }
    let u = UserPtr(p as usize);
    let s = u.read_u64()? as i64;
    let us = u.add(8).read_u64()? as i64;
    if s < 0 || us < 0 {
        return Err(EINVAL);
    }
    Ok(Some(libc::timespec {
        tv_sec: s.saturating_add(us / 1_000_000),
        tv_nsec: (us % 1_000_000) * 1000,
    }))
}

fn poll_call(fds: i64, nfds: i64, timeout: Option<libc::timespec>, sigmask: i64) -> Option<i64> {
    let n = usize::try_from(nfds).ok()?;
    if n > 4096 {
        return None;
    }
    let mut set = vec![
        libc::pollfd {
            fd: -1,
            events: 0,
            revents: 0
        };
        n
    ];
    let u = UserPtr(fds as usize);
    for (i, p) in set.iter_mut().enumerate() {
        let mut b = [0u8; 8];
        if u.add(i * 8).read(&mut b).is_err() {
            return Some(sys::EFAULT);
        }
        p.fd = i32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
        p.events = i16::from_ne_bytes([b[4], b[5]]);
    }
    if !set.iter().any(|p| table::get(i64::from(p.fd)).is_some()) {
        return None;
    }
    let r = poll_set(&mut set, timeout, sigmask);
    if r >= 0 {
        for (i, p) in set.iter().enumerate() {
            let _ = u.add(i * 8 + 6).write(&p.revents.to_ne_bytes());
        }
    }
    Some(r)
}

/// poll over a mix of host and offloaded fds (see the crate docs).
fn poll_set(set: &mut [libc::pollfd], timeout: Option<libc::timespec>, sigmask: i64) -> i64 {
    let deadline = timeout.map(|t| sys::now_ns() + t.tv_sec * 1_000_000_000 + t.tv_nsec);
    let socks: Vec<Option<Arc<Sock>>> = set.iter().map(|p| table::get(i64::from(p.fd))).collect();
    let mut revents = vec![0i16; set.len()];
    let mut ready = false;
    let want = |p: &libc::pollfd| p.events | libc::POLLERR | libc::POLLHUP;
    for (i, p) in set.iter().enumerate() {
        if let Some(s) = &socks[i] {
            let r = query(p.fd, s, 0, p.events & WAITABLE);
            revents[i] = if r < 0 {
                libc::POLLERR | libc::POLLHUP
            } else {
                r as i16 & want(p)
            };
            ready |= revents[i] != 0;
        }
    }
    let mut host_set: Vec<libc::pollfd> = set
        .iter()
        .zip(&socks)
        .map(|(p, s)| libc::pollfd {
            fd: p.fd,
            events: if s.is_some() { libc::POLLIN } else { p.events },
            revents: 0,
        })
        .collect();
    loop {
        let t = if ready {
            Some(libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            })
        } else {
            deadline.map(|d| {
                let left = (d - sys::now_ns()).max(0);
                libc::timespec {
                    tv_sec: left / 1_000_000_000,
                    tv_nsec: left % 1_000_000_000,
                }
            })
        };
        let r = sys::ppoll(&mut host_set, t, sigmask);
        if r < 0 {
            return r;
        }
        let mut count = 0;
        for (i, h) in host_set.iter().enumerate() {
            match &socks[i] {
                None => revents[i] = h.revents,
                Some(s) if h.revents != 0 => {
                    let q = query(set[i].fd, s, 0, set[i].events & WAITABLE);
                    revents[i] = if q < 0 {
                        libc::POLLERR | libc::POLLHUP
                    } else {
                        q as i16 & want(&set[i])
                    };
                }
                Some(_) => {}
            }
            count += i64::from(revents[i] != 0);
        }
        let expired = deadline.is_some_and(|d| sys::now_ns() >= d);
        if count > 0 || expired || ready {
            for (p, r) in set.iter_mut().zip(&revents) {
                p.revents = *r;
            }
            return count;
        }
    }
}

fn select_call(a: [i64; 6], pselect: bool) -> Option<i64> {
    let nfds = usize::try_from(a[0]).ok()?.min(libc::FD_SETSIZE);
    let sets = [a[1], a[2], a[3]];
    let bit = |set: i64, fd: usize| -> bool {
        set != 0
            && UserPtr(set as usize + fd / 64 * 8)
                .read_u64()
                .is_ok_and(|w| w & (1u64 << (fd % 64)) != 0)
    };
    let mut set = Vec::new();
    let mut any = false;
    for fd in 0..nfds {
        let (r, w, e) = (bit(sets[0], fd), bit(sets[1], fd), bit(sets[2], fd));
        if r || w || e {
            let mut ev = 0;
            if r {
                ev |= libc::POLLIN;
            }
            if w {
                ev |= libc::POLLOUT;
            }
            if e {
                ev |= libc::POLLPRI;
            }
            any |= table::get(fd as i64).is_some();
            set.push(libc::pollfd {
                fd: fd as i32,
                events: ev,
                revents: 0,
            });
        }
    }
    if !any {
        return None;
    }
    let timeout = if pselect {
        read_timespec(a[4])
    } else {
        read_timeval(a[4])
    };
    let timeout = match timeout {
        Ok(t) => t,
        Err(e) => return Some(e),
    };
    let sigmask = if pselect && a[5] != 0 {
        UserPtr(a[5] as usize).read_u64().unwrap_or(0) as i64
    } else {
        0
    };
    let start = sys::now_ns();
    let r = poll_set(&mut set, timeout, sigmask);
    if r < 0 {
        return Some(r);
    }
    if set.iter().any(|p| p.revents & libc::POLLNVAL != 0) {
        return Some(neg(libc::EBADF));
    }
    // Rewrite the sets: only the ready bits stay.
    for s in sets.iter().filter(|&&s| s != 0) {
        for w in 0..nfds.div_ceil(64) {
            let _ = UserPtr(*s as usize + w * 8).write_u64(0);
        }
    }
    let mut count = 0;
    let mut mark = |s: i64, fd: i32| {
        if s != 0 {
            let u = UserPtr(s as usize + fd as usize / 64 * 8);
            let w = u.read_u64().unwrap_or(0) | (1u64 << (fd as usize % 64));
            let _ = u.write_u64(w);
            count += 1;
        }
    };
    for p in &set {
        let rv = p.revents;
        if p.events & libc::POLLIN != 0 && rv & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
        {
            mark(sets[0], p.fd);
        }
        if p.events & libc::POLLOUT != 0 && rv & (libc::POLLOUT | libc::POLLERR) != 0 {
            mark(sets[1], p.fd);
        }
        if p.events & libc::POLLPRI != 0 && rv & libc::POLLPRI != 0 {
            mark(sets[2], p.fd);
        }
    }
    // Linux's select and pselect6 write back the time left (a timeval, a timespec).
    if let (Some(t), true) = (timeout, a[4] != 0) {
        let left = (t.tv_sec * 1_000_000_000 + t.tv_nsec - (sys::now_ns() - start)).max(0);
        let sub = if pselect {
            left % 1_000_000_000
        } else {
            left % 1_000_000_000 / 1000
        };
        let u = UserPtr(a[4] as usize);
        let _ = u.write_u64((left / 1_000_000_000) as u64);
        let _ = u.add(8).write_u64(sub as u64);
    }
    Some(count)
}

/// `struct epoll_event`: packed on x86-64 (12 bytes, data at 4), natural on arm64 (16, 8).
const EPOLL_EVENT_SIZE: usize = std::mem::size_of::<libc::epoll_event>();
const EPOLL_DATA_AT: usize = std::mem::offset_of!(libc::epoll_event, u64);

/// Tag in the host registration's data: marks an offloaded fd's placeholder.
const EPOLL_TAG: u64 = 0x6b6e_6f66 << 32;
const EPOLL_HOST_FLAGS: u32 =
    (libc::EPOLLET | libc::EPOLLONESHOT | libc::EPOLLEXCLUSIVE | libc::EPOLLWAKEUP) as u32;

fn epoll_ctl(a: [i64; 6]) -> Option<i64> {
    let (epfd, op, fd, evp) = (a[0] as i32, a[1] as i32, a[2] as i32, a[3]);
    let sock = table::get(i64::from(fd))?;
    if op == libc::EPOLL_CTL_DEL {
        let r = host(libc::SYS_epoll_ctl, a);
        if r == 0 {
            table::epoll_del(epfd, fd);
        }
        return Some(r);
    }
    let u = UserPtr(evp as usize);
    let (Ok(events), Ok(data)) = (u.read_u32(), u.add(EPOLL_DATA_AT).read_u64()) else {
        return Some(sys::EFAULT);
    };
    let ev = host_epoll_event(
        (libc::EPOLLIN as u32) | (events & EPOLL_HOST_FLAGS),
        EPOLL_TAG | fd as u32 as u64,
    );
    let r = host(
        libc::SYS_epoll_ctl,
        [a[0], a[1], a[2], &ev as *const _ as i64, 0, 0],
    );
    if r < 0 {
        return Some(r);
    }
    table::epoll_set(epfd, fd, EpollReg { events, data });
    let q = query(fd, &sock, events as i16 & WAITABLE, 0);
    Some(if q < 0 { q } else { 0 })
}

/// The event the shim registers with the host for a placeholder.
fn host_epoll_event(events: u32, data: u64) -> libc::epoll_event {
    libc::epoll_event { events, u64: data }
}

fn epoll_wait(epfd: i64, evs: i64, max: i64, timeout: i64, sigmask: i64) -> Option<i64> {
    if !table::epoll_has_offloaded(epfd) {
        return None;
    }
    if max <= 0 {
        return Some(EINVAL);
    }
    let deadline = (timeout as i32 >= 0).then(|| sys::now_ns() + timeout * 1_000_000);
    let out = UserPtr(evs as usize);
    loop {
        let left = deadline.map_or(-1, |d| ((d - sys::now_ns()).max(0) + 999_999) / 1_000_000);
        let n = host(libc::SYS_epoll_pwait, [epfd, evs, max, left, sigmask, 8]);
        if n <= 0 {
            return Some(n);
        }
        let mut kept = 0usize;
        for i in 0..n as usize {
            let e = out.add(i * EPOLL_EVENT_SIZE);
            let (Ok(events), Ok(data)) = (e.read_u32(), e.add(EPOLL_DATA_AT).read_u64()) else {
                return Some(sys::EFAULT);
            };
            let mut result = Some((events, data));
            if data & 0xffff_ffff_0000_0000 == EPOLL_TAG {
                let fd = data as u32 as i32;
                result = None;
                if let (Some(reg), Some(sock)) =
                    (table::epoll_get(epfd as i32, fd), table::get(i64::from(fd)))
                {
                    let q = query(fd, &sock, 0, 0);
                    let wanted =
                        (reg.events & !EPOLL_HOST_FLAGS) | (libc::EPOLLERR | libc::EPOLLHUP) as u32;
                    let got = if q < 0 {
                        (libc::EPOLLERR | libc::EPOLLHUP) as u32
                    } else {
                        q as u32 & 0xffff & wanted
                    };
                    if got != 0 {
                        result = Some((got, reg.data));
                    } else if reg.events & libc::EPOLLONESHOT as u32 != 0 {
                        // The host disarmed it for a spurious wake-up: arm it again.
                        let ev = host_epoll_event(
                            (libc::EPOLLIN as u32) | (reg.events & EPOLL_HOST_FLAGS),
                            data,
                        );
                        host(
                            libc::SYS_epoll_ctl,
                            [
                                epfd,
                                i64::from(libc::EPOLL_CTL_MOD),
                                i64::from(fd),
                                &ev as *const _ as i64,
                                0,
                                0,
                            ],
                        );
                    }
                }
            }
            if let Some((ev, d)) = result {
                let o = out.add(kept * EPOLL_EVENT_SIZE);
                let _ = o.write_u32(ev);
                let _ = o.add(EPOLL_DATA_AT).write_u64(d);
                kept += 1;
            }
        }
        if kept > 0 {
            return Some(kept as i64);
        }
        if deadline.is_some_and(|d| sys::now_ns() >= d) {
            return Some(0);
        }
    }
}

/// What socket placeholder `fd` is: (domain, type).
pub(crate) fn describe(fd: i32, sock: &Sock, req: Request) -> Result<(i32, i32), i64> {
    let ans = call(fd, sock, req, &[], &[], false)?;
    if ans.reply.ret < 0 {
        return Err(ans.reply.ret);
    }
    Ok((ans.reply.ret as i32, ans.reply.aux[0] as i32))
}
