//! Serving frontends one after another.
//!
//! Each connection gets a fresh `VhostUserDaemon` (fresh negotiation state, fresh worker
//! threads); when the frontend goes away the daemon is dropped (its workers exit and are
//! joined), the device is reset and the guest memory unmapped, and the next frontend is
//! awaited (server) or dialled (client). Nothing depends on the order of the frontend's
//! messages: the framework applies each on arrival and the data path only runs once a ring
//! is started and memory is mapped.
//!
//! [`Stop`] ends serving from another thread (the `knic-vhost` signal thread): it wakes a
//! pending accept, cuts the current frontend's connection so the daemon's wait returns, and
//! `serve` then joins the workers and removes the sockets it created.

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
    #[error("cannot listen on {}", path.display())]
    Listen {
        path: PathBuf,
        #[source]
        source: vhost::vhost_user::Error,
    },
    #[error("cannot listen on {}", path.display())]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("accepting or relaying a frontend connection failed")]
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
/// The frontend's connection goes through the `relay` module to the rust-vmm handler, which
/// listens on a private socket next to the public one (`.NAME.knic-internal`).
pub fn serve(
    backend: Arc<NetBackend>,
    config: &ServeConfig,
    stop: &Stop,
) -> Result<(), DaemonError> {
    let internal = internal_path(&config.socket);
    let mut fw_listener = listen(&internal)?;
    let public = match config.role {
        Role::Server => match bind_public(&config.socket) {
            Ok(l) => Some(l),
            Err(e) => {
                let _ = std::fs::remove_file(&internal);
                return Err(e);
            }
        },
        Role::Client { .. } => None,
    };
    if public.is_some() {
        *lock(&stop.listening) = Some(config.socket.clone());
    }
    let result = serve_connections(
        &backend,
        config,
        stop,
        &mut fw_listener,
        public.as_ref(),
        &internal,
    );
    *lock(&stop.listening) = None;
    let _ = std::fs::remove_file(&internal);
    if public.is_some() {
        let _ = std::fs::remove_file(&config.socket);
    }
    result
}

fn serve_connections(
    backend: &Arc<NetBackend>,
    config: &ServeConfig,
    stop: &Stop,
    fw_listener: &mut Listener,
    public: Option<&UnixListener>,
    internal: &Path,
) -> Result<(), DaemonError> {
    let mut served = 0usize;
    while !stop.requested() && config.max_connections.is_none_or(|m| served < m) {
        let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let mut daemon = VhostUserDaemon::new("knic-vhost".to_string(), Arc::clone(backend), mem)
            .map_err(|e| DaemonError::Framework(e.to_string()))?;
        watch_uplinks(backend, &daemon)?;

        let frontend = match (public, config.role) {
            (Some(l), _) => {
                info!(socket = %config.socket.display(), "waiting for a frontend");
                l.accept().map_err(DaemonError::Accept)?.0
            }
            (None, Role::Client { retry }) => match dial(&config.socket, retry, stop) {
                Some(s) => s,
                None => break,
            },
            (None, Role::Server) => break,
        };
        if stop.requested() {
            break;
        }
        stop.set_frontend(frontend.try_clone().ok());
        let handler_side = UnixStream::connect(internal).map_err(DaemonError::Accept)?;
        let relay = std::thread::Builder::new()
            .name("knic-relay".to_string())
            .spawn(move || crate::relay::relay(frontend, handler_side))
            .map_err(DaemonError::Accept)?;
        daemon
            .start(fw_listener)
            .map_err(|e| DaemonError::Framework(e.to_string()))?;
        served += 1;
        info!(connection = served, "frontend connected");
        match daemon.wait() {
            Ok(())
            | Err(vhost_user_backend::Error::HandleRequest(
                vhost::vhost_user::Error::Disconnected | vhost::vhost_user::Error::PartialMessage,
            )) => info!("frontend disconnected"),
            Err(e) => warn!("frontend connection ended: {e}"),
        }
        stop.set_frontend(None);
        // Dropping the daemon stops and joins this connection's workers.
        drop(daemon);
        match relay.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => debug!("relay ended: {e}"),
            Err(_) => warn!("relay thread panicked"),
        }
        backend.reset();
        info!("device reset; guest memory unmapped");
    }
    Ok(())
}

/// The rust-vmm handler's private socket: hidden, next to the public one.
fn internal_path(public: &Path) -> PathBuf {
    let name = public
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "vhost.sock".to_string());
    public.with_file_name(format!(".{name}.knic-internal"))
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

fn listen(path: &Path) -> Result<Listener, DaemonError> {
    check_socket_dir(path)?;
    Listener::new(path, true).map_err(|source| DaemonError::Listen {
        path: path.to_path_buf(),
        source,
    })
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

/// Registers each pair's uplink readiness fd, edge-triggered, in that pair's worker.
fn watch_uplinks(
    backend: &NetBackend,
    daemon: &VhostUserDaemon<Arc<NetBackend>>,
) -> Result<(), DaemonError> {
    let event = u64::from(backend.uplink_event());
    for (pair, (handler, fd)) in daemon
        .get_epoll_handlers()
        .iter()
        .zip(backend.uplink_fds())
        .enumerate()
    {
        handler
            .register_listener(fd, EventSet::IN | EventSet::EDGE_TRIGGERED, event)
            .map_err(|source| DaemonError::RegisterUplink { pair, source })?;
    }
    Ok(())
}
