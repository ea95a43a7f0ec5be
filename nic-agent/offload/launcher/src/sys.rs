//! The launcher's one `unsafe`: a seqpacket connection to the agent (std has none).
#![allow(unsafe_code)]

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use knic_offload_protocol::{MAX_PAYLOAD, Op, REPLY_LEN, REQUEST_LEN, Reply, Request};

/// Connects to the agent's offload socket.
pub fn connect(path: &Path) -> io::Result<OwnedFd> {
    let addr = knic_offload_protocol::unix_address(path)?;
    // SAFETY: plain syscall; the result is a new fd owned at once below.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket() and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: addr is a valid sockaddr_un of the size passed.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &addr as *const libc::sockaddr_un as *const libc::sockaddr,
            size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Asks the agent for its offload counters (JSON).
pub fn stats(path: &Path) -> io::Result<String> {
    let fd = connect(path)?;
    let mut head = [0u8; REQUEST_LEN];
    Request::new(Op::Stats, [0; 6]).encode(&mut head);
    // SAFETY: the kernel reads head.len() bytes from head.
    if unsafe {
        libc::send(
            fd.as_raw_fd(),
            head.as_ptr().cast(),
            head.len(),
            libc::MSG_NOSIGNAL,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; REPLY_LEN + MAX_PAYLOAD];
    // SAFETY: the kernel writes at most buf.len() bytes into buf.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let (_, payload) = Reply::decode(&buf[..n as usize])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    Ok(String::from_utf8_lossy(payload).into_owned())
}
