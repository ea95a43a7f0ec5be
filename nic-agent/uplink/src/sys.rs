//! The uplinks' system calls that need `unsafe`: TAP ioctls, AF_PACKET sockets and their
//! batched datagram I/O. Everything else in the crate is safe code.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `struct ifreq` as TUNSETIFF reads it: the name and the flags member of the union, padded
/// to the kernel's 40 bytes.
#[repr(C)]
struct IfReqFlags {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn ifname(name: &str) -> io::Result<[libc::c_char; libc::IFNAMSIZ]> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {name:?} must be 1 to 15 bytes without NUL"),
        ));
    }
    let mut out = [0 as libc::c_char; libc::IFNAMSIZ];
    for (o, b) in out.iter_mut().zip(bytes) {
        *o = *b as libc::c_char;
    }
    Ok(out)
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Opens `/dev/net/tun` non-blocking and attaches it to TAP `name` (created if missing) with
/// `IFF_NO_PI | IFF_VNET_HDR`, plus `IFF_MULTI_QUEUE` when `multi_queue`.
pub fn tap_open(name: &str, multi_queue: bool) -> io::Result<OwnedFd> {
    let path = c"/dev/net/tun";
    // SAFETY: `path` is a NUL-terminated literal; open has no other memory effects. The
    // returned fd, if any, is owned by nobody else yet.
    let fd = cvt(unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: `fd` was just returned by open and is not owned elsewhere.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
    if multi_queue {
        flags |= libc::IFF_MULTI_QUEUE;
    }
    let mut req = IfReqFlags {
        name: ifname(name)?,
        flags: flags as libc::c_short,
        _pad: [0; 22],
    };
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq` (40 bytes) at the pointer; `req` is
    // a live, exclusively borrowed 40-byte repr(C) value with the same layout for the name and
    // flags members. `fd` is a tun fd we own.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF as _, &mut req) })?;
    Ok(fd)
}

/// Attaches a queue of a multi-queue TAP to the device or detaches it (`TUNSETQUEUE`). The
/// kernel steers frames only into attached queues and drops what waited in a queue it
/// detaches; a detached queue keeps its fd and can still be read, written and configured.
pub fn tap_set_queue_attached(fd: RawFd, attached: bool) -> io::Result<()> {
    let flags = if attached {
        libc::IFF_ATTACH_QUEUE
    } else {
        libc::IFF_DETACH_QUEUE
    };
    // TUNSETQUEUE reads only the flags; the name is ignored.
    let mut req = IfReqFlags {
        name: [0; libc::IFNAMSIZ],
        flags: flags as libc::c_short,
        _pad: [0; 22],
    };
    // SAFETY: TUNSETQUEUE reads a `struct ifreq` (40 bytes) at the pointer; `req` is a live,
    // exclusively borrowed 40-byte repr(C) value with the flags member where the kernel reads
    // `ifr_flags`. The kernel checks `fd` is a tun fd.
    cvt(unsafe { libc::ioctl(fd, libc::TUNSETQUEUE as _, &mut req) })?;
    Ok(())
}

/// Sets the size of the virtio-net header the TAP prepends/expects (`TUNSETVNETHDRSZ`).
pub fn tap_set_vnet_hdr_size(fd: RawFd, size: libc::c_int) -> io::Result<()> {
    // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer; `size` lives across the call.
    cvt(unsafe { libc::ioctl(fd, libc::TUNSETVNETHDRSZ as _, &size) })?;
    Ok(())
}

/// Tells the TAP which offloads the reader accepts (`TUNSETOFFLOAD`, `TUN_F_*` bits).
pub fn tap_set_offload(fd: RawFd, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned long), not a pointer, so
    // no memory is read or written by the kernel on our behalf.
    cvt(unsafe { libc::ioctl(fd, libc::TUNSETOFFLOAD as _, libc::c_ulong::from(flags)) })?;
    Ok(())
}

/// Keeps a TAP when its last fd closes (`TUNSETPERSIST` 1), or lets it go with it (0).
pub fn tap_set_persist(fd: RawFd, persist: bool) -> io::Result<()> {
    // SAFETY: TUNSETPERSIST takes its argument by value, not a pointer.
    cvt(unsafe { libc::ioctl(fd, libc::TUNSETPERSIST as _, libc::c_ulong::from(persist)) })?;
    Ok(())
}

/// Runs `f` on a thread of its own that has joined the network namespace at `netns` (a
/// file such as `/var/run/netns/NAME` or `/proc/PID/ns/net`): what `f` creates by name
/// (a TAP, an ioctl socket) is made there; fds it returns work from any thread.
pub fn in_netns<T: Send>(
    netns: &std::path::Path,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    let ns = std::fs::File::open(netns)?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: setns takes an fd we own (alive for the call) and a flag; it changes
                // only this thread's namespace, and this thread ends with the scope.
                cvt(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) })?;
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
    })
}

/// Writes `head` then `body` as one datagram. Returns bytes written.
pub fn write2(fd: RawFd, head: &[u8], body: &[u8]) -> io::Result<usize> {
    let iov = [
        libc::iovec {
            iov_base: head.as_ptr() as *mut libc::c_void,
            iov_len: head.len(),
        },
        libc::iovec {
            iov_base: body.as_ptr() as *mut libc::c_void,
            iov_len: body.len(),
        },
    ];
    // SAFETY: both iovecs point into live shared borrows of exactly `iov_len` bytes, which
    // writev only reads; `iov` outlives the call.
    let n = unsafe { libc::writev(fd, iov.as_ptr(), 2) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Reads one datagram into `head` then `body`. Returns bytes read.
pub fn read2(fd: RawFd, head: &mut [u8], body: &mut [u8]) -> io::Result<usize> {
    let iov = [
        libc::iovec {
            iov_base: head.as_mut_ptr() as *mut libc::c_void,
            iov_len: head.len(),
        },
        libc::iovec {
            iov_base: body.as_mut_ptr() as *mut libc::c_void,
            iov_len: body.len(),
        },
    ];
    // SAFETY: both iovecs point into live exclusive borrows of exactly `iov_len` bytes, which
    // readv may write; they do not overlap (distinct `&mut`), and `iov` outlives the call.
    let n = unsafe { libc::readv(fd, iov.as_ptr(), 2) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A non-blocking, close-on-exec eventfd (the ready fd of a port that never receives).
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers; a non-negative result is a new fd we own.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
    // SAFETY: `fd` was just returned by eventfd and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Index of interface `name`.
pub fn if_index(name: &str) -> io::Result<libc::c_int> {
    let cname = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name has a NUL"))?;
    // SAFETY: `cname` is NUL-terminated and outlives the call, which only reads it.
    let idx = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if idx == 0 {
        return Err(io::Error::last_os_error());
    }
    libc::c_int::try_from(idx).map_err(|_| io::Error::from_raw_os_error(libc::ERANGE))
}

/// Sets interface `name`'s MAC address (`SIOCSIFHWADDR`, through a datagram socket).
pub fn set_interface_mac(name: &str, mac: [u8; 6]) -> io::Result<()> {
    // SAFETY: an all-zero ifreq is valid (a C struct of integers and arrays).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    req.ifr_name = ifname(name)?;
    // SAFETY: writing the `ifru_hwaddr` arm of a zeroed union; sockaddr is plain data.
    let addr = unsafe { &mut req.ifr_ifru.ifru_hwaddr };
    addr.sa_family = libc::ARPHRD_ETHER;
    for (d, s) in addr.sa_data.iter_mut().zip(mac) {
        *d = s as libc::c_char;
    }
    // SAFETY: socket takes no pointers; a non-negative result is a new fd we own.
    let sock =
        cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `sock` was just returned by socket and is owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    // SAFETY: SIOCSIFHWADDR reads one `ifreq`, a live local that outlives the call.
    cvt(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFHWADDR, &req) })?;
    Ok(())
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: setsockopt reads exactly `size_of::<T>()` bytes from `value`, a live shared
    // borrow; the option layouts passed by this module are plain C integers/structs.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// `PACKET_FANOUT_FLAG_UNIQUEID` (`linux/if_packet.h`): the kernel picks an unused group id.
const PACKET_FANOUT_FLAG_UNIQUEID: u32 = 0x2000;
/// `PACKET_FANOUT_FLAG_IGNORE_OUTGOING`: the group's hook skips the host's own transmissions
/// (a member's own `PACKET_IGNORE_OUTGOING` does not apply inside a group).
const PACKET_FANOUT_FLAG_IGNORE_OUTGOING: u32 = 0x4000;

/// Which fanout group a receiving socket joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanoutJoin {
    /// The group with this id (created if none has it).
    Id(u16),
    /// A new group with an id no other group has.
    Unique,
}

/// A non-blocking AF_PACKET raw socket for `proto` (network order) exchanging frames with a
/// 10-byte `virtio_net_hdr` (`PACKET_VNET_HDR`).
fn packet_socket(proto: u16) -> io::Result<OwnedFd> {
    // SAFETY: socket has no memory effects; the returned fd is owned by nobody else yet.
    let fd = cvt(unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::c_int::from(proto),
        )
    })?;
    // SAFETY: `fd` was just returned by socket and is not owned elsewhere.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    setsockopt(
        fd.as_raw_fd(),
        libc::SOL_PACKET,
        libc::PACKET_VNET_HDR,
        &1 as &libc::c_int,
    )?;
    Ok(fd)
}

fn packet_bind(fd: RawFd, ifindex: libc::c_int, proto: u16) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value to fill in.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = ifindex;
    // SAFETY: bind reads `size_of::<sockaddr_ll>()` bytes from `addr`, a live local.
    cvt(unsafe {
        libc::bind(
            fd,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// A send-only AF_PACKET socket on `ifindex`: bound with protocol 0, so the kernel registers
/// no receive hook for it and it never queues (nor, in a fanout group, draws) a frame.
pub fn packet_tx_socket(ifindex: libc::c_int) -> io::Result<OwnedFd> {
    let fd = packet_socket(0)?;
    packet_bind(fd.as_raw_fd(), ifindex, 0)?;
    Ok(fd)
}

/// A receiving AF_PACKET socket on `ifindex`: every protocol, promiscuous, not seeing the
/// host's own transmissions, and (with `fanout`) sharing flows by hash with the other members
/// of a fanout group. Returns the socket and the group id it joined.
pub fn packet_rx_socket(
    ifindex: libc::c_int,
    fanout: Option<FanoutJoin>,
) -> io::Result<(OwnedFd, Option<u16>)> {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    let fd = packet_socket(proto)?;
    let raw = fd.as_raw_fd();
    setsockopt(
        raw,
        libc::SOL_PACKET,
        libc::PACKET_IGNORE_OUTGOING,
        &1 as &libc::c_int,
    )?;
    packet_bind(raw, ifindex, proto)?;

    // SAFETY: packet_mreq is plain old data; all-zero is a valid value to fill in.
    let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
    mreq.mr_ifindex = ifindex;
    mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
    setsockopt(raw, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)?;

    let Some(join) = fanout else {
        return Ok((fd, None));
    };
    let (id, flags) = match join {
        FanoutJoin::Id(id) => (id, 0),
        FanoutJoin::Unique => (0, PACKET_FANOUT_FLAG_UNIQUEID),
    };
    let kind = libc::PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_IGNORE_OUTGOING | flags;
    let arg: u32 = u32::from(id) | (kind << 16);
    setsockopt(raw, libc::SOL_PACKET, libc::PACKET_FANOUT, &arg)?;
    // The group id the kernel chose (or confirmed): the low 16 bits of PACKET_FANOUT.
    let mut val: u32 = 0;
    let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` (4) bytes into `val`, a live local u32.
    cvt(unsafe {
        libc::getsockopt(
            raw,
            libc::SOL_PACKET,
            libc::PACKET_FANOUT,
            (&mut val as *mut u32).cast(),
            &mut len,
        )
    })?;
    Ok((fd, Some(val as u16)))
}

/// A new epoll instance: a stable readiness fd that stands for whichever sockets are
/// registered in it over time.
pub fn epoll_new() -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1 has no memory effects; the fd is owned by nobody else yet.
    let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    // SAFETY: `fd` was just returned by epoll_create1 and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Registers `fd` in `epoll` for input, level-triggered (the caller's own registration of
/// `epoll` decides edge or level). Closing `fd` removes it again.
pub fn epoll_add(epoll: RawFd, fd: RawFd) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: fd as u64,
    };
    // SAFETY: epoll_ctl reads one epoll_event from `ev`, a live local; both fds are open.
    cvt(unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut ev) })?;
    Ok(())
}

