//! Serving frontends one after another.
//!
//! Each connection gets a fresh `VhostUserDaemon` (fresh negotiation state, fresh worker
//! threads) whose handler sits behind the front door (`front_door`): every message and fd the
//! frontend sends is checked there first, on a socket pair only this process can reach
//! ([`private_handler_socket`]). When the connection ends (the frontend left, a request was
//! refused, its guest memory faulted, or a stop was requested), the daemon is dropped (its
//! workers exit and are joined), the fds the framework leaks are closed, the device is reset
//! and the guest memory unmapped, and the next frontend is awaited (server) or dialled
//! (client). Nothing depends on the order of the frontend's messages: the framework applies
//! each on arrival and the data path only runs once a ring is started and memory is mapped.
//!
//! [`Stop`] ends serving from another thread (the `knic-vhost` signal thread): it wakes a
//! pending accept, the front door sees the request within a tick and ends the connection,
//! and `serve` then joins the workers and removes the sockets it created.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::os::unix::net::{UnixListener, UnixStream};
use thiserror::Error;

use tracing::{debug, info, warn};
use vhost::vhost_user::Listener;
use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

use crate::backend::NetBackend;

/// Who opens the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We listen on the socket; the frontend (QEMU without `server=on`, DPDK virtio-user)
    /// connects.
    Server,
    /// The frontend listens (QEMU `server=on`); we connect, retrying every `retry`.
    Client { retry: Duration },
}

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub socket: PathBuf,
    pub role: Role,
    /// Stop after this many connections (tests); `None` serves until `stop` is set.
    pub max_connections: Option<usize>,
}

/// A request to stop serving, from any thread.
#[derive(Debug, Default)]
pub struct Stop {
    requested: AtomicBool,
    /// The connected frontend, cut on a stop request.
    frontend: Mutex<Option<UnixStream>>,
    /// The public socket being listened on, poked on a stop request to end the accept.
    listening: Mutex<Option<PathBuf>>,
}

impl Stop {
    /// Stops serving: the current connection ends as if the frontend had gone away, and no
    /// further frontend is accepted or dialled.
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        if let Some(f) = lock(&self.frontend).as_ref() {
            let _ = f.shutdown(std::net::Shutdown::Both);
        }
        if let Some(path) = lock(&self.listening).as_ref() {
            // Wakes the accept; `serve` sees the request and drops this connection.
            let _ = UnixStream::connect(path);
        }
    }

    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Records the connected frontend (a clone of its stream), or forgets it. A request that
    /// came in just before is applied to the new connection at once.
    fn set_frontend(&self, frontend: Option<UnixStream>) {
        let mut slot = lock(&self.frontend);
        *slot = frontend;
        if self.requested()
            && let Some(f) = slot.as_ref()
        {
            let _ = f.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why serving stopped.
#[derive(Debug, Error)]
pub enum DaemonError {
    #[error(
        "socket directory {} does not exist: create it (mkdir -p) or choose another --socket",
        dir.display()
    )]
    SocketDirMissing { dir: PathBuf },
    #[error(
        "cannot make the request handler's private socket {}: the socket's directory or the temporary directory must be writable",
        path.display()
    )]
    HandlerSocket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {}", path.display())]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("accepting a frontend connection failed")]
    Accept(#[source] std::io::Error),
    /// The framework's error type carries no `std::error::Error` impl, so its text is kept.
    #[error("vhost-user framework: {0}")]
    Framework(String),
    #[error("cannot watch uplink of queue pair {pair}")]
    RegisterUplink {
        pair: usize,
        #[source]
        source: std::io::Error,
    },
}

/// Serves frontends on `config.socket` until `stop` is requested or `max_connections` is
/// reached, then removes the sockets it created.
///
/// The frontend's connection goes through the front door (`front_door`), which checks every
/// message, to the rust-vmm handler on a socket only this process can reach
/// ([`private_handler_socket`]). Many `serve` calls may run in one process (the agent), each
/// on its own thread with its own backend: nothing a frontend does on one costs another.
pub fn serve(
    backend: Arc<NetBackend>,
    config: &ServeConfig,
    stop: &Stop,
) -> Result<(), DaemonError> {
    let public = listen(config)?;
    serve_listening(backend, config, stop, public)
}

/// The listening socket of a server role (`None` for a client), bound now: a caller that
/// serves on another thread binds first, so a bind failure is its own error and the socket
/// exists once it returns (a frontend started right after finds it).
pub fn listen(config: &ServeConfig) -> Result<Option<UnixListener>, DaemonError> {
    match config.role {
        Role::Server => bind_public(&config.socket).map(Some),
        Role::Client { .. } => Ok(None),
    }
}

