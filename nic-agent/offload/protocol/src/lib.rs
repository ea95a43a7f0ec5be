//! The wire format between the offload shim and the agent's offload server.
//!
//! # Transport
//! Every offloaded socket is one `AF_UNIX` `SOCK_SEQPACKET` connection to the agent, and the
//! application's file descriptor *is* the shim's end of it (the "placeholder"). The host
//! kernel therefore numbers, duplicates, inherits and closes offloaded sockets exactly as it
//! does any fd; the agent closes the library socket when the last reference to the
//! placeholder is gone (it reads end-of-file).
//!
//! A socket made by `socket()` connects to the agent's listening socket and sends
//! [`Op::Open`] first; a socket made by `accept()` arrives as the agent's end of a new
//! socketpair, passed with `SCM_RIGHTS` in the [`Op::Accept`] reply.
//!
//! # Messages
//! One message is one datagram of the seqpacket connection: a fixed [`Request`] header
//! ([`REQUEST_LEN`] bytes) followed by at most [`MAX_PAYLOAD`] bytes of payload (data to send,
//! a socket address, an option value). The agent answers each request with one reply
//! ([`Reply`], [`REPLY_LEN`] bytes, then payload), in order. Between replies the agent may
//! put [`Kind::Ready`] messages on the connection (see *Readiness*); the shim skips them while
//! it waits for a reply.
//!
//! All integers are little-endian; the format does not depend on the host's struct layouts
//! except where a payload is a kernel structure of the same ABI (`sockaddr_*`, option
//! values), which the library kernel shares with the host (same architecture).
//!
//! # Readiness
//! The agent keeps the library socket non-blocking. The placeholder is readable (`POLLIN`)
//! exactly while a `Ready` message is queued on it, which the agent keeps true while the
//! library socket's readiness meets the interest the shim announced ([`Op::Poll`]): a reply
//! says whether a `Ready` follows it ([`Reply::ready_follows`], decided before the reply is
//! sent; the shim returns only once that `Ready` is queued), and the agent's watcher queues
//! one when an idle socket becomes ready. So the host kernel's own poll/select/epoll sleep on
//! placeholders next to host fds; the shim then asks the agent for the exact `revents`.
#![deny(unsafe_code)]

/// Bytes of a request header.
pub const REQUEST_LEN: usize = 64;
/// Bytes of a reply header.
pub const REPLY_LEN: usize = 32;
/// Most payload bytes in one message: a read or write larger than this is carried as several
/// requests (the default `SO_SNDBUF` of a unix socket holds one such message with room).
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// The largest message either side sends.
pub const MAX_MESSAGE: usize = REQUEST_LEN + MAX_PAYLOAD;
/// Bytes of the address slot at the start of a [`Op::Recv`] reply's payload when the
/// address was asked for (`sizeof(struct sockaddr_storage)`); the address's own length is in
/// `aux[0]`.
pub const ADDR_SLOT: usize = 128;
/// Most data bytes one [`Op::Recv`] returns (its payload also holds the address slot).
pub const MAX_RECV: usize = MAX_PAYLOAD - ADDR_SLOT;
/// Most bytes of control messages (`msg_control`) one [`Op::Send`] carries or one
/// [`Op::Recv`] returns: room for every ancillary message an inet socket sends or receives
/// (TLS record types, `IP_PKTINFO`, timestamps, `sock_extended_err` with its offender).
pub const MAX_CONTROL: usize = 1024;
/// Bytes of a `struct cmsghdr` (LP64: `size_t cmsg_len; int cmsg_level; int cmsg_type;`).
pub const CMSG_HDR_LEN: usize = 16;
/// First word of every request and reply (catches a peer that is not the shim or the agent).
pub const MAGIC: u32 = 0x6b6e_6f31; // "kno1"

