//! The front door: every byte and fd between a frontend and the rust-vmm request handler
//! passes here, so this is where what the framework would trust blindly is checked.
//!
//! One thread per connection (the serving thread) moves messages both ways with
//! non-blocking sockets and `poll`, so neither side can make it wait: a frontend that floods
//! requests and never reads the replies fills the bounded queues ([`MAX_QUEUED_MESSAGES`],
//! [`MAX_QUEUED_BYTES`], [`MAX_QUEUED_FDS`] each way), then the front door stops reading
//! from it, and the handler stops too when its socket fills; when the frontend closes, or a
//! stop is requested, or its guest memory was cut under a mapping (`guest_fault`), the
//! front door notices within [`TICK`] and ends the connection whatever state the handler is
//! in.
//!
//! Each request is checked against the [`Rules`] with the kinds of
//! its fds; a refused one is counted under its reason in [`FrontDoorStats`] and ends the
//! connection. Eventfds a frontend passes are made non-blocking before the handler sees them,
//! so no worker or handler thread can block on one (a full counter, a blocking read).
//!
//! The handler's end is a socket only this process can reach: `daemon` connects it through
//! a one-shot private listener (`daemon::private_handler_socket`).

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tracing::{debug, warn};

use crate::message::{
    FLAG_NEED_REPLY, FLAG_REPLY, FLAG_VERSION, HDR_LEN, Header, MAX_FDS, MAX_PAYLOAD, Refusal,
    Rules, Verdict, request,
};
use crate::sys::{self, FdKind, POLL_GONE, POLL_IN, POLL_OUT};

/// Messages queued towards one side before the front door stops reading from the other.
pub const MAX_QUEUED_MESSAGES: usize = 64;
/// Bytes queued towards one side, likewise.
pub const MAX_QUEUED_BYTES: usize = 64 * 1024;
/// File descriptors queued towards the handler (held ones included), likewise.
pub const MAX_QUEUED_FDS: usize = 64;
/// How often a waiting front door looks at stop requests and poisoned memory.
pub const TICK: Duration = Duration::from_millis(50);

/// What the front door refused or survived, by reason (the stats socket's `front_door`).
#[derive(Debug, Default)]
pub struct FrontDoorStats {
    pub connections: AtomicU64,
    pub requests: AtomicU64,
    pub refused_bad_header: AtomicU64,
    pub refused_payload_too_large: AtomicU64,
    pub refused_too_many_fds: AtomicU64,
    pub refused_unexpected_fds: AtomicU64,
    pub refused_malformed_payload: AtomicU64,
    pub refused_region_fd_not_file: AtomicU64,
    pub refused_region_beyond_file: AtomicU64,
    pub refused_too_many_regions: AtomicU64,
    pub refused_vring_fd_not_eventfd: AtomicU64,
    pub refused_wrong_fd_kind: AtomicU64,
    pub refused_too_many_held: AtomicU64,
    /// Connections ended because a fault in their guest memory was contained.
    pub guest_memory_faults: AtomicU64,
    /// Framework exit-event fds closed for it (the upstream leak, README).
    pub leaked_fds_reclaimed: AtomicU64,
}

/// A snapshot of [`FrontDoorStats`], as served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FrontDoorSnapshot {
    pub connections: u64,
    pub requests: u64,
    pub refused: RefusedSnapshot,
    pub guest_memory_faults: u64,
    /// SIGBUS faults contained in guest memory, all devices of the process.
    pub sigbus_contained: u64,
    pub leaked_fds_reclaimed: u64,
}

/// Refused requests by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RefusedSnapshot {
    pub bad_header: u64,
    pub payload_too_large: u64,
    pub too_many_fds: u64,
    pub unexpected_fds: u64,
    pub malformed_payload: u64,
    pub region_fd_not_file: u64,
    pub region_beyond_file: u64,
    pub too_many_regions: u64,
    pub vring_fd_not_eventfd: u64,
    pub wrong_fd_kind: u64,
    pub too_many_held: u64,
}

