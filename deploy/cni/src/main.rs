//! `knic-cni`: a CNI plugin (spec 1.1.0) that attaches containers to knic-agent. See
//! `deploy/cni/README.md`.

mod delegate;
mod plugin;
mod sandbox;
mod spec;

use std::io::{Read, Write};
use std::process::ExitCode;

const HELP: &str = "\
knic-cni: a CNI plugin (spec 1.1.0) attaching containers to knic-agent

A container runtime runs it with CNI_COMMAND (ADD, DEL, CHECK, STATUS, GC or VERSION),
CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS and CNI_PATH in the environment and the
network configuration on stdin; it prints the result (or the error) as JSON on stdout.

Network configuration (besides cniVersion, name, type and ipam):
  kind         \"tap\" (default): a TAP with vnet header, a device of the agent's library
               kernel, moved into the container as CNI_IFNAME; \"vhost-user\": a socket in
               socketDir for a VM-in-pod runtime (interfaces[].socketPath); \"netdev\": the
               runtime's interface `device` moved into the container, its traffic carried
               on the agent's side by `representor` (an AF_PACKET uplink of the agent)
  agentSocket  the agent's API socket (default /run/knic/agent.sock)
  socketDir    where vhost-user sockets are made (default /run/knic/cni)
  mtu          the interface's MTU (68-65535)
  tenant       (vhost-user) the agent tenant the port joins
  device       (netdev) the interface moved into the container
  representor  (netdev) the agent-side interface carrying device's traffic

Example (as a runtime runs it):
  CNI_COMMAND=ADD CNI_CONTAINERID=c1 CNI_NETNS=/var/run/netns/pod1 CNI_IFNAME=eth0 \\
  CNI_PATH=/usr/lib/cni knic-cni < /etc/cni/net.d/10-knic.conflist-plugin.json

Options (by hand only): --help, --version
Manual: deploy/cni/README.md
";

fn main() -> ExitCode {
    let mut out = std::io::stdout().lock();
    if std::env::var_os("CNI_COMMAND").is_none() {
        let arg = std::env::args().nth(1).unwrap_or_default();
        let (text, code) = match arg.as_str() {
            "--version" | "-V" => (
                format!(
                    "knic-cni {}\nCNI protocol versions supported: {}\n",
                    env!("CARGO_PKG_VERSION"),
                    spec::SUPPORTED_VERSIONS.join(", ")
                ),
                ExitCode::SUCCESS,
            ),
            "--help" | "-h" => (HELP.to_owned(), ExitCode::SUCCESS),
            _ => {
                let _ = writeln!(
                    std::io::stderr(),
                    "knic-cni: CNI_COMMAND is not set: a container runtime runs this plugin \
                     (see knic-cni --help)"
                );
                return ExitCode::from(1);
            }
        };
        let _ = out.write_all(text.as_bytes());
        return code;
    }
    let env = plugin::Env::from_process();
    let mut stdin = Vec::new();
    let result = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => plugin::run(&env, &stdin),
        Err(e) => Err(spec::CniError::new(
            spec::Code::Io,
            "cannot read the network configuration from stdin",
            e.to_string(),
        )),
    };
    match result {
        Ok(Some(v)) => {
            let _ = writeln!(out, "{v}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            let version = serde_json::from_slice::<serde_json::Value>(&stdin)
                .ok()
                .and_then(|v| v["cniVersion"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "1.1.0".into());
            let _ = writeln!(out, "{}", e.to_json(&version));
            ExitCode::from(1)
        }
    }
}
