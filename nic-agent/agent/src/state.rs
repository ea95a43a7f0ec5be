//! The agent's state on disk: what it runs (uplinks, tenants, ports, addresses, routes), so
//! that whatever was added through the control API survives a restart, `kill -9` included.
//!
//! With `--state-dir DIR` the agent keeps one file, `DIR/state.json`, rewritten after every
//! change that succeeded (an API request, a reload, the start itself) with
//! [`write_atomically`]: a temporary file in the same directory, synced, renamed over the
//! old one, the directory synced. A crash at any point leaves the old file or the new one,
//! never a torn one.
//!
//! On start the agent applies its configuration (flags or `--config`) first, then whatever
//! the state file holds that the configuration does not (by name for uplinks, tenants and
//! ports; by value for addresses and routes), in the order the state lists them, so the
//! made-up MACs (numbered by creation order) come out the same and peers' neighbour entries
//! stay right. The configuration wins: an item of the state whose name the configuration
//! already uses is not touched. A state file that cannot be read or understood stops the
//! agent with a message naming the file: it is never silently replaced.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::{AddressConfig, PortConfig, RouteConfig, TenantConfig, UplinkConfig};

/// The state file's name inside the state directory.
pub const STATE_FILE: &str = "state.json";
/// The format written; a file of another version is refused (not guessed at).
const VERSION: u32 = 1;

/// What the agent runs, in creation order within each kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunningConfig {
    pub uplinks: Vec<UplinkConfig>,
    pub tenants: Vec<TenantConfig>,
    pub ports: Vec<PortConfig>,
    pub addresses: Vec<AddressConfig>,
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    version: u32,
    #[serde(flatten)]
    running: RunningConfig,
}

