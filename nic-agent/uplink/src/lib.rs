//! knic's uplinks: host-side ports a queue pair's packets flow through, a TAP device, an
//! AF_PACKET socket or AF_XDP sockets on an existing interface. TAP and AF_PACKET exchange the
//! virtio-net header with the kernel, so offload metadata (GSO, partial checksums) passes end
//! to end without touching the payload; AF_XDP has no such header and says so through
//! [`PacketSink::tx_offloads`](packet_ring::PacketSink::tx_offloads).

mod af_packet;
mod discard;
mod sys;
mod tap;
mod xdp;
mod xdp_prog;
mod xsk_sys;

use std::fmt;
use std::str::FromStr;

use packet_ring::PacketPort;
use thiserror::Error;

pub use af_packet::{FanoutGroup, PacketSocketPort, PacketSocketSink, PacketSocketSource};
pub use discard::{DiscardPort, DiscardSink, DiscardSource};
pub use tap::{TapPort, TapSink, TapSource, delete_tap_in, open_tap_in};
pub use xdp::{
    XDP_FRAME_SIZE, XDP_MAX_RX_FRAME, XDP_MAX_TX_FRAME, XdpBinding, XdpConfig, XdpMode, XdpPort,
    XdpSink, XdpSource, XdpStats,
};

/// Which uplink to open, as given on the command line (`tap:NAME`, `packet:IFNAME`,
/// `xdp:IFNAME`, or `discard:` for none: every packet dropped, nothing received — for
/// measuring the device alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UplinkSpec {
    Tap(String),
    Packet(String),
    Xdp(String),
    Discard,
}

impl FromStr for UplinkSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("tap", name)) if !name.is_empty() => Ok(Self::Tap(name.to_string())),
            Some(("packet", name)) if !name.is_empty() => Ok(Self::Packet(name.to_string())),
            Some(("xdp", name)) if !name.is_empty() => Ok(Self::Xdp(name.to_string())),
            Some(("discard", "")) => Ok(Self::Discard),
            _ => Err(format!(
                "expected tap:NAME, packet:IFNAME, xdp:IFNAME or discard:, got {s:?}"
            )),
        }
    }
}

impl fmt::Display for UplinkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tap(n) => write!(f, "tap:{n}"),
            Self::Packet(n) => write!(f, "packet:{n}"),
            Self::Xdp(n) => write!(f, "xdp:{n}"),
            Self::Discard => write!(f, "discard:"),
        }
    }
}

/// Why an uplink could not be opened; each says what to do about it.
#[derive(Debug, Error)]
pub enum UplinkError {
    #[error(
        "opening {spec} needs CAP_NET_ADMIN (and CAP_NET_RAW for packet: and xdp:, CAP_BPF and CAP_IPC_LOCK for xdp:): run as root or grant the capabilities"
    )]
    Permission {
        spec: UplinkSpec,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "TAP {name} is busy: another process holds it (or it exists without multi-queue); pick another name or stop that process"
    )]
    TapBusy {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("/dev/net/tun is missing: load the tun module (modprobe tun)")]
    NoTunDevice(#[source] std::io::Error),
    #[error("interface {name} does not exist: check `ip link`")]
    NoSuchInterface {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "interface {name} cannot run AF_XDP in {mode:?} mode (no native XDP in its driver, or a kernel without CONFIG_XDP_SOCKETS): use the default automatic mode, which falls back to generic XDP, or another uplink kind"
    )]
    NoXdpSupport {
        name: String,
        mode: XdpMode,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "interface {name} already runs XDP program {program:?}, which is not libxdp's AF_XDP program: if nothing needs it, remove it with `ip link set dev {name} xdp off` (and `xdpgeneric off`), then retry"
    )]
    XdpProgramBusy { name: String, program: String },
    #[error(
        "queue {queue} of interface {name} already has an AF_XDP socket: stop the process that holds it (`ss -f xdp -p` may show it) or use another interface"
    )]
    XdpQueueBusy {
        name: String,
        queue: usize,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "interface {name} has {have} queue(s) but {need} queue pairs need {need}: raise its channel count with `ethtool -L {name} combined {need}` (drivers with separate channels, such as veth: `ethtool -L {name} rx {need} tx {need}`)"
    )]
    NotEnoughQueues {
        name: String,
        have: usize,
        need: usize,
    },
    #[error("cannot open uplink {spec}")]
    Other {
        spec: UplinkSpec,
        #[source]
        source: std::io::Error,
    },
}

