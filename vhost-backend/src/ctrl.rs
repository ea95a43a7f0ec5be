//! The control virtqueue (virtio 1.2 §5.1.6.5), for frontends that pass it through.
//!
//! QEMU, cloud-hypervisor and DPDK virtio-user emulate the control queue themselves and never
//! ack `CTRL_VQ` to the backend; then this queue is never set up. A frontend that does ack it
//! gets: `CTRL_RX` modes and `CTRL_MAC` (table and address), which program the receive filter
//! every queue pair applies (`rx_filter`), and `CTRL_MQ VQ_PAIRS_SET`, which sets how many
//! queue pairs carry traffic. Anything else is
//! answered `VIRTIO_NET_ERR`. A command is a chain of device-readable bytes (class, command,
//! data) followed by one device-writable status byte; a chain of any other shape is returned
//! with used length 0 and counted as malformed.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;
use thiserror::Error;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, VIRTIO_NET_CTRL_MAC_TABLE_SET,
    VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, VIRTIO_NET_CTRL_RX,
    VIRTIO_NET_CTRL_RX_ALLMULTI, VIRTIO_NET_CTRL_RX_NOBCAST, VIRTIO_NET_CTRL_RX_PROMISC,
    VIRTIO_NET_ERR, VIRTIO_NET_OK,
};
use virtio_queue::{DescriptorChain, Queue};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use crate::ring::{RingError, pop_chain, return_used};
use crate::rx_filter::{MacTable, SharedRxFilter};

/// Longest command read: a MAC table of 128 unicast + 128 multicast entries, with headroom.
const MAX_COMMAND: usize = 2 + 2 * (4 + 128 * 6) + 64;

/// Why a control chain was refused (the guest's doing).
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum CtrlChainError {
    #[error("control chain has no device-writable status byte at its end")]
    NoStatus,
    #[error("device-readable descriptor after the status byte")]
    ReadableAfterStatus,
    #[error("control command longer than {MAX_COMMAND} bytes")]
    TooLong,
    #[error("descriptor {addr:#x}+{len} lies outside guest memory")]
    BadAddress { addr: u64, len: u32 },
    #[error("chain ends in a descriptor that claims a successor (loop or bad next index)")]
    Truncated,
}

/// What the driver asked for, as last acknowledged (for the stats document; the filter itself
/// is the shared `rx_filter`).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct CtrlState {
    pub promisc: bool,
    pub allmulti: bool,
    pub mac: Option<[u8; 6]>,
    pub mac_table_entries: u32,
    pub commands: u64,
    pub rejected: u64,
    pub malformed: u64,
}

impl Default for CtrlState {
    fn default() -> Self {
        Self {
            // virtio 1.2 §5.1.6.5.1: promiscuous and all-multicast are on until changed.
            promisc: true,
            allmulti: true,
            mac: None,
            mac_table_entries: 0,
            commands: 0,
            rejected: 0,
            malformed: 0,
        }
    }
}

/// The control queue's device side.
#[derive(Debug)]
pub struct CtrlQueue {
    state: CtrlState,
    /// The receive filter the pairs apply; written here only.
    rx_filter: Arc<SharedRxFilter>,
    buf: Box<[u8]>,
}

impl CtrlQueue {
    pub fn new(rx_filter: Arc<SharedRxFilter>) -> Self {
        Self {
            state: CtrlState::default(),
            rx_filter,
            buf: vec![0u8; MAX_COMMAND].into_boxed_slice(),
        }
    }

    pub fn state(&self) -> CtrlState {
        self.state
    }

    pub fn reset(&mut self) {
        self.state = CtrlState::default();
        self.rx_filter.reset();
    }

    /// Answers every available command. `active_pairs` receives VQ_PAIRS_SET; `max_pairs`
    /// bounds it. Returns whether any chain was used (the caller decides on notifying).
    pub fn process<M: GuestMemory>(
        &mut self,
        queue: &mut Queue,
        mem: &M,
        active_pairs: &AtomicUsize,
        max_pairs: usize,
    ) -> Result<bool, RingError> {
        let mut used = false;
        while let Some(chain) = pop_chain(queue, mem)? {
            let head = chain.head_index();
            let len = match self.read_command(chain) {
                Ok((cmd_len, status_addr)) => {
                    let ok = self.execute(cmd_len, active_pairs, max_pairs);
                    self.state.commands += 1;
                    if !ok {
                        self.state.rejected += 1;
                    }
                    let status = if ok { VIRTIO_NET_OK } else { VIRTIO_NET_ERR } as u8;
                    match mem.write_obj(status, status_addr) {
                        Ok(()) => 1,
                        Err(_) => {
                            self.state.malformed += 1;
                            0
                        }
                    }
                }
                Err(_) => {
                    self.state.malformed += 1;
                    0
                }
            };
            return_used(queue, mem, head, len)?;
            used = true;
        }
        Ok(used)
    }