/// What a request asks for. Arguments are in [`Request::args`]; payloads as documented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Op {
    /// `socket(args[0]=domain, args[1]=type, args[2]=protocol)`; the first message of a
    /// connection made by `socket()`.
    Open = 1,
    /// `bind`; payload: the socket address.
    Bind = 2,
    /// `listen(args[0]=backlog)`.
    Listen = 3,
    /// `accept`; reply: the new placeholder as `SCM_RIGHTS`, payload: the peer address.
    Accept = 4,
    /// `connect`; payload: the socket address. Never waits: `EINPROGRESS` as for a
    /// non-blocking socket.
    Connect = 5,
    /// `sendmsg(flags=args[0])`; the payload is `args[1]` bytes of destination address,
    /// then `args[2]` bytes of control messages (at most [`MAX_CONTROL`], well formed by
    /// [`check_control`]), then the data.
    Send = 6,
    /// `recvmsg(len=args[0], flags=args[1])`, at most [`MAX_RECV`] bytes; `args[2]` != 0 asks
    /// for the source address; `args[3]` = room for control messages (at most
    /// [`MAX_CONTROL`]). Reply payload: when the address was asked, an [`ADDR_SLOT`]-byte
    /// slot with it; when control room was given, a slot of exactly that many bytes with the
    /// control messages the kernel wrote; then the data. `aux[0]` = the address's length
    /// (low 32 bits) and the control messages' length (high 32 bits); `aux[1]` = `msg_flags`.
    Recv = 7,
    /// `shutdown(args[0]=how)`.
    Shutdown = 8,
    /// `getsockname` (`args[0]` = 0) or `getpeername` (`args[0]` = 1); payload: the address.
    Name = 9,
    /// `setsockopt(args[0]=level, args[1]=name)`; payload: the value. For `SOL_TLS`
    /// `TLS_TX`/`TLS_RX` whose value is not a whole `tls12_crypto_info_*` of the cipher it
    /// names, `args[2]` is the caller's `optlen` and the payload only the 4-byte header the
    /// kernel reads before it refuses such a value (see [`tls_crypto_info_len`]), so the
    /// library kernel answers with the errno Linux gives (EINVAL, or EBUSY/ENOPROTOOPT first).
    SetOption = 10,
    /// `getsockopt(args[0]=level, args[1]=name, args[2]=room)`; payload: the value.
    GetOption = 11,
    /// `ioctl(args[0]=request)` for requests with an `int` result (FIONREAD, SIOCOUTQ);
    /// `ret` is the value.
    IoctlInt = 12,
    /// The socket's `revents` now (`ret`), and sets the interest: `args[0]` = persistent
    /// interest added (epoll registrations), `args[1]` = one-shot interest (a waiting
    /// poll/select/blocking call), cleared by the agent once it signalled it.
    Poll = 13,
    /// The agent's offload counters as JSON (payload); may be the first message of a
    /// connection (no socket is made).
    Stats = 14,
    /// What socket this placeholder is: `ret` = domain, `aux[0]` = type. Used after `exec`
    /// to find inherited offloaded sockets again.
    Describe = 15,
    /// Closes the library socket now (the shim's `close` of the last reference it knows no
    /// other process shares), so a port is free when `close` returns, as in Linux. Later
    /// requests on the connection fail with `EBADF`.
    Close = 16,
    /// `ioctl(args[0]=request)` for an interface request whose argument is one
    /// `struct ifreq` with no pointer in it ([`ifreq_ioctl`]); payload and reply payload:
    /// the [`IFREQ_LEN`]-byte `ifreq`, as given and as the kernel left it.
    IoctlIfreq = 17,
    /// `ioctl(SIOCGIFCONF)` with `args[0]` bytes of room for `struct ifreq` entries (at
    /// most [`MAX_PAYLOAD`]; 0: the program's `ifc_buf` is null, asking for the size).
    /// `aux[0]` = the `ifc_len` the kernel set; reply payload: the entries it wrote.
    IoctlIfconf = 18,
}

/// Bytes of a `struct ifreq` (LP64).
pub const IFREQ_LEN: usize = 40;

/// Whether `request` is an interface ioctl of a socket that reads and writes one
/// `struct ifreq` and nothing it points to (so the shim can carry it and the agent can run
/// it on a copy): names, indices, flags, addresses, MTU, MAC, queue length. `SIOCGIFCONF`
/// (a pointer to a buffer), `SIOCETHTOOL`, `SIOCSIFMAP` and the private and bridge ioctls
/// (pointers in `ifr_data`) are not.
pub fn ifreq_ioctl(request: u64) -> bool {
    use libc::*;
    [
        SIOCGIFNAME,
        SIOCGIFFLAGS,
        SIOCSIFFLAGS,
        SIOCGIFADDR,
        SIOCSIFADDR,
        SIOCGIFDSTADDR,
        SIOCGIFBRDADDR,
        SIOCSIFBRDADDR,
        SIOCGIFNETMASK,
        SIOCSIFNETMASK,
        SIOCGIFMETRIC,
        SIOCGIFMTU,
        SIOCSIFMTU,
        SIOCSIFNAME,
        SIOCGIFHWADDR,
        SIOCGIFINDEX,
        SIOCGIFTXQLEN,
        SIOCSIFTXQLEN,
    ]
    .contains(&request)
}

