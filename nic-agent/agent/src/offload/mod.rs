//! The kernel offload server: host programs' sockets (through `knic-offload`'s shim) become
//! sockets of this agent's library kernel.
//!
//! A `knic-agent` serves offload on [`knic_offload_protocol::DEFAULT_SOCKET`] unless told
//! otherwise. Each connection to that socket is one offloaded socket (the protocol crate's
//! docs say why: the connection *is* the application's fd); its first message makes the
//! library socket ([`Op::Open`]). A socket returned by `accept` gets a fresh socketpair whose
//! far end travels to the program with `SCM_RIGHTS`.
//!
//! # Threads
//! * `offload-accept` accepts connections and checks the peer (`SO_PEERCRED`: root or the
//!   agent's own user; others are refused and counted).
//!
//! # Limits
//! Every offloaded socket costs the agent a thread and a library socket, so one program must
//! not be able to take them all. [`OffloadLimits`] bounds the library sockets of each client
//! process (the `SO_PEERCRED` pid of the connection that made or accepted them) and of all
//! clients together. A `socket()` or `accept()` over either limit fails with `EMFILE`, as
//! one past `RLIMIT_NOFILE` would: a refused accept leaves the connection in the library's
//! backlog for a later accept. Each refusal counts `sockets_limited`.
//! * one `offload-sock` thread per offloaded socket reads its requests in order and answers
//!   each with one library syscall. Library sockets are non-blocking, so no request waits in
//!   the agent: blocking calls are the shim's loops over readiness.
//! * `offload-ready` polls (inside the library kernel) every socket whose program announced an
//!   interest and has no `Ready` queued, and queues one when the socket becomes ready. A pipe
//!   inside the library wakes it when that set changes.
//!
//! A thread per socket keeps the first slice simple; the per-thread shared-memory rings of
//! issue 10 replace it.
//!
//! # Hostile input
//! A malformed message (bad magic, unknown op, sizes out of range) ends that socket's
//! connection and counts `protocol_errors`; nothing a client sends reaches a panic, and every
//! address or option is copied into bounded storage before the library sees it.

mod sys;

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use knic_offload_protocol::{
    ADDR_SLOT, IFREQ_LEN, MAX_CONTROL, MAX_MESSAGE, MAX_PAYLOAD, Op, REPLY_LEN, Reply, Request,
    SOL_TLS, TLS_RX, TLS_TX, check_control,
};
use lkl_netstack::UserBuffer;
use lkl_netstack::raw::{RawCalls, nr};
use serde::Serialize;
use thiserror::Error;
use tracing::{debug, info, warn};

use sys::{Lkl, SockAddr};

/// Why the offload server could not start.
#[derive(Debug, Error)]
pub enum OffloadError {
    #[error(
        "cannot serve kernel offload on {}: another agent answers there; stop it or pass \
         another --offload-socket",
        path.display()
    )]
    InUse { path: PathBuf },
    #[error("cannot serve kernel offload on {}", path.display())]
    Socket {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the offload server's threads or its wake-up pipe")]
    Resources(#[source] io::Error),
}

/// How many library sockets offload clients may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffloadLimits {
    /// Per client process (the pid `SO_PEERCRED` gives for its connections).
    pub per_process: u32,
    /// All clients together.
    pub total: u32,
}

impl Default for OffloadLimits {
    /// 1024 per process (the soft `RLIMIT_NOFILE` a program usually starts with) and 16384
    /// in all.
    fn default() -> Self {
        OffloadLimits {
            per_process: 1024,
            total: 16384,
        }
    }
}

/// The library sockets each client process holds, against [`OffloadLimits`].
#[derive(Debug, Default)]
struct Usage {
    total: u32,
    per_pid: HashMap<i32, u32>,
}

impl Usage {
    /// Takes one socket for `pid` if both limits allow it.
    fn reserve(&mut self, limits: &OffloadLimits, pid: i32) -> bool {
        let mine = self.per_pid.get(&pid).copied().unwrap_or(0);
        if self.total >= limits.total || mine >= limits.per_process {
            return false;
        }
        self.total += 1;
        self.per_pid.insert(pid, mine + 1);
        true
    }

    /// Gives back one socket of `pid`'s.
    fn release(&mut self, pid: i32) {
        if let Some(n) = self.per_pid.get_mut(&pid) {
            *n -= 1;
            self.total = self.total.saturating_sub(1);
            if *n == 0 {
                self.per_pid.remove(&pid);
            }
        }
    }
}