/// [`serve`] on a socket [`listen`] bound.
pub fn serve_listening(
    backend: Arc<NetBackend>,
    config: &ServeConfig,
    stop: &Stop,
    public: Option<UnixListener>,
) -> Result<(), DaemonError> {
    if !crate::guest_fault::install() {
        warn!(
            "cannot install the SIGBUS handler: a frontend truncating its guest memory could end the process"
        );
    }
    if public.is_some() {
        *lock(&stop.listening) = Some(config.socket.clone());
    }
    let result = serve_connections(&backend, config, stop, public.as_ref());
    *lock(&stop.listening) = None;
    if public.is_some() {
        let _ = std::fs::remove_file(&config.socket);
    }
    result
}

/// What the front door watches while a connection lasts.
struct ConnectionWatch<'a> {
    stop: &'a Stop,
    backend: &'a NetBackend,
}

impl crate::front_door::Watch for ConnectionWatch<'_> {
    fn stop_requested(&self) -> bool {
        self.stop.requested()
    }

    fn memory_poisoned(&self) -> bool {
        self.backend.take_memory_poisoned()
    }
}

fn serve_connections(
    backend: &Arc<NetBackend>,
    config: &ServeConfig,
    stop: &Stop,
    public: Option<&UnixListener>,
) -> Result<(), DaemonError> {
    let mut served = 0usize;
    while !stop.requested() && config.max_connections.is_none_or(|m| served < m) {
        let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let mut daemon = VhostUserDaemon::new("knic-vhost".to_string(), Arc::clone(backend), mem)
            .map_err(|e| DaemonError::Framework(e.to_string()))?;
        let outcome = serve_one(backend, config, stop, public, &mut daemon);
        // Dropping the daemon stops and joins this connection's workers; then the fds the
        // framework leaks can be closed (README).
        drop(daemon);
        let reclaimed = backend.reclaim_exit_events();
        debug!(reclaimed, "framework exit events closed");
        backend.reset();
        match outcome? {
            Some(()) => {
                served += 1;
                info!("device reset; guest memory unmapped");
            }
            None => break,
        }
    }
    Ok(())
}

/// One connection: accept or dial the frontend, hand the handler its private socket, run the
/// front door until the connection ends. `None` when no frontend came (stop requested).
fn serve_one(
    backend: &Arc<NetBackend>,
    config: &ServeConfig,
    stop: &Stop,
    public: Option<&UnixListener>,
    daemon: &mut VhostUserDaemon<Arc<NetBackend>>,
) -> Result<Option<()>, DaemonError> {
    watch_uplinks(backend, daemon)?;
    let frontend = match (public, config.role) {
        (Some(l), _) => {
            info!(socket = %config.socket.display(), "waiting for a frontend");
            l.accept().map_err(DaemonError::Accept)?.0
        }
        (None, Role::Client { retry }) => match dial(&config.socket, retry, stop) {
            Some(s) => s,
            None => return Ok(None),
        },
        (None, Role::Server) => return Ok(None),
    };
    if stop.requested() {
        return Ok(None);
    }
    stop.set_frontend(frontend.try_clone().ok());
    let (mut listener, handler_side) = private_handler_socket(&config.socket)?;
    let started = daemon.start(&mut listener);
    drop(listener);
    if let Err(e) = started {
        stop.set_frontend(None);
        return Err(DaemonError::Framework(e.to_string()));
    }
    info!("frontend connected");
    let watch = ConnectionWatch { stop, backend };
    let end = crate::front_door::run(&frontend, &handler_side, backend.front_door_stats(), &watch);
    match &end {
        crate::front_door::End::FrontendClosed | crate::front_door::End::Stopped => {
            info!("frontend disconnected ({end})")
        }
        _ => warn!("frontend disconnected: {end}"),
    }
    drop(handler_side);
    drop(frontend);
    match daemon.wait() {
        Ok(())
        | Err(vhost_user_backend::Error::HandleRequest(
            vhost::vhost_user::Error::Disconnected | vhost::vhost_user::Error::PartialMessage,
        )) => {}
        Err(e) => debug!("request handler ended: {e}"),
    }
    stop.set_frontend(None);
    Ok(Some(()))
}

