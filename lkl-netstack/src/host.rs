//! The host operations the kernel runs on, written in Rust (only the jump buffer is C).
//!
//! Every function here is called by kernel code from arbitrary host threads, often
//! the one that currently runs the kernel: none may block on kernel progress, unwind
//! into C, or call back into the kernel.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_long, c_ulong, c_ulonglong, c_void};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use lkl_sys::knic_host_ops;

/// Host threads that run kernel threads need little stack: kernel code is shallow.
const KTHREAD_STACK_BYTES: usize = 256 * 1024;

/// The table handed to `knic_start_kernel`; lives for the whole process.
pub(crate) static HOST_OPS: knic_host_ops = OPS;

/// The same, leaving AES-GCM to the kernel's generic C code.
pub(crate) static HOST_OPS_GENERIC_CRYPTO: knic_host_ops = knic_host_ops {
    aes_gcm_key_new: None,
    aes_gcm_key_free: None,
    aes_gcm_crypt: None,
    ..OPS
};

const OPS: knic_host_ops = knic_host_ops {
    print: Some(print),
    panic: Some(panic),
    sem_alloc: Some(sem_alloc),
    sem_free: Some(sem_free),
    sem_up: Some(sem_up),
    sem_down: Some(sem_down),
    thread_create: Some(thread_create),
    tls_alloc: Some(tls_alloc),
    tls_free: Some(tls_free),
    tls_set: Some(tls_set),
    tls_get: Some(tls_get),
    mem_alloc: Some(mem_alloc),
    mem_free: Some(mem_free),
    page_alloc: Some(page_alloc),
    page_free: Some(page_free),
    time_ns: Some(time_ns),
    timer_alloc: Some(timer_alloc),
    timer_set_oneshot: Some(timer_set_oneshot),
    timer_free: Some(timer_free),
    jmp_buf_set: Some(lkl_sys::knic_host_jmp_buf_set),
    jmp_buf_longjmp: Some(lkl_sys::knic_host_jmp_buf_longjmp),
    iomem_access: Some(crate::device::mmio::iomem_access),
    memcpy: Some(memcpy),
    memmove: Some(memmove),
    memset: Some(memset),
    aes_gcm_key_new: Some(crate::host_crypto::aes_gcm_key_new),
    aes_gcm_key_free: Some(crate::host_crypto::aes_gcm_key_free),
    aes_gcm_crypt: Some(crate::host_crypto::aes_gcm_crypt),
};

// The C library's vectorised routines, with the kernel's size type.
unsafe extern "C" fn memcpy(dest: *mut c_void, src: *const c_void, n: c_ulong) -> *mut c_void {
    // SAFETY: the kernel passes valid, non-overlapping ranges of n bytes.
    unsafe { libc::memcpy(dest, src, n as usize) }
}

unsafe extern "C" fn memmove(dest: *mut c_void, src: *const c_void, n: c_ulong) -> *mut c_void {
    // SAFETY: the kernel passes valid ranges of n bytes.
    unsafe { libc::memmove(dest, src, n as usize) }
}

