//! `knic-agent`: serves vhost-user ports whose frames enter the in-process Linux stack and
//! leave through uplinks.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use knic_agent::config::{AddressConfig, PortConfig, RouteConfig, UplinkConfig};
use knic_agent::services::{DEFAULT_LEASE_DIR, DhcpConfig, RaConfig, ServicesConfig};
use knic_agent::{AgentConfig, error_chain};

/// Default directory of the API socket and of the default port's socket.
const RUN_DIR: &str = "/run/knic";

/// knic's agent: guests attach over vhost-user; each port and each uplink becomes a network
/// device of the Linux kernel running inside this process, which routes between them.
///
/// With no --port and no --uplink it serves one port, vm0, on /run/knic/vm0.sock, and no
/// uplink: guests on it reach the library's stack (and one another once more ports are added
/// through the API), not the wire.
///
/// Examples:
///   knic-agent --uplink up0=packet:veth0 --port vm1=/run/knic/vm1.sock \
///       --address up0=10.0.0.2/24 --address vm1=10.0.1.1/24 --route 0.0.0.0/0,via=10.0.0.1
///   knic-agent --port vm1=/run/knic/vm1.sock --address vm1=10.0.1.1/24 \
///       --address vm1=fd00:1::1/64 --dhcp vm1,pool=10.0.1.100-10.0.1.199,dns=10.0.1.1 --ra vm1
#[derive(Debug, Parser)]
#[command(name = "knic-agent", version, verbatim_doc_comment)]
struct Args {
    /// The whole configuration as a TOML file (ports, uplinks, tenants, NAT; see the README's
    /// "Config file"). SIGHUP or `knicctl reload` re-reads it and applies the difference; a
    /// bad file changes nothing. Not with --port, --uplink, --address, --route.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["port", "uplink", "address", "route", "memory_mib", "no_forwarding", "dhcp", "ra", "metrics"])]
    config: Option<PathBuf>,

    /// Control API socket (JSON lines; knicctl speaks it) [default: /run/knic/agent.sock].
    #[arg(long, value_name = "PATH")]
    api_socket: Option<PathBuf>,

    /// A vhost-user port: `NAME=SOCKET[,role=server|client][,queues=N][,mac=MAC][,offloads=tso|off]`.
    /// Repeatable.
    #[arg(long, value_name = "NAME=SOCKET[,...]")]
    port: Vec<PortConfig>,

    /// An uplink: `NAME=tap:IFNAME|packet:IFNAME|xdp:IFNAME[,queues=N][,offloads=tso|off]`. Repeatable.
    #[arg(long, value_name = "NAME=KIND:IFNAME[,...]")]
    uplink: Vec<UplinkConfig>,

    /// An address on a port's or uplink's library interface: DEVICE=ADDRESS/PREFIX. Repeatable.
    #[arg(long, value_name = "DEVICE=ADDR/PREFIX")]
    address: Vec<AddressConfig>,

    /// A route in the library's main table: `DEST/PREFIX[,via=GATEWAY][,dev=DEVICE]`. Repeatable.
    #[arg(long, value_name = "DEST/PREFIX[,...]")]
    route: Vec<RouteConfig>,

    /// Kernel offload socket (`knic-offload` programs' sockets become the library's). Default:
    /// offload.sock next to the API socket (/run/knic/offload.sock).
    #[arg(long, value_name = "PATH", conflicts_with = "no_offload")]
    offload_socket: Option<PathBuf>,

    /// Do not serve kernel offload.
    #[arg(long)]
    no_offload: bool,

    /// Library sockets one offload client process may hold; past it socket() and accept()
    /// fail with EMFILE [default: 1024].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    offload_max_sockets: Option<u32>,

    /// Library sockets all offload clients together may hold (each costs the agent a
    /// thread) [default: 16384].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    offload_max_sockets_total: Option<u32>,

    /// RAM of the library kernel, in MiB.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(32..=65536))]
    memory_mib: u64,

    /// Do not forward between interfaces inside the library (ip_forward stays 0).
    #[arg(long)]
    no_forwarding: bool,

