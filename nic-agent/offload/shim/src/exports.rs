//! The libc symbols the shim stands in for (LD_PRELOAD puts them before glibc's), each a call
//! of [`dispatch`] or, when the call is not for an offloaded socket, the same host syscall
//! glibc would make. Also the raw entry for a syscall-rewriting hook, and the constructor
//! that finds offloaded sockets inherited across `exec`.
//!
//! `fcntl` and `ioctl` are variadic in C; on the LP64 System V and AAPCS64 ABIs a variadic
//! caller passes the third argument in the same register as a fixed one, so they are
//! declared with a fixed `unsigned long` third argument.
#![allow(unsafe_code)] // `#[unsafe(no_mangle)]` exports and the raw entry's argument array.
#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_int, c_long, c_ulong, c_void};

use crate::dispatch::dispatch;
use crate::sys::{host, set_errno};

#[inline]
fn ret(r: i64) -> i64 {
    if r < 0 {
        set_errno(-r as i32);
        -1
    } else {
        r
    }
}

#[inline]
fn run(nr: i64, a: [i64; 6]) -> i64 {
    ret(dispatch(nr, a).unwrap_or_else(|| host(nr, a)))
}

/// The raw-syscall entry for a syscall hook: runs `nr` with the six arguments at `args`,
/// offloaded when it is a call on an offloaded socket; returns the kernel convention
/// (`-errno`), never touching `errno`.
///
/// # Safety
/// `args` must point at six readable `long`s.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn knic_offload_syscall(nr: c_long, args: *const c_long) -> c_long {
    // SAFETY: the caller passes six readable longs (the contract above).
    let a = unsafe { std::slice::from_raw_parts(args, 6) };
    let a = [a[0], a[1], a[2], a[3], a[4], a[5]];
    dispatch(nr, a).unwrap_or_else(|| host(nr, a))
}

/// A copy of the program's timespec, `None` for null: the syscalls write the time left
/// into theirs, where the libc functions' is const (glibc copies too).
fn copy_timespec(t: *const c_void) -> Result<Option<[u64; 2]>, i64> {
    let u = crate::sys::UserPtr(t as usize);
    if u.is_null() {
        return Ok(None);
    }
    Ok(Some([u.read_u64()?, u.add(8).read_u64()?]))
}

macro_rules! p {
    ($e:expr) => {
        $e as usize as i64
    };
}

#[unsafe(no_mangle)]
pub extern "C" fn socket(domain: c_int, kind: c_int, protocol: c_int) -> c_int {
    run(
        libc::SYS_socket,
        [domain.into(), kind.into(), protocol.into(), 0, 0, 0],
    ) as c_int
}

#[unsafe(no_mangle)]
pub extern "C" fn bind(fd: c_int, addr: *const c_void, len: u32) -> c_int {
    run(libc::SYS_bind, [fd.into(), p!(addr), len.into(), 0, 0, 0]) as c_int
}

#[unsafe(no_mangle)]
pub extern "C" fn connect(fd: c_int, addr: *const c_void, len: u32) -> c_int {
    run(
        libc::SYS_connect,
        [fd.into(), p!(addr), len.into(), 0, 0, 0],
    ) as c_int
}

#[unsafe(no_mangle)]
pub extern "C" fn listen(fd: c_int, backlog: c_int) -> c_int {
    run(libc::SYS_listen, [fd.into(), backlog.into(), 0, 0, 0, 0]) as c_int
}

#[unsafe(no_mangle)]
pub extern "C" fn accept(fd: c_int, addr: *mut c_void, len: *mut u32) -> c_int {
    run(libc::SYS_accept, [fd.into(), p!(addr), p!(len), 0, 0, 0]) as c_int
}

#[unsafe(no_mangle)]
pub extern "C" fn accept4(fd: c_int, addr: *mut c_void, len: *mut u32, flags: c_int) -> c_int {
    run(
        libc::SYS_accept4,
        [fd.into(), p!(addr), p!(len), flags.into(), 0, 0],
    ) as c_int
}

#[unsafe(no_mangle)]
pub extern "C" fn shutdown(fd: c_int, how: c_int) -> c_int {
    run(libc::SYS_shutdown, [fd.into(), how.into(), 0, 0, 0, 0]) as c_int
}

#[unsafe(no_mangle)]
pub extern "C" fn close(fd: c_int) -> c_int {
    run(libc::SYS_close, [fd.into(), 0, 0, 0, 0, 0]) as c_int
}

#[unsafe(no_mangle)]
pub extern "C" fn close_range(first: u32, last: u32, flags: c_int) -> c_int {
    run(
        libc::SYS_close_range,
        [first.into(), last.into(), flags.into(), 0, 0, 0],
    ) as c_int
}