    /// Copies the readable part into `buf`; returns its length and the status byte address.
    fn read_command<M>(
        &mut self,
        chain: DescriptorChain<M>,
    ) -> Result<(usize, GuestAddress), CtrlChainError>
    where
        M: Deref + Clone,
        M::Target: GuestMemory,
    {
        let mem = chain.memory();
        let mut len = 0usize;
        let mut status: Option<GuestAddress> = None;
        let mut last_has_next = false;
        for desc in chain.clone() {
            last_has_next = desc.has_next();
            let bad = CtrlChainError::BadAddress {
                addr: desc.addr().0,
                len: desc.len(),
            };
            if desc.is_write_only() {
                if desc.len() == 0 {
                    continue;
                }
                if status.is_some() {
                    // Only the first writable byte is ours to write; extra space is unused.
                    continue;
                }
                status = Some(desc.addr());
            } else {
                if status.is_some() {
                    return Err(CtrlChainError::ReadableAfterStatus);
                }
                let n = desc.len() as usize;
                let dst = self
                    .buf
                    .get_mut(len..len + n)
                    .ok_or(CtrlChainError::TooLong)?;
                mem.read_slice(dst, desc.addr()).map_err(|_| bad)?;
                len += n;
            }
        }
        if last_has_next {
            return Err(CtrlChainError::Truncated);
        }
        Ok((len, status.ok_or(CtrlChainError::NoStatus)?))
    }