impl Op {
    pub fn from_u32(v: u32) -> Option<Op> {
        Some(match v {
            1 => Op::Open,
            2 => Op::Bind,
            3 => Op::Listen,
            4 => Op::Accept,
            5 => Op::Connect,
            6 => Op::Send,
            7 => Op::Recv,
            8 => Op::Shutdown,
            9 => Op::Name,
            10 => Op::SetOption,
            11 => Op::GetOption,
            12 => Op::IoctlInt,
            13 => Op::Poll,
            14 => Op::Stats,
            15 => Op::Describe,
            16 => Op::Close,
            17 => Op::IoctlIfreq,
            18 => Op::IoctlIfconf,
            _ => return None,
        })
    }
}

/// What a message from the agent is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Kind {
    /// The reply to the oldest unanswered request.
    Reply = 1,
    /// The socket may be ready for the announced interest (no payload).
    Ready = 2,
}

/// A request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub op: Op,
    pub args: [i64; 6],
}

/// Why bytes are not a valid message (the peer is not a well-behaved shim or agent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than its header.
    Short,
    /// The first word is not [`MAGIC`].
    BadMagic,
    /// An operation or kind this version does not know.
    UnknownOp(u32),
    /// Payload beyond [`MAX_PAYLOAD`].
    TooLong,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Short => write!(f, "message shorter than its header"),
            DecodeError::BadMagic => write!(f, "message without the knic offload magic"),
            DecodeError::UnknownOp(op) => write!(f, "unknown operation or kind {op}"),
            DecodeError::TooLong => write!(f, "payload longer than {MAX_PAYLOAD} bytes"),
        }
    }
}

impl std::error::Error for DecodeError {}

fn word(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn quad(b: &[u8], at: usize) -> i64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    i64::from_le_bytes(w)
}

impl Request {
    pub fn new(op: Op, args: [i64; 6]) -> Request {
        Request { op, args }
    }

    /// Writes the header into the first [`REQUEST_LEN`] bytes of `out`.
    pub fn encode(&self, out: &mut [u8; REQUEST_LEN]) {
        out.fill(0);
        out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        out[4..8].copy_from_slice(&(self.op as u32).to_le_bytes());
        for (i, a) in self.args.iter().enumerate() {
            out[8 + 8 * i..16 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
    }

    /// Parses a whole message: its header and its payload.
    pub fn decode(msg: &[u8]) -> Result<(Request, &[u8]), DecodeError> {
        if msg.len() < REQUEST_LEN {
            return Err(DecodeError::Short);
        }
        if msg.len() > MAX_MESSAGE {
            return Err(DecodeError::TooLong);
        }
        if word(msg, 0) != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let raw = word(msg, 4);
        let op = Op::from_u32(raw).ok_or(DecodeError::UnknownOp(raw))?;
        let mut args = [0i64; 6];
        for (i, a) in args.iter_mut().enumerate() {
            *a = quad(msg, 8 + 8 * i);
        }
        Ok((Request { op, args }, &msg[REQUEST_LEN..]))
    }
}

/// Bit of a reply's kind word: a `Ready` message follows this reply at once.
const READY_FOLLOWS: u32 = 1 << 16;

/// A message from the agent: a reply or a readiness signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub kind: Kind,
    /// The agent queues a `Ready` right after this reply (the socket meets the interest).
    /// The shim waits until it is queued before it returns, so readiness a program sees
    /// right after a call (an epoll_ctl, a read) is the socket's at that moment.
    pub ready_follows: bool,
    /// The call's result as the kernel returns it: a value, or `-errno`.
    pub ret: i64,
    pub aux: [i64; 2],
}

impl Reply {
    pub fn new(ret: i64) -> Reply {
        Reply {
            kind: Kind::Reply,
            ready_follows: false,
            ret,
            aux: [0; 2],
        }
    }

    pub fn ready() -> Reply {
        Reply {
            kind: Kind::Ready,
            ready_follows: false,
            ret: 0,
            aux: [0; 2],
        }
    }

