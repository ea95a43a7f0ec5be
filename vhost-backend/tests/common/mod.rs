//! Shared by the integration tests: a guest driver's view of split virtqueues in file-backed
//! shared memory, small waiting helpers, and the root check of the tests that need one.

#![allow(clippy::unwrap_used, dead_code)]

pub mod knic_vhost;

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::time::Duration;

use packet_ring::VirtioNetHdr;
use vhost::VringConfigData;
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

pub const MEM_SIZE: usize = 0x40_0000;
pub const QSIZE: u16 = 256;
pub const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
pub const RX: usize = 0;
pub const TX: usize = 1;
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The device the in-process tests serve: [`MAC`], MTU 1500, [`QSIZE`], batches of `batch`.
pub fn device_config(batch: usize) -> vhost_backend::NetBackendConfig {
    vhost_backend::NetBackendConfig {
        mac: MAC,
        mtu: 1500,
        queue_size: QSIZE,
        batch,
        busy_poll: std::time::Duration::ZERO,
    }
}

pub fn scratch_path(name: &str) -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    base.join(format!("knic-test-{}-{name}", std::process::id()))
}

/// A file of `len` bytes with no name (created in /dev/shm and unlinked): a regular file,
/// as a memfd is, for guest memory both sides map shared.
pub fn unlinked_file(name: &str, len: u64) -> std::fs::File {
    let path = scratch_path(name);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    file.set_len(len).unwrap();
    std::fs::remove_file(&path).unwrap();
    file
}

/// Guest memory a raw frontend (`test_support::frontend`) would share: an unlinked regular
/// file of `len` bytes.
pub fn guest_file(tag: &str, len: u64) -> std::fs::File {
    unlinked_file(&format!("guest-{tag}"), len)
}

/// Guest memory backed by a file both sides map shared, as QEMU's memory-backend-memfd.
pub fn shared_memory(name: &str) -> GuestMemoryMmap {
    let file = unlinked_file(name, MEM_SIZE as u64);
    GuestMemoryMmap::from_ranges_with_files(&[(
        GuestAddress(0),
        MEM_SIZE,
        Some(FileOffset::new(file, 0)),
    )])
    .unwrap()
}

/// The guest driver's view of one split virtqueue.
pub struct GuestQueue {
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    pub next_desc: u16,
    pub avail_idx: u16,
}

impl GuestQueue {
    pub fn at(base: u64) -> Self {
        Self {
            desc: base,
            avail: base + 0x1000,
            used: base + 0x2000,
            next_desc: 0,
            avail_idx: 0,
        }
    }

    pub fn config(&self, mem: &GuestMemoryMmap) -> VringConfigData {
        let va = |gpa: u64| mem.get_host_address(GuestAddress(gpa)).unwrap() as u64;
        VringConfigData {
            queue_max_size: QSIZE,
            queue_size: QSIZE,
            flags: 0,
            desc_table_addr: va(self.desc),
            used_ring_addr: va(self.used),
            avail_ring_addr: va(self.avail),
            log_addr: None,
        }
    }

    /// Publishes a chain of (addr, len, device-writable) descriptors.
    pub fn add_chain(&mut self, mem: &GuestMemoryMmap, descs: &[(u64, u32, bool)]) {
        let head = self.next_desc;
        for (i, &(addr, len, write)) in descs.iter().enumerate() {
            let idx = self.next_desc;
            let last = i + 1 == descs.len();
            let mut flags = if write { VRING_DESC_F_WRITE as u16 } else { 0 };
            if !last {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            let at = GuestAddress(self.desc + 16 * u64::from(idx));
            mem.write_obj(addr, at).unwrap();
            mem.write_obj(len, GuestAddress(at.0 + 8)).unwrap();
            mem.write_obj(flags, GuestAddress(at.0 + 12)).unwrap();
            mem.write_obj((idx + 1) % QSIZE, GuestAddress(at.0 + 14))
                .unwrap();
            self.next_desc = (idx + 1) % QSIZE;
        }
        let slot = u64::from(self.avail_idx % QSIZE);
        mem.write_obj(head, GuestAddress(self.avail + 4 + 2 * slot))
            .unwrap();
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_obj(self.avail_idx, GuestAddress(self.avail + 2))
            .unwrap();
    }

    pub fn used_idx(&self, mem: &GuestMemoryMmap) -> u16 {
        mem.read_obj(GuestAddress(self.used + 2)).unwrap()
    }

    pub fn used_elem(&self, mem: &GuestMemoryMmap, i: u16) -> (u32, u32) {
        let at = self.used + 4 + 8 * u64::from(i % QSIZE);
        (
            mem.read_obj(GuestAddress(at)).unwrap(),
            mem.read_obj(GuestAddress(at + 4)).unwrap(),
        )
    }
}

pub fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    test_support::wait_for(what, TIMEOUT, cond);
}

pub fn tso_hdr() -> VirtioNetHdr {
    VirtioNetHdr {
        flags: VirtioNetHdr::F_NEEDS_CSUM,
        gso_type: VirtioNetHdr::GSO_TCPV4,
        hdr_len: 66,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
        num_buffers: 0,
    }
}

pub fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i % 251) as u8))
        .collect()
}
