//! Which received frames the guest gets: the receive filter a driver programs through the
//! control queue (virtio 1.2 §5.1.6.5.1 `CTRL_RX` modes, §5.1.6.5.2 `CTRL_MAC` address and
//! table). It mirrors QEMU's `receive_filter()` (hw/net/virtio-net.c): promiscuous mode takes
//! everything; otherwise broadcast always passes, multicast passes under all-multicast or when
//! in the multicast table, unicast when addressed to the device's MAC or in the unicast table.
//! A table longer than [`MAC_TABLE_ENTRIES`] overflows into accepting that whole class, as
//! QEMU's does.
//!
//! The control queue's worker writes the filter; every pair's worker reads it. Each pair keeps
//! its own copy and refreshes it once per event when the shared generation number moved, so a
//! packet costs no lock and no shared write ([`RxFilterView`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Entries kept per table (QEMU's `MAC_TABLE_ENTRIES`).
pub const MAC_TABLE_ENTRIES: usize = 64;

const BROADCAST: [u8; 6] = [0xff; 6];

/// One class of the MAC table: up to [`MAC_TABLE_ENTRIES`] addresses, or "all" on overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacTable {
    entries: [[u8; 6]; MAC_TABLE_ENTRIES],
    len: usize,
    overflow: bool,
}

impl Default for MacTable {
    fn default() -> Self {
        Self {
            entries: [[0; 6]; MAC_TABLE_ENTRIES],
            len: 0,
            overflow: false,
        }
    }
}

impl MacTable {
    /// A table of `macs` (six bytes each, the command's layout); overflows past the limit.
    pub fn from_bytes(macs: &[u8]) -> Self {
        let mut t = Self::default();
        for mac in macs.chunks_exact(6) {
            match t.entries.get_mut(t.len) {
                Some(slot) => {
                    slot.copy_from_slice(mac);
                    t.len += 1;
                }
                None => {
                    t.overflow = true;
                    break;
                }
            }
        }
        t
    }