/// The rust-vmm handler's end of a connection, reachable by this process only.
///
/// The framework (`vhost-user-backend` 0.24) takes a connection only by accepting it on a
/// [`Listener`] (`VhostUserDaemon::start`) or by dialling a path (`start_client`);
/// `BackendReqHandler::from_stream` would take a stream, but needs the framework's private
/// handler type. So the handler gets a one-shot listener that only our own socket can reach:
/// bound in a fresh directory of mode 0700 (which `create_dir` refuses to reuse), its
/// backlog cut to the single connection we make at once without waiting; the name and the
/// directory are removed before the handler accepts and the listener is closed right after.
/// A process that found the name in that instant could not connect (the one slot is ours),
/// and the handler accepts exactly once.
pub fn private_handler_socket(public: &Path) -> Result<(Listener, UnixStream), DaemonError> {
    // The public socket's directory first (the operator's choice), else the temporary
    // directory: with --client that directory is the frontend's and may not be ours to write,
    // and a long socket path may leave no room in `sun_path` for the handler's.
    let near = public
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map(Path::to_path_buf);
    let mut last = None;
    for base in near
        .into_iter()
        .chain(std::iter::once(std::env::temp_dir()))
    {
        match one_shot_listener(&base) {
            Ok(pair) => return Ok(pair),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(DaemonError::HandlerSocket {
        path: std::env::temp_dir(),
        source: std::io::ErrorKind::NotFound.into(),
    }))
}

/// [`private_handler_socket`] in `base`.
fn one_shot_listener(base: &Path) -> Result<(Listener, UnixStream), DaemonError> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::DirBuilderExt;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = base.join(format!(".knic-{}-{n}", std::process::id()));
    let path = dir.join("h");
    let fail = |source: std::io::Error| DaemonError::HandlerSocket {
        path: path.clone(),
        source,
    };
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(fail)?;
    let made = (|| {
        let listener = UnixListener::bind(&path)?;
        crate::sys::set_backlog(listener.as_fd(), 0)?;
        let ours = crate::sys::connect_nonblocking(&path)?;
        ours.set_nonblocking(false)?;
        Ok::<_, std::io::Error>((listener, ours))
    })();
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir(&dir);
    let (listener, ours) = made.map_err(fail)?;
    Ok((Listener::from(listener), ours))
}

fn bind_public(path: &Path) -> Result<UnixListener, DaemonError> {
    check_socket_dir(path)?;
    // A socket file left by an earlier run would make bind fail.
    if path.exists() {
        let _ = std::fs::remove_file(path);
    }
    UnixListener::bind(path).map_err(|source| DaemonError::Bind {
        path: path.to_path_buf(),
        source,
    })
}

/// Fails early, with advice, when the directory a socket would be created in is missing.
pub fn check_socket_dir(path: &Path) -> Result<(), DaemonError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        return Err(DaemonError::SocketDirMissing {
            dir: dir.to_path_buf(),
        });
    }
    Ok(())
}

/// Connects to a listening frontend, retrying until it answers or `stop` is set.
fn dial(path: &Path, retry: Duration, stop: &Stop) -> Option<UnixStream> {
    let mut logged = false;
    while !stop.requested() {
        match UnixStream::connect(path) {
            Ok(s) => return Some(s),
            Err(e) => {
                if !logged {
                    info!(socket = %path.display(), "frontend not reachable yet ({e}); retrying every {retry:?}");
                    logged = true;
                }
                std::thread::sleep(retry);
            }
        }
    }
    None
}

/// Registers each pair's uplink readiness fd, and its room fd if it has one, edge-triggered,
/// in that pair's worker.
fn watch_uplinks(
    backend: &NetBackend,
    daemon: &VhostUserDaemon<Arc<NetBackend>>,
) -> Result<(), DaemonError> {
    let ready = u64::from(backend.uplink_event());
    let room = u64::from(backend.uplink_room_event());
    let fds = backend
        .uplink_fds()
        .into_iter()
        .zip(backend.uplink_room_fds());
    for (pair, (handler, (ready_fd, room_fd))) in
        daemon.get_epoll_handlers().iter().zip(fds).enumerate()
    {
        for (fd, event) in std::iter::once((ready_fd, ready)).chain(room_fd.map(|fd| (fd, room))) {
            handler
                .register_listener(fd, EventSet::IN | EventSet::EDGE_TRIGGERED, event)
                .map_err(|source| DaemonError::RegisterUplink { pair, source })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// The handler's end is connected, accepted exactly once, and leaves no name behind,
    /// also when the public socket's directory cannot be used (client mode, someone else's
    /// directory): the temporary directory serves then.
    #[test]
    fn the_handler_socket_is_one_shot_and_nameless() {
        for public in [
            std::env::temp_dir().join("knic-daemon-test.sock"),
            PathBuf::from("/nonexistent-knic-dir/x.sock"),
        ] {
            let (listener, mut ours) = private_handler_socket(&public).unwrap();
            let mut theirs = listener
                .accept()
                .unwrap()
                .expect("our connection is pending");
            ours.write_all(b"ping").unwrap();
            let mut got = [0u8; 4];
            theirs.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"ping");
            let prefix = format!(".knic-{}-", std::process::id());
            let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(&prefix))
                .collect();
            assert!(left.is_empty(), "{left:?}");
        }
    }
}
