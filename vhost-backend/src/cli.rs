//! The `knic-vhost` command: arguments and what running them means.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use thiserror::Error;
use tracing::{error, info, warn};

use crate::backend::{BackendError, MAX_QUEUE_PAIRS, NetBackend, NetBackendConfig};
use crate::daemon::{DaemonError, Role, ServeConfig, Stop, serve};

use knic_uplink::{UplinkError, UplinkSpec, open_uplinks};

/// Serve one VM NIC over vhost-user: a virtio-net device whose packets go to a TAP device or
/// an existing interface, with offloads (checksum, TSO) passed end to end.
///
/// Examples:
///   knic-vhost --socket /run/knic/vm1.sock --uplink tap:knic0
///   knic-vhost --socket /run/knic/vm1.sock --client --uplink packet:eth1 --queues 4
///
/// QEMU side (backend as server): -chardev socket,id=c0,path=/run/knic/vm1.sock
///   -netdev vhost-user,id=n0,chardev=c0,queues=N -device virtio-net-pci,netdev=n0,mq=on
///
/// Counters: connect to the stats socket (default SOCKET.stats), e.g.
///   socat - UNIX-CONNECT:/run/knic/vm1.sock.stats
/// Logs: RUST_LOG=debug (default info).
/// SIGTERM or SIGINT: disconnect the frontend, stop the workers, remove the sockets, exit 0.
///
/// knic-vhost --print-capabilities: print the vhost-user backend capabilities as JSON
/// ({"type":"net"}, QEMU's docs/interop/vhost-user.json) and exit, ignoring all else.
#[derive(Debug, Parser)]
#[command(name = "knic-vhost", version, verbatim_doc_comment)]
pub struct Args {
    /// vhost-user socket path. The server creates it (its directory must exist); with
    /// --client it is the frontend's listening socket.
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,

    /// Connect to a listening frontend (QEMU `server=on`) instead of listening, and redial
    /// after every disconnect.
    #[arg(long)]
    pub client: bool,

    /// Where packets go: `tap:NAME` (TAP device, created if missing), `packet:IFNAME`
    /// (AF_PACKET on an existing interface), `xdp:IFNAME` (AF_XDP sockets on it) — these need
    /// CAP_NET_ADMIN/CAP_NET_RAW — or `discard:` (every packet dropped, nothing received: the
    /// device's own rate, as DPDK's net_null).
    #[arg(long, value_name = "tap:NAME|packet:IFNAME|xdp:IFNAME|discard:")]
    pub uplink: UplinkSpec,

    /// Queue pairs offered to the guest; one worker thread each.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=MAX_QUEUE_PAIRS as i64))]
    pub queues: u16,

    /// MAC address the guest sees.
    #[arg(long, default_value = "52:54:00:12:34:56", value_parser = parse_mac)]
    pub mac: [u8; 6],

    /// MTU the guest sees (VIRTIO_NET_F_MTU).
    #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u16).range(68..=65535))]
    pub mtu: u16,

    /// Largest virtqueue size accepted (power of two).
    #[arg(long, default_value_t = 1024)]
    pub queue_size: u16,

    /// Packets moved per uplink call.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub batch: u16,

    /// Busy-poll each TX ring for this many microseconds after the last chains found, instead
    /// of waiting for the guest's next kick (0: off; at most 1000). Costs a core while traffic
    /// flows; a quiet ring goes back to sleep after this long.
    #[arg(long, default_value_t = 0, value_name = "MICROSECONDS", value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub busy_poll_us: u32,

    /// Unix socket answering every connection with a JSON counter snapshot
    /// [default: SOCKET.stats].
    #[arg(long, value_name = "PATH")]
    pub stats_socket: Option<PathBuf>,

    /// With --client: how often to retry connecting, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub reconnect_ms: u64,
}

/// The answer to `--print-capabilities` (vhost-user "Backend program conventions",
/// `VHostUserBackendCapabilities`; the schema defines no optional features for `net`). The
/// program answers it before parsing anything else, as the convention asks.
pub fn capabilities_json() -> String {
    serde_json::json!({ "type": "net" }).to_string()
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts
            .next()
            .ok_or_else(|| format!("{s:?} is not a MAC like 52:54:00:12:34:56"))?;
        *b = u8::from_str_radix(p, 16).map_err(|_| format!("{s:?}: bad byte {p:?}"))?;
    }
    if parts.next().is_some() {
        return Err(format!("{s:?} has more than 6 bytes"));
    }
    Ok(mac)
}