impl FrontDoorStats {
    fn refused(&self, r: &Refusal) -> &AtomicU64 {
        match r {
            Refusal::BadHeader { .. } => &self.refused_bad_header,
            Refusal::PayloadTooLarge { .. } => &self.refused_payload_too_large,
            Refusal::TooManyFds => &self.refused_too_many_fds,
            Refusal::UnexpectedFds { .. } => &self.refused_unexpected_fds,
            Refusal::MalformedPayload { .. } => &self.refused_malformed_payload,
            Refusal::RegionFdNotFile => &self.refused_region_fd_not_file,
            Refusal::RegionBeyondFile { .. } => &self.refused_region_beyond_file,
            Refusal::TooManyRegions => &self.refused_too_many_regions,
            Refusal::VringFdNotEventfd { .. } => &self.refused_vring_fd_not_eventfd,
            Refusal::WrongFdKind { .. } => &self.refused_wrong_fd_kind,
            Refusal::TooManyHeld => &self.refused_too_many_held,
        }
    }

    pub fn snapshot(&self) -> FrontDoorSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        FrontDoorSnapshot {
            connections: g(&self.connections),
            requests: g(&self.requests),
            refused: RefusedSnapshot {
                bad_header: g(&self.refused_bad_header),
                payload_too_large: g(&self.refused_payload_too_large),
                too_many_fds: g(&self.refused_too_many_fds),
                unexpected_fds: g(&self.refused_unexpected_fds),
                malformed_payload: g(&self.refused_malformed_payload),
                region_fd_not_file: g(&self.refused_region_fd_not_file),
                region_beyond_file: g(&self.refused_region_beyond_file),
                too_many_regions: g(&self.refused_too_many_regions),
                vring_fd_not_eventfd: g(&self.refused_vring_fd_not_eventfd),
                wrong_fd_kind: g(&self.refused_wrong_fd_kind),
                too_many_held: g(&self.refused_too_many_held),
            },
            guest_memory_faults: g(&self.guest_memory_faults),
            sigbus_contained: crate::guest_fault::contained(),
            leaked_fds_reclaimed: g(&self.leaked_fds_reclaimed),
        }
    }
}

/// Why a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    FrontendClosed,
    HandlerClosed,
    Refused(Refusal),
    /// A frontend message that could not even be framed: a cut header, fds beyond the
    /// control buffer.
    Unframed(&'static str),
    GuestMemoryFault,
    Stopped,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::FrontendClosed => write!(f, "the frontend closed the connection"),
            End::HandlerClosed => write!(f, "the request handler ended the connection"),
            End::Refused(r) => write!(f, "refused a request: {r}"),
            End::Unframed(what) => write!(f, "refused a message: {what}"),
            End::GuestMemoryFault => write!(
                f,
                "the frontend cut its guest memory file under a mapping (fault contained)"
            ),
            End::Stopped => write!(f, "stop requested"),
        }
    }
}

/// What the front door asks of its caller while it runs.
pub trait Watch {
    fn stop_requested(&self) -> bool;
    /// Whether a fault was contained in this device's memory since the last call.
    fn memory_poisoned(&self) -> bool;
}

/// One message being read or queued.
struct Msg {
    hdr: Header,
    payload: Vec<u8>,
    fds: Vec<OwnedFd>,
}

/// Reads whole messages from a non-blocking socket, one `recvmsg` never reaching into the
/// next message, so every fd belongs to the message it came with.
struct Reader {
    hdr: [u8; HDR_LEN],
    got: usize,
    payload: Vec<u8>,
    want: usize,
    fds: Vec<OwnedFd>,
    /// Whether this reader's peer is a frontend (its headers are checked before the payload
    /// is read).
    frontend: bool,
}

enum Read {
    Message(Msg),
    Pending,
    Eof,
}

impl Reader {
    fn new(frontend: bool) -> Self {
        Self {
            hdr: [0; HDR_LEN],
            got: 0,
            payload: Vec::new(),
            want: 0,
            fds: Vec::new(),
            frontend,
        }
    }

