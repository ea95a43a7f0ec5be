//! Who holds an interface's XDP program: every AF_XDP socket of this process on the
//! interface takes a [`ProgramRef`]; when the last one drops (after its socket is deleted),
//! the program is detached if it is still libxdp's default `xsk_def_prog`.
//!
//! libxdp attaches `xsk_def_prog` with the first socket and, when it finds the program
//! already attached (by name), reuses it without taking ownership, which is how an open
//! copes with the program a killed process left behind. Nothing in libxdp detaches a reused
//! program, so the process does it here, once its own sockets are gone. An interface's
//! AF_XDP program is thereby owned by one process at a time (one agent per interface).
//!
//! Interfaces are told apart by network namespace and ifindex (an ifindex is only unique
//! within its namespace); the detach runs on the dropping thread, which must be in the
//! namespace of the open (libxdp looks the program up by ifindex there).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::sync::{Mutex, PoisonError};

use crate::xsk_sys;

/// An interface: the calling thread's network namespace (its nsfs inode) and the ifindex.
type InterfaceKey = (u64, libc::c_int);

static HOLDERS: Mutex<Option<HashMap<InterfaceKey, usize>>> = Mutex::new(None);

fn key(ifindex: libc::c_int) -> InterfaceKey {
    let netns = std::fs::metadata("/proc/thread-self/ns/net").map_or(0, |m| m.ino());
    (netns, ifindex)
}

/// One socket's share of an interface's program.
#[derive(Debug)]
pub struct ProgramRef {
    key: InterfaceKey,
}

impl ProgramRef {
    /// Counts one more socket on `ifindex` (taken before the socket is created, so a
    /// concurrent last drop cannot detach under it).
    pub fn take(ifindex: libc::c_int) -> Self {
        let key = key(ifindex);
        let mut g = HOLDERS.lock().unwrap_or_else(PoisonError::into_inner);
        *g.get_or_insert_with(HashMap::new).entry(key).or_insert(0) += 1;
        Self { key }
    }
}

impl Drop for ProgramRef {
    fn drop(&mut self) {
        let mut g = HOLDERS.lock().unwrap_or_else(PoisonError::into_inner);
        let map = g.get_or_insert_with(HashMap::new);
        let last = match map.get_mut(&self.key) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => {
                map.remove(&self.key);
                true
            }
        };
        // Detaching under the lock keeps a new open on the interface from racing it.
        if last {
            let ifindex = self.key.1;
            if let Err(e) = xsk_sys::detach_default_program(ifindex) {
                tracing::warn!(ifindex, "detaching the XDP program failed: {e}");
            }
        }
    }
}
