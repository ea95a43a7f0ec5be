//! The device's system calls that need `unsafe`: thread naming, passing file descriptors
//! over the vhost-user socket, waiting for termination signals. Everything else in the crate
//! is safe code. (The uplinks' TAP and AF_PACKET calls live in `knic-uplink`.)
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Names the calling thread (at most 15 bytes are kept; longer names are cut). Failure only
/// costs a nicer `top -H`, so it is ignored.
pub fn set_current_thread_name(name: &str) {
    let mut bytes: Vec<u8> = name.bytes().filter(|b| *b != 0).take(15).collect();
    bytes.shrink_to_fit();
    let Ok(cname) = CString::new(bytes) else {
        return;
    };
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes from the pointer;
    // `cname` is NUL-terminated, at most 16 bytes with the NUL, and outlives the call. It only
    // changes the calling thread's name.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, cname.as_ptr());
    }
}

/// Most file descriptors one vhost-user message carries (the spec's limit is 8 for
/// SET_MEM_TABLE; headroom for other senders).
pub const MAX_MSG_FDS: usize = 32;

/// `sendmsg` of `buf` with `fds` attached (at most [`MAX_MSG_FDS`]). Returns bytes sent.
pub fn send_with_fds(fd: RawFd, buf: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    if fds.len() > MAX_MSG_FDS {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut control = [0u64; 32];
    let iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero is a valid value to fill in.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &iov as *const libc::iovec as *mut libc::iovec;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let data_len = std::mem::size_of_val(fds) as u32;
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE is a pure size computation.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(data_len) } as usize;
        // SAFETY: `control` (256 bytes) holds CMSG_SPACE(32 * 4) = 144 bytes, so the first
        // header and its data fit; the fds are copied in, unaligned-safe.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(data_len) as usize;
            let data = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
            for (i, f) in fds.iter().enumerate() {
                std::ptr::write_unaligned(data.add(i), *f);
            }
        }
    }
    // SAFETY: `iov` points into `buf` (shared, read only by sendmsg) and the control buffer
    // was filled above; all outlive the call. MSG_NOSIGNAL: a vanished peer is an EPIPE
    // error, not a signal.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// SIGTERM and SIGINT, the signals that stop `knic-vhost`.
