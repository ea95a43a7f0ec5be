//! The container's side: moving the agent's TAP (or, for `netdev`, the runtime's device)
//! into the container's network namespace, configuring it there and giving a device back, with iproute2 (`ip`, run inside the namespace by `nsenter`), so
//! the plugin needs no unsafe code of its own.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::spec::{CniError, Code};

fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Runs `ip ARGS` (inside `netns` if given); its stdout, or an I/O error naming the command.
fn ip(netns: Option<&Path>, args: &[&str]) -> Result<String, CniError> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new(tool("nsenter"));
            c.arg(format!("--net={}", ns.display())).arg(tool("ip"));
            c
        }
        None => Command::new(tool("ip")),
    };
    cmd.args(args);
    let shown = format!("ip {}", args.join(" "));
    let out = cmd.output().map_err(|e| {
        CniError::new(
            Code::Io,
            format!("cannot run `{shown}`"),
            format!("{e}: the plugin needs iproute2 and util-linux (nsenter)"),
        )
    })?;
    if !out.status.success() {
        return Err(CniError::new(
            Code::Io,
            format!("`{shown}` failed"),
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `netns` is a network namespace file this process can enter.
pub fn check_netns(netns: &Path) -> Result<(), CniError> {
    if !netns.exists() {
        return Err(CniError::new(
            Code::UnknownContainer,
            format!("CNI_NETNS {} does not exist", netns.display()),
            "the container's network namespace is gone; the runtime must pass a live one",
        ));
    }
    ip(Some(netns), &["link", "show", "lo"]).map(|_| ())
}

/// Whether `ifname` exists in `netns`.
pub fn has_link(netns: &Path, ifname: &str) -> bool {
    ip(Some(netns), &["link", "show", "dev", ifname]).is_ok()
}

/// Whether `ifname` exists in this process's network namespace (the runtime's).
pub fn has_host_link(ifname: &str) -> bool {
    ip(None, &["link", "show", "dev", ifname]).is_ok()
}

/// Gives a moved netdev back: `ifname` in `netns`, if there, is taken down, stripped of
/// its addresses, renamed `device` (in the container, so the runtime's namespace never
/// sees a clash of CNI_IFNAME with one of its own) and moved to this process's namespace.
/// Nothing to do when the container or the interface is gone.
pub fn give_back(netns: &Path, ifname: &str, device: &str) -> Result<(), CniError> {
    if !netns.exists() || !has_link(netns, ifname) {
        return Ok(());
    }
    let n = Some(netns);
    ip(n, &["link", "set", "dev", ifname, "down"])?;
    ip(n, &["addr", "flush", "dev", ifname])?;
    if ifname != device {
        ip(n, &["link", "set", "dev", ifname, "name", device])?;
    }
    let pid = std::process::id().to_string();
    ip(n, &["link", "set", "dev", device, "netns", &pid])?;
    Ok(())
}

/// What the container's interface is to be given.
#[derive(Debug)]
pub struct Setup<'a> {
    pub netns: &'a Path,
    pub ifname: &'a str,
    pub mac: Option<&'a str>,
    pub mtu: Option<u32>,
    /// `ADDR/PREFIX` each.
    pub addresses: &'a [String],
    /// (destination, gateway) each.
    pub routes: &'a [(String, Option<String>)],
}

/// Moves host interface `host_if` into the container, renames it and configures it;
/// returns its MAC.
pub fn attach(host_if: &str, s: &Setup<'_>) -> Result<String, CniError> {
    let ns = s.netns.to_str().ok_or_else(|| {
        CniError::new(
            Code::InvalidEnvironment,
            "CNI_NETNS is not valid UTF-8",
            "pass a path like /var/run/netns/NAME",
        )
    })?;
    ip(None, &["link", "set", "dev", host_if, "netns", ns])?;
    ip(
        Some(s.netns),
        &["link", "set", "dev", host_if, "name", s.ifname],
    )?;
    configure(s)
}

/// Configures interface `s.ifname`, already in the container (a TAP the agent made
/// there); returns its MAC.
pub fn configure(s: &Setup<'_>) -> Result<String, CniError> {
    let n = Some(s.netns);
    if let Some(mac) = s.mac {
        ip(n, &["link", "set", "dev", s.ifname, "address", mac])?;
    }
    if let Some(mtu) = s.mtu {
        ip(
            n,
            &["link", "set", "dev", s.ifname, "mtu", &mtu.to_string()],
        )?;
    }
    for a in s.addresses {
        ip(n, &["addr", "add", a, "dev", s.ifname])?;
    }
    ip(n, &["link", "set", "dev", s.ifname, "up"])?;
    for (dst, gw) in s.routes {
        let mut args = vec!["route", "add", dst.as_str()];
        if let Some(gw) = gw {
            args.extend(["via", gw.as_str()]);
        }
        args.extend(["dev", s.ifname]);
        ip(n, &args)?;
    }
    mac_of(s.netns, s.ifname)
}

/// The MAC of `ifname` in `netns`.
pub fn mac_of(netns: &Path, ifname: &str) -> Result<String, CniError> {
    let out = ip(Some(netns), &["-j", "link", "show", "dev", ifname])?;
    let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    Ok(v[0]["address"].as_str().unwrap_or_default().to_owned())
}

/// The `ADDR/PREFIX` addresses on `ifname` in `netns`.
pub fn addresses_of(netns: &Path, ifname: &str) -> Result<Vec<String>, CniError> {
    let out = ip(Some(netns), &["-j", "addr", "show", "dev", ifname])?;
    let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    Ok(v[0]["addr_info"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| Some(format!("{}/{}", i["local"].as_str()?, i["prefixlen"])))
                .collect()
        })
        .unwrap_or_default())
}

/// Deletes `ifname` in `netns` if it is there (DEL of an interface whose agent side is
/// already gone).
pub fn remove(netns: &Path, ifname: &str) -> Result<(), CniError> {
    if netns.exists() && has_link(netns, ifname) {
        ip(Some(netns), &["link", "del", "dev", ifname])?;
    }
    Ok(())
}