/// Why the state file could not be used.
#[derive(Debug, Error)]
pub enum StateError {
    #[error(
        "cannot read the state file {}; fix its permissions, or move it away to start from the configuration alone",
        path.display()
    )]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the state file {} is not a knic-agent state (corrupt or edited by hand); repair it, or move it away to start from the configuration alone (what was added through the API is then lost)",
        path.display()
    )]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "the state file {} has format version {found}; this agent writes version {VERSION}: run the agent that wrote it, or move the file away",
        path.display()
    )]
    Version { path: PathBuf, found: u32 },
    #[error(
        "cannot write the state file {}: the change is applied but will not survive a restart",
        path.display()
    )]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The state file of one agent.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The state file in `dir`.
    pub fn in_dir(dir: &Path) -> StateFile {
        StateFile {
            path: dir.join(STATE_FILE),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the last run left; `None` if there is no file yet (a first start).
    pub fn load(&self) -> Result<Option<RunningConfig>, StateError> {
        let text = match fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        // The version first, so a newer format is named as such rather than as corrupt.
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let parse = |source| StateError::Parse {
            path: self.path.clone(),
            source,
        };
        let v: Version = serde_json::from_slice(&text).map_err(parse)?;
        if v.version != VERSION {
            return Err(StateError::Version {
                path: self.path.clone(),
                found: v.version,
            });
        }
        let on_disk: OnDisk = serde_json::from_slice(&text).map_err(parse)?;
        Ok(Some(on_disk.running))
    }

    /// Replaces the file with `running`, atomically.
    pub fn save(&self, running: &RunningConfig) -> Result<(), StateError> {
        let on_disk = OnDisk {
            version: VERSION,
            running: running.clone(),
        };
        let err = |source| StateError::Write {
            path: self.path.clone(),
            source,
        };
        let text = serde_json::to_vec_pretty(&on_disk).map_err(|e| err(io::Error::other(e)))?;
        write_atomically(&self.path, &text).map_err(err)
    }
}

impl RunningConfig {
    /// What `state` holds that `self` (the configuration) does not, in the state's order.
    pub fn missing_from(&self, state: &RunningConfig) -> RunningConfig {
        let device_named = |name: &str| {
            self.ports.iter().any(|p| p.name == name) || self.uplinks.iter().any(|u| u.name == name)
        };
        RunningConfig {
            uplinks: state
                .uplinks
                .iter()
                .filter(|u| !device_named(&u.name))
                .cloned()
                .collect(),
            tenants: state
                .tenants
                .iter()
                .filter(|t| !self.tenants.iter().any(|x| x.name == t.name))
                .cloned()
                .collect(),
            ports: state
                .ports
                .iter()
                .filter(|p| !device_named(&p.name))
                .cloned()
                .collect(),
            addresses: state
                .addresses
                .iter()
                .filter(|a| !self.addresses.contains(a))
                .cloned()
                .collect(),
            routes: state
                .routes
                .iter()
                .filter(|r| !self.routes.contains(r))
                .cloned()
                .collect(),
        }
    }

    /// `self`'s items, then `more`'s, kind by kind (the order things are created in).
    pub fn followed_by(mut self, more: RunningConfig) -> RunningConfig {
        self.uplinks.extend(more.uplinks);
        self.tenants.extend(more.tenants);
        self.ports.extend(more.ports);
        self.addresses.extend(more.addresses);
        self.routes.extend(more.routes);
        self
    }

    pub fn is_empty(&self) -> bool {
        *self == RunningConfig::default()
    }
}

/// Writes `bytes` to `path` so that a crash leaves the old contents or the new ones: a
/// temporary file beside it, synced, renamed over it, the directory synced. Creates the
/// directory if needed.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    File::open(dir).and_then(|d| d.sync_all())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("knic-state-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn running() -> RunningConfig {
        RunningConfig {
            uplinks: vec!["up0=tap:knic0".parse().unwrap()],
            tenants: Vec::new(),
            ports: vec![
                "vm1=/run/knic/vm1.sock".parse().unwrap(),
                "vm2=/run/knic/vm2.sock,queues=2".parse().unwrap(),
            ],
            addresses: vec!["vm2=10.0.2.1/24".parse().unwrap()],
            routes: vec!["10.9.0.0/16,via=10.0.0.1".parse().unwrap()],
        }
    }

    #[test]
    fn round_trip_is_atomic_and_a_first_start_has_no_state() {
        let dir = scratch("trip");
        let file = StateFile::in_dir(&dir.join("sub"));
        assert_eq!(file.load().unwrap(), None);
        file.save(&running()).unwrap();
        assert_eq!(file.load().unwrap(), Some(running()));
        // Nothing left beside it but the file itself.
        let names: Vec<_> = fs::read_dir(dir.join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(STATE_FILE)]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_or_foreign_file_is_an_error_naming_it_never_a_reset() {
        let dir = scratch("bad");
        fs::create_dir_all(&dir).unwrap();
        let file = StateFile::in_dir(&dir);
        for (text, what) in [
            (
                r#"{"version":1,"ports":[{"name":"vm1""#,
                "is not a knic-agent state",
            ),
            ("", "is not a knic-agent state"),
            (
                r#"{"version":1,"uplinks":[],"tenants":[],"ports":[],"addresses":[],"routes":[],"extra":1}"#,
                "is not a knic-agent state",
            ),
            (r#"{"version":7}"#, "format version 7"),
        ] {
            fs::write(file.path(), text).unwrap();
            let e = file.load().unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains(&file.path().display().to_string()) && msg.contains(what),
                "{text:?}: {msg}"
            );
            assert!(msg.contains("move it away") || msg.contains("move the file away"));
            // The file is left as it was, for the operator to look at.
            assert_eq!(fs::read_to_string(file.path()).unwrap(), text);
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_configuration_wins_and_the_state_adds_the_rest_in_order() {
        let state = running();
        let config = RunningConfig {
            uplinks: vec!["up0=packet:eth0".parse().unwrap()],
            ports: vec!["vm1=/other.sock".parse().unwrap()],
            addresses: vec![],
            routes: state.routes.clone(),
            tenants: vec![],
        };
        let extra = config.missing_from(&state);
        assert!(extra.uplinks.is_empty(), "up0 is the configuration's");
        assert_eq!(
            extra
                .ports
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>(),
            ["vm2"]
        );
        assert_eq!(extra.addresses, state.addresses);
        assert!(extra.routes.is_empty());
        assert!(state.missing_from(&state).is_empty());
    }
}