    /// Applies the command in `buf[..len]`; false means VIRTIO_NET_ERR.
    fn execute(&mut self, len: usize, active_pairs: &AtomicUsize, max_pairs: usize) -> bool {
        let cmd = &self.buf[..len];
        let (Some(&class), Some(&code)) = (cmd.first(), cmd.get(1)) else {
            return false;
        };
        let data = &cmd[2..];
        match (u32::from(class), u32::from(code)) {
            (VIRTIO_NET_CTRL_RX, c) if c <= VIRTIO_NET_CTRL_RX_NOBCAST => {
                let Some(&on) = data.first() else {
                    return false;
                };
                let on = on != 0;
                match c {
                    VIRTIO_NET_CTRL_RX_PROMISC => {
                        self.state.promisc = on;
                        self.rx_filter.update(|f| f.promisc = on);
                    }
                    VIRTIO_NET_CTRL_RX_ALLMULTI => {
                        self.state.allmulti = on;
                        self.rx_filter.update(|f| f.allmulti = on);
                    }
                    // ALLUNI/NOMULTI/NOUNI/NOBCAST are only meaningful with CTRL_RX_EXTRA,
                    // which is not offered.
                    _ => return false,
                }
                true
            }
            (VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET) => match data.get(..6) {
                Some(m) if data.len() == 6 => {
                    let mut mac = [0u8; 6];
                    mac.copy_from_slice(m);
                    self.state.mac = Some(mac);
                    self.rx_filter.update(|f| f.mac = mac);
                    true
                }
                _ => false,
            },
            (VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET) => {
                // Two tables back to back, unicast then multicast: le32 entries, then
                // entries * 6 bytes.
                let mut rest = data;
                let mut total = 0u32;
                let mut tables = [MacTable::default(); 2];
                for table in &mut tables {
                    let Some(n) = rest.get(..4) else { return false };
                    let entries = u32::from_le_bytes([n[0], n[1], n[2], n[3]]);
                    let Some(bytes) = (entries as usize).checked_mul(6) else {
                        return false;
                    };
                    let (Some(macs), Some(after)) = (rest.get(4..4 + bytes), rest.get(4 + bytes..))
                    else {
                        return false;
                    };
                    *table = MacTable::from_bytes(macs);
                    rest = after;
                    total = total.saturating_add(entries);
                }
                if !rest.is_empty() {
                    return false;
                }
                self.state.mac_table_entries = total;
                let [unicast, multicast] = tables;
                self.rx_filter.update(|f| {
                    f.unicast = unicast;
                    f.multicast = multicast;
                });
                true
            }
            (VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET) => {
                let (Some(&lo), Some(&hi), 2) = (data.first(), data.get(1), data.len()) else {
                    return false;
                };
                let pairs = usize::from(u16::from_le_bytes([lo, hi]));
                if pairs == 0 || pairs > max_pairs {
                    return false;
                }
                active_pairs.store(pairs, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{RawDescriptor, split::Descriptor as SplitDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestMemoryMmap;

    const CMD: u64 = 0x10_0000;
    const DEVICE_MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    const STATUS: u64 = 0x20_0000;

    fn run(cmd: &[u8], with_status: bool) -> (CtrlQueue, usize, Option<u8>, (u32, u32)) {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap();
        let mock = MockSplitQueue::create(&mem, GuestAddress(0), 16);
        let mut q = mock.create_queue::<Queue>().unwrap();
        mem.write_slice(cmd, GuestAddress(CMD)).unwrap();
        mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        let mut descs = vec![RawDescriptor::from(SplitDescriptor::new(
            CMD,
            cmd.len() as u32,
            if with_status {
                VRING_DESC_F_NEXT as u16
            } else {
                0
            },
            1,
        ))];
        if with_status {
            descs.push(RawDescriptor::from(SplitDescriptor::new(
                STATUS,
                1,
                VRING_DESC_F_WRITE as u16,
                0,
            )));
        }
        mock.add_desc_chains(&descs, 0).unwrap();
        let mut ctrl = CtrlQueue::new(SharedRxFilter::new(DEVICE_MAC));
        let active = AtomicUsize::new(1);
        assert!(ctrl.process(&mut q, &mem, &active, 4).unwrap());
        let status: u8 = mem.read_obj(GuestAddress(STATUS)).unwrap();
        let e = mock.used().ring().ref_at(0).unwrap().load();
        (
            ctrl,
            active.load(Ordering::Relaxed),
            with_status.then_some(status),
            (e.id(), e.len()),
        )
    }

    #[test]
    fn mq_pairs_set_within_bounds() {
        let (_, active, status, used) = run(&[4, 0, 3, 0], true);
        assert_eq!((active, status, used), (3, Some(0), (0, 1)));
        let (c, active, status, _) = run(&[4, 0, 5, 0], true);
        assert_eq!((active, status), (1, Some(1)));
        assert_eq!(c.state().rejected, 1);
        let (_, active, status, _) = run(&[4, 0, 0, 0], true);
        assert_eq!((active, status), (1, Some(1)));
    }

    #[test]
    fn rx_modes_and_mac_are_recorded() {
        let (c, _, status, _) = run(&[0, 0, 0], true);
        assert_eq!(status, Some(0));
        assert!(!c.state().promisc);
        let (c, _, status, _) = run(&[1, 1, 2, 0, 0, 0, 0, 9], true);
        assert_eq!(status, Some(0));
        assert_eq!(c.state().mac, Some([2, 0, 0, 0, 0, 9]));
        let table = [1, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        let (c, _, status, _) = run(&table, true);
        assert_eq!(status, Some(0));
        assert_eq!(c.state().mac_table_entries, 1);
        // Table claiming more entries than it carries.
        let (_, _, status, _) = run(&[1, 0, 9, 0, 0, 0], true);
        assert_eq!(status, Some(1));
    }

    /// What the commands program is what the pairs filter by.
    #[test]
    fn rx_modes_and_mac_tables_reach_the_shared_filter() {
        let filter = SharedRxFilter::new(DEVICE_MAC);
        let mut ctrl = CtrlQueue::new(Arc::clone(&filter));
        let mut exec = |cmd: &[u8]| {
            ctrl.buf[..cmd.len()].copy_from_slice(cmd);
            ctrl.execute(cmd.len(), &AtomicUsize::new(1), 1)
        };
        let other = [2, 0, 0, 0, 0, 9];
        let mcast = [1, 0, 0x5e, 0, 0, 1];
        let to = |dst: [u8; 6]| [&dst[..], &[2, 0, 0, 0, 0, 1, 8, 0]].concat();
        assert!(filter.get().accepts(&to(other)), "promiscuous after reset");
        assert!(exec(&[0, 0, 0]));
        assert!(!filter.get().accepts(&to(other)));
        assert!(filter.get().accepts(&to(DEVICE_MAC)));
        assert!(exec(&[0, 1, 0]));
        assert!(!filter.get().accepts(&to(mcast)));
        // One unicast entry, one multicast entry.
        let table = [&[1, 0, 0, 0][..], &other, &[1, 0, 0, 0], &mcast].concat();
        assert!(exec(&[&[1, 0][..], &table].concat()));
        assert!(filter.get().accepts(&to(other)) && filter.get().accepts(&to(mcast)));
        assert!(exec(&[&[1, 1][..], &other].concat()));
        assert_eq!(filter.get().mac, other);
        ctrl.reset();
        assert_eq!(filter.get(), crate::rx_filter::RxFilter::new(DEVICE_MAC));
    }

    #[test]
    fn unknown_and_malformed_commands() {
        let (c, _, status, used) = run(&[7, 0], true);
        assert_eq!((status, used), (Some(1), (0, 1)));
        assert_eq!(c.state().rejected, 1);
        // No status byte: returned with length 0, counted malformed.
        let (c, _, _, used) = run(&[4, 0, 2, 0], false);
        assert_eq!(used, (0, 0));
        assert_eq!(c.state().malformed, 1);
    }
}
