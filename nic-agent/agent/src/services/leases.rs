//! Leases: the table a DHCP server keeps, and its file.
//!
//! Each server (one per link) owns one file, `DIR/DEVICE.json`, rewritten atomically
//! after every change that matters (a lease bound, released or declined): the new
//! contents go to a temporary file in the same directory, which is synced and renamed
//! over the old one, and the directory is synced, so a crash leaves the old file or the
//! new one, never a torn one. Offers are not written: they last a minute and a client
//! whose offer is lost simply asks again.

use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::Mac;

/// What a lease is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseState {
    /// Offered, not yet requested (held for the client a short while; not persisted).
    Offered,
    /// Acknowledged: the client uses it until `expires`.
    Bound,
    /// A client found the address in use (DECLINE): out of the pool until `expires`.
    Declined,
}

/// One address and who has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lease {
    /// The client (none for a declined address).
    pub mac: Option<Mac>,
    pub ip: Ipv4Addr,
    /// Seconds since the Unix epoch.
    pub expires: u64,
    pub state: LeaseState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

/// A server's leases, at most one per client and one per address.
#[derive(Debug, Default, Clone)]
pub struct LeaseTable {
    leases: Vec<Lease>,
    dirty: bool,
}

impl LeaseTable {
    pub fn from_leases(leases: Vec<Lease>) -> LeaseTable {
        let mut t = LeaseTable::default();
        for l in leases {
            t.put(l);
        }
        t.dirty = false;
        t
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Lease> {
        self.leases.iter()
    }

    pub fn by_mac(&self, mac: Mac) -> Option<&Lease> {
        self.leases.iter().find(|l| l.mac == Some(mac))
    }

    pub fn by_ip(&self, ip: Ipv4Addr) -> Option<&Lease> {
        self.leases.iter().find(|l| l.ip == ip)
    }

    /// Whether a change worth persisting happened since [`LeaseTable::clean`].
    pub fn dirty(&self) -> bool {
        self.dirty
    }

    pub fn clean(&mut self) {
        self.dirty = false;
    }

    /// Records `lease`, replacing whatever its client or its address had.
    pub fn put(&mut self, lease: Lease) {
        let before = self.leases.len();
        self.leases
            .retain(|l| l.ip != lease.ip && (lease.mac.is_none() || l.mac != lease.mac));
        if lease.state != LeaseState::Offered || self.leases.len() != before {
            self.dirty = true;
        }
        self.leases.push(lease);
    }

    pub fn remove_mac(&mut self, mac: Mac) {
        self.leases.retain(|l| l.mac != Some(mac));
        self.dirty = true;
    }

    /// Forgets an offer to `mac` (a bound lease stays).
    pub fn drop_offer(&mut self, mac: Mac) {
        self.leases
            .retain(|l| !(l.mac == Some(mac) && l.state == LeaseState::Offered));
    }

    /// Forgets every lease that ran out before `now`.
    pub fn expire(&mut self, now: u64) {
        let before = self.leases.len();
        self.leases.retain(|l| l.expires > now);
        if self.leases.len() != before {
            self.dirty = true;
        }
    }

    /// The leases a restart must keep.
    pub fn persistent(&self) -> Vec<Lease> {
        self.leases
            .iter()
            .filter(|l| l.state != LeaseState::Offered)
            .cloned()
            .collect()
    }
}

/// The lease file could not be read or written.
#[derive(Debug, Error)]
pub enum LeaseFileError {
    #[error("cannot read the lease file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the lease file {} is not a list of leases; move it away to start with no leases",
        path.display()
    )]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write the lease file {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// One server's lease file.
#[derive(Debug, Clone)]
pub struct LeaseFile {
    path: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    leases: Vec<Lease>,
}

impl LeaseFile {
    pub fn new(path: PathBuf) -> LeaseFile {
        LeaseFile { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The leases written before; none if the file does not exist yet.
    pub fn load(&self) -> Result<Vec<Lease>, LeaseFileError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(LeaseFileError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let on_disk: OnDisk =
            serde_json::from_str(&text).map_err(|source| LeaseFileError::Parse {
                path: self.path.clone(),
                source,
            })?;
        Ok(on_disk.leases)
    }

    /// Replaces the file's contents with `leases`, atomically (see the module docs).
    pub fn save(&self, leases: Vec<Lease>) -> Result<(), LeaseFileError> {
        let err = |source| LeaseFileError::Write {
            path: self.path.clone(),
            source,
        };
        let text =
            serde_json::to_vec_pretty(&OnDisk { leases }).map_err(|e| err(io::Error::other(e)))?;
        crate::state::write_atomically(&self.path, &text).map_err(err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(mac: u8, ip: u8, state: LeaseState) -> Lease {
        Lease {
            mac: Some(Mac([2, 0, 0, 0, 0, mac])),
            ip: Ipv4Addr::new(10, 0, 0, ip),
            expires: 100,
            state,
            hostname: None,
        }
    }

    #[test]
    fn one_lease_per_client_and_per_address() {
        let mut t = LeaseTable::default();
        t.put(lease(1, 10, LeaseState::Bound));
        t.put(lease(1, 11, LeaseState::Bound));
        t.put(lease(2, 11, LeaseState::Bound));
        assert_eq!(t.iter().count(), 1);
        assert_eq!(
            t.by_ip(Ipv4Addr::new(10, 0, 0, 11)).unwrap().mac,
            Some(Mac([2, 0, 0, 0, 0, 2]))
        );
        t.put(lease(3, 12, LeaseState::Offered));
        assert_eq!(t.persistent().len(), 1);
        t.expire(100);
        assert!(t.is_empty());
    }

    #[test]
    fn file_round_trip_is_atomic_and_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("knic-dhcp-leases-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let f = LeaseFile::new(dir.join("eth1.json"));
        assert_eq!(f.load().unwrap(), vec![]);
        let leases = vec![
            lease(1, 10, LeaseState::Bound),
            lease(2, 11, LeaseState::Declined),
        ];
        f.save(leases.clone()).unwrap();
        assert_eq!(f.load().unwrap(), leases);
        f.save(vec![leases[0].clone()]).unwrap();
        assert_eq!(f.load().unwrap(), vec![leases[0].clone()]);
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("eth1.json")],
            "no temporary file left"
        );
        fs::write(f.path(), b"{\"leases\": 3}").unwrap();
        let e = f.load().unwrap_err();
        assert!(matches!(e, LeaseFileError::Parse { .. }));
        assert!(e.to_string().contains("eth1.json"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
