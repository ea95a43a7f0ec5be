//! The offload server's `unsafe`: host seqpacket sockets with `SCM_RIGHTS`, and the library
//! kernel's socket calls on buffers this module's callers own.
//!
//! Ownership model: every pointer handed to a syscall here comes from a slice or a local the
//! safe wrapper borrows for exactly the call; the host kernel and the library kernel (which
//! reads and writes host memory directly, `lkl_netstack::raw`) never keep it afterwards.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use knic_offload_protocol::IFREQ_LEN;
use lkl_netstack::raw::{RawCalls, nr};

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_size(ret: isize) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// A new seqpacket socket and the address of `path`.
fn seqpacket_for(path: &Path) -> io::Result<(OwnedFd, libc::sockaddr_un)> {
    let addr = knic_offload_protocol::unix_address(path)?;
    // SAFETY: plain syscall; the result is a new fd we own at once.
    let fd =
        cvt(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: fd was just returned by socket() and is owned by nobody else.
    Ok((unsafe { OwnedFd::from_raw_fd(fd) }, addr))
}

/// A listening `AF_UNIX` `SOCK_SEQPACKET` socket bound to `path`, mode 0666 (the server checks
/// each peer's credentials itself).
pub(super) fn seqpacket_listen(path: &Path) -> io::Result<OwnedFd> {
    let (fd, addr) = seqpacket_for(path)?;
    // SAFETY: addr is a valid sockaddr_un of the size passed.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &addr as *const libc::sockaddr_un as *const libc::sockaddr,
            size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    })?;
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: cpath is a NUL-terminated string that lives across the call.
    cvt(unsafe { libc::chmod(cpath.as_ptr(), 0o666) })?;
    // SAFETY: plain syscall on an fd we own.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), 128) })?;
    Ok(fd)
}

/// Accepts one connection (blocking).
pub(super) fn accept(listener: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: null address pointers are allowed; the result is a new fd we own.
    let fd = cvt(unsafe {
        libc::accept4(
            listener,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    })?;
    // SAFETY: fd was just returned by accept4 and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Who is on the other end of a unix socket (`SO_PEERCRED`).
pub(super) fn peer_cred(fd: RawFd) -> io::Result<libc::ucred> {
    // SAFETY: ucred is plain data.
    let mut cred: libc::ucred = unsafe { zeroed() };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: the kernel writes at most len bytes into cred.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    })?;
    Ok(cred)
}

/// This process's effective uid.
pub(super) fn euid() -> u32 {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::geteuid() }
}

/// A connected `SOCK_SEQPACKET` pair.
pub(super) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: the kernel writes two fds into `fds`.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: both fds were just made and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Receives one message (blocking; EINTR retried). Ok(0) is the end of the connection.
pub(super) fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: the kernel writes at most buf.len() bytes into buf.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_TRUNC) };
        match cvt_size(n) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Most pieces one message is gathered from: a reply's header, the address slot, the
/// control slot and the data.
pub(super) const MAX_PARTS: usize = 4;

/// Sends one message made of `parts` (at most [`MAX_PARTS`]), with `pass` as `SCM_RIGHTS`
/// when given.
/// `nowait`: fail with `EAGAIN` instead of waiting for room.
pub(super) fn send(
    fd: RawFd,
    parts: &[&[u8]],
    pass: Option<RawFd>,
    nowait: bool,
) -> io::Result<()> {
    let empty = libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    };
    let mut iov = [empty; MAX_PARTS];
    for (v, p) in iov.iter_mut().zip(parts) {
        v.iov_base = p.as_ptr() as *mut libc::c_void;
        v.iov_len = p.len();
    }
    // Room for one cmsg with one int, aligned as cmsghdr.
    let mut control = [0u64; 4];
    // SAFETY: msghdr is plain data.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = parts.len().min(iov.len());
    if let Some(pass) = pass {
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE is a pure computation.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<libc::c_int>() as u32) } as usize;
        // SAFETY: msg_control points at `control`, which is large enough for one cmsg of one
        // int (CMSG_SPACE(4) = 24 <= 32 bytes) and aligned for cmsghdr (u64).
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::c_int>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), pass);
        }
    }
    let flags = libc::MSG_NOSIGNAL | if nowait { libc::MSG_DONTWAIT } else { 0 };
    loop {
        // SAFETY: msg points at iov (slices borrowed for the call) and control, which live
        // across the call; the kernel only reads them.
        let n = unsafe { libc::sendmsg(fd, &msg, flags) };
        match cvt_size(n) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
            Ok(_) => return Ok(()),
        }
    }
}

