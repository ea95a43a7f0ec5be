//! The device's system calls that need `unsafe`: thread naming, TAP ioctls, AF_PACKET
//! sockets. Everything else in the crate is safe code.
#![allow(unsafe_code)]

use std::ffi::CString;

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
