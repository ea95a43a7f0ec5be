//! knic's uplinks: host-side ports a queue pair's packets flow through, a TAP device or an
//! AF_PACKET socket on an existing interface. Both exchange the virtio-net header with the kernel, so offload
//! metadata (GSO, partial checksums) passes end to end without touching the payload.

mod af_packet;
mod sys;
mod tap;

use std::fmt;
use std::str::FromStr;

use packet_ring::PacketPort;
use thiserror::Error;

pub use af_packet::{PacketSocketPort, PacketSocketSink, PacketSocketSource};
pub use tap::{TapPort, TapSink, TapSource};

/// Which uplink to open, as given on the command line (`tap:NAME` or `packet:IFNAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UplinkSpec {
    Tap(String),
    Packet(String),
}

impl FromStr for UplinkSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("tap", name)) if !name.is_empty() => Ok(Self::Tap(name.to_string())),
            Some(("packet", name)) if !name.is_empty() => Ok(Self::Packet(name.to_string())),
            _ => Err(format!("expected tap:NAME or packet:IFNAME, got {s:?}")),
        }
    }
}

impl fmt::Display for UplinkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tap(n) => write!(f, "tap:{n}"),
            Self::Packet(n) => write!(f, "packet:{n}"),
        }
    }
}

/// Why an uplink could not be opened; each says what to do about it.
#[derive(Debug, Error)]
pub enum UplinkError {
    #[error(
        "opening {spec} needs CAP_NET_ADMIN (and CAP_NET_RAW for packet:): run as root or grant the capabilities"
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
            (Some(libc::ENODEV | libc::ENXIO), UplinkSpec::Packet(name)) => Self::NoSuchInterface {
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
            // One fanout group per process and interface: flows hash across the pairs.
            let group = (queue_pairs > 1).then(|| (std::process::id() as u16) ^ (ifindex as u16));
            for _ in 0..queue_pairs {
                let port = PacketSocketPort::open(ifindex, group)
                    .map_err(|e| UplinkError::classify(spec, e))?;
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
        assert!("xdp:eth0".parse::<UplinkSpec>().is_err());
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
}