/// Why `knic-vhost` stopped.
#[derive(Debug, Error)]
pub enum RunError {
    #[error(transparent)]
    Uplink(#[from] UplinkError),
    #[error(transparent)]
    Device(#[from] BackendError),
    #[error("cannot serve counters on {}", path.display())]
    StatsSocket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Serve(#[from] DaemonError),
    #[error("cannot set up SIGTERM/SIGINT handling")]
    Signals(#[source] std::io::Error),
}

/// Opens the uplink, builds the device and serves frontends until SIGTERM or SIGINT.
/// Call it before starting any thread: the signals are blocked here for every thread and
/// taken by one of their own.
pub fn run(args: Args) -> Result<(), RunError> {
    crate::sys::block_termination_signals().map_err(RunError::Signals)?;
    let pairs = usize::from(args.queues);
    if !args.client {
        crate::daemon::check_socket_dir(&args.socket)?;
    }
    let uplinks = open_uplinks(&args.uplink, pairs)?;
    let backend = Arc::new(NetBackend::new(
        NetBackendConfig {
            mac: args.mac,
            mtu: args.mtu,
            queue_size: args.queue_size,
            batch: usize::from(args.batch),
            busy_poll: std::time::Duration::from_micros(u64::from(args.busy_poll_us)),
        },
        uplinks,
    )?);
    let stats_path = args.stats_socket.clone().unwrap_or_else(|| {
        let mut p = args.socket.clone().into_os_string();
        p.push(".stats");
        PathBuf::from(p)
    });
    crate::stats_server::spawn(Arc::clone(&backend), &stats_path).map_err(|source| {
        RunError::StatsSocket {
            path: stats_path.clone(),
            source,
        }
    })?;
    info!(
        uplink = %args.uplink,
        queue_pairs = pairs,
        stats = %stats_path.display(),
        "device ready"
    );
    let role = if args.client {
        Role::Client {
            retry: Duration::from_millis(args.reconnect_ms.max(1)),
        }
    } else {
        Role::Server
    };
    let config = ServeConfig {
        socket: args.socket,
        role,
        max_connections: None,
    };
    let stop = Arc::new(Stop::default());
    spawn_signal_thread(Arc::clone(&stop)).map_err(RunError::Signals)?;
    let served = serve(backend, &config, &stop);
    let _ = std::fs::remove_file(&stats_path);
    served?;
    info!("stopped cleanly");
    Ok(())
}

/// How long a clean stop may take before the process exits without finishing it: whatever a
/// frontend did, SIGTERM ends the process within this bound.
pub const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// The first SIGTERM/SIGINT stops serving cleanly (or exits after [`STOP_DEADLINE`] if the
/// clean stop does not finish); a second one exits at once.
fn spawn_signal_thread(stop: Arc<Stop>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("knic-signals".to_string())
        .spawn(move || {
            let mut first = true;
            loop {
                match crate::sys::wait_termination_signal() {
                    Ok(signal) if first => {
                        info!(
                            signal,
                            "stopping: disconnecting the frontend, stopping the workers, removing the sockets"
                        );
                        stop.request();
                        first = false;
                        let _ = std::thread::Builder::new()
                            .name("knic-stop-deadline".to_string())
                            .spawn(|| {
                                std::thread::sleep(STOP_DEADLINE);
                                error!(
                                    "a clean stop did not finish within {STOP_DEADLINE:?}: exiting without cleanup"
                                );
                                std::process::exit(1);
                            });
                    }
                    Ok(signal) => {
                        warn!(signal, "second termination signal: exiting without cleanup");
                        std::process::exit(1);
                    }
                    Err(e) => {
                        warn!("cannot wait for termination signals: {e}");
                        return;
                    }
                }
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn arguments_parse_and_help_is_consistent() {
        Args::command().debug_assert();
        let a = Args::try_parse_from([
            "knic-vhost",
            "--socket",
            "/tmp/x.sock",
            "--uplink",
            "tap:knic0",
            "--queues",
            "4",
            "--mac",
            "02:00:00:aa:bb:cc",
        ])
        .unwrap();
        assert_eq!(a.queues, 4);
        assert_eq!(a.mac, [2, 0, 0, 0xaa, 0xbb, 0xcc]);
        assert_eq!(a.uplink, UplinkSpec::Tap("knic0".into()));
        assert!(Args::try_parse_from(["knic-vhost", "--socket", "s", "--uplink", "bad"]).is_err());
        assert!(
            Args::try_parse_from([
                "knic-vhost",
                "--socket",
                "s",
                "--uplink",
                "tap:a",
                "--queues",
                "0"
            ])
            .is_err()
        );
        assert!(parse_mac("01:02:03:04:05").is_err());
        assert!(parse_mac("01:02:03:04:05:06:07").is_err());
    }
}
