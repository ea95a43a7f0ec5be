//! knic-agent's control API: its wire types and a tiny client. JSON lines on a unix socket.
//!
//! This crate links nothing but serde, serde_json and thiserror (and is `MIT OR
//! Apache-2.0`), so clients such as the CNI plugin `knic-cni` need not link the agent or
//! its GPL library kernel.
//!
//! A client writes one [`Request`] per line (`{"op":"port_list"}`) and reads one
//! [`Response`] line back (`{"ok":true,"result":...}` or `{"ok":false,"error":"..."}`), as
//! often as it likes on one connection. `knicctl` and `knic-cni` are such clients ([`call`]).
//! The server side is a subscriber of the agent's event loop, so requests are handled one
//! at a time on its control thread, never on a data-path thread.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub mod config;

use crate::config::{AddressConfig, PortConfig, RouteConfig, TenantConfig, UplinkConfig};

/// Longest request line accepted; a longer one closes the connection.
pub const MAX_REQUEST_LEN: usize = 64 << 10;

/// One request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Adds a vhost-user port (and its library device).
    PortAdd {
        port: PortConfig,
    },
    /// Removes a port and its library device.
    PortRemove {
        name: String,
    },
    /// Ports with their link state and negotiated features.
    PortList,
    /// Adds an uplink (and its library device).
    UplinkAdd {
        uplink: UplinkConfig,
    },
    UplinkList,
    /// Removes an uplink no tenant uses, with its library device (its addresses and routes
    /// go with it) and its host side (a TAP the agent created disappears).
    UplinkRemove {
        name: String,
    },
    /// Adds an address to a port's or uplink's library interface.
    AddressAdd {
        address: AddressConfig,
    },
    /// Addresses the agent configured.
    AddressList,
    /// Adds a route to the library kernel's main table.
    RouteAdd {
        route: RouteConfig,
    },
    /// The library kernel's main tables (IPv4 and IPv6), as it reports them.
    RouteList,
    /// The library kernel's interfaces, as it reports them.
    LinkList,
    /// Counters of every port and uplink.
    Stats,
    /// Creates a tenant (a VRF in the library kernel); ports join it with `tenant`.
    TenantAdd {
        tenant: TenantConfig,
    },
    /// Deletes a tenant that has no port left.
    TenantRemove {
        name: String,
    },
    /// Tenants with their VRF, table, subnets, uplink, NAT settings and ports.
    TenantList,
    /// Anti-spoofing drops per port and reason.
    AntispoofList,
    /// The SNAT and DNAT rules of every tenant, and whether they are applied.
    NatList,
    /// The library kernel's conntrack entries.
    ConntrackList,
    /// Re-reads the agent's `--config` file and applies the difference; a file with any
    /// mistake changes nothing.
    Reload,
    /// The DHCP servers' leases.
    LeaseList,
    /// Reads a sysctl of the library kernel (`net.ipv4.tcp_congestion_control`), after
    /// writing `value` when there is one. Answers `{"name": ..., "value": ...}` with the
    /// value the kernel then reports. Not kept across agent restarts.
    Sysctl {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<String>,
    },
}

/// One answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    pub fn ok(result: serde_json::Value) -> Response {
        Response {
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    pub fn error(message: String) -> Response {
        Response {
            ok: false,
            result: None,
            error: Some(message),
        }
    }
}

/// A client-side failure.
#[derive(Debug, Error)]
pub enum CallError {
    #[error(
        "cannot reach the agent's API socket {path}: is knic-agent running with --api-socket {path}?"
    )]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the agent failed")]
    Io(#[source] std::io::Error),
    #[error("the agent closed the connection without answering")]
    NoAnswer,
    #[error("the agent's answer is not a response")]
    BadAnswer(#[source] serde_json::Error),
    #[error("{0}")]
    Refused(String),
}

/// Sends `request` and waits (up to `timeout`) for the answer; a refusal becomes
/// [`CallError::Refused`] with the agent's message.
pub fn call(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<serde_json::Value, CallError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| CallError::Connect {
        path: socket.display().to_string(),
        source,
    })?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(CallError::Io)?;
    let mut line = serde_json::to_vec(request).map_err(CallError::BadAnswer)?;
    line.push(b'\n');
    stream.write_all(&line).map_err(CallError::Io)?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(CallError::Io)?;
    if answer.is_empty() {
        return Err(CallError::NoAnswer);
    }
    let response: Response = serde_json::from_str(&answer).map_err(CallError::BadAnswer)?;
    if response.ok {
        Ok(response.result.unwrap_or(serde_json::Value::Null))
    } else {
        Err(CallError::Refused(
            response.error.unwrap_or_else(|| "refused".into()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_wire_form() {
        let r: Request = serde_json::from_str(r#"{"op":"port_remove","name":"vm1"}"#).unwrap();
        assert_eq!(r, Request::PortRemove { name: "vm1".into() });
        let r: Request = serde_json::from_str(
            r#"{"op":"port_add","port":{"name":"vm1","socket":"/tmp/a.sock","queue_pairs":2}}"#,
        )
        .unwrap();
        let Request::PortAdd { port } = r else {
            panic!("not a port_add")
        };
        assert_eq!(port.queue_pairs, 2);
        assert_eq!(
            serde_json::to_string(&Request::Stats).unwrap(),
            r#"{"op":"stats"}"#
        );
        assert!(
            serde_json::from_str::<Request>(r#"{"op":"port_remove","name":"a","x":1}"#).is_err()
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"reboot"}"#).is_err());
    }
}
