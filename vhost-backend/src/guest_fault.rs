//! Surviving guest memory that a frontend truncates under us: SIGBUS containment.
//!
//! Guest memory is the frontend's file (memfd, hugetlbfs) mapped shared. The front door
//! refuses a region that claims more than its file holds, but the frontend keeps the file: it
//! can `ftruncate` it later, and the next touch of a page past the new end raises SIGBUS,
//! whose default action ends the process and every tenant it serves. Sealing (`F_SEAL_SHRINK`)
//! cannot be required of every frontend: hugetlbfs files, which DPDK uses, cannot be sealed.
//!
//! So the process has one SIGBUS handler ([`install`]). Each device registers the host ranges
//! of the guest memory it maps ([`FaultOwner::set_regions`]) in a fixed, lock-free table. When
//! a fault's address lies in a registered range, the handler maps anonymous zero pages over
//! the faulting page (`MAP_FIXED`; a huge page if the mapping is hugetlbfs) and marks the
//! owner poisoned; the faulting access then completes on zeros, and the front door
//! disconnects and resets that device ([`FaultOwner::take_poisoned`]). Any other SIGBUS goes
//! to the handler installed before ours (Rust's own), or takes the default action.
//!
//! The handler only reads atomics and calls `mmap`, `sigaction` and `raise`. Table slots are
//! written under a mutex by ordinary threads with a sequence count, so the handler never
//! reads a half-written slot. A device registers its current and previous memory tables: a
//! worker that still holds the previous table for the event it is handling stays covered.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Mutex, Once, OnceLock};

/// Guest memory ranges registered, process-wide (every region of every device, current and
/// previous table: 8 devices with 2 x 64 regions fit).
pub const MAX_RANGES: usize = 1024;
/// Devices (`FaultOwner`s) at once in one process.
pub const MAX_OWNERS: usize = 256;

/// Page sizes tried, smallest first, when mapping zeros over a faulting page: a hugetlbfs
/// mapping can only be replaced whole huge pages at a time.
const PAGE_SIZES: [usize; 3] = [4096, 2 << 20, 1 << 30];

struct Range {
    /// Odd while a writer changes the slot.
    seq: AtomicU64,
    start: AtomicUsize,
    len: AtomicUsize,
    owner: AtomicUsize,
}

impl Range {
    const fn new() -> Self {
        Self {
            seq: AtomicU64::new(0),
            start: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            owner: AtomicUsize::new(0),
        }
    }

    /// Writer side; the caller holds [`WRITER`].
    fn write(&self, start: usize, len: usize, owner: usize) {
        self.seq.fetch_add(1, Ordering::AcqRel);
        fence(Ordering::Release);
        self.start.store(start, Ordering::Relaxed);
        self.len.store(len, Ordering::Relaxed);
        self.owner.store(owner, Ordering::Relaxed);
        self.seq.fetch_add(1, Ordering::Release);
    }

    /// Reader side (the signal handler): the owner whose range holds `addr`, with the range.
    fn lookup(&self, addr: usize) -> Option<(usize, usize, usize)> {
        let before = self.seq.load(Ordering::Acquire);
        if before % 2 == 1 {
            return None;
        }
        let start = self.start.load(Ordering::Relaxed);
        let len = self.len.load(Ordering::Relaxed);
        let owner = self.owner.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if self.seq.load(Ordering::Relaxed) != before || len == 0 {
            return None;
        }
        (addr >= start && addr - start < len).then_some((owner, start, len))
    }
}

static RANGES: [Range; MAX_RANGES] = [const { Range::new() }; MAX_RANGES];
static POISONED: [AtomicBool; MAX_OWNERS] = [const { AtomicBool::new(false) }; MAX_OWNERS];
static OWNER_USED: [AtomicBool; MAX_OWNERS] = [const { AtomicBool::new(false) }; MAX_OWNERS];
/// Faults contained since start, all devices.
static CONTAINED: AtomicU64 = AtomicU64::new(0);
/// Serialises table writers (never taken by the handler).
static WRITER: Mutex<()> = Mutex::new(());
/// The SIGBUS disposition before ours, chained to for faults outside guest memory.
static PREVIOUS: OnceLock<PreviousAction> = OnceLock::new();
static INSTALL: Once = Once::new();

struct PreviousAction(libc::sigaction);
// SAFETY: a sigaction is plain data (a handler address, a mask, flags), read only after
// `PREVIOUS` is set once.
unsafe impl Sync for PreviousAction {}
// SAFETY: as above.
unsafe impl Send for PreviousAction {}

/// Faults contained so far, process-wide.
pub fn contained() -> u64 {
    CONTAINED.load(Ordering::Relaxed)
}

/// Installs the process's SIGBUS handler (once; later calls do nothing). Returns whether
/// containment is active.
pub fn install() -> bool {
    INSTALL.call_once(|| {
        // SAFETY: an all-zero sigaction is a valid value to fill in; sigemptyset initialises
        // its mask. The handler is an `extern "C"` fn with the SA_SIGINFO signature that
        // stays valid for the life of the process. The previous action is written into
        // `old`, on this frame.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, &action, &mut old) == 0 {
                let _ = PREVIOUS.set(PreviousAction(old));
            }
        }
    });
    PREVIOUS.get().is_some()
}