/// The offload server's counters (in `Op::Stats` replies, as JSON).
#[derive(Debug, Default)]
struct Counters {
    connections_refused: AtomicU64,
    sockets_opened: AtomicU64,
    sockets_accepted: AtomicU64,
    sockets_closed: AtomicU64,
    open_refused: AtomicU64,
    requests: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    ready_signals: AtomicU64,
    protocol_errors: AtomicU64,
    sockets_limited: AtomicU64,
    silent_connections: AtomicU64,
}

/// A snapshot of the counters, plus the library kernel's own view.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OffloadStats {
    pub connections_refused: u64,
    pub sockets_opened: u64,
    pub sockets_accepted: u64,
    pub sockets_closed: u64,
    /// Library sockets alive now.
    pub sockets_live: u64,
    pub open_refused: u64,
    pub requests: u64,
    /// Bytes programs sent through offloaded sockets (into the library).
    pub bytes_sent: u64,
    /// Bytes programs received from offloaded sockets.
    pub bytes_received: u64,
    pub ready_signals: u64,
    pub protocol_errors: u64,
    /// `socket()`/`accept()` calls refused with `EMFILE` by [`OffloadLimits`].
    pub sockets_limited: u64,
    /// Connections closed because their first message did not come within
    /// [`FIRST_MESSAGE_WAIT`] (a shim sends it as soon as it connects).
    pub silent_connections: u64,
    /// The limits in force.
    pub max_sockets_per_process: u32,
    pub max_sockets_total: u32,
    /// The library kernel's `/proc/net/snmp` and `/proc/net/dev`.
    pub kernel_snmp: String,
    pub kernel_dev: String,
    /// The library kernel's `/proc/net/tls_stat` (its TLS ULP: `TlsTxSw`, `TlsRxSw`,
    /// `TlsCurrTxSw`, `TlsDecryptError`, ...): records sealed and opened by the library's
    /// kTLS for offloaded sockets.
    pub kernel_tls_stat: String,
}

/// Interest and signalling state of one socket; see the protocol crate's *Readiness*.
#[derive(Debug, Default)]
struct Readiness {
    /// Events any epoll registration of the program waits for (only grows).
    persistent: i16,
    /// Events a waiting poll/select/blocking call waits for; cleared once signalled.
    oneshot: i16,
    /// A `Ready` is queued on the connection and not yet read by the shim.
    signalled: bool,
    /// A request is being answered: the shim reads everything queued before the reply, so
    /// only the reply's sender may queue a Ready that survives (after the reply).
    busy: bool,
}

impl Readiness {
    fn interest(&self) -> i16 {
        let i = self.persistent | self.oneshot;
        if i == 0 {
            0
        } else {
            i | libc::POLLERR | libc::POLLHUP
        }
    }
}

/// One offloaded socket: the agent's end of its connection and its library socket.
#[derive(Debug)]
struct Conn {
    host: OwnedFd,
    /// The client process this socket counts against (`SO_PEERCRED` of its connection, or
    /// of the listener's for an accepted one).
    pid: i32,
    /// The library socket; -1 once closed (Op::Close, or the connection's end).
    lkl_fd: AtomicI32,
    domain: i32,
    kind: i32,
    ready: Mutex<Readiness>,
    closed: AtomicBool,
}

impl Conn {
    fn lkl_fd(&self) -> i32 {
        self.lkl_fd.load(Ordering::Acquire)
    }

    /// Closes the library socket once, giving its slot back to the client's limit at once
    /// (a program's `close` returns after this, so its next `socket()` may use the slot).
    fn close_lkl(&self, shared: &Shared) {
        let fd = self.lkl_fd.swap(-1, Ordering::AcqRel);
        if fd >= 0 {
            shared.lkl.close(fd);
            lock(&shared.usage).release(self.pid);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug)]
struct Shared {
    lkl: Lkl,
    counters: Counters,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    limits: OffloadLimits,
    usage: Mutex<Usage>,
    next_id: AtomicU64,
    stopping: AtomicBool,
    /// `offload-sock` threads alive: the kernel may only halt when none is left in a
    /// library call.
    socket_threads: AtomicUsize,
    /// Write end of the watcher's wake-up pipe (inside the library).
    wake: i32,
}

/// How long a stopping server waits for its socket threads to see their connections end.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Starts an `offload-sock` thread running `f`, counted in `socket_threads` while it runs.
fn spawn_socket_thread(
    shared: &Arc<Shared>,
    f: impl FnOnce(&Arc<Shared>) + Send + 'static,
) -> io::Result<()> {
    struct Counted(Arc<Shared>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.socket_threads.fetch_sub(1, Ordering::SeqCst);
        }
    }
    shared.socket_threads.fetch_add(1, Ordering::SeqCst);
    // Made before the spawn: a failed spawn drops the closure, and with it the count.
    let counted = Counted(Arc::clone(shared));
    std::thread::Builder::new()
        .name("offload-sock".into())
        .spawn(move || f(&counted.0))
        .map(drop)
}

