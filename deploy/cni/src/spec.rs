//! The CNI specification's wire types (spec 1.1.0, also spoken as 1.0.0): the network
//! configuration on stdin, the result and the error on stdout, and the error codes.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The versions this plugin speaks. 1.0.0 and 1.1.0 share the result format; 1.1.0 adds
/// STATUS, GC and `interfaces[].socketPath`/`mtu`.
pub const SUPPORTED_VERSIONS: &[&str] = &["1.0.0", "1.1.0"];

/// The spec's well-known error codes (0-99), and this plugin's own (100 and up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnvironment = 4,
    Io = 5,
    Decode = 6,
    InvalidConfig = 7,
    TryAgainLater = 11,
    NotAvailable = 50,
    /// The agent refused a request (its message is in `details`).
    AgentRefused = 100,
    /// CHECK found the attachment not as ADD left it.
    CheckFailed = 101,
    /// A delegated plugin (IPAM) failed without a CNI error of its own.
    DelegateFailed = 102,
}

/// A CNI error, printed on stdout as the spec's error JSON with a non-zero exit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

impl CniError {
    pub fn new(code: Code, msg: impl Into<String>, details: impl Into<String>) -> CniError {
        CniError {
            code: code as u32,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The error JSON for stdout.
    pub fn to_json(&self, cni_version: &str) -> Value {
        serde_json::json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        })
    }
}

/// How the container is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A TAP with a vnet header, owned by the agent, moved into the container's netns.
    #[default]
    Tap,
    /// A vhost-user socket in `socketDir` for a VM-in-pod runtime.
    VhostUser,
    /// An existing netdev of the runtime's namespace (`device`, e.g. a DPU-emulated
    /// virtio-net function) moved into the pod; the agent serves its representor
    /// (`representor`) as an AF_PACKET uplink.
    Netdev,
}

/// One entry of `cni.dev/valid-attachments` (GC).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

fn default_agent_socket() -> PathBuf {
    PathBuf::from("/run/knic/agent.sock")
}

fn default_socket_dir() -> PathBuf {
    PathBuf::from("/run/knic/cni")
}

/// The network configuration a runtime writes on stdin. Fields the spec defines and ours
/// (`kind`, `agentSocket`, `socketDir`, `mtu`, `tenant`); anything else (`capabilities`,
/// `args`, `dns`, ...) is accepted and passed on to the IPAM plugin as it came.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub plugin_type: String,
    #[serde(default)]
    pub ipam: Option<Value>,
    #[serde(default)]
    pub prev_result: Option<Value>,
    #[serde(default)]
    pub kind: Kind,
    #[serde(default = "default_agent_socket")]
    pub agent_socket: PathBuf,
    #[serde(default = "default_socket_dir")]
    pub socket_dir: PathBuf,
    #[serde(default)]
    pub mtu: Option<u32>,
    /// A tenant (VRF) of the agent for vhost-user ports: the pod's addresses become the
    /// port's, so the tenant's routes and anti-spoofing follow them.
    #[serde(default)]
    pub tenant: Option<String>,
    /// (netdev) The interface moved into the container, in the runtime's namespace.
    #[serde(default)]
    pub device: Option<String>,
    /// (netdev) The interface that carries `device`'s traffic on the agent's side (its
    /// representor, or the other end of a veth), in the agent's namespace.
    #[serde(default)]
    pub representor: Option<String>,
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<ValidAttachment>>,
    #[serde(default)]
    pub runtime_config: Option<Value>,
}

/// A result's interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_path: Option<String>,
}

/// A result's address (`address` as `ADDR/PREFIX`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A result's route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// The success result of ADD (and of an IPAM plugin's ADD).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Value>,
}

/// Whether `name` is a valid network name (the spec's `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`).
pub fn valid_network_name(name: &str) -> bool {
    let mut c = name.chars();
    c.next().is_some_and(|f| f.is_ascii_alphanumeric())
        && c.all(|x| x.is_ascii_alphanumeric() || matches!(x, '_' | '.' | '-'))
}

/// Parses `CNI_ARGS` (`K=V;K2=V2`).
pub fn parse_cni_args(s: &str) -> Result<Vec<(String, String)>, CniError> {
    s.split(';')
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| {
                    CniError::new(
                        Code::InvalidEnvironment,
                        format!("CNI_ARGS entry {p:?} is not KEY=VALUE"),
                        "CNI_ARGS is a ';'-separated list of KEY=VALUE pairs, like IgnoreUnknown=1;MAC=02:00:00:00:00:01",
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_with_defaults_and_keeps_unknown_fields() {
        let c: NetConf = serde_json::from_str(
            r#"{"cniVersion":"1.1.0","name":"pods","type":"knic-cni",
                "ipam":{"type":"host-local"},"capabilities":{"portMappings":true}}"#,
        )
        .unwrap();
        assert_eq!(c.kind, Kind::Tap);
        assert_eq!(c.agent_socket, PathBuf::from("/run/knic/agent.sock"));
        let c: NetConf = serde_json::from_str(
            r#"{"cniVersion":"1.1.0","name":"pods","type":"knic-cni","kind":"vhost-user",
                "cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(c.kind, Kind::VhostUser);
        assert_eq!(c.valid_attachments.unwrap()[0].ifname, "eth0");
        assert!(
            serde_json::from_str::<NetConf>(
                r#"{"cniVersion":"1.1.0","name":"p","type":"x","kind":"wifi"}"#
            )
            .is_err()
        );
    }

    #[test]
    fn names_and_args() {
        assert!(valid_network_name("pods-1.a_b"));
        assert!(!valid_network_name("-pods"));
        assert!(!valid_network_name(""));
        assert!(!valid_network_name("a b"));
        assert_eq!(
            parse_cni_args("IgnoreUnknown=1;MAC=02:00:00:00:00:01").unwrap()[1],
            ("MAC".into(), "02:00:00:00:00:01".into())
        );
        assert_eq!(parse_cni_args("junk").unwrap_err().code, 4);
    }

    #[test]
    fn results_serialise_as_the_spec_says() {
        let r = CniResult {
            cni_version: "1.1.0".into(),
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: None,
                mtu: None,
                sandbox: None,
                socket_path: Some("/run/knic/cni/x.sock".into()),
            }],
            ips: vec![],
            routes: vec![],
            dns: None,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","socketPath":"/run/knic/cni/x.sock"}]}"#
        );
    }
}