    fn read(&mut self, fd: RawFd) -> Result<Read, End> {
        loop {
            let header_done = self.got == HDR_LEN;
            let buf = if header_done {
                let at = self.payload.len() - self.want;
                &mut self.payload[at..]
            } else {
                &mut self.hdr[self.got..]
            };
            if buf.is_empty() {
                let hdr = Header::parse(&self.hdr);
                self.got = 0;
                return Ok(Read::Message(Msg {
                    hdr,
                    payload: std::mem::take(&mut self.payload),
                    fds: std::mem::take(&mut self.fds),
                }));
            }
            let (n, truncated) = match sys::recv_with_fds(fd, buf, &mut self.fds) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Read::Pending),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Ok(Read::Eof),
            };
            if truncated || self.fds.len() > MAX_FDS {
                return Err(End::Refused(Refusal::TooManyFds));
            }
            if n == 0 {
                return if self.got == 0 && self.want == 0 {
                    Ok(Read::Eof)
                } else {
                    Err(End::Unframed("the stream ended inside a message"))
                };
            }
            if header_done {
                self.want -= n;
            } else {
                self.got += n;
                if self.got == HDR_LEN {
                    let hdr = Header::parse(&self.hdr);
                    if self.frontend {
                        Rules::check_header(&hdr).map_err(End::Refused)?;
                    } else if hdr.size as usize > MAX_PAYLOAD {
                        return Err(End::HandlerClosed);
                    }
                    self.want = hdr.size as usize;
                    self.payload = vec![0; self.want];
                }
            }
        }
    }
}

/// Messages on their way to one side, bounded.
#[derive(Default)]
struct Outbox {
    queue: VecDeque<(Vec<u8>, Vec<OwnedFd>, usize)>,
    bytes: usize,
    fds: usize,
}

impl Outbox {
    fn has_room(&self) -> bool {
        self.queue.len() < MAX_QUEUED_MESSAGES
            && self.bytes < MAX_QUEUED_BYTES
            && self.fds + MAX_FDS <= MAX_QUEUED_FDS
    }

    fn push(&mut self, msg: Msg) {
        let mut buf = Vec::with_capacity(HDR_LEN + msg.payload.len());
        buf.extend_from_slice(&msg.hdr.to_bytes());
        buf.extend_from_slice(&msg.payload);
        self.bytes += buf.len();
        self.fds += msg.fds.len();
        self.queue.push_back((buf, msg.fds, 0));
    }