impl Shared {
    fn wake_watcher(&self) {
        let _ = self.lkl.write(self.wake, &[1]);
    }

    /// Takes a socket slot for `pid`, or counts the refusal (the caller answers `EMFILE`).
    fn reserve(&self, pid: i32) -> bool {
        if lock(&self.usage).reserve(&self.limits, pid) {
            return true;
        }
        let n = self
            .counters
            .sockets_limited
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        // A program looping on socket() must not flood the log: 1st, 2nd, 4th, 8th, ...
        if n.is_power_of_two() {
            warn!(
                pid,
                per_process = self.limits.per_process,
                total = self.limits.total,
                refused = n,
                "offload: socket limit reached, answering EMFILE"
            );
        }
        false
    }

    fn stats(&self) -> OffloadStats {
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        OffloadStats {
            connections_refused: g(&c.connections_refused),
            sockets_opened: g(&c.sockets_opened),
            sockets_accepted: g(&c.sockets_accepted),
            sockets_closed: g(&c.sockets_closed),
            sockets_live: lock(&self.conns).len() as u64,
            open_refused: g(&c.open_refused),
            requests: g(&c.requests),
            bytes_sent: g(&c.bytes_sent),
            bytes_received: g(&c.bytes_received),
            ready_signals: g(&c.ready_signals),
            protocol_errors: g(&c.protocol_errors),
            sockets_limited: g(&c.sockets_limited),
            silent_connections: g(&c.silent_connections),
            max_sockets_per_process: self.limits.per_process,
            max_sockets_total: self.limits.total,
            kernel_snmp: self.lkl.read_file(c"/proc/net/snmp").unwrap_or_default(),
            kernel_dev: self.lkl.read_file(c"/proc/net/dev").unwrap_or_default(),
            kernel_tls_stat: self
                .lkl
                .read_file(c"/proc/net/tls_stat")
                .unwrap_or_default(),
        }
    }
}

/// The running offload server; stopping it (drop) ends every offloaded socket.
#[derive(Debug)]
pub struct OffloadServer {
    shared: Arc<Shared>,
    path: PathBuf,
    listener: OwnedFd,
    threads: Vec<JoinHandle<()>>,
    wake_read: i32,
}