#[unsafe(no_mangle)]
pub extern "C" fn read(fd: c_int, buf: *mut c_void, n: usize) -> isize {
    run(libc::SYS_read, [fd.into(), p!(buf), n as i64, 0, 0, 0]) as isize
}

#[unsafe(no_mangle)]
pub extern "C" fn __read_chk(fd: c_int, buf: *mut c_void, n: usize, _buflen: usize) -> isize {
    read(fd, buf, n)
}

#[unsafe(no_mangle)]
pub extern "C" fn write(fd: c_int, buf: *const c_void, n: usize) -> isize {
    run(libc::SYS_write, [fd.into(), p!(buf), n as i64, 0, 0, 0]) as isize
}

#[unsafe(no_mangle)]
pub extern "C" fn readv(fd: c_int, iov: *const c_void, cnt: c_int) -> isize {
    run(libc::SYS_readv, [fd.into(), p!(iov), cnt.into(), 0, 0, 0]) as isize
}

#[unsafe(no_mangle)]
pub extern "C" fn writev(fd: c_int, iov: *const c_void, cnt: c_int) -> isize {
    run(libc::SYS_writev, [fd.into(), p!(iov), cnt.into(), 0, 0, 0]) as isize
}

#[unsafe(no_mangle)]
pub extern "C" fn send(fd: c_int, buf: *const c_void, n: usize, flags: c_int) -> isize {
    run(
        libc::SYS_sendto,
        [fd.into(), p!(buf), n as i64, flags.into(), 0, 0],
    ) as isize
}

#[unsafe(no_mangle)]
pub extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    n: usize,
    flags: c_int,
    addr: *const c_void,
    alen: u32,
) -> isize {
    run(
        libc::SYS_sendto,
        [
            fd.into(),
            p!(buf),
            n as i64,
            flags.into(),
            p!(addr),
            alen.into(),
        ],
    ) as isize
}

#[unsafe(no_mangle)]
pub extern "C" fn recv(fd: c_int, buf: *mut c_void, n: usize, flags: c_int) -> isize {
    run(
        libc::SYS_recvfrom,
        [fd.into(), p!(buf), n as i64, flags.into(), 0, 0],
    ) as isize
}

#[unsafe(no_mangle)]
pub extern "C" fn __recv_chk(
    fd: c_int,
    buf: *mut c_void,
    n: usize,
    _buflen: usize,
    flags: c_int,
) -> isize {
    recv(fd, buf, n, flags)
}

#[unsafe(no_mangle)]
pub extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    n: usize,
    flags: c_int,
    addr: *mut c_void,
    alen: *mut u32,
) -> isize {
    run(
        libc::SYS_recvfrom,
        [
            fd.into(),
            p!(buf),
            n as i64,
            flags.into(),
            p!(addr),
            p!(alen),
        ],
    ) as isize
}

#[unsafe(no_mangle)]
pub extern "C" fn __recvfrom_chk(
    fd: c_int,
    buf: *mut c_void,
    n: usize,
    _buflen: usize,
    flags: c_int,
    addr: *mut c_void,
    alen: *mut u32,
) -> isize {
    recvfrom(fd, buf, n, flags, addr, alen)
}

#[unsafe(no_mangle)]
pub extern "C" fn sendmsg(fd: c_int, msg: *const c_void, flags: c_int) -> isize {
    run(
        libc::SYS_sendmsg,
        [fd.into(), p!(msg), flags.into(), 0, 0, 0],
    ) as isize
}

#[unsafe(no_mangle)]
pub extern "C" fn recvmsg(fd: c_int, msg: *mut c_void, flags: c_int) -> isize {
    run(
        libc::SYS_recvmsg,
        [fd.into(), p!(msg), flags.into(), 0, 0, 0],
    ) as isize
}

#[unsafe(no_mangle)]
pub extern "C" fn sendmmsg(fd: c_int, vec: *mut c_void, vlen: u32, flags: c_int) -> c_int {
    run(
        libc::SYS_sendmmsg,
        [fd.into(), p!(vec), vlen.into(), flags.into(), 0, 0],
    ) as c_int
}

#[unsafe(no_mangle)]
pub extern "C" fn recvmmsg(
    fd: c_int,
    vec: *mut c_void,
    vlen: u32,
    flags: c_int,
    timeout: *mut c_void,
) -> c_int {
    run(
        libc::SYS_recvmmsg,
        [
            fd.into(),
            p!(vec),
            vlen.into(),
            flags.into(),
            p!(timeout),
            0,
        ],
    ) as c_int
}

