//! The shim's `unsafe`: raw host syscalls, and copies from and to the program's memory.
//!
//! Pointers from the program are trusted exactly as far as glibc trusts them: a program
//! passes a buffer and its length, and the shim reads or writes that many bytes, as the libc
//! function it stands in for would (a null pointer is `EFAULT`, checked here; a wild one
//! faults in the program, as it would inside glibc). Nothing here keeps a pointer past the
//! call that received it.
#![allow(unsafe_code)]

use std::mem::{size_of, zeroed};

/// A host syscall by number; the kernel's convention (`-errno` on failure).
#[inline]
pub fn host(nr: i64, a: [i64; 6]) -> i64 {
    // SAFETY: the arguments are the program's own, passed through unchanged to the call it
    // made (the shim only forwards calls it does not handle), or values and buffers the shim
    // owns for the duration of the call; the kernel validates pointers itself (EFAULT).
    let r = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
    if r == -1 { -i64::from(errno()) } else { r }
}

pub fn errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno slot, always valid.
    unsafe { *libc::__errno_location() }
}

pub fn set_errno(e: i32) {
    // SAFETY: as in errno().
    unsafe { *libc::__errno_location() = e };
}

/// A pointer into the program's memory, as a syscall argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserPtr(pub usize);

pub const EFAULT: i64 = -(libc::EFAULT as i64);

impl UserPtr {
    pub fn is_null(self) -> bool {
        self.0 == 0
    }

    pub fn add(self, off: usize) -> UserPtr {
        UserPtr(self.0.wrapping_add(off))
    }

