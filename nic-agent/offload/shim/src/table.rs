//! Which of the process's fds are offloaded sockets, and the program's epoll registrations of
//! them.
//!
//! The host kernel owns the fds themselves; this table only remembers that an fd number is a
//! placeholder (and of what socket), updated by the shim's own socket/accept/dup*/fcntl
//! (F_DUPFD*)/close/close_range paths. A fork copies it with the memory; an exec loses it and
//! [`crate::rediscover`] rebuilds it from the inherited placeholders.
//!
//! The per-fd flag makes the common case (a host fd) one relaxed load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, RwLock};

/// Fds at or above this number are never offloaded (socket() says EMFILE for them).
pub const MAX_FDS: usize = 1 << 16;

/// What the shim knows of one offloaded socket (shared by its dups in this process).
#[derive(Debug)]
pub struct Sock {
    pub domain: i32,
    /// SOCK_STREAM or SOCK_DGRAM.
    pub kind: i32,
    /// Serialises request/reply exchanges of this process's threads on the connection.
    pub lock: Mutex<()>,
    /// [`fork_generation`] when this process made or accepted the socket; [`INHERITED`] when
    /// it came across an `exec`. Another generation now means a child may share it.
    pub generation: u64,
    /// `SO_RCVTIMEO` and `SO_SNDTIMEO` as this process last set them, in ns ([`FOREVER`]:
    /// not set, or set to zero; 0: no wait at all). Exact while the socket is
    /// [`Sock::private`]; otherwise the waits ask the library socket.
    pub rcv_timeout_ns: AtomicI64,
    pub snd_timeout_ns: AtomicI64,
}

/// A socket timeout that never runs out (the kernel's `MAX_SCHEDULE_TIMEOUT`).
pub const FOREVER: i64 = -1;

/// The generation of a socket found after `exec` (another process may hold it).
pub const INHERITED: u64 = u64::MAX;

static FORKS: AtomicU64 = AtomicU64::new(0);

/// How many times this process forked (through glibc) since the shim loaded.
pub fn fork_generation() -> u64 {
    FORKS.load(Ordering::Acquire)
}

/// pthread_atfork's prepare handler: the parent's sockets may be shared from now on.
pub extern "C" fn before_fork() {
    FORKS.fetch_add(1, Ordering::AcqRel);
}

impl Sock {
    pub fn new(domain: i32, kind: i32) -> Arc<Sock> {
        Sock::with_generation(domain, kind, fork_generation())
    }

    pub fn with_generation(domain: i32, kind: i32, generation: u64) -> Arc<Sock> {
        Arc::new(Sock {
            domain,
            kind,
            lock: Mutex::new(()),
            generation,
            rcv_timeout_ns: AtomicI64::new(FOREVER),
            snd_timeout_ns: AtomicI64::new(FOREVER),
        })
    }

    /// Whether no other process can hold this socket (made here, no fork since).
    pub fn private(&self) -> bool {
        self.generation == fork_generation()
    }

    pub fn stream(&self) -> bool {
        self.kind == libc::SOCK_STREAM
    }

    /// The timeout a blocking call waiting for `events` obeys (POLLOUT: the send timeout,
    /// else the receive one) as this process set it, in ns; [`FOREVER`]: none.
    pub fn timeout_ns(&self, events: i16) -> i64 {
        let t = if events & libc::POLLOUT != 0 {
            &self.snd_timeout_ns
        } else {
            &self.rcv_timeout_ns
        };
        t.load(Ordering::Relaxed)
    }
}

static OFFLOADED: [AtomicBool; MAX_FDS] = [const { AtomicBool::new(false) }; MAX_FDS];
static SOCKS: RwLock<Vec<Option<Arc<Sock>>>> = RwLock::new(Vec::new());

fn slot(fd: i64) -> Option<usize> {
    usize::try_from(fd).ok().filter(|&f| f < MAX_FDS)
}

/// The socket behind `fd`, if `fd` is an offloaded placeholder.
#[inline]
pub fn get(fd: i64) -> Option<Arc<Sock>> {
    let i = slot(fd)?;
    if !OFFLOADED[i].load(Ordering::Acquire) {
        return None;
    }
    let t = SOCKS.read().unwrap_or_else(|p| p.into_inner());
    t.get(i).cloned().flatten()
}

pub fn insert(fd: i64, sock: Arc<Sock>) -> bool {
    let Some(i) = slot(fd) else {
        return false;
    };
    let mut t = SOCKS.write().unwrap_or_else(|p| p.into_inner());
    if t.len() <= i {
        t.resize(i + 1, None);
    }
    t[i] = Some(sock);
    OFFLOADED[i].store(true, Ordering::Release);
    true
}

/// Forgets `fd` (before the host closes it, so a reused number is never taken for ours).
pub fn remove(fd: i64) {
    let Some(i) = slot(fd) else {
        return;
    };
    if !OFFLOADED[i].load(Ordering::Acquire) {
        return;
    }
    OFFLOADED[i].store(false, Ordering::Release);
    let mut t = SOCKS.write().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = t.get_mut(i) {
        *s = None;
    }
}

/// An epoll registration of an offloaded fd, as the program made it.
#[derive(Debug, Clone, Copy)]
pub struct EpollReg {
    pub events: u32,
    pub data: u64,
}

static EPOLL_COUNT: [AtomicU32; MAX_FDS] = [const { AtomicU32::new(0) }; MAX_FDS];
static EPOLL: LazyLock<Mutex<HashMap<(i32, i32), EpollReg>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn epoll_map() -> MutexGuard<'static, HashMap<(i32, i32), EpollReg>> {
    EPOLL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether epoll set `epfd` holds any offloaded fd (fast check for epoll_wait).
pub fn epoll_has_offloaded(epfd: i64) -> bool {
    slot(epfd).is_some_and(|i| EPOLL_COUNT[i].load(Ordering::Acquire) > 0)
}

pub fn epoll_set(epfd: i32, fd: i32, reg: EpollReg) {
    if epoll_map().insert((epfd, fd), reg).is_none() {
        if let Some(i) = slot(i64::from(epfd)) {
            EPOLL_COUNT[i].fetch_add(1, Ordering::AcqRel);
        }
    }
}

pub fn epoll_del(epfd: i32, fd: i32) {
    if epoll_map().remove(&(epfd, fd)).is_some() {
        if let Some(i) = slot(i64::from(epfd)) {
            EPOLL_COUNT[i].fetch_sub(1, Ordering::AcqRel);
        }
    }
}

pub fn epoll_get(epfd: i32, fd: i32) -> Option<EpollReg> {
    epoll_map().get(&(epfd, fd)).copied()
}

/// Drops every registration in epoll set `epfd` (the set itself was closed).
pub fn epoll_forget_set(epfd: i32) {
    let Some(i) = slot(i64::from(epfd)) else {
        return;
    };
    if EPOLL_COUNT[i].load(Ordering::Acquire) == 0 {
        return;
    }
    epoll_map().retain(|k, _| k.0 != epfd);
    EPOLL_COUNT[i].store(0, Ordering::Release);
}