#[unsafe(no_mangle)]
pub extern "C" fn getsockname(fd: c_int, addr: *mut c_void, len: *mut u32) -> c_int {
    run(
        libc::SYS_getsockname,
        [fd.into(), p!(addr), p!(len), 0, 0, 0],
    ) as c_int
}

#[unsafe(no_mangle)]
pub extern "C" fn getpeername(fd: c_int, addr: *mut c_void, len: *mut u32) -> c_int {
    run(
        libc::SYS_getpeername,
        [fd.into(), p!(addr), p!(len), 0, 0, 0],
    ) as c_int
}

#[unsafe(no_mangle)]
pub extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *const c_void,
    len: u32,
) -> c_int {
    run(
        libc::SYS_setsockopt,
        [fd.into(), level.into(), name.into(), p!(val), len.into(), 0],
    ) as c_int
}

#[unsafe(no_mangle)]
pub extern "C" fn getsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *mut c_void,
    len: *mut u32,
) -> c_int {
    run(
        libc::SYS_getsockopt,
        [fd.into(), level.into(), name.into(), p!(val), p!(len), 0],
    ) as c_int
}

#[unsafe(no_mangle)]
pub extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    run(
        libc::SYS_fcntl,
        [fd.into(), cmd.into(), arg as i64, 0, 0, 0],
    ) as c_int
}

#[unsafe(no_mangle)]
pub extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    fcntl(fd, cmd, arg)
}

#[unsafe(no_mangle)]
pub extern "C" fn ioctl(fd: c_int, request: c_ulong, arg: c_ulong) -> c_int {
    run(
        libc::SYS_ioctl,
        [fd.into(), request as i64, arg as i64, 0, 0, 0],
    ) as c_int
}

#[unsafe(no_mangle)]
pub extern "C" fn dup(fd: c_int) -> c_int {
    run(libc::SYS_dup, [fd.into(), 0, 0, 0, 0, 0]) as c_int
}

#[cfg(target_arch = "x86_64")]
#[unsafe(no_mangle)]
pub extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    run(libc::SYS_dup2, [old.into(), new.into(), 0, 0, 0, 0]) as c_int
}

/// Without a `dup2` syscall (arm64), as glibc does it: `dup3`, except that `dup2(fd, fd)`
/// is `fd` when it is open (where `dup3` says EINVAL).
#[cfg(not(target_arch = "x86_64"))]
#[unsafe(no_mangle)]
pub extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    if old == new {
        let r = run(
            libc::SYS_fcntl,
            [old.into(), libc::F_GETFL.into(), 0, 0, 0, 0],
        );
        return if r < 0 { -1 } else { old };
    }
    dup3(old, new, 0)
}

#[unsafe(no_mangle)]
pub extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    run(
        libc::SYS_dup3,
        [old.into(), new.into(), flags.into(), 0, 0, 0],
    ) as c_int
}

#[cfg(target_arch = "x86_64")]
#[unsafe(no_mangle)]
pub extern "C" fn poll(fds: *mut c_void, n: c_ulong, timeout: c_int) -> c_int {
    run(libc::SYS_poll, [p!(fds), n as i64, timeout.into(), 0, 0, 0]) as c_int
}

/// Without a `poll` syscall (arm64): `ppoll` with the timeout as a timespec, no mask.
#[cfg(not(target_arch = "x86_64"))]
#[unsafe(no_mangle)]
pub extern "C" fn poll(fds: *mut c_void, n: c_ulong, timeout: c_int) -> c_int {
    let mut t = libc::timespec {
        tv_sec: (timeout / 1000).into(),
        tv_nsec: (i64::from(timeout % 1000) * 1_000_000) as _,
    };
    let tp = if timeout < 0 { 0 } else { p!(&mut t as *mut _) };
    run(libc::SYS_ppoll, [p!(fds), n as i64, tp, 0, 8, 0]) as c_int
}

#[unsafe(no_mangle)]
pub extern "C" fn __poll_chk(fds: *mut c_void, n: c_ulong, timeout: c_int, _len: c_ulong) -> c_int {
    poll(fds, n, timeout)
}

#[unsafe(no_mangle)]
pub extern "C" fn ppoll(
    fds: *mut c_void,
    n: c_ulong,
    t: *const c_void,
    mask: *const c_void,
) -> c_int {
    let mut ts = match copy_timespec(t) {
        Ok(ts) => ts,
        Err(e) => return ret(e) as c_int,
    };
    let tp = ts.as_mut().map_or(0, |t| p!(t.as_mut_ptr()));
    run(libc::SYS_ppoll, [p!(fds), n as i64, tp, p!(mask), 8, 0]) as c_int
}

