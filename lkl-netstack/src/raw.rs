//! Raw syscalls into the library kernel, for servers that forward other programs' calls
//! (the agent's kernel offload): socket calls with any flags, options and control data the
//! safe API does not model.
#![allow(unsafe_code)]

use std::io;

use crate::{Kernel, sys};

/// The library kernel's syscall numbers (asm-generic; never the host's `libc::SYS_*`).
pub use lkl_sys::nr;

/// A handle that may make raw syscalls into the booted kernel from any thread.
///
/// Holding one proves a kernel was booted in this process; after [`Kernel::halt`] every call
/// fails with `ESHUTDOWN`.
#[derive(Debug, Clone, Copy)]
pub struct RawCalls(());

impl Kernel {
    /// A handle for raw syscalls, usable from any thread for the life of the process.
    pub fn raw_calls(&self) -> RawCalls {
        RawCalls(())
    }
}

impl RawCalls {
    /// Runs syscall `nr` (from [`nr`]) as the calling host thread's kernel task; `Err` carries
    /// the kernel's errno.
    ///
    /// # Safety
    /// Every argument the syscall dereferences must be a valid host pointer for the access it
    /// makes (read or write, of the length it is given) for the whole call: the kernel reads
    /// and writes host memory directly.
    pub unsafe fn syscall(&self, nr: i64, args: [i64; 6]) -> io::Result<i64> {
        // SAFETY: the caller keeps the pointer contract above.
        unsafe { sys::syscall(nr, args) }
    }

    /// A syscall whose arguments are plain values (closing an fd, `listen`, `shutdown`).
    pub fn syscall_values(&self, nr: i64, args: [i64; 6]) -> io::Result<i64> {
        sys::syscall_values(nr, args)
    }
}
