//! The control loop: one rust-vmm `EventManager` whose subscribers are the API socket, the
//! termination signals and the guests' life events. Data-path threads (vhost workers, the
//! library devices' receive threads) never run here; this thread only configures.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use tracing::{debug, info, warn};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::AgentError;
use crate::agent::Agent;
use crate::api::{MAX_REQUEST_LEN, Request, Response};
use crate::config::AgentConfig;
use crate::stack::{LocalStack, StackInstance};
use crate::state::{RunningConfig, StateFile};
use crate::sys::SignalFd;

mod notify;

/// Most API connections open at once; more are closed on accept.
const MAX_API_CONNECTIONS: usize = 64;
/// How long a reply may wait for a slow client before the connection is dropped.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

type Shared = Rc<RefCell<Agent>>;

/// Termination signals: the first one ends the loop, and the agent shuts down cleanly.
/// SIGHUP reloads the configuration file.
struct Signals {
    fd: SignalFd,
    shutdown: Rc<Cell<bool>>,
    agent: Shared,
}

impl MutEventSubscriber for Signals {
    fn process(&mut self, _events: Events, _ops: &mut EventOps<'_>) {
        loop {
            match self.fd.read() {
                Ok(Some(signo)) if signo == libc::SIGHUP as u32 => {
                    info!("SIGHUP: reloading the configuration file");
                    match self.agent.borrow_mut().handle(Request::Reload) {
                        Ok(v) => info!(changes = %v, "reloaded"),
                        Err(e) => warn!("reload refused, nothing changed: {}", error_chain(&e)),
                    }
                }
                Ok(Some(signo)) => {
                    info!(signal = signo, "stopping: ports, then the library kernel");
                    self.shutdown.set(true);
                }
                Ok(None) => break,
                Err(e) => {
                    warn!("reading signals failed: {e}; stopping");
                    self.shutdown.set(true);
                    break;
                }
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps<'_>) {
        if let Err(e) = ops.add(Events::new(&self.fd, EventSet::IN)) {
            warn!("cannot watch signals: {e:?}");
        }
    }
}

/// A guest connected, disconnected or renegotiated: the library links follow.
struct GuestEvents {
    fd: Arc<EventFd>,
    agent: Shared,
}

impl MutEventSubscriber for GuestEvents {
    fn process(&mut self, _events: Events, _ops: &mut EventOps<'_>) {
        // Non-blocking: a spurious wake-up reads WouldBlock, which changes nothing.
        let _ = self.fd.read();
        self.agent.borrow_mut().refresh_links();
    }

    fn init(&mut self, ops: &mut EventOps<'_>) {
        if let Err(e) = ops.add(Events::new(self.fd.as_ref(), EventSet::IN)) {
            warn!("cannot watch guest events: {e:?}");
        }
    }
}

struct Connection {
    stream: UnixStream,
    pending: Vec<u8>,
}

/// The API socket and its connections.
struct ApiServer {
    listener: UnixListener,
    connections: HashMap<RawFd, Connection>,
    agent: Shared,
}

impl ApiServer {
    fn accept(&mut self, ops: &mut EventOps<'_>) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.connections.len() >= MAX_API_CONNECTIONS {
                        warn!("too many API connections; closing a new one");
                        continue;
                    }
                    if stream.set_nonblocking(true).is_err()
                        || ops.add(Events::new(&stream, EventSet::IN)).is_err()
                    {
                        continue;
                    }
                    self.connections.insert(
                        stream.as_raw_fd(),
                        Connection {
                            stream,
                            pending: Vec::new(),
                        },
                    );
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    warn!("accepting an API connection failed: {e}");
                    break;
                }
            }
        }
    }

    /// Reads what the client sent and answers every complete line; false to close.
    fn serve(&mut self, fd: RawFd) -> bool {
        let Some(conn) = self.connections.get_mut(&fd) else {
            return false;
        };
        let mut buf = [0u8; 4096];
        let mut open = true;
        loop {
            match conn.stream.read(&mut buf) {
                Ok(0) => {
                    open = false;
                    break;
                }
                Ok(n) => conn.pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
            if conn.pending.len() > MAX_REQUEST_LEN {
                let _ = reply(
                    &mut conn.stream,
                    &Response::error(format!(
                        "request longer than {MAX_REQUEST_LEN} bytes; send one JSON object per line"
                    )),
                );
                return false;
            }
        }
        while let Some(end) = conn.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = conn.pending.drain(..=end).collect();
            let line = &line[..line.len() - 1];
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let response = match serde_json::from_slice::<Request>(line) {
                Ok(request) => {
                    debug!(?request, "API request");
                    match self.agent.borrow_mut().handle(request) {
                        Ok(v) => Response::ok(v),
                        Err(e) => Response::error(error_chain(&e)),
                    }
                }
                Err(e) => Response::error(format!(
                    "not a request ({e}); one JSON object per line, like {{\"op\":\"port_list\"}}"
                )),
            };
            if reply(&mut conn.stream, &response).is_err() {
                return false;
            }
        }
        open
    }
}