impl UplinkError {
    fn classify(spec: &UplinkSpec, source: std::io::Error) -> Self {
        match (source.raw_os_error(), spec) {
            (Some(libc::EPERM | libc::EACCES), _) => Self::Permission {
                spec: spec.clone(),
                source,
            },
            (Some(libc::EBUSY | libc::EINVAL), UplinkSpec::Tap(name)) => Self::TapBusy {
                name: name.clone(),
                source,
            },
            (Some(libc::ENOENT), UplinkSpec::Tap(_)) => Self::NoTunDevice(source),
            (
                Some(libc::ENODEV | libc::ENXIO),
                UplinkSpec::Packet(name) | UplinkSpec::Xdp(name),
            ) => Self::NoSuchInterface {
                name: name.clone(),
                source,
            },
            _ => Self::Other {
                spec: spec.clone(),
                source,
            },
        }
    }
}

impl UplinkError {
    fn classify_xdp(spec: &UplinkSpec, name: &str, queue: usize, e: xdp::XdpOpenError) -> Self {
        match (e.kind, e.source.raw_os_error()) {
            (xdp::XdpFailure::ForeignProgram(program), _) => Self::XdpProgramBusy {
                name: name.to_string(),
                program,
            },
            (xdp::XdpFailure::QueueBusy, _) => Self::XdpQueueBusy {
                name: name.to_string(),
                queue,
                source: e.source,
            },
            (_, Some(libc::EOPNOTSUPP | libc::EAFNOSUPPORT)) => Self::NoXdpSupport {
                name: name.to_string(),
                mode: e.mode,
                source: e.source,
            },
            _ => Self::classify(spec, e.source),
        }
    }
}

/// Receive and transmit queues interface `name` has now (`/sys/class/net/NAME/queues`
/// lists the real counts, which `ethtool -L` changes).
fn interface_queues(name: &str) -> std::io::Result<usize> {
    let (mut rx, mut tx) = (0, 0);
    for e in std::fs::read_dir(format!("/sys/class/net/{name}/queues"))? {
        let e = e?;
        let n = e.file_name();
        let n = n.to_string_lossy();
        rx += usize::from(n.starts_with("rx-"));
        tx += usize::from(n.starts_with("tx-"));
    }
    Ok(rx.min(tx))
}

/// Opens `queue_pairs` AF_XDP sockets on `name`, queue `i` for pair `i`; the first decides
/// the attach mode the others use.
pub fn open_xdp_uplinks(
    name: &str,
    queue_pairs: usize,
    config: &XdpConfig,
) -> Result<Vec<XdpPort>, UplinkError> {
    let spec = UplinkSpec::Xdp(name.to_string());
    let ifindex = crate::sys::if_index(name).map_err(|e| UplinkError::classify(&spec, e))?;
    // Where sysfs does not show the interface (a thread in another network namespace than
    // the mount's), the bind's own EINVAL is left to tell.
    if let Ok(have) = interface_queues(name) {
        if have < queue_pairs {
            return Err(UplinkError::NotEnoughQueues {
                name: name.to_string(),
                have,
                need: queue_pairs,
            });
        }
    }
    let mut config = *config;
    let mut ports = Vec::with_capacity(queue_pairs);
    for q in 0..queue_pairs {
        let port = XdpPort::open(name, ifindex, q as u32, &config)
            .map_err(|e| UplinkError::classify_xdp(&spec, name, q, e))?;
        config.mode = port.binding().mode;
        if q == 0 {
            tracing::info!(
                interface = name,
                zero_copy = port.binding().zero_copy,
                mode = ?port.binding().mode,
                queue_pairs,
                "AF_XDP uplink open"
            );
        }
        ports.push(port);
    }
    Ok(ports)
}

/// Sets interface `name`'s MAC (a TAP port's, to the guest MAC its anti-spoofing knows).
pub fn set_interface_mac(name: &str, mac: [u8; 6]) -> std::io::Result<()> {
    crate::sys::set_interface_mac(name, mac)
}