unsafe extern "C" fn memset(s: *mut c_void, c: c_int, n: c_ulong) -> *mut c_void {
    // SAFETY: the kernel passes a valid range of n bytes.
    unsafe { libc::memset(s, c, n as usize) }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; the counters stay consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Kernel log lines, split out of the console stream and sent to `tracing`.
static CONSOLE: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// The last console lines, printed to stderr when the kernel panics or (debug build)
/// reports a problem, so the cause is visible even where no `tracing` subscriber runs.
static RECENT: Mutex<std::collections::VecDeque<String>> =
    Mutex::new(std::collections::VecDeque::new());
const RECENT_LINES: usize = 80;

fn dump_recent(why: &str) {
    let recent = lock(&RECENT);
    let mut text = format!(
        "--- {why}; the library kernel's last {} log lines:\n",
        recent.len()
    );
    for l in recent.iter() {
        text.push_str(l);
        text.push('\n');
    }
    text.push_str("---\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), text.as_bytes());
}

unsafe extern "C" fn print(str: *const c_char, len: c_int) {
    let Ok(len) = usize::try_from(len) else {
        return;
    };
    if str.is_null() {
        return;
    }
    // SAFETY: the kernel's console hands us `len` readable bytes at `str` for the call.
    let bytes = unsafe { std::slice::from_raw_parts(str.cast::<u8>(), len) };
    let mut pending = lock(&CONSOLE);
    pending.extend_from_slice(bytes);
    while let Some(end) = pending.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = pending.drain(..=end).collect();
        let text = String::from_utf8_lossy(&line[..line.len() - 1]);
        {
            let mut recent = lock(&RECENT);
            if recent.len() == RECENT_LINES {
                recent.pop_front();
            }
            recent.push_back(text.clone().into_owned());
        }
        let report = is_kernel_report(&text);
        if in_thread_exit() {
            // No `tracing` here (see IN_THREAD_EXIT): a report goes to stderr as is.
            if report {
                KERNEL_REPORTS.fetch_add(1, Ordering::SeqCst);
                let _ = std::io::Write::write_all(&mut std::io::stderr(), &line);
            }
        } else if report {
            note_kernel_report(&text);
        } else {
            tracing::info!(target: "linux", "{text}");
        }
    }
}

/// Reports the kernel has printed: a BUG, a WARNING, an oops, list or slab corruption,
/// a lockdep finding. Read by [`crate::Kernel::kernel_reports`].
pub(crate) static KERNEL_REPORTS: AtomicU64 = AtomicU64::new(0);

/// Whether a console line opens a kernel report (what `BUG()`, `WARN()`, SLUB_DEBUG,
/// DEBUG_LIST, DEBUG_ATOMIC_SLEEP and lockdep print first), after its `[ time]` stamp.
pub(crate) fn is_kernel_report(line: &str) -> bool {
    let mut text = line.trim_start();
    if let Some(rest) = text.strip_prefix('[')
        && let Some(end) = rest.find(']')
    {
        text = rest[end + 1..].trim_start();
    }
    ["BUG:", "BUG ", "WARNING:", "Oops", "kernel BUG", "INFO: "]
        .iter()
        .any(|p| text.starts_with(p))
        || text.contains(" corruption")
}

/// In the `debug` build, also fails a process that exits normally after a report (one
/// printed too late for the abort timer below): checked by an `atexit` handler.
pub(crate) fn install_debug_exit_check() {
    extern "C" fn abort_if_reported() {
        if KERNEL_REPORTS.load(Ordering::SeqCst) != 0 {
            // Only async-signal-safe calls: this runs inside exit().
            const MSG: &[u8] =
                b"the debug build of the library kernel reported a problem; aborting\n";
            // SAFETY: write(2) reads MSG.len() bytes from a static buffer.
            unsafe { libc::write(2, MSG.as_ptr().cast(), MSG.len()) };
            std::process::abort();
        }
    }
    if lkl_sys::KERNEL_VARIANT == "debug" {
        // SAFETY: atexit stores a function pointer to a function that never unwinds and
        // touches only an atomic and fd 2.
        unsafe { libc::atexit(abort_if_reported) };
    }
}

/// Counts a report and logs it at error level. In the `debug` build of the kernel (see
/// `kernel/variants/debug.config`) a report is a test failure: the process aborts half a
/// second later, once the report's stack trace has been printed.
fn note_kernel_report(text: &str) {
    tracing::error!(target: "linux", "{text}");
    if KERNEL_REPORTS.fetch_add(1, Ordering::SeqCst) == 0 && lkl_sys::KERNEL_VARIANT == "debug" {
        let _ = thread::Builder::new().name("knic-report".into()).spawn(|| {
            thread::sleep(Duration::from_millis(500));
            tracing::error!(
                target: "linux",
                "the debug build of the library kernel reported a problem (above); aborting"
            );
            dump_recent("the debug build of the library kernel reported a problem");
            std::process::abort();
        });
    }
}

unsafe extern "C" fn panic() {
    tracing::error!(target: "linux", "the library kernel panicked; stopping the process");
    dump_recent("the library kernel panicked");
    std::process::abort();
}

/// A counting semaphore: the kernel hands the CPU between tasks with these.
///
/// A hand-off is a post immediately followed by the other side's wait, so `down`
/// first spins briefly on the count: when the poster is about to run, the waiter
/// keeps its CPU awake instead of sleeping in the host kernel and being woken by an
/// interrupt (tens of microseconds on an idle virtual CPU). Only then does it block.
struct Semaphore {
    count: AtomicU32,
    /// Threads blocked (or about to block) on `wakeup`; `up` notifies only if non-zero.
    sleepers: AtomicU32,
    /// Threads inside `up`. The waiter a post releases may free the semaphore at once
    /// (a task's thread unwinding at halt), so freeing waits until this is zero.
    posters: AtomicU32,
    lock: Mutex<()>,
    wakeup: Condvar,
}

/// How long `down` spins before it sleeps: about what waking a sleeping virtual CPU
/// costs. (A count of spins would vary ten-fold with the CPU's `pause` latency.)
const SEM_SPIN: Duration = Duration::from_micros(25);

impl Semaphore {
    fn try_take(&self) -> bool {
        let mut count = self.count.load(Ordering::Acquire);
        while count > 0 {
            match self.count.compare_exchange_weak(
                count,
                count - 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => count = now,
            }
        }
        false
    }

    fn down(&self) {
        let started = Instant::now();
        loop {
            for _ in 0..64 {
                if self.try_take() {
                    return;
                }
                std::hint::spin_loop();
            }
            if started.elapsed() > SEM_SPIN {
                break;
            }
        }
        let mut guard = lock(&self.lock);
        // Registering as a sleeper before the last check pairs with `up`, which
        // bumps the count before it looks for sleepers: no post is missed.
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        while !self.try_take() {
            guard = self
                .wakeup
                .wait(guard)
                .unwrap_or_else(PoisonError::into_inner);
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }

    fn up(&self) {
        self.posters.fetch_add(1, Ordering::SeqCst);
        self.count.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = lock(&self.lock);
            self.wakeup.notify_one();
        }
        self.posters.fetch_sub(1, Ordering::Release); // the last touch of `self`
    }
}

unsafe extern "C" fn sem_alloc(count: c_int) -> *mut c_void {
    let sem = Box::new(Semaphore {
        count: AtomicU32::new(u32::try_from(count).unwrap_or(0)),
        sleepers: AtomicU32::new(0),
        posters: AtomicU32::new(0),
        lock: Mutex::new(()),
        wakeup: Condvar::new(),
    });
    Box::into_raw(sem).cast()
}

unsafe extern "C" fn sem_free(sem: *mut c_void) {
    if sem.is_null() {
        return;
    }
    let sem = sem.cast::<Semaphore>();
    // A post that released the freeing thread may still be finishing: wait for it
    // through a shared reference before taking ownership.
    // SAFETY: `sem` came from `sem_alloc` and is not freed yet.
    while unsafe { &*sem }.posters.load(Ordering::Acquire) != 0 {
        std::hint::spin_loop();
    }
    // SAFETY: the kernel frees each semaphore exactly once, when no thread waits on it
    // and no new post can come; the last post has left `up` (checked above).
    drop(unsafe { Box::from_raw(sem) });
}

unsafe extern "C" fn sem_up(sem: *mut c_void) {
    // SAFETY: `sem` is a live semaphore from `sem_alloc` (kernel invariant).
    unsafe { &*sem.cast::<Semaphore>() }.up();
}

unsafe extern "C" fn sem_down(sem: *mut c_void) {
    // SAFETY: as in `sem_up`.
    unsafe { &*sem.cast::<Semaphore>() }.down();
}

/// A C function and its argument, sent to another thread.
struct Callback {
    f: unsafe extern "C" fn(*mut c_void),
    arg: *mut c_void,
}

// SAFETY: the kernel hands `arg` to exactly one thread, which owns it from then on.
unsafe impl Send for Callback {}

impl Callback {
    fn call(&self) {
        // SAFETY: `f` is a kernel function taking the `arg` it was registered with.
        unsafe { (self.f)(self.arg) }
    }
}

unsafe extern "C" fn thread_create(
    f: Option<unsafe extern "C" fn(*mut c_void)>,
    arg: *mut c_void,
) -> c_ulong {
    let Some(f) = f else { return 0 };
    let callback = Callback { f, arg };
    let spawned = thread::Builder::new()
        .name("linux-kthread".into())
        .stack_size(KTHREAD_STACK_BYTES)
        .spawn(move || callback.call());
    match spawned {
        Ok(_detached) => 1,
        Err(e) => {
            tracing::error!("cannot start a host thread for a kernel thread: {e}");
            0
        }
    }
}

/// The kernel's thread-exit destructor (one per key; in practice one key, the host task's):
/// pthreads runs it through [`run_tls_destructor`], which marks the thread as exiting.
static TLS_DESTRUCTOR: std::sync::atomic::AtomicPtr<c_void> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

thread_local! {
    /// Set while the kernel's destructor runs at host-thread exit. By then the C library
    /// has run the Rust thread-locals' destructors (glibc runs them before pthread key
    /// destructors), so a kernel print on this thread must not reach `tracing`, whose
    /// subscriber keeps thread-local buffers: the access would panic inside C. No drop,
    /// constant initialiser: readable at any point of the thread's exit.
    static IN_THREAD_EXIT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this host thread is past its Rust thread-locals (see [`IN_THREAD_EXIT`]).
fn in_thread_exit() -> bool {
    IN_THREAD_EXIT.with(std::cell::Cell::get)
}

unsafe extern "C" fn run_tls_destructor(value: *mut c_void) {
    IN_THREAD_EXIT.with(|e| e.set(true));
    let f = TLS_DESTRUCTOR.load(Ordering::Acquire);
    if !f.is_null() {
        // SAFETY: `f` was stored from an `unsafe extern "C" fn(*mut c_void)` by
        // `tls_alloc`; function and data pointers have one size on the hosts we build for.
        let f: unsafe extern "C" fn(*mut c_void) = unsafe { std::mem::transmute(f) };
        // SAFETY: pthreads hands the destructor the key's value, as the kernel expects.
        unsafe { f(value) };
    }
}

unsafe extern "C" fn tls_alloc(destructor: Option<unsafe extern "C" fn(*mut c_void)>) -> c_long {
    // The kernel's destructor runs behind a trampoline that marks the thread as
    // exiting; a second, different destructor (none today) is registered directly.
    let destructor = destructor.map(|d| {
        let d_ptr = d as *mut c_void;
        match TLS_DESTRUCTOR.compare_exchange(
            std::ptr::null_mut(),
            d_ptr,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => run_tls_destructor as unsafe extern "C" fn(*mut c_void),
            Err(current) if current == d_ptr => run_tls_destructor,
            Err(_) => d,
        }
    });
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is a valid out pointer; the destructor is a kernel function (or our
    // trampoline to it) that takes the stored value and runs at host-thread exit, as
    // pthread_key_create says.
    let rc = unsafe { libc::pthread_key_create(&mut key, destructor) };
    if rc == 0 {
        c_long::from(key)
    } else {
        -c_long::from(rc)
    }
}

unsafe extern "C" fn tls_free(key: c_long) {
    if let Ok(key) = libc::pthread_key_t::try_from(key) {
        // SAFETY: the key came from `tls_alloc`.
        unsafe { libc::pthread_key_delete(key) };
    }
}

unsafe extern "C" fn tls_set(key: c_long, data: *mut c_void) -> c_int {
    let Ok(key) = libc::pthread_key_t::try_from(key) else {
        return libc::EINVAL;
    };
    // SAFETY: the key came from `tls_alloc`; the value is opaque to pthreads.
    unsafe { libc::pthread_setspecific(key, data) }
}

unsafe extern "C" fn tls_get(key: c_long) -> *mut c_void {
    let Ok(key) = libc::pthread_key_t::try_from(key) else {
        return std::ptr::null_mut();
    };
    // SAFETY: the key came from `tls_alloc`.
    unsafe { libc::pthread_getspecific(key) }
}

unsafe extern "C" fn mem_alloc(size: c_ulong) -> *mut c_void {
    let Ok(size) = usize::try_from(size) else {
        return std::ptr::null_mut();
    };
    // SAFETY: plain malloc; the kernel frees with `mem_free`.
    unsafe { libc::malloc(size) }
}

unsafe extern "C" fn mem_free(addr: *mut c_void) {
    // SAFETY: `addr` came from `mem_alloc` (or is NULL).
    unsafe { libc::free(addr) }
}

unsafe extern "C" fn page_alloc(size: c_ulong) -> *mut c_void {
    let Ok(size) = usize::try_from(size) else {
        return std::ptr::null_mut();
    };
    // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return std::ptr::null_mut();
    }
    // The kernel asks for pages once: its RAM, where its virtqueues and buffers live.
    crate::device::memory::register_kernel_ram(addr.cast(), size);
    addr
}

unsafe extern "C" fn page_free(addr: *mut c_void, size: c_ulong) {
    let Ok(size) = usize::try_from(size) else {
        return;
    };
    // SAFETY: the kernel unmaps its arena once, after the last kernel thread left it.
    unsafe { libc::munmap(addr, size) };
}

unsafe extern "C" fn time_ns() -> c_ulonglong {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// The kernel's one-shot clockevent: a thread that sleeps until the deadline.
struct OneShotTimer {
    state: Mutex<TimerState>,
    rearmed: Condvar,
    thread: Mutex<Option<thread::JoinHandle<()>>>,
}

struct TimerState {
    deadline: Option<Instant>,
    stop: bool,
}

impl OneShotTimer {
    fn run(&self, fire: &Callback) {
        let mut state = lock(&self.state);
        loop {
            if state.stop {
                return;
            }
            match state.deadline {
                None => {
                    state = self
                        .rearmed
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner)
                }
                Some(at) => {
                    let now = Instant::now();
                    if now < at {
                        state = self
                            .rearmed
                            .wait_timeout(state, at - now)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0;
                        continue;
                    }
                    state.deadline = None;
                    drop(state);
                    fire.call(); // raises the timer interrupt; never blocks
                    state = lock(&self.state);
                }
            }
        }
    }
}

/// Shares the timer with its thread (the kernel owns the handle until `timer_free`).
struct TimerRef(*const OneShotTimer);
// SAFETY: OneShotTimer is Sync (Mutex/Condvar); the box outlives the thread, which
// `timer_free` joins before freeing it.
unsafe impl Send for TimerRef {}

unsafe extern "C" fn timer_alloc(
    f: Option<unsafe extern "C" fn(*mut c_void)>,
    arg: *mut c_void,
) -> *mut c_void {
    let Some(f) = f else {
        return std::ptr::null_mut();
    };
    let timer = Box::into_raw(Box::new(OneShotTimer {
        state: Mutex::new(TimerState {
            deadline: None,
            stop: false,
        }),
        rearmed: Condvar::new(),
        thread: Mutex::new(None),
    }));
    let fire = Callback { f, arg };
    let shared = TimerRef(timer);
    let spawned = thread::Builder::new()
        .name("linux-timer".into())
        .spawn(move || {
            let shared = shared;
            // SAFETY: see TimerRef.
            unsafe { &*shared.0 }.run(&fire);
        });
    match spawned {
        Ok(handle) => {
            // SAFETY: `timer` is the live box created above.
            *lock(&unsafe { &*timer }.thread) = Some(handle);
            timer.cast()
        }
        Err(e) => {
            tracing::error!("cannot start the kernel's timer thread: {e}");
            // SAFETY: the thread was not started; we still own the box.
            drop(unsafe { Box::from_raw(timer) });
            std::ptr::null_mut()
        }
    }
}

unsafe extern "C" fn timer_set_oneshot(timer: *mut c_void, delta_ns: c_ulonglong) -> c_int {
    // SAFETY: `timer` came from `timer_alloc` and is not yet freed.
    let timer = unsafe { &*timer.cast::<OneShotTimer>() };
    let mut state = lock(&timer.state);
    state.deadline = (delta_ns != 0).then(|| Instant::now() + Duration::from_nanos(delta_ns));
    timer.rearmed.notify_one();
    0
}

unsafe extern "C" fn timer_free(timer: *mut c_void) {
    let timer = timer.cast::<OneShotTimer>();
    {
        // SAFETY: `timer` came from `timer_alloc`; freed only here.
        let t = unsafe { &*timer };
        lock(&t.state).stop = true;
        t.rearmed.notify_one();
        if let Some(handle) = lock(&t.thread).take() {
            let _ = handle.join();
        }
    }
    // SAFETY: the thread has exited; nothing refers to the box anymore.
    drop(unsafe { Box::from_raw(timer) });
}

#[cfg(test)]
mod tests {
    use super::is_kernel_report;

    /// The kernel prints from its host-thread exit destructor (a dying task's stack
    /// report, a WARN in do_exit): by then the thread's Rust thread-locals are gone,
    /// and a `tracing` subscriber's thread-local buffer with them. Before the fix the
    /// print below panicked inside C and aborted the process.
    #[test]
    fn kernel_prints_at_host_thread_exit_do_not_reach_tracing() {
        use std::ffi::c_void;
        // A global subscriber whose fmt layer keeps a thread-local buffer.
        let _ = tracing::subscriber::set_global_default(
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::INFO)
                .with_writer(std::io::sink)
                .finish(),
        );
        unsafe extern "C" fn prints_at_exit(_: *mut c_void) {
            let line = b"exit_test (7) used greatest stack depth: 61000 bytes left\n";
            // SAFETY: a readable buffer of that many bytes.
            unsafe { super::print(line.as_ptr().cast(), line.len() as i32) };
        }
        // SAFETY: a destructor that only prints.
        let key = unsafe { super::tls_alloc(Some(prints_at_exit)) };
        assert!(key >= 0, "tls_alloc: {key}");
        std::thread::spawn(move || {
            tracing::info!("this thread's fmt buffer exists");
            let value = std::ptr::dangling_mut::<u8>().cast();
            // SAFETY: the key came from tls_alloc; any non-null value runs the destructor.
            let rc = unsafe { super::tls_set(key, value) };
            assert_eq!(rc, 0);
        })
        .join()
        .unwrap();
        // SAFETY: the key came from tls_alloc and no thread uses it anymore.
        unsafe { super::tls_free(key) };
        let recent = super::lock(&super::RECENT);
        assert!(
            recent.iter().any(|l| l.starts_with("exit_test (7)")),
            "{recent:?}"
        );
    }

    #[test]
    fn kernel_reports_are_recognised_and_ordinary_lines_are_not() {
        for line in [
            "[    1.234567] BUG: sleeping function called from invalid context at mm/slub.c:4116",
            "[    1.2] BUG kmalloc-64 (Not tainted): Poison overwritten",
            "WARNING: CPU: 0 PID: 1 at net/core/dev.c:1 foo+0x1/0x2",
            "[ 2.0] WARNING: possible circular locking dependency detected",
            "[ 2.0] list_add corruption. prev->next should be next",
            "[ 2.0] INFO: trying to register non-static key.",
            "[ 2.0] Oops: general protection fault",
        ] {
            assert!(is_kernel_report(line), "{line}");
        }
        for line in [
            "[    0.000000] Linux version 6.12.95 (knic)",
            "[    0.1] NET: Registered PF_INET6 protocol family",
            "[    0.1] virtio_net virtio0 eth0: renamed",
            "[    0.2] TCP: cubic registered",
        ] {
            assert!(!is_kernel_report(line), "{line}");
        }
    }
}
