//! Memory that the library kernel sees as user memory of its own.
//!
//! Host memory is outside the kernel's page map, so kernel paths that pin user
//! pages instead of copying (`get_user_pages`: TLS 1.2's zero-copy decrypt,
//! `MSG_ZEROCOPY`) fail on it with EFAULT. An anonymous `mmap` made inside the
//! library is backed by kernel pages and listed in PID 1's memory map, which
//! every host thread shares, so those paths work on it.
#![allow(unsafe_code)]

use std::io;

use lkl_sys::nr;

use crate::sys;

/// An anonymous read-write mapping in the library, unmapped on drop.
#[derive(Debug)]
pub struct UserBuffer {
    addr: usize,
    len: usize,
}

impl UserBuffer {
    /// Maps `len` bytes (rounded up to pages by the kernel) inside the library.
    pub fn map(len: usize) -> io::Result<UserBuffer> {
        let addr = sys::syscall_values(
            nr::MMAP,
            [
                0,
                len as i64,
                i64::from(libc::PROT_READ | libc::PROT_WRITE),
                i64::from(libc::MAP_PRIVATE | libc::MAP_ANONYMOUS),
                -1,
                0,
            ],
        )?;
        Ok(UserBuffer {
            addr: addr as usize,
            len,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: [addr, addr+len) is a live read-write mapping in the kernel's
        // arena, which is in this process's address space, until drop; the kernel
        // writes it only within syscalls given this slice, so `&mut self` is the
        // only way in.
        unsafe { std::slice::from_raw_parts_mut(self.addr as *mut u8, self.len) }
    }
}

impl Drop for UserBuffer {
    fn drop(&mut self) {
        let _ = sys::syscall_values(nr::MUNMAP, [self.addr as i64, self.len as i64, 0, 0, 0, 0]);
    }
}
