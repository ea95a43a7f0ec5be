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

/// `recvmsg` into `buf`, appending any passed file descriptors to `fds`. Returns the bytes
/// read (0 at end of stream).
pub fn recv_with_fds(fd: RawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    // u64 elements keep the control buffer aligned for cmsghdr.
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
    // makes received fds close-on-exec.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC) };
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
    Ok(n as usize)
}

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

/// Worker exit-event fds that `vhost-user-backend` 0.24 leaks: `VringEpollHandler::new`
/// registers the consumer half returned by `exit_event` with `consumer.into_raw_fd()` and
/// never closes it, so every connection would leave one open eventfd per worker. The device
/// records each such fd when it hands it out and closes it here once that connection's
/// daemon is dropped.
#[derive(Debug, Default)]
pub struct LeakedExitFds(std::sync::Mutex<Vec<RawFd>>);

impl LeakedExitFds {
    pub fn record(&self, fd: RawFd) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(fd);
    }

    /// Closes every recorded fd. Call only after the daemon that received them is dropped
    /// (its worker threads joined): no one uses them any more.
    pub fn close_all(&self) {
        for fd in self.0.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            // SAFETY: `fd` is a consumer fd this device created and gave to the framework,
            // which turned it into a raw fd it never closes (vhost-user-backend 0.24,
            // `event_loop.rs`); nothing else in the process holds that number, and it was
            // recorded once, so it is closed exactly once, after its only user (the worker's
            // epoll, gone with the dropped daemon) stopped using it.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
}