/// The error and its causes, for the client (the agent's log has them too).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

fn reply(stream: &mut UnixStream, response: &Response) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(response).map_err(std::io::Error::other)?;
    line.push(b'\n');
    // The reply is written whole, with a bound on how long a slow reader may hold the loop.
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
    let written = stream.write_all(&line);
    stream.set_nonblocking(true)?;
    written
}

impl MutEventSubscriber for ApiServer {
    fn process(&mut self, events: Events, ops: &mut EventOps<'_>) {
        let fd = events.fd();
        if fd == self.listener.as_raw_fd() {
            self.accept(ops);
            return;
        }
        let closing = events
            .event_set()
            .intersects(EventSet::ERROR | EventSet::HANG_UP)
            && !events.event_set().contains(EventSet::IN);
        if closing || !self.serve(fd) {
            if let Some(conn) = self.connections.remove(&fd) {
                let _ = ops.remove(Events::empty(&conn.stream));
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps<'_>) {
        if let Err(e) = ops.add(Events::new(&self.listener, EventSet::IN)) {
            warn!("cannot watch the API socket: {e:?}");
        }
    }
}

/// Binds the API socket, replacing a stale one (a socket file nobody answers on).
fn bind_api(path: &Path) -> Result<UnixListener, AgentError> {
    let err = |source| AgentError::ApiSocket {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(err(std::io::Error::new(
                ErrorKind::AddrInUse,
                "another agent answers on it; stop it or choose another --api-socket",
            )));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    listener.set_nonblocking(true).map_err(err)?;
    Ok(listener)
}

/// Removes the API socket when the loop ends, however it ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs the agent until SIGTERM or SIGINT, without kernel offload.
pub fn run(config: AgentConfig) -> Result<(), AgentError> {
    run_with_offload(config, None)
}

/// Where and how to serve kernel offload.
#[derive(Debug, Clone)]
pub struct OffloadSocket {
    pub path: std::path::PathBuf,
    /// The operator named the path: failing to serve it stops the agent (else a warning).
    pub required: bool,
    /// How many library sockets its clients may hold.
    pub limits: crate::offload::OffloadLimits,
}

/// Runs the agent until SIGTERM or SIGINT, serving kernel offload on `offload` if given.
pub fn run_with_offload(
    config: AgentConfig,
    offload: Option<OffloadSocket>,
) -> Result<(), AgentError> {
    // Before any thread exists (the kernel's included), so the signals reach only the fd.
    let signals = SignalFd::new().map_err(AgentError::Signals)?;
    let stack = LocalStack::boot(config.memory_bytes)?;
    if config.forwarding {
        stack.set_sysctl("net.ipv4.ip_forward", "1")?;
        stack.set_sysctl("net.ipv6.conf.all.forwarding", "1")?;
    }
    let offload = match offload {
        None => None,
        Some(o) => {
            match crate::offload::OffloadServer::start(
                stack.kernel().raw_calls(),
                &o.path,
                o.limits,
            ) {
                Ok(server) => Some(server),
                Err(e) if !o.required => {
                    tracing::warn!("kernel offload not served: {}", error_chain(&e));
                    None
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let guest_events = Arc::new(EventFd::new(EFD_NONBLOCK).map_err(AgentError::Resources)?);
    let agent = Rc::new(RefCell::new(Agent::new(
        Box::new(stack),
        Arc::clone(&guest_events),
    )));
    let configured = configure(&agent, &config);
    if let Err(e) = configured {
        // Offloaded sockets end before the kernel does: the server's threads live in the
        // library's calls, and halting the kernel under them never returns.
        drop(offload);
        agent.borrow_mut().shutdown();
        return Err(e);
    }
    let served = serve(&agent, &config, signals, guest_events);
    // Offloaded sockets end before the kernel does.
    drop(offload);
    agent.borrow_mut().shutdown();
    info!("stopped cleanly");
    served
}

fn configure(agent: &Shared, config: &AgentConfig) -> Result<(), AgentError> {
    let mut a = agent.borrow_mut();
    a.set_config_file(config.config_file.clone());
    let configured = RunningConfig {
        uplinks: config.uplinks.clone(),
        tenants: config.tenants.clone(),
        ports: config.ports.clone(),
        addresses: config.addresses.clone(),
        routes: config.routes.clone(),
    };
    // What the last run added through the API, on top of the configuration (see `state`).
    let state = config.state_dir.as_deref().map(StateFile::in_dir);
    let mut restored = match &state {
        Some(file) => match file.load()? {
            Some(saved) => {
                let extra = configured.missing_from(&saved);
                info!(
                    file = %file.path().display(),
                    uplinks = extra.uplinks.len(),
                    tenants = extra.tenants.len(),
                    ports = extra.ports.len(),
                    addresses = extra.addresses.len(),
                    routes = extra.routes.len(),
                    "restoring what the last run added"
                );
                extra
            }
            None => RunningConfig::default(),
        },
        None => RunningConfig::default(),
    };
    drop_gone_pods(&mut restored);
    a.add_all(configured.followed_by(restored))?;
    a.start_services(&config.services)?;
    a.set_state_file(state);
    a.save_state()?;
    Ok(())
}

/// Leaves out restored TAP ports whose pod's network namespace went while the agent was
/// down (its TAP went with it), with their addresses and routes: the rest still starts,
/// and the CNI DEL that follows finds nothing to remove.
fn drop_gone_pods(restored: &mut RunningConfig) {
    let gone: Vec<String> = restored
        .ports
        .iter()
        .filter(|p| p.netns.as_deref().is_some_and(|ns| !ns.exists()))
        .map(|p| p.name.clone())
        .collect();
    for name in &gone {
        warn!(port = %name, "not restored: its network namespace is gone (the pod was removed)");
    }
    restored.ports.retain(|p| !gone.contains(&p.name));
    restored.addresses.retain(|a| !gone.contains(&a.device));
    restored
        .routes
        .retain(|r| r.device.as_ref().is_none_or(|d| !gone.contains(d)));
}

fn serve(
    agent: &Shared,
    config: &AgentConfig,
    signals: SignalFd,
    guest_events: Arc<EventFd>,
) -> Result<(), AgentError> {
    let listener = bind_api(&config.api_socket)?;
    let _remove = RemoveOnDrop(config.api_socket.clone());
    let shutdown = Rc::new(Cell::new(false));
    let mut manager: EventManager<Box<dyn MutEventSubscriber>> =
        EventManager::new().map_err(|e| AgentError::EventLoop(format!("{e:?}")))?;
    manager.add_subscriber(Box::new(Signals {
        fd: signals,
        shutdown: Rc::clone(&shutdown),
        agent: Rc::clone(agent),
    }));
    manager.add_subscriber(Box::new(GuestEvents {
        fd: guest_events,
        agent: Rc::clone(agent),
    }));
    manager.add_subscriber(Box::new(ApiServer {
        listener,
        connections: HashMap::new(),
        agent: Rc::clone(agent),
    }));
    // After the signal fd (run's first step): the thread must not take SIGTERM itself.
    if let Some(addr) = config.services.metrics {
        crate::services::metrics::serve(addr, config.api_socket.clone())?;
    }
    info!(api = %config.api_socket.display(), "knic-agent ready");
    let mut notifier = notify::Notifier::from_env();
    if let Some(n) = notifier.as_mut() {
        n.ready(&format!("serving; API on {}", config.api_socket.display()));
    }
    while !shutdown.get() {
        let timeout = notifier.as_ref().map_or(-1, |n| n.timeout_ms());
        manager
            .run_with_timeout(timeout)
            .map_err(|e| AgentError::EventLoop(format!("{e:?}")))?;
        if let Some(n) = notifier.as_mut() {
            n.keep_alive();
        }
    }
    if let Some(n) = &notifier {
        n.stopping();
    }
    Ok(())
}