/// Packets the kernel dropped for this packet socket since the last call (`PACKET_STATISTICS`
/// reads and resets the socket's counters).
pub fn packet_drops(fd: RawFd) -> io::Result<u64> {
    // SAFETY: tpacket_stats is plain old data; all-zero is a valid value.
    let mut st: libc::tpacket_stats = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `st`, a live exclusive local of
    // exactly that size, and updates `len`, also a live local.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut st as *mut libc::tpacket_stats).cast(),
            &mut len,
        )
    })?;
    Ok(u64::from(st.tp_drops))
}

/// Most datagrams moved per `sendmmsg`/`recvmmsg` call.
pub const MMSG_BATCH: usize = 64;

/// Sends `packets[i]` as `hdrs[i] + frame` datagrams with one `sendmmsg` (at most
/// [`MMSG_BATCH`]). Returns how many the kernel took, in order; the first one not taken is
/// the one the error (if any) is about.
pub fn send_datagrams(
    fd: RawFd,
    hdrs: &[[u8; packet_ring::VirtioNetHdr::LEGACY_LEN]],
    packets: &[packet_ring::Packet],
) -> io::Result<usize> {
    let n = hdrs.len().min(packets.len()).min(MMSG_BATCH);
    let empty = libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    };
    let mut iov = [[empty; 2]; MMSG_BATCH];
    // SAFETY: mmsghdr is plain old data; all-zero (null pointers, zero lengths) is valid.
    let mut msgs: [libc::mmsghdr; MMSG_BATCH] = unsafe { std::mem::zeroed() };
    for i in 0..n {
        iov[i] = [
            libc::iovec {
                iov_base: hdrs[i].as_ptr() as *mut libc::c_void,
                iov_len: hdrs[i].len(),
            },
            libc::iovec {
                iov_base: packets[i].frame().as_ptr() as *mut libc::c_void,
                iov_len: packets[i].len(),
            },
        ];
        msgs[i].msg_hdr.msg_iov = iov[i].as_mut_ptr();
        msgs[i].msg_hdr.msg_iovlen = 2;
    }
    // SAFETY: the first `n` mmsghdrs each point at two iovecs in `iov`, which point into
    // `hdrs` and the packets' frames: live shared borrows that sendmmsg only reads, all
    // outliving the call. No name, control data or flags are passed.
    let sent = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as libc::c_uint, 0) };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}

