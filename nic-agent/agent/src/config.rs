//! What the agent is asked to run. The types that cross the control API (ports, uplinks,
//! addresses, routes, tenants, with their parsers) are `knic-api`'s, re-exported here; this
//! module adds what only the agent needs.

use std::path::PathBuf;

use knic_uplink::UplinkSpec;

pub use knic_api::config::*;

// The API crate cannot link the library kernel, so it states the limit; this holds the two
// together.
const _: () = assert!(MAX_QUEUE_PAIRS == lkl_netstack::MAX_QUEUE_PAIRS);

/// The uplink kind and interface of `config`, checked, as knic-uplink opens it.
pub fn uplink_spec(config: &UplinkConfig) -> Result<UplinkSpec, ConfigError> {
    config.kind_and_interface()?;
    config.spec.parse().map_err(|_| ConfigError {
        what: "uplink",
        value: config.spec.clone(),
        allowed: "tap:IFNAME, packet:IFNAME, xdp:IFNAME or discard:",
    })
}

/// Everything the agent starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    pub api_socket: PathBuf,
    pub memory_bytes: u64,
    /// IPv4 and IPv6 forwarding inside the library (guests route through it).
    pub forwarding: bool,
    pub ports: Vec<PortConfig>,
    pub uplinks: Vec<UplinkConfig>,
    pub addresses: Vec<AddressConfig>,
    pub routes: Vec<RouteConfig>,
    pub tenants: Vec<TenantConfig>,
    /// The file this came from (`--config`), re-read on reload.
    pub config_file: Option<PathBuf>,
    /// DHCP servers and router advertisements, started once addresses are set.
    pub services: crate::services::ServicesConfig,
    /// Where what runs is kept across restarts (`--state-dir`; see `state`).
    pub state_dir: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uplink_specs_are_knic_uplinks() {
        let u: UplinkConfig = "up0=packet:veth0,queues=2".parse().unwrap();
        assert_eq!(uplink_spec(&u).unwrap(), UplinkSpec::Packet("veth0".into()));
        let u: UplinkConfig = "up1=tap:knic0".parse().unwrap();
        assert_eq!(uplink_spec(&u).unwrap(), UplinkSpec::Tap("knic0".into()));
    }
}
