//! A TAP interface with the virtio-net header (IFF_VNET_HDR): frames carry their
//! GSO and checksum metadata in the same 12-byte header virtio-net uses, so with
//! TUNSETOFFLOAD 64 KiB TSO frames cross the host boundary intact.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use packet_ring::GuestOffloads;

/// Which TAP to attach a library device to.
#[derive(Debug, Clone)]
pub struct TapConfig {
    /// Interface name on the host (created if missing; needs CAP_NET_ADMIN).
    pub name: String,
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUNSETQUEUE: libc::c_ulong = 0x4004_54d9;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
const IFF_ATTACH_QUEUE: libc::c_short = 0x0200;
const IFF_DETACH_QUEUE: libc::c_short = 0x0400;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;
const TUN_F_TSO_ECN: libc::c_uint = 0x08;

/// Size of `struct virtio_net_hdr_v1` (with num_buffers), as VERSION_1 devices use.
pub(crate) const VNET_HDR_LEN: usize = 12;

#[derive(Debug)]
pub(crate) struct Tap {
    file: File,
}

impl Tap {
    /// Opens one queue of the TAP (`multi_queue` for a device with several pairs). It
    /// delivers plain frames until the driver's negotiation sets offloads.
    pub(crate) fn open(config: &TapConfig, multi_queue: bool) -> io::Result<Tap> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot open /dev/net/tun: {e} (needs the tun module and root)"),
                )
            })?;
        // SAFETY: all-zero is a valid ifreq.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        if config.name.is_empty() || config.name.len() >= req.ifr_name.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad TAP name {:?}", config.name),
            ));
        }
        for (dst, src) in req.ifr_name.iter_mut().zip(config.name.bytes()) {
            *dst = src as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
        if multi_queue {
            req.ifr_ifru.ifru_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE;
        }
        let fd = file.as_raw_fd();
        // SAFETY: TUNSETIFF reads and writes one ifreq.
        if unsafe { libc::ioctl(fd, TUNSETIFF, &mut req) } < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("TUNSETIFF {}: {e} (needs CAP_NET_ADMIN)", config.name),
            ));
        }
        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int.
        if unsafe { libc::ioctl(fd, TUNSETVNETHDRSZ, &hdr_len) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let tap = Tap { file };
        set_tap_offloads(&tap.file, GuestOffloads::default())?;
        Ok(tap)
    }

    /// The TAP's file, to be shared by the device's two directions (reads and writes
    /// on one TAP queue need no lock between them).
    pub(crate) fn into_file(self) -> File {
        self.file
    }
}

/// Tells the host kernel which offloads the reader takes (TUNSETOFFLOAD): it segments
/// and checksums everything else before the frame reaches the TAP's reader.
pub(crate) fn set_tap_offloads(tap: &File, o: GuestOffloads) -> io::Result<()> {
    let mut flags = 0;
    // Segmentation offloads need partial checksums (the kernel refuses them alone).
    if o.csum {
        flags |= TUN_F_CSUM;
        if o.tso4 {
            flags |= TUN_F_TSO4;
        }
        if o.tso6 {
            flags |= TUN_F_TSO6;
        }
        if (o.tso4 || o.tso6) && o.ecn {
            flags |= TUN_F_TSO_ECN;
        }
    }
    // SAFETY: TUNSETOFFLOAD takes the flags by value.
    if unsafe { libc::ioctl(tap.as_raw_fd(), TUNSETOFFLOAD, flags as libc::c_ulong) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Attaches or detaches a queue of a multi-queue TAP (TUNSETQUEUE). A queue already in
/// that state (and every single-queue TAP) answers EINVAL, which is not an error here.
pub(crate) fn set_tap_queue_attached(tap: &File, attached: bool) -> io::Result<()> {
    // SAFETY: all-zero is a valid ifreq.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    req.ifr_ifru.ifru_flags = if attached {
        IFF_ATTACH_QUEUE
    } else {
        IFF_DETACH_QUEUE
    };
    // SAFETY: TUNSETQUEUE reads one ifreq.
    if unsafe { libc::ioctl(tap.as_raw_fd(), TUNSETQUEUE, &mut req) } < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(e);
        }
    }
    Ok(())
}

/// Writes one frame (virtio-net header first) gathered from `iov`.
///
/// # Safety
/// Every iovec must point at memory readable for its length during the call.
pub(crate) unsafe fn writev(tap: &File, iov: &[libc::iovec]) -> io::Result<usize> {
    // SAFETY: the caller vouches for the buffers' readability.
    unsafe { transfer(tap, iov, libc::writev) }
}

/// Reads one frame (virtio-net header first) scattered into `iov`.
///
/// # Safety
/// Every iovec must point at memory writable for its length during the call, that nothing
/// else reads or writes meanwhile.
pub(crate) unsafe fn readv(tap: &File, iov: &[libc::iovec]) -> io::Result<usize> {
    // SAFETY: the caller vouches for the buffers' writability and exclusivity.
    unsafe { transfer(tap, iov, libc::readv) }
}

type VectoredIo = unsafe extern "C" fn(libc::c_int, *const libc::iovec, libc::c_int) -> isize;

/// One `readv`/`writev` on the TAP.
///
/// # Safety
/// Every iovec must be valid for what `io` does with it (read or write) during the call.
unsafe fn transfer(tap: &File, iov: &[libc::iovec], io: VectoredIo) -> io::Result<usize> {
    // SAFETY: `iov` holds `iov.len()` iovecs whose buffers the caller vouches for.
    let n = unsafe { io(tap.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}