impl OffloadServer {
    /// Serves offload on `path` (its directory is made if missing) with the kernel `calls`
    /// reaches, its clients' sockets bounded by `limits`.
    pub fn start(
        calls: RawCalls,
        path: &Path,
        limits: OffloadLimits,
    ) -> Result<OffloadServer, OffloadError> {
        let err = |source| OffloadError::Socket {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        if path.exists() {
            if sys::seqpacket_connect(path).is_ok() {
                return Err(OffloadError::InUse {
                    path: path.to_path_buf(),
                });
            }
            std::fs::remove_file(path).map_err(err)?;
        }
        let listener = sys::seqpacket_listen(path).map_err(err)?;
        let lkl = Lkl(calls);
        let (wake_read, wake) = lkl.pipe().map_err(OffloadError::Resources)?;
        let shared = Arc::new(Shared {
            lkl,
            counters: Counters::default(),
            conns: Mutex::new(HashMap::new()),
            limits,
            usage: Mutex::new(Usage::default()),
            next_id: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
            socket_threads: AtomicUsize::new(0),
            wake,
        });
        let mut threads = Vec::new();
        let s = Arc::clone(&shared);
        let fd = listener.as_raw_fd();
        threads.push(
            std::thread::Builder::new()
                .name("offload-accept".into())
                .spawn(move || accept_loop(&s, fd))
                .map_err(OffloadError::Resources)?,
        );
        let s = Arc::clone(&shared);
        threads.push(
            std::thread::Builder::new()
                .name("offload-ready".into())
                .spawn(move || watch_loop(&s, wake_read))
                .map_err(OffloadError::Resources)?,
        );
        info!(socket = %path.display(), "kernel offload served");
        Ok(OffloadServer {
            shared,
            path: path.to_path_buf(),
            listener,
            threads,
            wake_read,
        })
    }

    pub fn stats(&self) -> OffloadStats {
        self.shared.stats()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for OffloadServer {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wakes the accept thread, which then sees `stopping`.
        drop(sys::seqpacket_connect(&self.path));
        sys::shutdown(self.listener.as_raw_fd());
        self.shared.wake_watcher();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // Every socket thread ends its library socket and exits when its connection ends;
        // the kernel must not halt under one still in a library call. Swept again while
        // waiting: a thread may register its socket after a sweep (its Open in flight).
        let deadline = std::time::Instant::now() + STOP_WAIT;
        loop {
            for c in lock(&self.shared.conns).values() {
                sys::shutdown(c.host.as_raw_fd());
            }
            let left = self.shared.socket_threads.load(Ordering::SeqCst);
            if left == 0 {
                break;
            }
            if std::time::Instant::now() >= deadline {
                warn!(
                    threads = left,
                    "offload: socket threads still running after {STOP_WAIT:?}; stopping anyway"
                );
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        self.shared.lkl.close(self.shared.wake);
        self.shared.lkl.close(self.wake_read);
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: RawFd) {
    let me = sys::euid();
    loop {
        let conn = match sys::accept(listener) {
            Ok(_) if shared.stopping.load(Ordering::SeqCst) => return,
            Ok(c) => c,
            Err(e) => {
                if shared.stopping.load(Ordering::SeqCst) {
                    return;
                }
                if e.raw_os_error() == Some(libc::EMFILE) || e.raw_os_error() == Some(libc::ENFILE)
                {
                    warn!(error = %e, "offload: out of fds, refusing connections for 100 ms");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                continue;
            }
        };
        let pid = match sys::peer_cred(conn.as_raw_fd()) {
            Ok(cred) if cred.uid == 0 || cred.uid == me => cred.pid,
            Ok(cred) => {
                shared
                    .counters
                    .connections_refused
                    .fetch_add(1, Ordering::Relaxed);
                warn!(
                    uid = cred.uid,
                    pid = cred.pid,
                    "offload: refused a peer of another user"
                );
                continue;
            }
            Err(_) => continue,
        };
        if let Err(e) = spawn_socket_thread(shared, move |s| first_message(s, conn, pid)) {
            warn!(error = %e, "offload: cannot start a socket thread");
        }
    }
}

fn send_reply(fd: RawFd, reply: Reply, payload: &[u8], pass: Option<RawFd>) -> io::Result<()> {
    let mut head = [0u8; REPLY_LEN];
    reply.encode(&mut head);
    sys::send(fd, &[&head, payload], pass, false)
}

/// How long a new connection may take to send its first message: a shim sends it right
/// after connecting; a connection that stays silent would hold a thread for ever.
pub const FIRST_MESSAGE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The first message of a connection from `socket()`: Open (or Stats).
fn first_message(shared: &Arc<Shared>, host: OwnedFd, pid: i32) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let fd = host.as_raw_fd();
    if sys::set_recv_timeout(fd, Some(FIRST_MESSAGE_WAIT)).is_err() {
        return;
    }
    let n = match sys::recv(fd, &mut buf) {
        Ok(n) if n > 0 && n <= buf.len() => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            shared
                .counters
                .silent_connections
                .fetch_add(1, Ordering::Relaxed);
            debug!(
                pid,
                "offload: no first message in {FIRST_MESSAGE_WAIT:?}, closed"
            );
            return;
        }
        _ => return,
    };
    // The socket's own requests may come at any pace.
    if sys::set_recv_timeout(fd, None).is_err() {
        return;
    }
    let req = match Request::decode(&buf[..n]) {
        Ok((req, _)) => req,
        Err(e) => {
            shared
                .counters
                .protocol_errors
                .fetch_add(1, Ordering::Relaxed);
            debug!(error = %e, "offload: bad first message");
            return;
        }
    };
    match req.op {
        Op::Stats => {
            let json = serde_json::to_vec(&shared.stats()).unwrap_or_default();
            let body = &json[..json.len().min(MAX_PAYLOAD)];
            let _ = send_reply(host.as_raw_fd(), Reply::new(body.len() as i64), body, None);
        }
        Op::Open => {
            let (domain, kind, protocol) = (req.args[0], req.args[1], req.args[2]);
            let base = kind & 0xf;
            let fd = if !knic_offload_protocol::offloaded(domain, kind, protocol) {
                -i64::from(libc::EAFNOSUPPORT)
            } else if !shared.reserve(pid) {
                -i64::from(libc::EMFILE)
            } else {
                let fd = shared.lkl.values(
                    nr::SOCKET,
                    [
                        domain,
                        base | i64::from(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC),
                        protocol,
                        0,
                        0,
                        0,
                    ],
                );
                if fd < 0 {
                    lock(&shared.usage).release(pid);
                }
                fd
            };
            if fd < 0 {
                shared.counters.open_refused.fetch_add(1, Ordering::Relaxed);
                let _ = send_reply(host.as_raw_fd(), Reply::new(fd), &[], None);
                return;
            }
            shared
                .counters
                .sockets_opened
                .fetch_add(1, Ordering::Relaxed);
            let conn = register(shared, host, pid, fd as i32, domain as i32, base as i32);
            if send_reply(conn.1.host.as_raw_fd(), Reply::new(0), &[], None).is_ok() {
                serve(shared, conn.0, &conn.1, buf);
            } else {
                unregister(shared, conn.0, &conn.1);
            }
        }
        _ => {
            shared
                .counters
                .protocol_errors
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Registers a socket whose slot `pid` already holds (`Shared::reserve`).
fn register(
    shared: &Shared,
    host: OwnedFd,
    pid: i32,
    lkl_fd: i32,
    domain: i32,
    kind: i32,
) -> (u64, Arc<Conn>) {
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let conn = Arc::new(Conn {
        host,
        pid,
        lkl_fd: AtomicI32::new(lkl_fd),
        domain,
        kind,
        ready: Mutex::new(Readiness::default()),
        closed: AtomicBool::new(false),
    });
    lock(&shared.conns).insert(id, Arc::clone(&conn));
    (id, conn)
}

fn unregister(shared: &Shared, id: u64, conn: &Conn) {
    conn.closed.store(true, Ordering::SeqCst);
    lock(&shared.conns).remove(&id);
    shared.wake_watcher();
    conn.close_lkl(shared);
    shared
        .counters
        .sockets_closed
        .fetch_add(1, Ordering::Relaxed);
}

/// Where one socket's replies are assembled: host memory, and for a kTLS RX socket a
/// receive buffer mapped inside the library, made when its keys are: `tls_sw_recvmsg`
/// decrypts a record in place into the receiver's pinned pages when the buffer holds it
/// (zero copy), and host memory has no pages the library can pin (EFAULT).
struct Buffers {
    host: Vec<u8>,
    landing: Option<UserBuffer>,
    /// Control messages a `recvmsg` returns (kept: no 1 KiB zeroed per call).
    control: Box<[u8; MAX_CONTROL]>,
}

/// Serves one socket's requests until its connection ends.
fn serve(shared: &Arc<Shared>, id: u64, conn: &Arc<Conn>, mut buf: Vec<u8>) {
    let mut out = Buffers {
        host: vec![0u8; MAX_PAYLOAD],
        landing: None,
        control: Box::new([0u8; MAX_CONTROL]),
    };
    let fd = conn.host.as_raw_fd();
    loop {
        let n = match sys::recv(fd, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) if n > buf.len() => {
                shared
                    .counters
                    .protocol_errors
                    .fetch_add(1, Ordering::Relaxed);
                break;
            }
            Ok(n) => n,
        };
        let (req, payload) = match Request::decode(&buf[..n]) {
            Ok(r) => r,
            Err(e) => {
                shared
                    .counters
                    .protocol_errors
                    .fetch_add(1, Ordering::Relaxed);
                debug!(error = %e, "offload: bad message, closing the socket");
                break;
            }
        };
        shared.counters.requests.fetch_add(1, Ordering::Relaxed);
        // The shim reads every queued Ready before it reads this reply.
        {
            let mut r = lock(&conn.ready);
            r.signalled = false;
            r.busy = true;
        }
        let sent = match handle(shared, conn, &req, payload, &mut out) {
            Ok(sent) => sent,
            Err(BadRequest) => {
                shared
                    .counters
                    .protocol_errors
                    .fetch_add(1, Ordering::Relaxed);
                break;
            }
        };
        if sent.is_err() {
            break;
        }
    }
    unregister(shared, id, conn);
}

/// A request whose arguments are out of range: the client is not a well-behaved shim.
struct BadRequest;

fn addr_arg(payload: &[u8]) -> Result<SockAddr, BadRequest> {
    SockAddr::from_bytes(payload).ok_or(BadRequest)
}

/// Answers one request; Ok(Err) when the reply could not be sent (connection gone).
fn handle(
    shared: &Arc<Shared>,
    conn: &Conn,
    req: &Request,
    payload: &[u8],
    bufs: &mut Buffers,
) -> Result<io::Result<()>, BadRequest> {
    let lkl = shared.lkl;
    let fd = conn.lkl_fd();
    let reply = |ret: i64| Ok(answer(shared, conn, Reply::new(ret), &[], None));
    let a = req.args;
    if fd < 0 && req.op != Op::Describe {
        return reply(-i64::from(libc::EBADF));
    }
    match req.op {
        Op::Open | Op::Stats => Err(BadRequest),
        Op::Close => {
            conn.close_lkl(shared);
            reply(0)
        }
        Op::Bind => reply(lkl.with_addr(nr::BIND, fd, &addr_arg(payload)?)),
        Op::Connect => reply(lkl.with_addr(nr::CONNECT, fd, &addr_arg(payload)?)),
        Op::Listen => reply(lkl.values(nr::LISTEN, [i64::from(fd), a[0], 0, 0, 0, 0])),
        Op::Shutdown => reply(lkl.values(nr::SHUTDOWN, [i64::from(fd), a[0], 0, 0, 0, 0])),
        Op::Accept => {
            let mut addr = SockAddr::empty();
            let flags = i64::from(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
            // Over a limit the connection stays queued in the library for a later accept.
            if !shared.reserve(conn.pid) {
                return reply(-i64::from(libc::EMFILE));
            }
            let new = lkl.fill_addr(nr::ACCEPT4, fd, &mut addr, flags);
            if new < 0 {
                lock(&shared.usage).release(conn.pid);
                return reply(new);
            }
            let (mine, theirs) = match sys::seqpacket_pair() {
                Ok(p) => p,
                Err(e) => {
                    lkl.close(new as i32);
                    lock(&shared.usage).release(conn.pid);
                    return reply(-i64::from(e.raw_os_error().unwrap_or(libc::EMFILE)));
                }
            };
            shared
                .counters
                .sockets_accepted
                .fetch_add(1, Ordering::Relaxed);
            let (id, child) = register(shared, mine, conn.pid, new as i32, conn.domain, conn.kind);
            let sent = answer(
                shared,
                conn,
                Reply::new(0),
                &[addr.bytes()],
                Some(theirs.as_raw_fd()),
            );
            drop(theirs);
            let served = Arc::clone(&child);
            let spawned = spawn_socket_thread(shared, move |s| {
                serve(s, id, &served, vec![0u8; MAX_MESSAGE]);
            });
            if let Err(e) = spawned {
                warn!(error = %e, "offload: cannot start a socket thread");
                unregister(shared, id, &child);
            }
            Ok(sent)
        }
        Op::Send => {
            let addr_len = usize::try_from(a[1]).map_err(|_| BadRequest)?;
            let control_len = usize::try_from(a[2]).map_err(|_| BadRequest)?;
            if addr_len > payload.len() || control_len > payload.len() - addr_len {
                return Err(BadRequest);
            }
            let to = if addr_len > 0 {
                Some(addr_arg(&payload[..addr_len])?)
            } else {
                None
            };
            let control = &payload[addr_len..addr_len + control_len];
            // The shim checked them for its caller; a client that did not is not the shim.
            check_control(control).map_err(|_| BadRequest)?;
            let flags = a[0] | i64::from(libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
            let data = &payload[addr_len + control_len..];
            let n = lkl.sendmsg(fd, data, flags, to.as_ref(), control);
            if n > 0 {
                shared
                    .counters
                    .bytes_sent
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
            reply(n)
        }
        Op::Recv => {
            let Buffers {
                host,
                landing,
                control,
            } = bufs;
            // The library's `recvmsg` writes into the landing buffer once kTLS RX has one.
            let out = match landing {
                Some(m) => m.as_mut_slice(),
                None => &mut host[..],
            };
            let control_room = usize::try_from(a[3]).map_err(|_| BadRequest)?;
            if control_room > MAX_CONTROL {
                return Err(BadRequest);
            }
            let room = usize::try_from(a[0])
                .map_err(|_| BadRequest)?
                .min(out.len() - ADDR_SLOT - control_room);
            let flags = a[1] | i64::from(libc::MSG_DONTWAIT);
            let mut from = SockAddr::empty();
            // Only the room asked for is cleared: it goes back whole, past what the
            // kernel wrote too, and must not carry an earlier call's messages.
            control[..control_room].fill(0);
            let got = lkl.recvmsg(
                fd,
                &mut out[..room],
                flags,
                &mut from,
                &mut control[..control_room],
            );
            let (n, msg_flags) = (got.ret, got.flags);
            let data = &out[..];
            let mut r = Reply::new(n);
            if n < 0 {
                return Ok(answer(shared, conn, r, &[], None));
            }
            shared
                .counters
                .bytes_received
                .fetch_add(n as u64, Ordering::Relaxed);
            r.aux[1] = i64::from(msg_flags);
            let copied = (n as usize).min(room);
            // One message: header, the address in a fixed slot (when asked), then the data,
            // so the shim can scatter the data straight into the program's buffer.
            let mut slot = [0u8; ADDR_SLOT];
            let name: &[u8] = if a[2] != 0 {
                let b = from.bytes();
                slot[..b.len()].copy_from_slice(b);
                r.aux[0] = b.len() as i64;
                &slot
            } else {
                &[]
            };
            r.aux[0] |= (got.control.min(control_room) as i64) << 32;
            // The control slot is exactly the room asked for (the shim scatters by it).
            let ctl: &[u8] = &control[..control_room];
            Ok(answer(shared, conn, r, &[name, ctl, &data[..copied]], None))
        }
        Op::Name => {
            let call = if a[0] == 0 {
                nr::GETSOCKNAME
            } else {
                nr::GETPEERNAME
            };
            let mut addr = SockAddr::empty();
            let r = lkl.fill_addr(call, fd, &mut addr, 0);
            let body: &[u8] = if r < 0 { &[] } else { addr.bytes() };
            Ok(answer(shared, conn, Reply::new(r), &[body], None))
        }
        Op::SetOption => {
            let out = &mut bufs.host;
            if a[0] == SOL_TLS && a[1] == TLS_RX && bufs.landing.is_none() {
                match UserBuffer::map(MAX_PAYLOAD) {
                    Ok(m) => bufs.landing = Some(m),
                    Err(e) => return reply(-i64::from(e.raw_os_error().unwrap_or(libc::ENOMEM))),
                }
            }
            let declared = usize::try_from(a[2]).map_err(|_| BadRequest)?;
            if declared <= payload.len() {
                return reply(lkl.setsockopt(fd, a[0], a[1], payload));
            }
            // kTLS keys of a size no cipher has: only their header came (protocol crate,
            // Op::SetOption); the kernel sees the caller's optlen over zeroes past it and
            // refuses it with its own errno, reading no more than the header.
            if a[0] != SOL_TLS || (a[1] != TLS_TX && a[1] != TLS_RX) || payload.len() > 4 {
                return Err(BadRequest);
            }
            let room = declared.min(out.len());
            out[..room].fill(0);
            out[..payload.len()].copy_from_slice(payload);
            reply(lkl.setsockopt(fd, a[0], a[1], &out[..room]))
        }
        Op::GetOption => {
            let out = &mut bufs.host;
            let room = usize::try_from(a[2])
                .map_err(|_| BadRequest)?
                .min(out.len());
            let (r, len) = lkl.getsockopt(fd, a[0], a[1], &mut out[..room]);
            let body: &[u8] = if r < 0 { &[] } else { &out[..len] };
            Ok(answer(shared, conn, Reply::new(r), &[body], None))
        }
        Op::IoctlInt => {
            let allowed = [
                libc::FIONREAD as i64,
                libc::TIOCOUTQ as i64, // SIOCOUTQ
                0x894b,                // SIOCOUTQNSD
            ];
            if allowed.contains(&a[0]) {
                reply(lkl.ioctl_int(fd, a[0]))
            } else {
                reply(-i64::from(libc::ENOTTY))
            }
        }
        Op::IoctlIfreq => {
            if !knic_offload_protocol::ifreq_ioctl(a[0] as u64) {
                return reply(-i64::from(libc::ENOTTY));
            }
            let mut ifreq: [u8; IFREQ_LEN] = payload.try_into().map_err(|_| BadRequest)?;
            let r = lkl.ioctl_ifreq(fd, a[0], &mut ifreq);
            let body: &[u8] = if r < 0 { &[] } else { &ifreq };
            Ok(answer(shared, conn, Reply::new(r), &[body], None))
        }
        Op::IoctlIfconf => {
            let out = &mut bufs.host;
            let room = usize::try_from(a[0]).map_err(|_| BadRequest)?;
            if room > MAX_PAYLOAD || room > out.len() {
                return Err(BadRequest);
            }
            let (r, len) = lkl.ioctl_ifconf(fd, (room > 0).then(|| &mut out[..room]));
            let used = usize::try_from(len).unwrap_or(0).min(room);
            let mut rep = Reply::new(r);
            rep.aux[0] = i64::from(len);
            let body: &[u8] = if r < 0 { &[] } else { &out[..used] };
            Ok(answer(shared, conn, rep, &[body], None))
        }
        Op::Poll => {
            {
                let mut r = lock(&conn.ready);
                r.persistent |= a[0] as i16;
                r.oneshot = a[1] as i16;
            }
            let mut p = [libc::pollfd {
                fd,
                events: libc::POLLIN | libc::POLLOUT | libc::POLLPRI | libc::POLLRDHUP,
                revents: 0,
            }];
            let r = lkl.poll(&mut p, false);
            reply(if r < 0 { r } else { i64::from(p[0].revents) })
        }
        Op::Describe => {
            let mut r = Reply::new(i64::from(conn.domain));
            r.aux[0] = i64::from(conn.kind);
            Ok(answer(shared, conn, r, &[], None))
        }
    }
}

/// Sends a reply, keeping "a Ready is queued iff the socket meets the interest": the
/// readiness is decided before the reply goes (and announced in it, `ready_follows`), and the
/// Ready goes right after it. Until then the connection is `busy`, so the watcher queues no
/// Ready the shim would read (and lose) before this reply.
fn answer(
    shared: &Shared,
    conn: &Conn,
    mut reply: Reply,
    payload: &[&[u8]],
    pass: Option<RawFd>,
) -> io::Result<()> {
    let interest = lock(&conn.ready).interest();
    let ready = interest != 0 && conn.lkl_fd() >= 0 && {
        let mut p = [libc::pollfd {
            fd: conn.lkl_fd(),
            events: interest,
            revents: 0,
        }];
        shared.lkl.poll(&mut p, false) > 0 && p[0].revents & interest != 0
    };
    reply.ready_follows = ready;
    let mut head = [0u8; REPLY_LEN];
    reply.encode(&mut head);
    let mut parts: [&[u8]; sys::MAX_PARTS] = [&head, &[], &[], &[]];
    for (d, s) in parts[1..].iter_mut().zip(payload) {
        *d = s;
    }
    let sent = sys::send(
        conn.host.as_raw_fd(),
        &parts[..=payload.len().min(sys::MAX_PARTS - 1)],
        pass,
        false,
    );
    let mut r = lock(&conn.ready);
    r.busy = false;
    if ready {
        signal(shared, conn, &mut r);
    } else if interest != 0 {
        drop(r);
        shared.wake_watcher();
    }
    sent
}

fn signal(shared: &Shared, conn: &Conn, r: &mut Readiness) {
    let mut head = [0u8; REPLY_LEN];
    Reply::ready().encode(&mut head);
    // Never waits: when the connection is full the placeholder is readable anyway (replies
    // are queued), so the shim will come back and the next reply re-checks readiness.
    let _ = sys::send(conn.host.as_raw_fd(), &[&head], None, true);
    r.signalled = true;
    r.oneshot = 0;
    shared
        .counters
        .ready_signals
        .fetch_add(1, Ordering::Relaxed);
}

/// The watcher: sleeps in the library's ppoll on every socket waiting to be signalled.
fn watch_loop(shared: &Arc<Shared>, wake_read: i32) {
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut who: Vec<Arc<Conn>> = Vec::new();
    let mut drain = [0u8; 256];
    while !shared.stopping.load(Ordering::SeqCst) {
        fds.clear();
        who.clear();
        fds.push(libc::pollfd {
            fd: wake_read,
            events: libc::POLLIN,
            revents: 0,
        });
        for c in lock(&shared.conns).values() {
            let r = lock(&c.ready);
            let interest = r.interest();
            if interest != 0 && !r.signalled && !r.busy && c.lkl_fd() >= 0 {
                fds.push(libc::pollfd {
                    fd: c.lkl_fd(),
                    events: interest,
                    revents: 0,
                });
                who.push(Arc::clone(c));
            }
        }
        if shared.lkl.poll(&mut fds, true) < 0 {
            continue;
        }
        if fds[0].revents != 0 {
            while shared.lkl.read(wake_read, &mut drain) > 0 {}
        }
        for (p, c) in fds[1..].iter().zip(&who) {
            if p.revents == 0 || c.closed.load(Ordering::SeqCst) {
                continue;
            }
            let mut r = lock(&c.ready);
            if !r.signalled && !r.busy && p.revents & r.interest() != 0 {
                signal(shared, c, &mut r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_bounds_each_process_and_all_of_them_and_gives_slots_back() {
        let limits = OffloadLimits {
            per_process: 2,
            total: 3,
        };
        let mut u = Usage::default();
        assert!(u.reserve(&limits, 10));
        assert!(u.reserve(&limits, 10));
        assert!(!u.reserve(&limits, 10), "a third for one process");
        assert!(u.reserve(&limits, 11));
        assert!(!u.reserve(&limits, 12), "a fourth in all");
        u.release(10);
        assert!(u.reserve(&limits, 12), "a slot given back is free again");
        assert_eq!(u.total, 3);
        u.release(12);
        u.release(11);
        u.release(10);
        assert_eq!(u.total, 0);
        assert!(u.per_pid.is_empty(), "no entry left for gone processes");
        // A release without a reservation (cannot happen) changes nothing.
        u.release(99);
        assert_eq!(u.total, 0);
    }
}
