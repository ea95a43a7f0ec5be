//! Who holds an interface's XDP program: every AF_XDP socket of this process on the
//! interface takes a [`ProgramRef`]; when the last one drops (after its socket is deleted),
//! the program is detached if it is still libxdp's default `xsk_def_prog`.
//!
//! libxdp attaches `xsk_def_prog` with the first socket and, when it finds the program
//! already attached (by name), reuses it without taking ownership, which is how an open
//! copes with the program a killed process left behind. Nothing in libxdp detaches a reused
//! program, so the process does it here, once its own sockets are gone. An interface's
//! AF_XDP program is thereby owned by one process at a time (one agent per interface).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::xsk_sys;

static HOLDERS: Mutex<Option<HashMap<libc::c_int, usize>>> = Mutex::new(None);

/// One socket's share of interface `ifindex`'s program.
#[derive(Debug)]
pub struct ProgramRef {
    ifindex: libc::c_int,
}

impl ProgramRef {
    /// Counts one more socket on `ifindex` (taken before the socket is created, so a
    /// concurrent last drop cannot detach under it).
    pub fn take(ifindex: libc::c_int) -> Self {
        let mut g = HOLDERS.lock().unwrap_or_else(PoisonError::into_inner);
        *g.get_or_insert_with(HashMap::new)
            .entry(ifindex)
            .or_insert(0) += 1;
        Self { ifindex }
    }
}

impl Drop for ProgramRef {
    fn drop(&mut self) {
        let mut g = HOLDERS.lock().unwrap_or_else(PoisonError::into_inner);
        let map = g.get_or_insert_with(HashMap::new);
        let last = match map.get_mut(&self.ifindex) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => {
                map.remove(&self.ifindex);
                true
            }
        };
        // Detaching under the lock keeps a new open on the interface from racing it.
        if last {
            if let Err(e) = xsk_sys::detach_default_program(self.ifindex) {
                tracing::warn!(
                    ifindex = self.ifindex,
                    "detaching the XDP program failed: {e}"
                );
            }
        }
    }
}