fn termination_signals() -> libc::sigset_t {
    // SAFETY: an all-zero sigset_t is a valid value to hand to sigemptyset, which initialises
    // it; sigaddset only writes into that set, which lives on this stack frame.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

/// Blocks SIGTERM and SIGINT in the calling thread, and so in every thread it starts later
/// (threads inherit the mask): the signals stay pending until [`wait_termination_signal`]
/// takes them, instead of killing the process. Call before starting any thread.
pub fn block_termination_signals() -> io::Result<()> {
    let set = termination_signals();
    // SAFETY: `set` is an initialised sigset_t that outlives the call; a null old-set pointer
    // is allowed. Only the calling thread's mask changes.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Waits until SIGTERM or SIGINT is pending and takes it; returns the signal's name. Needs
/// [`block_termination_signals`] first, or the default action would end the process.
pub fn wait_termination_signal() -> io::Result<&'static str> {
    let set = termination_signals();
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` is initialised and `sig` is a valid place for one c_int; both outlive the
    // call, which writes only `sig`.
    let rc = unsafe { libc::sigwait(&set, &mut sig) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(if sig == libc::SIGINT {
        "SIGINT"
    } else {
        "SIGTERM"
    })
}

/// What a file descriptor from a frontend turned out to be (`fstat` and the fd's
/// `/proc/self/fd` link), for the front door's checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdKind {
    /// An eventfd (`anon_inode:[eventfd]`).
    EventFd,
    /// A regular file (memfd, tmpfs, hugetlbfs, disk) of `size` bytes.
    File { size: u64 },
    /// A socket.
    Socket,
    /// Anything else: pipe, device, directory, another anonymous inode.
    Other,
}

/// Classifies `fd`. An fd that cannot even be `fstat`ed is `Other`.
pub fn fd_kind(fd: std::os::fd::BorrowedFd<'_>) -> FdKind {
    use std::os::fd::AsRawFd;
    let raw = fd.as_raw_fd();
    // SAFETY: an all-zero `stat` is a valid value for fstat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `raw` is open for the lifetime of the borrow; fstat writes only into `st`,
    // which lives on this frame.
    if unsafe { libc::fstat(raw, &mut st) } != 0 {
        return FdKind::Other;
    }
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => FdKind::File {
            size: u64::try_from(st.st_size).unwrap_or(0),
        },
        libc::S_IFSOCK => FdKind::Socket,
        _ => match std::fs::read_link(format!("/proc/self/fd/{raw}")) {
            Ok(target) if target.as_os_str() == "anon_inode:[eventfd]" => FdKind::EventFd,
            _ => FdKind::Other,
        },
    }
}

/// Sets `O_NONBLOCK` on `fd`'s open file description (shared with every holder of it, the
/// frontend included: the only safe way to use an fd someone else controls).
pub fn set_nonblocking(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let raw = fd.as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL read and write only the status flags of an fd that is open for
    // the lifetime of the borrow.
    unsafe {
        let flags = libc::fcntl(raw, libc::F_GETFL);
        if flags < 0 || libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Readiness asked of and reported by [`poll`].
pub const POLL_IN: i16 = libc::POLLIN;
pub const POLL_OUT: i16 = libc::POLLOUT;
/// Reported without being asked: the peer hung up or the fd failed.
pub const POLL_GONE: i16 = libc::POLLHUP | libc::POLLERR | libc::POLLNVAL | libc::POLLRDHUP;

/// `poll` on `(fd, wanted events)`; fills in the returned events, EINTR counts as a timeout.
pub fn poll(fds: &mut [(RawFd, i16, i16)], timeout_ms: i32) -> io::Result<()> {
    let mut pfds = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; 4];
    let n = fds.len().min(pfds.len());
    for (p, (fd, events, _)) in pfds.iter_mut().zip(fds.iter()) {
        p.fd = *fd;
        p.events = *events | libc::POLLRDHUP;
    }
    // SAFETY: `pfds[..n]` is an exclusive, initialised array of `n` pollfd that outlives the
    // call; poll writes only their `revents`.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), n as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    for (p, (_, _, revents)) in pfds.iter().zip(fds.iter_mut()) {
        *revents = if rc < 0 { 0 } else { p.revents };
    }
    Ok(())
}

/// A non-blocking `recvmsg` into `buf`, appending any passed file descriptors to `fds`.
/// Returns the bytes read (0 at end of stream) and whether the kernel had to drop fds that
/// did not fit the control buffer (`MSG_CTRUNC`: a sender passing more than [`MAX_MSG_FDS`]).
pub fn recv_with_fds(
    fd: RawFd,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<(usize, bool)> {
    let mut control = [0u64; 32];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero is a valid value to fill in.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: `iov` points into `buf` (exclusive, `iov_len` bytes) and `msg_control` into
    // `control` (exclusive, `msg_controllen` bytes); both outlive the call. MSG_CMSG_CLOEXEC
    // makes received fds close-on-exec; MSG_DONTWAIT makes it non-blocking whatever the fd.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `msg` was filled by recvmsg; CMSG_FIRSTHDR/NXTHDR only walk within
    // `msg_control..+msg_controllen`, and each header's data holds `cmsg_len - CMSG_LEN(0)`
    // bytes of file descriptors that this process now owns (so wrapping them in OwnedFd is
    // the single ownership).
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..bytes / std::mem::size_of::<libc::c_int>() {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n as usize, msg.msg_flags & libc::MSG_CTRUNC != 0))
}

/// Sets a listening socket's backlog to `n` (Linux applies `listen` again to a listening
/// socket by changing its backlog; 0 admits exactly one pending connection).
pub fn set_backlog(fd: std::os::fd::BorrowedFd<'_>, n: i32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: listen only changes the state of the socket behind an fd open for the borrow.
    if unsafe { libc::listen(fd.as_raw_fd(), n) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Connects a new unix stream socket to `path` without waiting: a listener whose backlog is
/// full is an error (`EAGAIN`), not a hang.
pub fn connect_nonblocking(path: &std::path::Path) -> io::Result<std::os::unix::net::UnixStream> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data; all-zero is valid (and NUL-terminates the path).
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: socket creates a new fd owned by nobody else; it is wrapped at once.
    let raw = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` was just created and is owned only here.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: `addr` is an initialised sockaddr_un that outlives the call; the length passed
    // is its size.
    let rc = unsafe {
        libc::connect(
            raw,
            (&addr as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(std::os::unix::net::UnixStream::from(sock))
}

/// Closes `leaked`, a descriptor the framework took from us and never closes, if and only if
/// it still refers to the same open file as `witness` (our own duplicate of it, `kcmp`):
/// should a later framework version close it after all, the number may by then belong to
/// something else, which must not be touched. Returns whether it was closed.
pub fn close_leaked_fd(leaked: RawFd, witness: &impl std::os::fd::AsRawFd) -> bool {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    // SAFETY: kcmp(KCMP_FILE) only compares two descriptor numbers of this process and reads
    // nothing through pointers; it returns 0 when both refer to the same open file.
    let same = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid,
            pid,
            0, // KCMP_FILE
            leaked as libc::c_ulong,
            witness.as_raw_fd() as libc::c_ulong,
        )
    } == 0;
    if same {
        // SAFETY: `leaked` refers to the open file `witness` does, so it is the descriptor
        // we created and handed to the framework, which dropped every handle on it but this
        // raw number (its exit event consumer, leaked with `into_raw_fd`): nothing else owns
        // or will use it, so this is its only close.
        unsafe {
            libc::close(leaked);
        }
    }
    same
}