/// Connects a seqpacket socket to `path` (to probe for a running agent).
pub(super) fn seqpacket_connect(path: &Path) -> io::Result<OwnedFd> {
    let (fd, addr) = seqpacket_for(path)?;
    // SAFETY: addr is a valid sockaddr_un of the size passed.
    cvt(unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &addr as *const libc::sockaddr_un as *const libc::sockaddr,
            size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    })?;
    Ok(fd)
}

/// Bounds how long a `recv` on `fd` waits (`SO_RCVTIMEO`; `None`: for ever). A wait that
/// runs out fails with `WouldBlock`.
pub(super) fn set_recv_timeout(fd: RawFd, wait: Option<std::time::Duration>) -> io::Result<()> {
    let wait = wait.unwrap_or_default();
    let tv = libc::timeval {
        tv_sec: wait.as_secs() as libc::time_t,
        tv_usec: libc::suseconds_t::from(wait.subsec_micros()),
    };
    // SAFETY: SO_RCVTIMEO reads one timeval, a live local of the size passed.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// Wakes a thread blocked in `recv` on `fd` (used when the agent stops).
pub(super) fn shutdown(fd: RawFd) {
    // SAFETY: plain syscall; a failure (already shut down) changes nothing.
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
}

/// A socket address as the library kernel takes it: aligned storage plus its length.
pub(super) struct SockAddr {
    pub storage: libc::sockaddr_storage,
    pub len: u32,
}

impl SockAddr {
    pub fn empty() -> SockAddr {
        SockAddr {
            // SAFETY: sockaddr_storage is plain data; all-zero is valid.
            storage: unsafe { zeroed() },
            len: size_of::<libc::sockaddr_storage>() as u32,
        }
    }

    /// Copies `bytes` (a caller's address; hostile) into aligned storage; None if too long.
    pub fn from_bytes(bytes: &[u8]) -> Option<SockAddr> {
        let mut a = SockAddr::empty();
        if bytes.len() > size_of::<libc::sockaddr_storage>() {
            return None;
        }
        // SAFETY: storage is size_of::<sockaddr_storage>() bytes of plain data and bytes.len()
        // is at most that; the regions cannot overlap (storage is a fresh local).
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                (&mut a.storage as *mut libc::sockaddr_storage).cast::<u8>(),
                bytes.len(),
            )
        };
        a.len = bytes.len() as u32;
        Some(a)
    }

    /// The first `len` bytes (bounded by the storage size).
    pub fn bytes(&self) -> &[u8] {
        let len = (self.len as usize).min(size_of::<libc::sockaddr_storage>());
        // SAFETY: storage is plain data of at least `len` bytes, borrowed for &self.
        unsafe {
            std::slice::from_raw_parts(
                (&self.storage as *const libc::sockaddr_storage).cast::<u8>(),
                len,
            )
        }
    }
}

/// What a library `recvmsg` gave: the result, `msg_flags`, bytes of control messages.
pub(super) struct Received {
    pub ret: i64,
    pub flags: i32,
    pub control: usize,
}

/// Socket calls into the library kernel on buffers the caller owns.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lkl(pub RawCalls);

fn err_to_ret(r: io::Result<i64>) -> i64 {
    match r {
        Ok(v) => v,
        Err(e) => -i64::from(e.raw_os_error().unwrap_or(libc::EIO)),
    }
}

impl Lkl {
    /// Each call below returns the kernel's result: a value, or `-errno`.
    pub fn values(&self, call: i64, args: [i64; 6]) -> i64 {
        err_to_ret(self.0.syscall_values(call, args))
    }

    pub fn close(&self, fd: i32) {
        let _ = self
            .0
            .syscall_values(nr::CLOSE, [i64::from(fd), 0, 0, 0, 0, 0]);
    }

    /// bind or connect (`call`) with an address.
    pub fn with_addr(&self, call: i64, fd: i32, addr: &SockAddr) -> i64 {
        // SAFETY: addr.storage holds addr.len (<= its size) readable bytes for the call.
        err_to_ret(unsafe {
            self.0.syscall(
                call,
                [
                    i64::from(fd),
                    &addr.storage as *const _ as i64,
                    i64::from(addr.len),
                    0,
                    0,
                    0,
                ],
            )
        })
    }