    /// Copies `out.len()` bytes from the program.
    pub fn read(self, out: &mut [u8]) -> Result<(), i64> {
        if out.is_empty() {
            return Ok(());
        }
        if self.is_null() {
            return Err(EFAULT);
        }
        // SAFETY: the program passed this pointer with at least out.len() readable bytes
        // (see the module doc); `out` is ours and cannot overlap program memory we read.
        unsafe { std::ptr::copy(self.0 as *const u8, out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    /// Copies `data` into the program.
    pub fn write(self, data: &[u8]) -> Result<(), i64> {
        if data.is_empty() {
            return Ok(());
        }
        if self.is_null() {
            return Err(EFAULT);
        }
        // SAFETY: the program passed this pointer with room for at least data.len() bytes
        // (see the module doc); `data` is ours.
        unsafe { std::ptr::copy(data.as_ptr(), self.0 as *mut u8, data.len()) };
        Ok(())
    }

    pub fn read_u32(self) -> Result<u32, i64> {
        let mut b = [0u8; 4];
        self.read(&mut b)?;
        Ok(u32::from_ne_bytes(b))
    }

    pub fn write_u32(self, v: u32) -> Result<(), i64> {
        self.write(&v.to_ne_bytes())
    }

    pub fn read_u64(self) -> Result<u64, i64> {
        let mut b = [0u8; 8];
        self.read(&mut b)?;
        Ok(u64::from_ne_bytes(b))
    }

    pub fn write_u64(self, v: u64) -> Result<(), i64> {
        self.write(&v.to_ne_bytes())
    }
}

/// Up to 4 (address, length) parts as iovecs.
fn iovecs(parts: &[(usize, usize)]) -> [libc::iovec; 4] {
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; 4];
    for (v, &(p, l)) in iov.iter_mut().zip(parts) {
        v.iov_base = p as *mut libc::c_void;
        v.iov_len = l;
    }
    iov
}

/// Sends one message of up to 4 parts, never waiting (`EAGAIN` when full).
pub fn send_parts(fd: i32, parts: &[(usize, usize)]) -> i64 {
    let mut iov = iovecs(parts);
    // SAFETY: msghdr is plain data.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = parts.len().min(4);
    host(
        libc::SYS_sendmsg,
        [
            i64::from(fd),
            &msg as *const _ as i64,
            i64::from(libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL),
            0,
            0,
            0,
        ],
    )
}

/// Receives one message scattered over `parts` (address, length), never waiting; a passed fd
/// lands in `fd_out`. Returns the message's full length (MSG_TRUNC).
pub fn recv_parts(
    fd: i32,
    parts: &[(usize, usize)],
    cloexec: bool,
    fd_out: &mut Option<i32>,
) -> i64 {
    let mut iov = iovecs(parts);
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = parts.len().min(4);
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 8]>();
    let flags =
        libc::MSG_DONTWAIT | libc::MSG_TRUNC | if cloexec { libc::MSG_CMSG_CLOEXEC } else { 0 };
    let r = host(
        libc::SYS_recvmsg,
        [
            i64::from(fd),
            &mut msg as *mut _ as i64,
            i64::from(flags),
            0,
            0,
            0,
        ],
    );
    if r >= 0 && msg.msg_controllen > 0 {
        // SAFETY: the kernel wrote msg_controllen bytes of cmsgs into `control`, which is
        // aligned for cmsghdr; CMSG_* walk only inside it.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let n =
                        ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / size_of::<i32>();
                    for i in 0..n {
                        let passed =
                            std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<i32>().add(i));
                        if fd_out.is_none() {
                            *fd_out = Some(passed);
                        } else {
                            libc::close(passed);
                        }
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
    }
    r
}

/// Waits until a message is queued on the blocking placeholder `fd` (or it hangs up),
/// without taking it: a blocking `recv(MSG_PEEK)`, which the host kernel restarts after a
/// handler installed with `SA_RESTART` and ends with `EINTR` after any other — the rule
/// Linux applies to the program's blocking socket call itself. Returns >= 0, or `-errno`
/// (`EINTR`; `EAGAIN` if `fd` is non-blocking after all).
pub fn wait_message(fd: i32) -> i64 {
    let mut byte = 0u8;
    host(
        libc::SYS_recvfrom,
        [
            i64::from(fd),
            &mut byte as *mut u8 as i64,
            1,
            i64::from(libc::MSG_PEEK),
            0,
            0,
        ],
    )
}

/// Waits for `events` on one host fd; `timeout_ms` < 0 waits for ever. Returns revents or
/// `-errno` (EINTR).
pub fn poll_one(fd: i32, events: i16, timeout_ms: i32) -> i64 {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let t = (timeout_ms >= 0).then(|| libc::timespec {
        tv_sec: (timeout_ms / 1000).into(),
        tv_nsec: (i64::from(timeout_ms % 1000) * 1_000_000) as _,
    });
    let r = ppoll(std::slice::from_mut(&mut p), t, 0);
    if r < 0 { r } else { i64::from(p.revents) }
}

/// Host ppoll over `fds` with an optional timeout and signal mask (the program's).
pub fn ppoll(fds: &mut [libc::pollfd], timeout: Option<libc::timespec>, sigmask: i64) -> i64 {
    // The kernel writes the time left into the timespec: a copy of ours.
    let mut timeout = timeout;
    let t = timeout.as_mut().map_or(0, |t| t as *mut _ as i64);
    host(
        libc::SYS_ppoll,
        [fds.as_mut_ptr() as i64, fds.len() as i64, t, sigmask, 8, 0],
    )
}

/// An int socket option of a host fd.
pub fn sockopt_int(fd: i32, level: i32, name: i32) -> Option<i32> {
    let mut v: i32 = 0;
    let mut len = size_of::<i32>() as u32;
    let r = host(
        libc::SYS_getsockopt,
        [
            i64::from(fd),
            i64::from(level),
            i64::from(name),
            &mut v as *mut _ as i64,
            &mut len as *mut _ as i64,
            0,
        ],
    );
    (r == 0).then_some(v)
}

/// The pid on the other end of a unix socket.
pub fn peer_pid(fd: i32) -> Option<i32> {
    // SAFETY: ucred is plain data.
    let mut c: libc::ucred = unsafe { zeroed() };
    let mut len = size_of::<libc::ucred>() as u32;
    let r = host(
        libc::SYS_getsockopt,
        [
            i64::from(fd),
            i64::from(libc::SOL_SOCKET),
            i64::from(libc::SO_PEERCRED),
            &mut c as *mut _ as i64,
            &mut len as *mut _ as i64,
            0,
        ],
    );
    (r == 0).then_some(c.pid)
}

/// Connects a new seqpacket socket to the agent at `path` (bytes, no NUL).
pub fn connect_agent(path: &[u8], cloexec: bool) -> i64 {
    // SAFETY: sockaddr_un is plain data.
    let mut addr: libc::sockaddr_un = unsafe { zeroed() };
    if path.len() >= addr.sun_path.len() {
        return -i64::from(libc::ENAMETOOLONG);
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(path) {
        *d = *s as libc::c_char;
    }
    let kind = libc::SOCK_SEQPACKET | if cloexec { libc::SOCK_CLOEXEC } else { 0 };
    let fd = host(
        libc::SYS_socket,
        [i64::from(libc::AF_UNIX), i64::from(kind), 0, 0, 0, 0],
    );
    if fd < 0 {
        return fd;
    }
    loop {
        let r = host(
            libc::SYS_connect,
            [
                fd,
                &addr as *const _ as i64,
                size_of::<libc::sockaddr_un>() as i64,
                0,
                0,
                0,
            ],
        );
        if r == -i64::from(libc::EINTR) {
            continue;
        }
        if r < 0 {
            host(libc::SYS_close, [fd, 0, 0, 0, 0, 0]);
            return r;
        }
        return fd;
    }
}

/// Writes a message to stderr (fd 2) without going through the program's stdio.
pub fn warn(msg: &str) {
    host(
        libc::SYS_write,
        [2, msg.as_ptr() as i64, msg.len() as i64, 0, 0, 0],
    );
}

/// Raises SIGPIPE in the calling thread (a write to a shut socket without MSG_NOSIGNAL).
pub fn raise_sigpipe() {
    let tid = host(libc::SYS_gettid, [0; 6]);
    let pid = host(libc::SYS_getpid, [0; 6]);
    host(
        libc::SYS_tgkill,
        [pid, tid, i64::from(libc::SIGPIPE), 0, 0, 0],
    );
}

/// The monotonic clock, in nanoseconds.
pub fn now_ns() -> i64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    host(
        libc::SYS_clock_gettime,
        [
            i64::from(libc::CLOCK_MONOTONIC),
            &mut t as *mut _ as i64,
            0,
            0,
            0,
            0,
        ],
    );
    t.tv_sec * 1_000_000_000 + t.tv_nsec
}