    /// Sends until done or the socket is full. An error means the peer is gone.
    fn flush(&mut self, fd: RawFd) -> io::Result<()> {
        while let Some((buf, fds, sent)) = self.queue.front_mut() {
            let raw: Vec<RawFd> = if *sent == 0 {
                fds.iter().map(|f| f.as_raw_fd()).collect()
            } else {
                Vec::new()
            };
            match sys::send_with_fds(fd, &buf[*sent..], &raw) {
                Ok(n) => *sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if *sent == buf.len() {
                self.bytes -= buf.len();
                self.fds -= fds.len();
                self.queue.pop_front();
            }
        }
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// Moves messages between `frontend` and `handler` until the connection ends, and says why.
/// Both sockets are shut down on return, so the handler's thread ends too.
pub fn run(
    frontend: &UnixStream,
    handler: &UnixStream,
    stats: &FrontDoorStats,
    watch: &dyn Watch,
) -> End {
    stats.connections.fetch_add(1, Ordering::Relaxed);
    let end = match (
        frontend.set_nonblocking(true),
        handler.set_nonblocking(true),
    ) {
        (Ok(()), Ok(())) => pump(frontend, handler, stats, watch),
        _ => End::HandlerClosed,
    };
    if let End::Refused(r) = &end {
        stats.refused(r).fetch_add(1, Ordering::Relaxed);
    }
    if end == End::GuestMemoryFault {
        stats.guest_memory_faults.fetch_add(1, Ordering::Relaxed);
    }
    let _ = handler.shutdown(std::net::Shutdown::Both);
    let _ = frontend.shutdown(std::net::Shutdown::Both);
    end
}

fn pump(
    frontend: &UnixStream,
    handler: &UnixStream,
    stats: &FrontDoorStats,
    watch: &dyn Watch,
) -> End {
    let (f, h) = (frontend.as_raw_fd(), handler.as_raw_fd());
    let mut from_frontend = Reader::new(true);
    let mut from_handler = Reader::new(false);
    let mut to_handler = Outbox::default();
    let mut to_frontend = Outbox::default();
    let mut held: Vec<Msg> = Vec::new();
    let mut rules = Rules::default();
    let tick = i32::try_from(TICK.as_millis()).unwrap_or(50);
    loop {
        if watch.stop_requested() {
            return End::Stopped;
        }
        if watch.memory_poisoned() {
            return End::GuestMemoryFault;
        }
        if to_handler.flush(h).is_err() {
            return End::HandlerClosed;
        }
        if to_frontend.flush(f).is_err() {
            return End::FrontendClosed;
        }
        let held_fds: usize = held.iter().map(|m| m.fds.len()).sum();
        let read_frontend = to_handler.has_room()
            && to_frontend.has_room()
            && held_fds + to_handler.fds + MAX_FDS <= MAX_QUEUED_FDS;
        let read_handler = to_frontend.has_room();
        let mut set = [
            (
                f,
                if read_frontend { POLL_IN } else { 0 }
                    | if to_frontend.is_empty() { 0 } else { POLL_OUT },
                0,
            ),
            (
                h,
                if read_handler { POLL_IN } else { 0 }
                    | if to_handler.is_empty() { 0 } else { POLL_OUT },
                0,
            ),
        ];
        if sys::poll(&mut set, tick).is_err() {
            return End::HandlerClosed;
        }
        let (fr, hr) = (set[0].2, set[1].2);
        if read_handler && hr & POLL_IN != 0 {
            loop {
                match from_handler.read(h) {
                    Ok(Read::Message(mut m)) => {
                        Rules::adjust_reply(&m.hdr, &mut m.payload);
                        to_frontend.push(m);
                        if !to_frontend.has_room() {
                            break;
                        }
                    }
                    Ok(Read::Pending) => break,
                    Ok(Read::Eof) | Err(_) => return End::HandlerClosed,
                }
            }
        } else if hr & POLL_GONE != 0 {
            return End::HandlerClosed;
        }
        if read_frontend && fr & POLL_IN != 0 {
            loop {
                let m = match from_frontend.read(f) {
                    Ok(Read::Message(m)) => m,
                    Ok(Read::Pending) => break,
                    Ok(Read::Eof) => return End::FrontendClosed,
                    Err(end) => return end,
                };
                stats.requests.fetch_add(1, Ordering::Relaxed);
                if let Err(r) = admit(m, &mut rules, &mut held, &mut to_handler, &mut to_frontend) {
                    return End::Refused(r);
                }
                if !to_handler.has_room() || !to_frontend.has_room() {
                    break;
                }
            }
        } else if fr & POLL_GONE != 0 {
            return End::FrontendClosed;
        }
    }
}

/// Checks one request and queues it (or holds it, or acks it).
fn admit(
    mut m: Msg,
    rules: &mut Rules,
    held: &mut Vec<Msg>,
    to_handler: &mut Outbox,
    to_frontend: &mut Outbox,
) -> Result<(), Refusal> {
    let kinds: Vec<FdKind> = m.fds.iter().map(|fd| sys::fd_kind(fd.as_fd())).collect();
    let verdict = rules.check(&m.hdr, &m.payload, &kinds)?;
    for (fd, kind) in m.fds.iter().zip(&kinds) {
        if *kind == FdKind::EventFd
            && let Err(e) = sys::set_nonblocking(fd.as_fd())
        {
            // Ends the connection, so logged at most once per connection.
            warn!("cannot make a frontend's eventfd non-blocking: {e}");
            return Err(Refusal::VringFdNotEventfd {
                request: m.hdr.request,
            });
        }
    }
    match verdict {
        Verdict::Forward => to_handler.push(m),
        Verdict::Hold => {
            debug!("holding SET_VRING_ENABLE until SET_FEATURES");
            if m.hdr.flags & FLAG_NEED_REPLY != 0 {
                to_frontend.push(Msg {
                    hdr: Header {
                        request: request::SET_VRING_ENABLE,
                        flags: FLAG_VERSION | FLAG_REPLY,
                        size: 8,
                    },
                    payload: 0u64.to_le_bytes().to_vec(),
                    fds: Vec::new(),
                });
                m.hdr.flags &= !FLAG_NEED_REPLY;
            }
            held.push(m);
        }
        Verdict::ForwardAndRelease => {
            to_handler.push(m);
            for h in held.drain(..) {
                to_handler.push(h);
            }
        }
    }
    Ok(())
}