/// Opens one port per queue pair.
pub fn open_uplinks(
    spec: &UplinkSpec,
    queue_pairs: usize,
) -> Result<Vec<Box<dyn PacketPort>>, UplinkError> {
    let mut ports: Vec<Box<dyn PacketPort>> = Vec::with_capacity(queue_pairs);
    match spec {
        UplinkSpec::Tap(name) => {
            for _ in 0..queue_pairs {
                let port = TapPort::open(name, queue_pairs > 1)
                    .map_err(|e| UplinkError::classify(spec, e))?;
                ports.push(Box::new(port));
            }
        }
        UplinkSpec::Packet(name) => {
            let ifindex = crate::sys::if_index(name).map_err(|e| UplinkError::classify(spec, e))?;
            // One fanout group per uplink: flows hash across the pairs that can receive.
            let group = (queue_pairs > 1).then(FanoutGroup::new);
            for _ in 0..queue_pairs {
                let port = PacketSocketPort::open(ifindex, group.clone())
                    .map_err(|e| UplinkError::classify(spec, e))?;
                ports.push(Box::new(port));
            }
        }
        UplinkSpec::Xdp(name) => {
            for port in open_xdp_uplinks(name, queue_pairs, &XdpConfig::default())? {
                ports.push(Box::new(port));
            }
        }
        UplinkSpec::Discard => {
            for _ in 0..queue_pairs {
                let port = DiscardPort::open().map_err(|e| UplinkError::classify(spec, e))?;
                ports.push(Box::new(port));
            }
        }
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parses_both_kinds_and_refuses_others() {
        assert_eq!("tap:knic0".parse(), Ok(UplinkSpec::Tap("knic0".into())));
        assert_eq!("packet:eth0".parse(), Ok(UplinkSpec::Packet("eth0".into())));
        assert!("tap:".parse::<UplinkSpec>().is_err());
        assert_eq!("xdp:eth0".parse(), Ok(UplinkSpec::Xdp("eth0".into())));
        assert!("xdp:".parse::<UplinkSpec>().is_err());
        assert!("dpdk:0".parse::<UplinkSpec>().is_err());
        assert_eq!("discard:".parse(), Ok(UplinkSpec::Discard));
        assert!("discard:x".parse::<UplinkSpec>().is_err());
        assert_eq!(UplinkSpec::Discard.to_string(), "discard:");
        assert_eq!(UplinkSpec::Xdp("e".into()).to_string(), "xdp:e");
        assert_eq!(UplinkSpec::Tap("a".into()).to_string(), "tap:a");
    }

    #[test]
    fn errors_say_what_to_do() {
        let e = UplinkError::classify(
            &UplinkSpec::Tap("t0".into()),
            std::io::Error::from_raw_os_error(libc::EBUSY),
        );
        assert!(e.to_string().contains("busy"), "{e}");
        let e = UplinkError::classify(
            &UplinkSpec::Packet("eth9".into()),
            std::io::Error::from_raw_os_error(libc::EPERM),
        );
        assert!(e.to_string().contains("run as root"), "{e}");
    }

    #[test]
    fn xdp_failures_name_the_fix() {
        let spec = UplinkSpec::Xdp("eth1".into());
        let open = |kind, errno| xdp::XdpOpenError {
            mode: XdpMode::Native,
            kind,
            source: std::io::Error::from_raw_os_error(errno),
        };
        let e = UplinkError::classify_xdp(
            &spec,
            "eth1",
            0,
            open(xdp::XdpFailure::Open, libc::EOPNOTSUPP),
        );
        assert!(
            matches!(
                e,
                UplinkError::NoXdpSupport {
                    mode: XdpMode::Native,
                    ..
                }
            ),
            "{e:?}"
        );
        let e = UplinkError::classify_xdp(
            &spec,
            "eth1",
            0,
            open(
                xdp::XdpFailure::ForeignProgram("xdp_filter".into()),
                libc::EBUSY,
            ),
        );
        assert!(
            e.to_string().contains("ip link set dev eth1 xdp off"),
            "{e}"
        );
        assert!(e.to_string().contains("xdp_filter"), "{e}");
        let e = UplinkError::classify_xdp(
            &spec,
            "eth1",
            3,
            open(xdp::XdpFailure::QueueBusy, libc::EBUSY),
        );
        assert!(e.to_string().contains("queue 3 of interface eth1"), "{e}");
        let e =
            UplinkError::classify_xdp(&spec, "eth1", 0, open(xdp::XdpFailure::Open, libc::EPERM));
        assert!(matches!(e, UplinkError::Permission { .. }), "{e:?}");
        let e =
            UplinkError::classify_xdp(&spec, "eth1", 0, open(xdp::XdpFailure::Open, libc::ENODEV));
        assert!(matches!(e, UplinkError::NoSuchInterface { .. }), "{e:?}");
        let e = open_xdp_uplinks("knicnope0", 1, &XdpConfig::default()).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
    }
}
