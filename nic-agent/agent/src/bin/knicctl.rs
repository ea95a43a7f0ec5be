//! `knicctl`: the command line over knic-agent's control API.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use knic_agent::api::{Request, call};
use knic_agent::config::{AddressConfig, PortConfig, RouteConfig, TenantConfig, UplinkConfig};
use knic_agent::error_chain;
use serde_json::Value;

/// Controls a running knic-agent.
///
/// Examples:
///   knicctl port add vm2=/run/knic/vm2.sock,queues=2
///   knicctl address add vm2=10.0.2.1/24
///   knicctl port list --output json
///   knicctl tenant add blue,uplink=up0,subnet=10.1.0.1/24
///   knicctl reload
///   knicctl stats
#[derive(Debug, Parser)]
#[command(name = "knicctl", version, verbatim_doc_comment)]
struct Args {
    /// The agent's API socket.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        default_value = "/run/knic/agent.sock"
    )]
    api_socket: PathBuf,

    /// text (readable) or json (for scripts: the agent's answer as is).
    #[arg(long, short, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,

    /// Seconds to wait for the agent's answer.
    #[arg(long, global = true, default_value_t = 30)]
    timeout: u64,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// vhost-user ports (each a library network device).
    #[command(subcommand)]
    Port(PortCommand),
    /// Uplinks (each a library network device).
    #[command(subcommand)]
    Uplink(UplinkCommand),
    /// Addresses on ports' and uplinks' library interfaces.
    #[command(subcommand)]
    Address(AddressCommand),
    /// Routes in the library kernel's main table.
    #[command(subcommand)]
    Route(RouteCommand),
    /// Tenants: each a VRF of the library kernel, with its subnets, uplink and ports.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Anti-spoofing drops of each tenant port, by reason (source_mac, arp_source,
    /// ipv4_source, ipv6_source, ethertype), from the library kernel's nf_tables counters.
    Antispoof,
    /// SNAT (masquerade) and DNAT port forwards of every tenant, and whether applied.
    Nat,
    /// The library kernel's conntrack entries (original and reply tuples, zones, NAT flags).
    Conntrack,
    /// Re-reads the agent's --config file and applies the difference (as SIGHUP does); a
    /// file with any mistake changes nothing.
    Reload,
    /// The library kernel's interfaces.
    Links,
    /// Counters of every port and uplink, with copies per frame, and of the DHCP servers
    /// and router advertisements.
    Stats,
    /// The DHCP servers' leases (device, MAC, address, state, expiry in Unix seconds).
    Leases,
    /// Reads (`NAME`) or writes (`NAME=VALUE`) sysctls of the library kernel, as
    /// `sysctl(8)` does the host's: `knicctl sysctl net.ipv4.tcp_congestion_control=bbr`.
    /// Writes are not kept across agent restarts.
    Sysctl {
        /// `NAME` reads a sysctl, `NAME=VALUE` writes it (dots separate the parts).
        #[arg(required = true, value_name = "NAME[=VALUE]")]
        settings: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum PortCommand {
    /// Adds a port: `NAME=SOCKET|tap:IFNAME[,role=server|client][,queues=N][,mac=MAC][,offloads=tso|off][,tenant=NAME][,mtu=N]`
    /// (`tap:IFNAME`: a TAP port, the agent creates the TAP for a container).
    Add { port: PortConfig },
    /// Removes a port and its library device.
    Remove { name: String },
    /// Lists ports with link state and negotiated features.
    List,
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Adds a tenant: `NAME[,table=N][,uplink=UPLINK][,snat=on|off][,subnet=GATEWAY/PREFIX]...`
    /// (`subnet=10.1.0.1/24`: subnet 10.1.0.0/24 whose gateway is 10.1.0.1).
    Add { tenant: TenantConfig },
    /// Removes a tenant that has no port left (its VRF goes).
    Remove { name: String },
    /// Lists tenants with their VRF, table, subnets, uplink and ports.
    List,
}

#[derive(Debug, Subcommand)]
enum UplinkCommand {
    /// Adds an uplink: `NAME=tap:IFNAME|packet:IFNAME|xdp:IFNAME[,queues=N][,offloads=tso|off]`.
    Add { uplink: UplinkConfig },
    /// Lists uplinks.
    List,
    /// Removes an uplink no tenant uses, and its library device.
    Remove { name: String },
}

#[derive(Debug, Subcommand)]
enum AddressCommand {
    /// Adds an address: DEVICE=ADDRESS/PREFIX.
    Add { address: AddressConfig },
    /// Lists the addresses the agent configured.
    List,
}

#[derive(Debug, Subcommand)]
enum RouteCommand {
    /// Adds a route: `DEST/PREFIX[,via=GATEWAY][,dev=DEVICE]`.
    Add { route: RouteConfig },
    /// Lists the library kernel's routes.
    List,
}

/// The requests a command makes, in order (one, except for several sysctls).
fn requests(command: Command) -> Vec<Request> {
    match command {
        Command::Sysctl { settings } => settings
            .into_iter()
            .map(|s| match s.split_once('=') {
                Some((name, value)) => Request::Sysctl {
                    name: name.trim().into(),
                    value: Some(value.trim().into()),
                },
                None => Request::Sysctl {
                    name: s.trim().into(),
                    value: None,
                },
            })
            .collect(),
        other => request(other).into_iter().collect(),
    }
}

/// The one request of a command (none for `sysctl`, which `requests` makes).
fn request(command: Command) -> Option<Request> {
    Some(match command {
        Command::Sysctl { .. } => return None,
        Command::Port(PortCommand::Add { port }) => Request::PortAdd { port },
        Command::Port(PortCommand::Remove { name }) => Request::PortRemove { name },
        Command::Port(PortCommand::List) => Request::PortList,
        Command::Uplink(UplinkCommand::Add { uplink }) => Request::UplinkAdd { uplink },
        Command::Uplink(UplinkCommand::List) => Request::UplinkList,
        Command::Uplink(UplinkCommand::Remove { name }) => Request::UplinkRemove { name },
        Command::Address(AddressCommand::Add { address }) => Request::AddressAdd { address },
        Command::Address(AddressCommand::List) => Request::AddressList,
        Command::Route(RouteCommand::Add { route }) => Request::RouteAdd { route },
        Command::Route(RouteCommand::List) => Request::RouteList,
        Command::Tenant(TenantCommand::Add { tenant }) => Request::TenantAdd { tenant },
        Command::Tenant(TenantCommand::Remove { name }) => Request::TenantRemove { name },
        Command::Tenant(TenantCommand::List) => Request::TenantList,
        Command::Reload => Request::Reload,
        Command::Antispoof => Request::AntispoofList,
        Command::Nat => Request::NatList,
        Command::Conntrack => Request::ConntrackList,
        Command::Links => Request::LinkList,
        Command::Stats => Request::Stats,
        Command::Leases => Request::LeaseList,
    })
}

/// A scalar as text; objects and arrays as compact JSON.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

/// Text form: a list of objects as `key=value` lines, one object per line; anything else
/// as indented JSON.
fn text(v: &Value) -> String {
    match v {
        Value::Array(items) if items.iter().all(Value::is_object) => {
            let mut out = String::new();
            for item in items {
                if let Value::Object(m) = item {
                    let line: Vec<String> =
                        m.iter().map(|(k, v)| format!("{k}={}", cell(v))).collect();
                    out.push_str(&line.join(" "));
                    out.push('\n');
                }
            }
            out
        }
        Value::Object(m) => {
            let mut out = String::new();
            for (k, v) in m {
                out.push_str(&format!("{k}: {}\n", cell(v)));
            }
            out
        }
        other => format!(
            "{}\n",
            serde_json::to_string_pretty(other).unwrap_or_default()
        ),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let stats = matches!(args.command, Command::Stats);
    let sysctl = matches!(args.command, Command::Sysctl { .. });
    let mut status = ExitCode::SUCCESS;
    // Several requests (sysctls) go on even after one is refused, as sysctl(8) does.
    for req in requests(args.command) {
        match call(&args.api_socket, &req, Duration::from_secs(args.timeout)) {
            Ok(v) => {
                let out = match args.output {
                    Output::Json => format!("{v}\n"),
                    Output::Text if stats => {
                        format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default())
                    }
                    Output::Text if sysctl => {
                        format!("{} = {}\n", cell(&v["name"]), cell(&v["value"]))
                    }
                    Output::Text => text(&v),
                };
                let mut stdout = std::io::stdout().lock();
                if stdout.write_all(out.as_bytes()).is_err() {
                    return ExitCode::FAILURE;
                }
            }
            Err(e) => {
                eprintln!("knicctl: {}", error_chain(&e));
                status = ExitCode::FAILURE;
            }
        }
    }
    status
}
