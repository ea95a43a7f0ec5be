//! The one place that enters the kernel: raw syscalls with errno mapped to io::Error.
#![allow(unsafe_code)]

use std::ffi::c_long;
use std::io;

/// Runs `nr` as the calling host thread's kernel task.
///
/// # Safety
/// Every argument the syscall dereferences must be a valid host pointer for the
/// access the syscall makes (read or write, of the length it is given), for the
/// whole call: the kernel reads and writes host memory directly.
pub(crate) unsafe fn syscall(nr: i64, args: [i64; 6]) -> io::Result<i64> {
    let params: [c_long; 6] = args;
    // SAFETY: `params` lives across the call; the pointers inside it are the
    // caller's responsibility (see above).
    let ret = unsafe { lkl_sys::knic_syscall(nr, params.as_ptr()) };
    if (-4095..0).contains(&ret) {
        Err(io::Error::from_raw_os_error(-ret as i32))
    } else {
        Ok(ret)
    }
}

/// A syscall whose arguments are all plain values (no pointers).
pub(crate) fn syscall_values(nr: i64, args: [i64; 6]) -> io::Result<i64> {
    // SAFETY: no argument is dereferenced by the callers of this function.
    unsafe { syscall(nr, args) }
}