#[cfg(target_arch = "x86_64")]
#[unsafe(no_mangle)]
pub extern "C" fn select(
    n: c_int,
    r: *mut c_void,
    w: *mut c_void,
    e: *mut c_void,
    t: *mut c_void,
) -> c_int {
    run(libc::SYS_select, [n.into(), p!(r), p!(w), p!(e), p!(t), 0]) as c_int
}

/// Without a `select` syscall (arm64), as glibc does it: `pselect6` with the timeval as a
/// timespec and no mask, and the time left written back (Linux's `select` does).
#[cfg(not(target_arch = "x86_64"))]
#[unsafe(no_mangle)]
pub extern "C" fn select(
    n: c_int,
    r: *mut c_void,
    w: *mut c_void,
    e: *mut c_void,
    t: *mut c_void,
) -> c_int {
    let mut ts = match crate::dispatch::read_timeval(p!(t)) {
        Ok(ts) => ts,
        Err(e) => return ret(e) as c_int,
    };
    let tp = ts.as_mut().map_or(0, |ts| p!(ts as *mut libc::timespec));
    let result = run(libc::SYS_pselect6, [n.into(), p!(r), p!(w), p!(e), tp, 0]);
    if let Some(ts) = ts {
        let tv = crate::sys::UserPtr(t as usize);
        let _ = tv.write_u64(ts.tv_sec as u64);
        let _ = tv.add(8).write_u64((ts.tv_nsec / 1000) as u64);
    }
    result as c_int
}

#[unsafe(no_mangle)]
pub extern "C" fn pselect(
    n: c_int,
    r: *mut c_void,
    w: *mut c_void,
    e: *mut c_void,
    t: *const c_void,
    mask: *const c_void,
) -> c_int {
    // The syscall's sixth argument is { const sigset_t *, size_t }.
    let data: [usize; 2] = [mask as usize, 8];
    let m = if mask.is_null() { 0 } else { p!(data.as_ptr()) };
    let mut ts = match copy_timespec(t) {
        Ok(ts) => ts,
        Err(e) => return ret(e) as c_int,
    };
    let tp = ts.as_mut().map_or(0, |t| p!(t.as_mut_ptr()));
    run(libc::SYS_pselect6, [n.into(), p!(r), p!(w), p!(e), tp, m]) as c_int
}

#[unsafe(no_mangle)]
pub extern "C" fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, ev: *mut c_void) -> c_int {
    run(
        libc::SYS_epoll_ctl,
        [epfd.into(), op.into(), fd.into(), p!(ev), 0, 0],
    ) as c_int
}

#[cfg(target_arch = "x86_64")]
#[unsafe(no_mangle)]
pub extern "C" fn epoll_wait(epfd: c_int, evs: *mut c_void, max: c_int, timeout: c_int) -> c_int {
    run(
        libc::SYS_epoll_wait,
        [epfd.into(), p!(evs), max.into(), timeout.into(), 0, 0],
    ) as c_int
}

/// Without an `epoll_wait` syscall (arm64): `epoll_pwait` with no mask.
#[cfg(not(target_arch = "x86_64"))]
#[unsafe(no_mangle)]
pub extern "C" fn epoll_wait(epfd: c_int, evs: *mut c_void, max: c_int, timeout: c_int) -> c_int {
    epoll_pwait(epfd, evs, max, timeout, std::ptr::null())
}

#[unsafe(no_mangle)]
pub extern "C" fn epoll_pwait(
    epfd: c_int,
    evs: *mut c_void,
    max: c_int,
    timeout: c_int,
    mask: *const c_void,
) -> c_int {
    run(
        libc::SYS_epoll_pwait,
        [
            epfd.into(),
            p!(evs),
            max.into(),
            timeout.into(),
            p!(mask),
            8,
        ],
    ) as c_int
}

#[unsafe(no_mangle)]
pub extern "C" fn sendfile(out: c_int, inp: c_int, off: *mut i64, count: usize) -> isize {
    run(
        libc::SYS_sendfile,
        [out.into(), inp.into(), p!(off), count as i64, 0, 0],
    ) as isize
}

#[unsafe(no_mangle)]
pub extern "C" fn sendfile64(out: c_int, inp: c_int, off: *mut i64, count: usize) -> isize {
    sendfile(out, inp, off, count)
}

extern "C" fn init() {
    // SAFETY: registers a handler that only bumps an atomic counter (async-signal-safe, as
    // a fork handler must be); no other argument.
    unsafe { libc::pthread_atfork(Some(crate::table::before_fork), None, None) };
    crate::rediscover();
}

/// Runs [`crate::rediscover`] when the shim loads (after an exec, inherited placeholders).
#[used]
#[unsafe(link_section = ".init_array")]
static INIT: extern "C" fn() = init;