    /// accept4, getsockname or getpeername (`call`) writing an address into `addr`.
    pub fn fill_addr(&self, call: i64, fd: i32, addr: &mut SockAddr, flags: i64) -> i64 {
        addr.len = size_of::<libc::sockaddr_storage>() as u32;
        // SAFETY: the kernel writes at most addr.len bytes into addr.storage and updates
        // addr.len; both are borrowed mutably for the call.
        err_to_ret(unsafe {
            self.0.syscall(
                call,
                [
                    i64::from(fd),
                    &mut addr.storage as *mut _ as i64,
                    &mut addr.len as *mut u32 as i64,
                    flags,
                    0,
                    0,
                ],
            )
        })
    }

    /// sendmsg of `data` to `to` (none: the connected peer) with `control` (control
    /// messages, checked by the caller; the kernel parses them again itself).
    pub fn sendmsg(
        &self,
        fd: i32,
        data: &[u8],
        flags: i64,
        to: Option<&SockAddr>,
        control: &[u8],
    ) -> i64 {
        let mut iov = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        // SAFETY: msghdr is plain data.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        if let Some(a) = to {
            msg.msg_name = &a.storage as *const libc::sockaddr_storage as *mut libc::c_void;
            msg.msg_namelen = a.len;
        }
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !control.is_empty() {
            msg.msg_control = control.as_ptr() as *mut libc::c_void;
            msg.msg_controllen = control.len();
        }
        // SAFETY: msg points at iov (data), the address storage and control, all borrowed
        // for the call; the kernel only reads them (it copies the control bytes into its
        // own buffer before parsing: ____sys_sendmsg). The library shares the host's
        // msghdr and cmsghdr layout.
        err_to_ret(unsafe {
            self.0.syscall(
                nr::SENDMSG,
                [i64::from(fd), &msg as *const _ as i64, flags, 0, 0, 0],
            )
        })
    }

    /// recvmsg into `buf`, the source address into `from` and control messages into
    /// `control` (empty: none asked, so the kernel sets MSG_CTRUNC for any it has).
    pub fn recvmsg(
        &self,
        fd: i32,
        buf: &mut [u8],
        flags: i64,
        from: &mut SockAddr,
        control: &mut [u8],
    ) -> Received {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain data.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_name = (&mut from.storage as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !control.is_empty() {
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = control.len();
        }
        // SAFETY: msg points at iov (buf, writable for its length), from.storage and
        // control (writable for msg_controllen bytes), all borrowed for the call; the
        // library shares the host's msghdr layout and writes cmsgs only within
        // msg_controllen (put_cmsg).
        let ret = err_to_ret(unsafe {
            self.0.syscall(
                nr::RECVMSG,
                [i64::from(fd), &mut msg as *mut _ as i64, flags, 0, 0, 0],
            )
        });
        from.len = msg.msg_namelen;
        Received {
            ret,
            flags: msg.msg_flags,
            control: if control.is_empty() {
                0
            } else {
                msg.msg_controllen.min(control.len())
            },
        }
    }

    pub fn setsockopt(&self, fd: i32, level: i64, name: i64, value: &[u8]) -> i64 {
        // SAFETY: the kernel reads value.len() bytes from value.
        err_to_ret(unsafe {
            self.0.syscall(
                nr::SETSOCKOPT,
                [
                    i64::from(fd),
                    level,
                    name,
                    value.as_ptr() as i64,
                    value.len() as i64,
                    0,
                ],
            )
        })
    }

    /// getsockopt into `value`; returns (result, length written).
    pub fn getsockopt(&self, fd: i32, level: i64, name: i64, value: &mut [u8]) -> (i64, usize) {
        let mut len = value.len() as u32;
        // SAFETY: the kernel writes at most `len` bytes into value and updates len.
        let r = err_to_ret(unsafe {
            self.0.syscall(
                nr::GETSOCKOPT,
                [
                    i64::from(fd),
                    level,
                    name,
                    value.as_mut_ptr() as i64,
                    &mut len as *mut u32 as i64,
                    0,
                ],
            )
        });
        (r, (len as usize).min(value.len()))
    }

    /// An ioctl whose argument is an `int` the kernel writes.
    pub fn ioctl_int(&self, fd: i32, request: i64) -> i64 {
        let mut v: libc::c_int = 0;
        // SAFETY: the kernel writes one int into v.
        let r = err_to_ret(unsafe {
            self.0.syscall(
                nr::IOCTL,
                [i64::from(fd), request, &mut v as *mut _ as i64, 0, 0, 0],
            )
        });
        if r < 0 { r } else { i64::from(v) }
    }

    /// An ioctl whose argument is the `struct ifreq` in `ifreq` (read and written in place;
    /// the caller allows only requests that follow no pointer in it).
    pub fn ioctl_ifreq(&self, fd: i32, request: i64, ifreq: &mut [u8; IFREQ_LEN]) -> i64 {
        // SAFETY: the kernel reads and writes one ifreq (IFREQ_LEN bytes) at the pointer,
        // which `ifreq` provides exclusively for the call.
        err_to_ret(unsafe {
            self.0.syscall(
                nr::IOCTL,
                [i64::from(fd), request, ifreq.as_mut_ptr() as i64, 0, 0, 0],
            )
        })
    }

    /// `SIOCGIFCONF` into `buf` (`None`: a null `ifc_buf`, asking for the size needed);
    /// the result and the `ifc_len` the kernel set.
    pub fn ioctl_ifconf(&self, fd: i32, buf: Option<&mut [u8]>) -> (i64, i32) {
        // struct ifconf (LP64): int ifc_len; 4 bytes of padding; char *ifc_buf.
        #[repr(C)]
        struct IfConf {
            len: libc::c_int,
            buf: *mut u8,
        }
        let mut conf = match buf {
            Some(b) => IfConf {
                len: libc::c_int::try_from(b.len()).unwrap_or(libc::c_int::MAX),
                buf: b.as_mut_ptr(),
            },
            None => IfConf {
                len: 0,
                buf: std::ptr::null_mut(),
            },
        };
        // SAFETY: the kernel reads and writes `conf` and writes at most `conf.len` bytes at
        // `conf.buf`, a buffer of that length exclusively borrowed for the call (or null).
        let r = err_to_ret(unsafe {
            self.0.syscall(
                nr::IOCTL,
                [
                    i64::from(fd),
                    libc::SIOCGIFCONF as i64,
                    &mut conf as *mut IfConf as i64,
                    0,
                    0,
                    0,
                ],
            )
        });
        (r, conf.len)
    }

    /// ppoll over `fds`; `wait` = false returns at once.
    pub fn poll(&self, fds: &mut [libc::pollfd], wait: bool) -> i64 {
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let timeout = if wait { 0 } else { &zero as *const _ as i64 };
        // SAFETY: the kernel reads and writes fds.len() pollfds in fds and reads `zero`
        // when given; no signal mask (null).
        err_to_ret(unsafe {
            self.0.syscall(
                nr::PPOLL,
                [fds.as_mut_ptr() as i64, fds.len() as i64, timeout, 0, 8, 0],
            )
        })
    }

    /// A non-blocking pipe inside the library: (read end, write end).
    pub fn pipe(&self) -> io::Result<(i32, i32)> {
        let mut fds = [0i32; 2];
        // SAFETY: the kernel writes two ints into fds.
        unsafe {
            self.0.syscall(
                nr::PIPE2,
                [
                    fds.as_mut_ptr() as i64,
                    i64::from(libc::O_NONBLOCK | libc::O_CLOEXEC),
                    0,
                    0,
                    0,
                    0,
                ],
            )
        }?;
        Ok((fds[0], fds[1]))
    }

    pub fn write(&self, fd: i32, data: &[u8]) -> i64 {
        // SAFETY: the kernel reads data.len() bytes from data.
        err_to_ret(unsafe {
            self.0.syscall(
                nr::WRITE,
                [
                    i64::from(fd),
                    data.as_ptr() as i64,
                    data.len() as i64,
                    0,
                    0,
                    0,
                ],
            )
        })
    }

    pub fn read(&self, fd: i32, buf: &mut [u8]) -> i64 {
        // SAFETY: the kernel writes at most buf.len() bytes into buf.
        err_to_ret(unsafe {
            self.0.syscall(
                nr::READ,
                [
                    i64::from(fd),
                    buf.as_mut_ptr() as i64,
                    buf.len() as i64,
                    0,
                    0,
                    0,
                ],
            )
        })
    }

    /// Reads a whole file of the library's procfs (e.g. `/proc/net/snmp`).
    pub fn read_file(&self, path: &std::ffi::CStr) -> io::Result<String> {
        // SAFETY: path is NUL-terminated and lives across the call.
        let fd = unsafe {
            self.0.syscall(
                nr::OPENAT,
                [
                    i64::from(libc::AT_FDCWD),
                    path.as_ptr() as i64,
                    i64::from(libc::O_RDONLY),
                    0,
                    0,
                    0,
                ],
            )
        }? as i32;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = self.read(fd, &mut buf);
            if n < 0 {
                self.close(fd);
                return Err(io::Error::from_raw_os_error(-n as i32));
            }
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n as usize]);
        }
        self.close(fd);
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}
