//! A TAP interface with the virtio-net header (IFF_VNET_HDR): frames carry their
//! GSO and checksum metadata in the same 12-byte header virtio-net uses, so with
//! TUNSETOFFLOAD 64 KiB TSO frames cross the host boundary intact.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

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
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;

/// Size of `struct virtio_net_hdr_v1` (with num_buffers), as VERSION_1 devices use.
pub(crate) const VNET_HDR_LEN: usize = 12;

#[derive(Debug)]
pub(crate) struct Tap {
    file: File,
}

impl Tap {
    pub(crate) fn open(config: &TapConfig, offloads: bool) -> io::Result<Tap> {
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
        let flags = if offloads {
            TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
        } else {
            0
        };
        // SAFETY: TUNSETOFFLOAD takes the flags by value.
        if unsafe { libc::ioctl(fd, TUNSETOFFLOAD, flags as libc::c_ulong) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Tap { file })
    }

    /// The TAP's file, to be shared by the device's two directions (reads and writes
    /// on one TAP queue need no lock between them).
    pub(crate) fn into_file(self) -> File {
        self.file
    }
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