/// Receives up to `spare.len()` (at most [`MMSG_BATCH`]) datagrams with one non-blocking
/// `recvmmsg`, datagram `i` into `hdrs[i]` then `spare[i]`'s buffer; `lens[i]` gets its total
/// length. Returns how many arrived (an error means none).
pub fn recv_datagrams(
    fd: RawFd,
    hdrs: &mut [[u8; packet_ring::VirtioNetHdr::LEGACY_LEN]],
    spare: &mut [packet_ring::Packet],
    lens: &mut [usize],
) -> io::Result<usize> {
    let n = hdrs.len().min(spare.len()).min(lens.len()).min(MMSG_BATCH);
    let empty = libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    };
    let mut iov = [[empty; 2]; MMSG_BATCH];
    // SAFETY: mmsghdr is plain old data; all-zero (null pointers, zero lengths) is valid.
    let mut msgs: [libc::mmsghdr; MMSG_BATCH] = unsafe { std::mem::zeroed() };
    for (i, (h, p)) in hdrs.iter_mut().zip(spare.iter_mut()).take(n).enumerate() {
        let buf = p.buf_mut();
        iov[i] = [
            libc::iovec {
                iov_base: h.as_mut_ptr() as *mut libc::c_void,
                iov_len: h.len(),
            },
            libc::iovec {
                iov_base: buf.as_mut_ptr() as *mut libc::c_void,
                iov_len: buf.len(),
            },
        ];
        msgs[i].msg_hdr.msg_iov = iov[i].as_mut_ptr();
        msgs[i].msg_hdr.msg_iovlen = 2;
    }
    // SAFETY: the first `n` mmsghdrs each point at two iovecs in `iov`, which point into
    // distinct `hdrs` entries and distinct packet buffers (exclusive borrows, no overlap)
    // that recvmmsg may write up to their lengths; all outlive the call. MSG_DONTWAIT keeps
    // it from blocking; no timeout pointer is passed.
    let got = unsafe {
        libc::recvmmsg(
            fd,
            msgs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    let got = got as usize;
    for (len, m) in lens.iter_mut().zip(&msgs).take(got) {
        *len = m.msg_len as usize;
    }
    Ok(got)
}