    pub fn encode(&self, out: &mut [u8; REPLY_LEN]) {
        out.fill(0);
        out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        let flags = if self.ready_follows { READY_FOLLOWS } else { 0 };
        out[4..8].copy_from_slice(&(self.kind as u32 | flags).to_le_bytes());
        out[8..16].copy_from_slice(&self.ret.to_le_bytes());
        out[16..24].copy_from_slice(&self.aux[0].to_le_bytes());
        out[24..32].copy_from_slice(&self.aux[1].to_le_bytes());
    }

    pub fn decode(msg: &[u8]) -> Result<(Reply, &[u8]), DecodeError> {
        if msg.len() < REPLY_LEN {
            return Err(DecodeError::Short);
        }
        if msg.len() > REPLY_LEN + MAX_PAYLOAD {
            return Err(DecodeError::TooLong);
        }
        if word(msg, 0) != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let w = word(msg, 4);
        let kind = match w & !READY_FOLLOWS {
            1 => Kind::Reply,
            2 => Kind::Ready,
            other => return Err(DecodeError::UnknownOp(other)),
        };
        Ok((
            Reply {
                kind,
                ready_follows: w & READY_FOLLOWS != 0,
                ret: quad(msg, 8),
                aux: [quad(msg, 16), quad(msg, 24)],
            },
            &msg[REPLY_LEN..],
        ))
    }
}

/// Why a control-message buffer is not one the kernel would accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlError {
    /// A `cmsg_len` shorter than its header or past the end of the buffer (the kernel's
    /// `CMSG_OK` check: `sendmsg` fails with `EINVAL`).
    BadLength { at: usize },
    /// More than [`MAX_CONTROL`] bytes.
    TooLong,
}

fn cmsg_align(len: usize) -> usize {
    len.saturating_add(7) & !7
}

/// Walks a control buffer the way the kernel's `for_each_cmsghdr` + `CMSG_OK` do (a
/// trailing piece shorter than a header is ignored, as `__cmsg_nxthdr` ignores it) and
/// returns how many messages it holds. Both sides run it: the shim to give the caller
/// Linux's `EINVAL`, the agent because the bytes come from a program it does not trust.
pub fn check_control(buf: &[u8]) -> Result<usize, ControlError> {
    if buf.len() > MAX_CONTROL {
        return Err(ControlError::TooLong);
    }
    let mut at = 0usize;
    let mut count = 0usize;
    while buf.len() - at >= CMSG_HDR_LEN {
        let mut w = [0u8; 8];
        w.copy_from_slice(&buf[at..at + 8]);
        let len = u64::from_le_bytes(w);
        if len < CMSG_HDR_LEN as u64 || len > (buf.len() - at) as u64 {
            return Err(ControlError::BadLength { at });
        }
        count += 1;
        at = at.saturating_add(cmsg_align(len as usize)).min(buf.len());
    }
    Ok(count)
}

/// Whether `socket(domain, kind, protocol)` is the agent's (the one rule shim and server
/// share; `kind` may carry `SOCK_NONBLOCK`/`SOCK_CLOEXEC`):
/// * `AF_INET`/`AF_INET6` TCP and UDP sockets: the library kernel carries the traffic;
/// * `AF_NETLINK` `NETLINK_ROUTE`, `NETLINK_SOCK_DIAG` and `NETLINK_NETFILTER` (raw or
///   datagram, as the kernel accepts either): so `ip`, `ss` and `nft` see and configure the
///   kernel the program's sockets live in. Other netlink families (uevents, audit, generic
///   netlink) describe the host and stay there.
///
/// Everything else (unix sockets, packet sockets, raw IP) stays on the host kernel.
pub fn offloaded(domain: i64, kind: i64, protocol: i64) -> bool {
    let base = kind & 0xf;
    match i32::try_from(domain) {
        Ok(libc::AF_INET | libc::AF_INET6) => {
            base == i64::from(libc::SOCK_STREAM) || base == i64::from(libc::SOCK_DGRAM)
        }
        Ok(libc::AF_NETLINK) => {
            (base == i64::from(libc::SOCK_RAW) || base == i64::from(libc::SOCK_DGRAM))
                && matches!(
                    i32::try_from(protocol),
                    Ok(libc::NETLINK_ROUTE | libc::NETLINK_SOCK_DIAG | libc::NETLINK_NETFILTER)
                )
        }
        _ => false,
    }
}

/// `SOL_TLS` (include/linux/socket.h) and its options (include/uapi/linux/tls.h).
pub const SOL_TLS: i64 = 282;
pub const TLS_TX: i64 = 1;
pub const TLS_RX: i64 = 2;