    fn accepts(&self, mac: &[u8]) -> bool {
        self.overflow || self.entries[..self.len].iter().any(|e| e[..] == *mac)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The receive filter as last programmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxFilter {
    pub promisc: bool,
    pub allmulti: bool,
    /// The device's address: the configured one until `CTRL_MAC_ADDR_SET`.
    pub mac: [u8; 6],
    pub unicast: MacTable,
    pub multicast: MacTable,
}

impl RxFilter {
    /// The state after reset: promiscuous and all-multicast on (§5.1.6.5.1; QEMU keeps
    /// promiscuous on "for compatibility"), so a driver that never uses the control queue
    /// receives everything.
    pub fn new(mac: [u8; 6]) -> Self {
        Self {
            promisc: true,
            allmulti: true,
            mac,
            unicast: MacTable::default(),
            multicast: MacTable::default(),
        }
    }

    /// Whether a frame goes to the guest. Frames too short to carry a destination address
    /// pass only in promiscuous mode.
    pub fn accepts(&self, frame: &[u8]) -> bool {
        if self.promisc {
            return true;
        }
        let Some(dst) = frame.get(..6) else {
            return false;
        };
        if dst == BROADCAST {
            true
        } else if dst[0] & 1 != 0 {
            self.allmulti || self.multicast.accepts(dst)
        } else {
            dst == self.mac || self.unicast.accepts(dst)
        }
    }
}

/// The filter shared between the control queue (writer) and the pairs (readers).
#[derive(Debug)]
pub struct SharedRxFilter {
    generation: AtomicU64,
    filter: Mutex<RxFilter>,
    default_mac: [u8; 6],
}

impl SharedRxFilter {
    pub fn new(mac: [u8; 6]) -> Arc<Self> {
        Arc::new(Self {
            generation: AtomicU64::new(0),
            filter: Mutex::new(RxFilter::new(mac)),
            default_mac: mac,
        })
    }

    /// Changes the filter; readers pick the change up at their next event.
    pub fn update(&self, change: impl FnOnce(&mut RxFilter)) {
        let mut f = self.filter.lock().unwrap_or_else(|p| p.into_inner());
        change(&mut f);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Back to the reset state (a new frontend, RESET_DEVICE).
    pub fn reset(&self) {
        let mac = self.default_mac;
        self.update(|f| *f = RxFilter::new(mac));
    }

    pub fn get(&self) -> RxFilter {
        *self.filter.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One pair's copy of the filter.
#[derive(Debug)]
pub struct RxFilterView {
    shared: Arc<SharedRxFilter>,
    seen: u64,
    filter: RxFilter,
}

impl RxFilterView {
    pub fn new(shared: Arc<SharedRxFilter>) -> Self {
        let filter = shared.get();
        let seen = shared.generation.load(Ordering::Acquire);
        Self {
            shared,
            seen,
            filter,
        }
    }

    /// Takes the latest filter if it changed: one atomic load, a lock only after a change.
    pub fn refresh(&mut self) {
        let now = self.shared.generation.load(Ordering::Acquire);
        if now != self.seen {
            self.filter = self.shared.get();
            self.seen = now;
        }
    }

    /// The filter as of the last [`refresh`](Self::refresh).
    pub fn current(&self) -> &RxFilter {
        &self.filter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    const OTHER: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x57];
    const MCAST: [u8; 6] = [0x01, 0x00, 0x5e, 0, 0, 1];
    const MCAST2: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

    fn frame_to(dst: [u8; 6]) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
        f
    }

    #[test]
    fn reset_state_takes_everything() {
        let f = RxFilter::new(OURS);
        for dst in [OURS, OTHER, MCAST, BROADCAST] {
            assert!(f.accepts(&frame_to(dst)));
        }
        assert!(f.accepts(&[1, 2]));
    }

    #[test]
    fn without_promisc_unicast_needs_our_mac_or_the_table() {
        let mut f = RxFilter::new(OURS);
        f.promisc = false;
        assert!(f.accepts(&frame_to(OURS)));
        assert!(!f.accepts(&frame_to(OTHER)));
        assert!(f.accepts(&frame_to(BROADCAST)));
        assert!(!f.accepts(&[0x52, 0x54]), "a runt has no destination");
        f.unicast = MacTable::from_bytes(&OTHER);
        assert!(f.accepts(&frame_to(OTHER)));
        f.mac = OTHER;
        f.unicast = MacTable::default();
        assert!(
            !f.accepts(&frame_to(OURS)),
            "MAC_ADDR_SET replaces the address"
        );
    }

    #[test]
    fn multicast_needs_allmulti_or_the_table() {
        let mut f = RxFilter::new(OURS);
        f.promisc = false;
        assert!(f.accepts(&frame_to(MCAST)));
        f.allmulti = false;
        assert!(!f.accepts(&frame_to(MCAST)));
        assert!(
            f.accepts(&frame_to(BROADCAST)),
            "broadcast is not multicast here"
        );
        f.multicast = MacTable::from_bytes(&[MCAST, MCAST2].concat());
        assert!(f.accepts(&frame_to(MCAST)) && f.accepts(&frame_to(MCAST2)));
        assert!(!f.accepts(&frame_to([0x01, 0, 0x5e, 0, 0, 9])));
    }

    #[test]
    fn an_overlong_table_accepts_its_whole_class() {
        let many: Vec<u8> = (0..=MAC_TABLE_ENTRIES as u8)
            .flat_map(|i| [0x02, 0, 0, 0, 0, i])
            .collect();
        let t = MacTable::from_bytes(&many);
        assert_eq!(t.len(), MAC_TABLE_ENTRIES);
        let mut f = RxFilter::new(OURS);
        f.promisc = false;
        f.unicast = t;
        assert!(f.accepts(&frame_to([0x02, 0x99, 0, 0, 0, 0])));
        f.unicast = MacTable::from_bytes(&many[..6 * MAC_TABLE_ENTRIES]);
        assert!(!f.accepts(&frame_to([0x02, 0x99, 0, 0, 0, 0])));
    }

    #[test]
    fn views_follow_updates_and_reset() {
        let shared = SharedRxFilter::new(OURS);
        let mut view = RxFilterView::new(Arc::clone(&shared));
        assert!(view.current().promisc);
        shared.update(|f| f.promisc = false);
        assert!(
            view.current().promisc,
            "a change waits for the next refresh"
        );
        view.refresh();
        assert!(!view.current().promisc);
        shared.update(|f| f.mac = OTHER);
        view.refresh();
        assert_eq!(view.current().mac, OTHER);
        shared.reset();
        view.refresh();
        assert_eq!(*view.current(), RxFilter::new(OURS));
    }
}
