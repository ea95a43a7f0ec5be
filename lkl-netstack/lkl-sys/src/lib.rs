//! Raw FFI to Linux built as an in-process library with knic's architecture port.
//!
//! The kernel is Debian's `linux-source-6.12` plus our `arch/knic` port (see
//! `kernel/`), linked as `libknic_linux.a`. Everything here mirrors
//! `kernel/arch/knic/include/uapi/asm/host_ops.h`; the safe API is `lkl-netstack`.
//!
//! Contracts of the library, which callers must keep:
//! - one kernel per process, booted once (`knic_start_kernel` refuses a second boot);
//! - host operations are called from any thread, must not unwind, and must never call
//!   back into the kernel;
//! - pointers passed to syscalls are host pointers, valid for the whole call.
#![allow(non_camel_case_types)]
#![allow(unsafe_code)] // this crate is the FFI boundary; the safe wrappers live in lkl-netstack

use std::ffi::{c_char, c_int, c_long, c_uint, c_ulong, c_ulonglong, c_void};

/// Syscall numbers of the library kernel: the asm-generic numbering, which differs
/// from the host's on x86-64, so never use `libc::SYS_*` with the library.
pub mod nr {
    include!(concat!(env!("OUT_DIR"), "/syscall_numbers.rs"));
}

/// The kernel version of the tarball the library was built from.
pub const KERNEL_VERSION: &str = env!("KNIC_KERNEL_VERSION");

/// Which build of the kernel this is: empty for the product kernel, else the name of the
/// test variant (`KNIC_KERNEL_VARIANT` at build time, e.g. `kunit`).
pub const KERNEL_VARIANT: &str = env!("KNIC_KERNEL_VARIANT");

/// Room for the host C library's `jmp_buf`.
#[repr(C, align(16))]
#[derive(Debug)]
pub struct knic_jmp_buf {
    pub buf: [u64; 64],
}

/// One piece of an AES-GCM message (`struct knic_crypt_seg`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct knic_crypt_seg {
    pub src: *const u8,
    pub dst: *mut u8,
    pub len: c_ulong,
}

/// The host operations table (`struct knic_host_ops`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct knic_host_ops {
    pub print: Option<unsafe extern "C" fn(str: *const c_char, len: c_int)>,
    pub panic: Option<unsafe extern "C" fn()>,
    pub sem_alloc: Option<unsafe extern "C" fn(count: c_int) -> *mut c_void>,
    pub sem_free: Option<unsafe extern "C" fn(sem: *mut c_void)>,
    pub sem_up: Option<unsafe extern "C" fn(sem: *mut c_void)>,
    pub sem_down: Option<unsafe extern "C" fn(sem: *mut c_void)>,
    pub thread_create: Option<
        unsafe extern "C" fn(
            f: Option<unsafe extern "C" fn(*mut c_void)>,
            arg: *mut c_void,
        ) -> c_ulong,
    >,
    pub tls_alloc: Option<
        unsafe extern "C" fn(destructor: Option<unsafe extern "C" fn(*mut c_void)>) -> c_long,
    >,
    pub tls_free: Option<unsafe extern "C" fn(key: c_long)>,
    pub tls_set: Option<unsafe extern "C" fn(key: c_long, data: *mut c_void) -> c_int>,
    pub tls_get: Option<unsafe extern "C" fn(key: c_long) -> *mut c_void>,
    pub mem_alloc: Option<unsafe extern "C" fn(size: c_ulong) -> *mut c_void>,
    pub mem_free: Option<unsafe extern "C" fn(addr: *mut c_void)>,
    pub page_alloc: Option<unsafe extern "C" fn(size: c_ulong) -> *mut c_void>,
    pub page_free: Option<unsafe extern "C" fn(addr: *mut c_void, size: c_ulong)>,
    pub time_ns: Option<unsafe extern "C" fn() -> c_ulonglong>,
    pub timer_alloc: Option<
        unsafe extern "C" fn(
            f: Option<unsafe extern "C" fn(*mut c_void)>,
            arg: *mut c_void,
        ) -> *mut c_void,
    >,
    pub timer_set_oneshot:
        Option<unsafe extern "C" fn(timer: *mut c_void, delta_ns: c_ulonglong) -> c_int>,
    pub timer_free: Option<unsafe extern "C" fn(timer: *mut c_void)>,
    pub jmp_buf_set: Option<
        unsafe extern "C" fn(
            jb: *mut knic_jmp_buf,
            f: Option<unsafe extern "C" fn(*mut c_void)>,
            arg: *mut c_void,
        ),
    >,
    pub jmp_buf_longjmp: Option<unsafe extern "C" fn(jb: *mut knic_jmp_buf) -> !>,
    pub iomem_access: Option<
        unsafe extern "C" fn(
            addr: *const c_void,
            val: *mut c_void,
            size: c_int,
            write: c_int,
        ) -> c_int,
    >,
    pub memcpy: Option<
        unsafe extern "C" fn(dest: *mut c_void, src: *const c_void, n: c_ulong) -> *mut c_void,
    >,
    pub memmove: Option<
        unsafe extern "C" fn(dest: *mut c_void, src: *const c_void, n: c_ulong) -> *mut c_void,
    >,
    pub memset: Option<unsafe extern "C" fn(s: *mut c_void, c: c_int, n: c_ulong) -> *mut c_void>,
    pub aes_gcm_key_new:
        Option<unsafe extern "C" fn(key: *const u8, key_len: c_uint) -> *mut c_void>,
    pub aes_gcm_key_free: Option<unsafe extern "C" fn(key: *mut c_void)>,
    pub aes_gcm_crypt: Option<
        unsafe extern "C" fn(
            key: *const c_void,
            encrypt: c_int,
            iv: *const u8,
            segs: *const knic_crypt_seg,
            aad_segs: c_uint,
            data_segs: c_uint,
            tag: *mut u8,
        ) -> c_int,
    >,
}

unsafe extern "C" {
    /// Boots the kernel; returns 0 once PID 1 is ready for syscalls, or a negative errno.
    pub fn knic_start_kernel(
        ops: *const knic_host_ops,
        mem_bytes: c_ulong,
        cmdline: *const c_char,
    ) -> c_int;
    /// Runs syscall `nr` with six arguments as the calling host thread's task.
    pub fn knic_syscall(nr: c_long, params: *const c_long) -> c_long;
    /// Powers the kernel off: every kernel thread ends, later syscalls get -ESHUTDOWN.
    pub fn knic_halt() -> c_long;
    pub fn knic_is_running() -> c_int;
    pub fn knic_get_free_irq(name: *const c_char) -> c_int;
    pub fn knic_put_irq(irq: c_int);
    pub fn knic_trigger_irq(irq: c_int) -> c_int;
    /// The C half of the jump-buffer host operations (Rust cannot longjmp).
    pub fn knic_host_jmp_buf_set(
        jb: *mut knic_jmp_buf,
        f: Option<unsafe extern "C" fn(*mut c_void)>,
        arg: *mut c_void,
    );
    pub fn knic_host_jmp_buf_longjmp(jb: *mut knic_jmp_buf) -> !;
}
