//! ethtool requests to the kernel's own drivers (SIOCETHTOOL on a socket inside the
//! library kernel), for what rtnetlink does not set: the number of queue channels, and
//! which transmit offloads (checksum, TSO) the kernel may use on a device.
#![allow(unsafe_code)]

use std::io;

use lkl_sys::nr;

use crate::socket::Fd;
use crate::sys;

const SIOCETHTOOL: i64 = 0x8946;
const ETHTOOL_GCHANNELS: u32 = 0x3c;
const ETHTOOL_SCHANNELS: u32 = 0x3d;
/// The legacy one-feature requests (`ethtool_set_one_feature` in net/ethtool/ioctl.c):
/// TXCSUM covers every checksum feature, TSO every TSO feature (v4, v6, ECN, mangled id).
const ETHTOOL_STXCSUM: u32 = 0x17;
const ETHTOOL_STSO: u32 = 0x1f;

/// `struct ethtool_channels` (include/uapi/linux/ethtool.h).
#[repr(C)]
#[derive(Debug, Default)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

/// `struct ethtool_value` (include/uapi/linux/ethtool.h).
#[repr(C)]
#[derive(Debug, Default)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// An ethtool request structure: it starts with its `cmd` word, as every one does.
trait EthtoolRequest {}
impl EthtoolRequest for EthtoolChannels {}
impl EthtoolRequest for EthtoolValue {}

/// `struct ifreq` with `ifr_data`, as SIOCETHTOOL reads it.
#[repr(C)]
struct IfreqData {
    name: [u8; 16],
    data: *mut u8,
    _pad: [u8; 16],
}

fn ethtool<R: EthtoolRequest>(socket: &Fd, name: &str, request: &mut R) -> io::Result<()> {
    let mut req = IfreqData {
        name: [0; 16],
        data: (request as *mut R).cast(),
        _pad: [0; 16],
    };
    if name.is_empty() || name.len() >= req.name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: without an MMU the kernel's copy_{from,to}_user are plain copies of host
    // memory: it reads `req` and reads/writes `*request` (a `#[repr(C)]` uapi struct of
    // the kind its `cmd` names, so the kernel copies no more than it holds), both alive
    // across the call and not otherwise borrowed.
    unsafe {
        sys::syscall(
            nr::IOCTL,
            [
                i64::from(socket.raw()),
                SIOCETHTOOL,
                &mut req as *mut IfreqData as i64,
                0,
                0,
                0,
            ],
        )?;
    }
    Ok(())
}

/// A socket inside the library kernel to send ethtool requests on.
fn request_socket() -> io::Result<Fd> {
    Ok(Fd::from_raw(sys::syscall_values(
        nr::SOCKET,
        [
            i64::from(libc::AF_INET),
            i64::from(libc::SOCK_DGRAM | libc::SOCK_CLOEXEC),
            0,
            0,
            0,
            0,
        ],
    )? as i32))
}

/// Sets interface `name`'s combined channels (`ethtool -L NAME combined N`): for
/// virtio_net, the queue pairs it uses (it sends VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET).
pub(crate) fn set_combined_channels(name: &str, count: u32) -> io::Result<()> {
    let socket = request_socket()?;
    let mut channels = EthtoolChannels {
        cmd: ETHTOOL_GCHANNELS,
        ..EthtoolChannels::default()
    };
    ethtool(&socket, name, &mut channels)?;
    channels.cmd = ETHTOOL_SCHANNELS;
    channels.combined_count = count;
    ethtool(&socket, name, &mut channels)
}

/// Lets the kernel hand interface `name` partial checksums (`csum`) and TSO frames (`tso`)
/// or not (`ethtool -K NAME tx on|off tso on|off`). Without them the kernel checksums and
/// segments in software before the driver sees a frame (validate_xmit_skb), so a device
/// whose far side cannot take large frames gets none. TSO needs checksum offload: the
/// kernel turns TSO off with it (netdev_fix_features).
pub(crate) fn set_tx_offloads(name: &str, csum: bool, tso: bool) -> io::Result<()> {
    let socket = request_socket()?;
    // TSO first when turning off, checksums first when turning on: the kernel refuses
    // TSO without checksum offload.
    let order = if tso {
        [(ETHTOOL_STXCSUM, csum), (ETHTOOL_STSO, tso)]
    } else {
        [(ETHTOOL_STSO, tso), (ETHTOOL_STXCSUM, csum)]
    };
    for (cmd, on) in order {
        let mut value = EthtoolValue {
            cmd,
            data: u32::from(on),
        };
        ethtool(&socket, name, &mut value)?;
    }
    Ok(())
}
