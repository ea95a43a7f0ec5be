//! `knic-offload [--agent SOCKET] -- PROGRAM ARGS...`: runs PROGRAM with knic's shim preloaded,
//! so its AF_INET/AF_INET6 TCP and UDP sockets, and its route, sock_diag and netfilter
//! netlink sockets, are the library kernel's in the agent.
#![deny(unsafe_code)]

mod sys;

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use knic_offload_protocol::{DEFAULT_SOCKET, SOCKET_ENV};
use thiserror::Error;

/// The shim's file name (cargo's cdylib name for `knic-offload-shim`).
const SHIM_NAME: &str = "libknic_offload_shim.so";
/// Where an installed shim lives.
const SHIM_INSTALLED: &str = "/usr/lib/knic/libknic_offload_shim.so";
/// Overrides the shim's path.
const SHIM_ENV: &str = "KNIC_OFFLOAD_SHIM";

/// Runs PROGRAM with its AF_INET/AF_INET6 TCP and UDP sockets in the knic agent's Linux
/// kernel (on the NIC); files, pipes and unix sockets stay on the host. Its NETLINK_ROUTE,
/// NETLINK_SOCK_DIAG and NETLINK_NETFILTER sockets go there too, so `ip`, `ss` and `nft`
/// show and change the NIC's kernel.
///
/// Examples:
///   knic-offload -- curl http://127.0.0.1:8080/
///   knic-offload --agent /tmp/offload.sock -- iperf3 -s
///   knic-offload -- ip route
///   knic-offload -- ss -tin
///   knic-offload --stats
#[derive(Debug, Parser)]
#[command(name = "knic-offload", version, verbatim_doc_comment)]
struct Args {
    /// The agent's offload socket (default: $KNIC_OFFLOAD_SOCKET, else /run/knic/offload.sock).
    #[arg(long, value_name = "SOCKET")]
    agent: Option<PathBuf>,

    /// Print the agent's offload counters (JSON) and exit.
    #[arg(long, conflicts_with = "program")]
    stats: bool,

    /// The program and its arguments (after --).
    #[arg(last = true, value_name = "PROGRAM ARGS")]
    program: Vec<OsString>,
}

#[derive(Debug, Error)]
enum LaunchError {
    #[error(
        "no knic agent serves offload at {}: start `knic-agent` (it serves offload there by \
         default) or pass --agent SOCKET",
        .0.display()
    )]
    NoAgent(PathBuf),
    #[error(
        "{} exists but no agent answers on it ({source}): the agent stopped or crashed; \
         restart `knic-agent`",
        path.display()
    )]
    AgentDown {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the offload shim {SHIM_NAME} is missing (looked in {looked}): build it with `cargo \
         build --release -p knic-offload-shim` or set {SHIM_ENV}"
    )]
    NoShim { looked: String },
    #[error("no program given: knic-offload [--agent SOCKET] -- PROGRAM ARGS...")]
    NoProgram,
    #[error("cannot run {program}")]
    Exec {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the agent at {} answered the counters request badly", .0.display())]
    Stats(PathBuf, #[source] std::io::Error),
}

fn agent_socket(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os(SOCKET_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

fn check_agent(path: &Path) -> Result<(), LaunchError> {
    match sys::connect(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(LaunchError::NoAgent(path.into()))
        }
        Err(source) => Err(LaunchError::AgentDown {
            path: path.into(),
            source,
        }),
    }
}

fn find_shim() -> Result<PathBuf, LaunchError> {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os(SHIM_ENV) {
        candidates.push(PathBuf::from(p));
    } else {
        if let Ok(exe) = std::env::current_exe() {
            if let Some(dir) = exe.parent() {
                candidates.push(dir.join(SHIM_NAME));
                // cargo puts test binaries one level down (target/*/deps).
                if let Some(up) = dir.parent() {
                    candidates.push(up.join(SHIM_NAME));
                }
            }
        }
        candidates.push(PathBuf::from(SHIM_INSTALLED));
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| LaunchError::NoShim {
            looked: candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

fn launch(args: Args) -> Result<(), LaunchError> {
    let socket = agent_socket(args.agent);
    check_agent(&socket)?;
    if args.stats {
        let json = sys::stats(&socket).map_err(|e| LaunchError::Stats(socket.clone(), e))?;
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        return writeln!(out, "{json}").map_err(|e| LaunchError::Stats(socket.clone(), e));
    }
    let Some((program, rest)) = args.program.split_first() else {
        return Err(LaunchError::NoProgram);
    };
    let shim = find_shim()?;
    let mut preload = shim.into_os_string();
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|o| !o.is_empty()) {
        preload.push(":");
        preload.push(old);
    }
    let err = std::process::Command::new(program)
        .args(rest)
        .env("LD_PRELOAD", preload)
        .env(SOCKET_ENV, &socket)
        .exec();
    Err(LaunchError::Exec {
        program: program.to_string_lossy().into_owned(),
        source: err,
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    match launch(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = format!("knic-offload: {e}");
            let mut src = std::error::Error::source(&e);
            // Causes already quoted in the message are not repeated.
            if matches!(e, LaunchError::Exec { .. } | LaunchError::Stats(..)) {
                while let Some(s) = src {
                    msg.push_str(&format!(": {s}"));
                    src = s.source();
                }
            }
            eprintln!("{msg}");
            ExitCode::from(127)
        }
    }
}