/// The size of the `tls12_crypto_info_*` struct for a `struct tls_crypto_info` header
/// (`u16 version; u16 cipher_type;`), as `do_tls_setsockopt_conf` (net/tls/tls_main.c) of
/// Linux 6.12 requires it (`optlen != cipher_desc->crypto_info` is EINVAL); None for a
/// version other than TLS 1.2/1.3 or a cipher that kernel does not know.
pub fn tls_crypto_info_len(header: [u8; 4]) -> Option<usize> {
    let version = u16::from_le_bytes([header[0], header[1]]);
    let cipher = u16::from_le_bytes([header[2], header[3]]);
    if version != 0x0303 && version != 0x0304 {
        return None;
    }
    // header + iv + key + salt + rec_seq (include/uapi/linux/tls.h).
    Some(match cipher {
        51 => 4 + 8 + 16 + 4 + 8, // AES_GCM_128
        52 => 4 + 8 + 32 + 4 + 8, // AES_GCM_256
        53 => 4 + 8 + 16 + 4 + 8, // AES_CCM_128
        54 => 4 + 12 + 32 + 8,    // CHACHA20_POLY1305 (no salt)
        55 => 4 + 8 + 16 + 4 + 8, // SM4_GCM
        56 => 4 + 8 + 16 + 4 + 8, // SM4_CCM
        57 => 4 + 8 + 16 + 4 + 8, // ARIA_GCM_128
        58 => 4 + 8 + 32 + 4 + 8, // ARIA_GCM_256
        _ => return None,
    })
}

/// The environment variable naming the agent's offload socket inside a launched program
/// (the launcher sets it; the shim does nothing without it).
pub const SOCKET_ENV: &str = "KNIC_OFFLOAD_SOCKET";
/// Where a `knic-agent` started without options serves offload.
pub const DEFAULT_SOCKET: &str = "/run/knic/offload.sock";