/// The signal handler. Async-signal-safe: atomics, `mmap`, `sigaction`, `raise`.
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t for an SA_SIGINFO handler; si_addr is the
    // faulting address for SIGBUS.
    let addr = unsafe { (*info).si_addr() } as usize;
    if let Some((owner, start, len)) = RANGES.iter().find_map(|r| r.lookup(addr))
        && zero_fill(addr, start, len)
    {
        if let Some(p) = POISONED.get(owner) {
            p.store(true, Ordering::Release);
        }
        CONTAINED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    chain(sig, info, ctx);
}

/// Maps anonymous zero pages over the page of `addr`, trying larger pages for hugetlbfs
/// mappings, never beyond the registered range `start..start+len`.
fn zero_fill(addr: usize, start: usize, len: usize) -> bool {
    for page in PAGE_SIZES {
        let base = addr & !(page - 1);
        if base < start || base - start + page > len {
            break;
        }
        // SAFETY: `base..base+page` lies inside a guest memory mapping this process made
        // (registered range) and whose owner still maps it (a thread is touching it now);
        // MAP_FIXED replaces those pages of it with private anonymous zero pages, which the
        // later munmap of the region unmaps with the rest. No Rust object's memory is there
        // but guest memory, which the device only ever reads and writes as bytes.
        let p = unsafe {
            libc::mmap(
                base as *mut libc::c_void,
                page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            return true;
        }
    }
    false
}

/// Hands a fault outside guest memory to the previous handler, or takes the default action.
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    if let Some(PreviousAction(prev)) = PREVIOUS.get() {
        let h = prev.sa_sigaction;
        if h != libc::SIG_DFL && h != libc::SIG_IGN {
            if prev.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: the previous disposition was installed with SA_SIGINFO, so `h` is a
                // handler with this signature; the arguments are the kernel's, unchanged.
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(h) };
                f(sig, info, ctx);
            } else {
                // SAFETY: a handler installed without SA_SIGINFO takes the signal number only.
                let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(h) };
                f(sig);
            }
            return;
        }
    }
    // SAFETY: restoring the default action and raising the signal again are
    // async-signal-safe; the signal is blocked in this handler, so it is delivered (and ends
    // the process, with the right status) as soon as the handler returns.
    unsafe {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
        libc::raise(sig);
    }
}

fn writer() -> std::sync::MutexGuard<'static, ()> {
    WRITER.lock().unwrap_or_else(|p| p.into_inner())
}

/// One device's share of the table.
#[derive(Debug)]
pub struct FaultOwner {
    id: usize,
}

impl FaultOwner {
    /// A new owner, or `None` when [`MAX_OWNERS`] devices already exist (that device's memory
    /// is then not covered; the caller says so).
    pub fn new() -> Option<Self> {
        (0..MAX_OWNERS)
            .find(|&i| {
                OWNER_USED[i]
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            })
            .map(|id| {
                POISONED[id].store(false, Ordering::Release);
                Self { id }
            })
    }

    /// Makes `ranges` (host start, length) this owner's registered ranges, replacing the
    /// earlier ones. Returns how many did not fit in the table.
    pub fn set_regions(&self, ranges: &[(usize, usize)]) -> usize {
        let _w = writer();
        let mine = |r: &Range| {
            r.len.load(Ordering::Relaxed) != 0 && r.owner.load(Ordering::Relaxed) == self.id
        };
        let kept = |r: &Range| {
            let (start, len) = (
                r.start.load(Ordering::Relaxed),
                r.len.load(Ordering::Relaxed),
            );
            ranges.contains(&(start, len))
        };
        // New ranges first, then the old ones go: a range in both stays covered throughout.
        let mut missed = 0;
        for &(start, len) in ranges.iter().filter(|(_, len)| *len != 0) {
            if RANGES.iter().any(|r| {
                mine(r)
                    && r.start.load(Ordering::Relaxed) == start
                    && r.len.load(Ordering::Relaxed) == len
            }) {
                continue;
            }
            match RANGES.iter().find(|r| r.len.load(Ordering::Relaxed) == 0) {
                Some(slot) => slot.write(start, len, self.id),
                None => missed += 1,
            }
        }
        for r in RANGES.iter().filter(|r| mine(r) && !kept(r)) {
            r.write(0, 0, 0);
        }
        missed
    }

    /// Whether a fault was contained in this owner's memory since the last call.
    pub fn take_poisoned(&self) -> bool {
        POISONED[self.id].swap(false, Ordering::AcqRel)
    }
}

impl Drop for FaultOwner {
    fn drop(&mut self) {
        self.set_regions(&[]);
        OWNER_USED[self.id].store(false, Ordering::Release);
    }
}