    /// A DHCPv4 server on a port's or uplink's link, whose --address is the server's:
    /// `DEVICE,pool=FIRST-LAST[,router=IP|none][,dns=IP[+IP...]][,mtu=N][,lease=SECONDS][,static=MAC@IP]...`.
    /// Repeatable (one per device).
    #[arg(long, value_name = "DEVICE,pool=FIRST-LAST[,...]")]
    dhcp: Vec<DhcpConfig>,

    /// IPv6 router advertisements (SLAAC and a default route for guests) on a port's or
    /// uplink's link, advertising the /64 of each of its global IPv6 --address:
    /// `DEVICE[,lifetime=SECONDS][,interval=SECONDS][,mtu=N]`. Repeatable.
    #[arg(long, value_name = "DEVICE[,...]")]
    ra: Vec<RaConfig>,

    /// Serve Prometheus metrics on http://ADDR:PORT/metrics (per port and queue packets,
    /// bytes and drops by reason; library devices; DHCP and RA counters).
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<std::net::SocketAddr>,

    /// Keep what the agent runs (ports, uplinks, tenants, addresses and routes, those added
    /// through the API included) in DIR/state.json, rewritten atomically after every change,
    /// and restore it on start on top of the configuration: a restart, even after kill -9,
    /// loses nothing. Without it, what the API added ends with the process. Wins over the
    /// config file's `[agent] state_dir`.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// Directory of the DHCP lease files (one DEVICE.json per server, rewritten atomically).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_LEASE_DIR)]
    lease_dir: PathBuf,
}

/// Today's flags: a working default (one port, vm0) when nothing is asked for.
fn from_flags(args: Args) -> Result<AgentConfig, ExitCode> {
    let mut ports = args.port;
    if ports.is_empty() && args.uplink.is_empty() {
        ports.push(PortConfig {
            name: "vm0".into(),
            socket: PathBuf::from(RUN_DIR).join("vm0.sock"),
            tap: None,
            netns: None,
            role: Default::default(),
            queue_pairs: 1,
            mac: None,
            offloads: Default::default(),
            tenant: None,
            addresses: Vec::new(),
            mtu: None,
        });
        if let Err(e) = std::fs::create_dir_all(RUN_DIR) {
            eprintln!("knic-agent: cannot create {RUN_DIR}: {e}");
            return Err(ExitCode::FAILURE);
        }
    }
    Ok(AgentConfig {
        api_socket: args
            .api_socket
            .unwrap_or_else(|| PathBuf::from(knic_agent::config_file::DEFAULT_API_SOCKET)),
        memory_bytes: args.memory_mib << 20,
        forwarding: !args.no_forwarding,
        ports,
        uplinks: args.uplink,
        addresses: args.address,
        routes: args.route,
        tenants: Vec::new(),
        config_file: None,
        services: ServicesConfig {
            dhcp: args.dhcp,
            ra: args.ra,
            lease_dir: args.lease_dir,
            metrics: args.metrics,
        },
        state_dir: args.state_dir,
    })
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KNIC_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,netlink_packet_route=error")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let (no_offload, offload_socket) = (args.no_offload, args.offload_socket.clone());
    let defaults = knic_agent::offload::OffloadLimits::default();
    let limits = knic_agent::offload::OffloadLimits {
        per_process: args.offload_max_sockets.unwrap_or(defaults.per_process),
        total: args.offload_max_sockets_total.unwrap_or(defaults.total),
    };
    let state_dir = args.state_dir.clone();
    let config = match args.config.clone() {
        Some(path) => match knic_agent::config_file::load(&path) {
            Ok(file) => {
                let mut c = file.agent_config(args.api_socket, state_dir);
                c.config_file = Some(path);
                c
            }
            Err(e) => {
                eprintln!("knic-agent: {}", error_chain(&e));
                return ExitCode::FAILURE;
            }
        },
        None => match from_flags(args) {
            Ok(c) => c,
            Err(code) => return code,
        },
    };
    let offload = if no_offload {
        None
    } else {
        Some(match offload_socket {
            Some(path) => knic_agent::OffloadSocket {
                path,
                required: true,
                limits,
            },
            None => knic_agent::OffloadSocket {
                path: config
                    .api_socket
                    .parent()
                    .unwrap_or(std::path::Path::new("."))
                    .join("offload.sock"),
                required: false,
                limits,
            },
        })
    };
    match knic_agent::run_with_offload(config, offload) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("knic-agent: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