/// The `AF_UNIX` address of the agent's offload socket at `path` (both ends build it: the
/// server to bind, the launcher and shim to connect).
pub fn unix_address(path: &std::path::Path) -> std::io::Result<libc::sockaddr_un> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    let mut addr = libc::sockaddr_un {
        sun_family: libc::AF_UNIX as libc::sa_family_t,
        sun_path: [0; 108],
    };
    if bytes.len() >= addr.sun_path.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "socket path longer than 107 bytes",
        ));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip_and_hostile_bytes() {
        let r = Request::new(Op::Send, [1, -2, 3, i64::MIN, i64::MAX, 0]);
        let mut buf = [0u8; REQUEST_LEN];
        r.encode(&mut buf);
        let mut msg = buf.to_vec();
        msg.extend_from_slice(b"data");
        let (back, payload) = Request::decode(&msg).unwrap();
        assert_eq!(back, r);
        assert_eq!(payload, b"data");
        assert_eq!(Request::decode(&msg[..10]), Err(DecodeError::Short));
        let mut bad = msg.clone();
        bad[0] ^= 1;
        assert_eq!(Request::decode(&bad), Err(DecodeError::BadMagic));
        let mut unknown = msg.clone();
        unknown[4] = 99;
        assert_eq!(Request::decode(&unknown), Err(DecodeError::UnknownOp(99)));
        let long = vec![0u8; MAX_MESSAGE + 1];
        assert_eq!(Request::decode(&long), Err(DecodeError::TooLong));
    }

    fn cmsg(len: u64, level: i32, kind: i32, data: &[u8]) -> Vec<u8> {
        let mut v = len.to_le_bytes().to_vec();
        v.extend_from_slice(&level.to_le_bytes());
        v.extend_from_slice(&kind.to_le_bytes());
        v.extend_from_slice(data);
        while v.len() % 8 != 0 {
            v.push(0);
        }
        v
    }

    #[test]
    fn control_walk_is_the_kernels() {
        // TLS_SET_RECORD_TYPE: one byte of data, CMSG_LEN(1) = 17, CMSG_SPACE(1) = 24.
        let one = cmsg(17, 282, 1, &[21]);
        assert_eq!(one.len(), 24);
        assert_eq!(check_control(&one), Ok(1));
        let mut two = one.clone();
        two.extend_from_slice(&cmsg(20, 0, 8, &[1, 2, 3, 4]));
        assert_eq!(check_control(&two), Ok(2));
        assert_eq!(check_control(&[]), Ok(0));
        // A trailing piece shorter than a header is ignored, as in __cmsg_nxthdr.
        let mut tail = one.clone();
        tail.extend_from_slice(&[0xff; 15]);
        assert_eq!(check_control(&tail), Ok(1));
        // Hostile lengths: shorter than the header, past the end, huge (no overflow).
        assert_eq!(
            check_control(&cmsg(15, 0, 0, &[0])),
            Err(ControlError::BadLength { at: 0 })
        );
        assert_eq!(
            check_control(&cmsg(25, 0, 0, &[0])),
            Err(ControlError::BadLength { at: 0 })
        );
        let mut huge = one.clone();
        huge.extend_from_slice(&cmsg(u64::MAX, 0, 0, &[]));
        assert_eq!(
            check_control(&huge),
            Err(ControlError::BadLength { at: 24 })
        );
        assert_eq!(
            check_control(&vec![0u8; MAX_CONTROL + 1]),
            Err(ControlError::TooLong)
        );
    }

    #[test]
    fn tls_crypto_info_sizes_are_linux_6_12s() {
        // sizeof(struct tls12_crypto_info_aes_gcm_128) = 40, _256 = 56, chacha20 = 56.
        assert_eq!(tls_crypto_info_len([0x03, 0x03, 51, 0]), Some(40));
        assert_eq!(tls_crypto_info_len([0x04, 0x03, 52, 0]), Some(56));
        assert_eq!(tls_crypto_info_len([0x04, 0x03, 54, 0]), Some(56));
        assert_eq!(tls_crypto_info_len([0x04, 0x03, 58, 0]), Some(56));
        assert_eq!(tls_crypto_info_len([0x02, 0x03, 51, 0]), None);
        assert_eq!(tls_crypto_info_len([0x03, 0x03, 59, 0]), None);
    }

    #[test]
    fn offloaded_families_are_inet_and_three_netlink_protocols() {
        use libc::*;
        let (inet, inet6, nl) = (AF_INET.into(), AF_INET6.into(), AF_NETLINK.into());
        let stream = i64::from(SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC);
        assert!(offloaded(inet, stream, 0));
        assert!(offloaded(inet6, SOCK_DGRAM.into(), IPPROTO_UDP.into()));
        assert!(!offloaded(inet, SOCK_RAW.into(), IPPROTO_ICMP.into()));
        assert!(!offloaded(AF_UNIX.into(), SOCK_STREAM.into(), 0));
        assert!(!offloaded(AF_PACKET.into(), SOCK_RAW.into(), 0));
        for p in [NETLINK_ROUTE, NETLINK_SOCK_DIAG, NETLINK_NETFILTER] {
            assert!(offloaded(nl, SOCK_RAW.into(), p.into()));
            assert!(offloaded(
                nl,
                i64::from(SOCK_DGRAM | SOCK_CLOEXEC),
                p.into()
            ));
            assert!(!offloaded(nl, SOCK_STREAM.into(), p.into()));
        }
        let others = [NETLINK_KOBJECT_UEVENT, NETLINK_AUDIT, NETLINK_GENERIC, -1];
        for p in others.map(i64::from).into_iter().chain([1 << 40]) {
            assert!(!offloaded(nl, SOCK_RAW.into(), p));
        }
        assert!(!offloaded(i64::from(AF_INET) + (1 << 32), stream, 0));
    }

    #[test]
    fn only_pointer_free_ifreq_ioctls_are_carried() {
        for ok in [libc::SIOCGIFINDEX, libc::SIOCGIFFLAGS, libc::SIOCSIFMTU] {
            assert!(ifreq_ioctl(ok), "{ok:#x}");
        }
        // SIOCGIFCONF, SIOCETHTOOL, SIOCDEVPRIVATE, SIOCSIFMAP, FIONREAD.
        for bad in [0x8912, 0x8946, 0x89f0, 0x8971, 0x541b] {
            assert!(!ifreq_ioctl(bad), "{bad:#x}");
        }
    }

    #[test]
    fn reply_round_trip() {
        let mut r = Reply::new(-11);
        r.aux = [7, 8];
        r.ready_follows = true;
        let mut buf = [0u8; REPLY_LEN];
        r.encode(&mut buf);
        assert_eq!(Reply::decode(&buf).unwrap().0, r);
        Reply::ready().encode(&mut buf);
        assert_eq!(Reply::decode(&buf).unwrap().0.kind, Kind::Ready);
        buf[4] = 3;
        assert_eq!(Reply::decode(&buf), Err(DecodeError::UnknownOp(3)));
    }
}
