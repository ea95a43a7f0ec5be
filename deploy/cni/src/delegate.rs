//! Delegating to another plugin (the IPAM plugin named by `ipam.type`) as the spec says:
//! found on `CNI_PATH`, run with this process's environment (`CNI_COMMAND` as given) and
//! the network configuration on stdin; its stdout is its result or its error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::spec::{CniError, Code};

/// Finds plugin `name` on `cni_path` (a `:`-separated list of directories).
pub fn find(name: &str, cni_path: &str) -> Result<PathBuf, CniError> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(CniError::new(
            Code::InvalidConfig,
            format!("ipam.type {name:?} is not a plugin name"),
            "set ipam.type to the file name of an IPAM plugin on CNI_PATH, like host-local",
        ));
    }
    std::env::split_paths(cni_path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::new(
                Code::InvalidConfig,
                format!("IPAM plugin {name:?} not found on CNI_PATH {cni_path:?}"),
                "install it (Debian: containernetworking-plugins puts host-local in /usr/lib/cni) \
                 or add its directory to CNI_PATH",
            )
        })
}

/// Runs `plugin` with `command` and `stdin`; the parsed stdout on success.
pub fn exec(plugin: &Path, command: &str, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    let what = plugin.display().to_string();
    let mut child = Command::new(plugin)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            CniError::new(
                Code::Io,
                format!("cannot run the IPAM plugin {what}"),
                format!("{e}: check that it is executable"),
            )
        })?;
    if let Some(mut input) = child.stdin.take() {
        // A plugin that exits without reading its stdin is judged by its exit and stdout.
        let _ = input.write_all(stdin);
    }
    let out = child.wait_with_output().map_err(|e| {
        CniError::new(
            Code::Io,
            format!("waiting for the IPAM plugin {what}"),
            e.to_string(),
        )
    })?;
    let parsed: Option<Value> = if out.stdout.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(serde_json::from_slice(&out.stdout).map_err(|e| {
            CniError::new(
                Code::DelegateFailed,
                format!("the IPAM plugin {what} ({command}) printed something that is not JSON"),
                format!(
                    "{e}; stderr: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            )
        })?)
    };
    if out.status.success() {
        return Ok(parsed);
    }
    // Its own CNI error is passed on with its code, named as the IPAM plugin's.
    if let Some(err) = parsed.as_ref().filter(|v| v.get("code").is_some()) {
        return Err(CniError {
            code: err["code"]
                .as_u64()
                .and_then(|c| u32::try_from(c).ok())
                .unwrap_or(999),
            msg: format!(
                "IPAM plugin {what} ({command}): {}",
                err["msg"].as_str().unwrap_or("failed")
            ),
            details: err["details"].as_str().unwrap_or_default().to_owned(),
        });
    }
    Err(CniError::new(
        Code::DelegateFailed,
        format!("the IPAM plugin {what} ({command}) failed ({})", out.status),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    ))
}

/// The versions `plugin` speaks (its VERSION answer).
pub fn versions(plugin: &Path) -> Result<Vec<String>, CniError> {
    let v = exec(plugin, "VERSION", br#"{"cniVersion":"1.0.0"}"#)?.unwrap_or(Value::Null);
    Ok(v["supportedVersions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

/// The configuration to hand `plugin`: ours as is, except that a plugin that does not speak
/// our `cniVersion` but speaks 1.0.0 (Debian bookworm's reference plugins stop there; 1.0.0
/// and 1.1.0 results are the same format) is given 1.0.0. Returns the bytes and whether the
/// plugin speaks 1.1.0 (STATUS and GC exist only there).
pub fn config_for(plugin: &Path, conf: &Value) -> Result<(Vec<u8>, bool), CniError> {
    let ours = conf["cniVersion"].as_str().unwrap_or_default().to_owned();
    let theirs = versions(plugin)?;
    let speaks_1_1 = theirs.iter().any(|v| v == "1.1.0");
    let mut conf = conf.clone();
    if !theirs.contains(&ours) {
        if theirs.iter().any(|v| v == "1.0.0") {
            conf["cniVersion"] = Value::from("1.0.0");
        } else {
            return Err(CniError::new(
                Code::IncompatibleVersion,
                format!(
                    "the IPAM plugin {} speaks CNI {} but not {ours}",
                    plugin.display(),
                    theirs.join(", ")
                ),
                "use an IPAM plugin that speaks CNI 1.0.0 or 1.1.0",
            ));
        }
    }
    let bytes = serde_json::to_vec(&conf)
        .map_err(|e| CniError::new(Code::Decode, "re-encoding the configuration", e.to_string()))?;
    Ok((bytes, speaks_1_1))
}
