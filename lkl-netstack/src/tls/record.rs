//! `recvmsg`/`sendmsg` with the kernel TLS record-type control message.
//!
//! Reads return application data alone unless a control message buffer is
//! given; with one, the kernel also hands over alerts and post-handshake
//! messages, one record type per call.
#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, zeroed};

use lkl_sys::nr;

use super::keys::{SOL_TLS, TLS_GET_RECORD_TYPE, TLS_SET_RECORD_TYPE};
use crate::Fd;
use crate::sys;

/// TLS content types (RFC 8446 §5.1).
pub(crate) const CONTENT_ALERT: u8 = 21;
pub(crate) const CONTENT_HANDSHAKE: u8 = 22;
pub(crate) const CONTENT_APPLICATION_DATA: u8 = 23;

/// Room for one `cmsghdr` carrying a byte, aligned as the kernel expects.
#[repr(C, align(8))]
struct RecordTypeCmsg([u8; 32]);

/// Receives into `buf`; returns the byte count and the records' content type.
pub(crate) fn recv_record(fd: &Fd, buf: &mut [u8]) -> io::Result<(usize, u8)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = RecordTypeCmsg([0; 32]);
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = control.0.len();
    // SAFETY: msg, iov, buf and control outlive the call; the kernel writes at most
    // iov_len bytes into buf and msg_controllen bytes into control.
    let n = unsafe {
        sys::syscall(
            nr::RECVMSG,
            [i64::from(fd.raw()), &mut msg as *mut _ as i64, 0, 0, 0, 0],
        )?
    };
    let mut content = CONTENT_APPLICATION_DATA;
    if msg.msg_controllen >= size_of::<libc::cmsghdr>() {
        // SAFETY: the kernel wrote a cmsghdr at the start of control (the length
        // check above), and control is 8-aligned.
        let cmsg = unsafe { &*control.0.as_ptr().cast::<libc::cmsghdr>() };
        if cmsg.cmsg_level == SOL_TLS && cmsg.cmsg_type == TLS_GET_RECORD_TYPE {
            // SAFETY: CMSG_DATA of a header inside control points inside control.
            content = unsafe { *libc::CMSG_DATA(cmsg) };
        }
    }
    Ok((n as usize, content))
}

/// Sends `data` as one record of `content` type (e.g. an alert).
pub(crate) fn send_record(fd: &Fd, content: u8, data: &[u8]) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    let mut control = RecordTypeCmsg([0; 32]);
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(1) } as usize;
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: control holds space >= one aligned cmsghdr plus a byte, so the header
    // and its data byte lie inside it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = SOL_TLS;
        (*cmsg).cmsg_type = TLS_SET_RECORD_TYPE;
        (*cmsg).cmsg_len = libc::CMSG_LEN(1) as usize;
        *libc::CMSG_DATA(cmsg) = content;
    }
    // SAFETY: msg, iov, data and control outlive the call; the kernel only reads them.
    let n = unsafe {
        sys::syscall(
            nr::SENDMSG,
            [i64::from(fd.raw()), &msg as *const _ as i64, 0, 0, 0, 0],
        )?
    };
    Ok(n as usize)
}
