//! ethtool requests to the kernel's own drivers (SIOCETHTOOL on a socket inside the
//! library kernel), for what rtnetlink does not set: the number of queue channels.
#![allow(unsafe_code)]

use std::io;

use lkl_sys::nr;

use crate::socket::Fd;
use crate::sys;

const SIOCETHTOOL: i64 = 0x8946;
const ETHTOOL_GCHANNELS: u32 = 0x3c;
const ETHTOOL_SCHANNELS: u32 = 0x3d;

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

/// `struct ifreq` with `ifr_data`, as SIOCETHTOOL reads it.
#[repr(C)]
struct IfreqData {
    name: [u8; 16],
    data: *mut EthtoolChannels,
    _pad: [u8; 16],
}

fn ethtool(socket: &Fd, name: &str, channels: &mut EthtoolChannels) -> io::Result<()> {
    let mut req = IfreqData {
        name: [0; 16],
        data: channels,
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
    // memory: it reads `req` and reads/writes `*channels`, both alive across the call
    // and not otherwise borrowed.
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

/// Sets interface `name`'s combined channels (`ethtool -L NAME combined N`): for
/// virtio_net, the queue pairs it uses (it sends VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET).
pub(crate) fn set_combined_channels(name: &str, count: u32) -> io::Result<()> {
    let socket = Fd::from_raw(sys::syscall_values(
        nr::SOCKET,
        [
            i64::from(libc::AF_INET),
            i64::from(libc::SOCK_DGRAM | libc::SOCK_CLOEXEC),
            0,
            0,
            0,
            0,
        ],
    )? as i32);
    let mut channels = EthtoolChannels {
        cmd: ETHTOOL_GCHANNELS,
        ..EthtoolChannels::default()
    };
    ethtool(&socket, name, &mut channels)?;
    channels.cmd = ETHTOOL_SCHANNELS;
    channels.combined_count = count;
    ethtool(&socket, name, &mut channels)
}
