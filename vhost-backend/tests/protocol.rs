//! Drives the device through a real vhost-user frontend (the `vhost` crate's `Frontend`) over
//! a unix socket: negotiation in DPDK's message order (SET_VRING_CALL before SET_FEATURES and
//! SET_MEM_TABLE), a file-backed shared memory table, kicks and calls, packets both ways
//! through an in-memory uplink, then a disconnect and a second frontend on the same socket.

// Test helpers outside #[test] functions: a failed setup step must fail the test loudly.
#![allow(clippy::unwrap_used)]

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use packet_ring::{MemoryPeer, VirtioNetHdr, memory_port_pair};
use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserProtocolFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vhost_backend::daemon::{Role, ServeConfig, serve};
use vhost_backend::features::OFFERED_FEATURES;
use vhost_backend::{NetBackend, NetBackendConfig};
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

const MEM_SIZE: usize = 0x40_0000;
const QSIZE: u16 = 256;
const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const RX: usize = 0;
const TX: usize = 1;
const TIMEOUT: Duration = Duration::from_secs(10);

fn scratch_path(name: &str) -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    base.join(format!("knic-test-{}-{name}", std::process::id()))
}

/// Guest memory backed by a file both sides map shared, as QEMU's memory-backend-memfd.
fn shared_memory(name: &str) -> GuestMemoryMmap {
    let path = scratch_path(name);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    file.set_len(MEM_SIZE as u64).unwrap();
    std::fs::remove_file(&path).unwrap();
    GuestMemoryMmap::from_ranges_with_files(&[(
        GuestAddress(0),
        MEM_SIZE,
        Some(FileOffset::new(file, 0)),
    )])
    .unwrap()
}

/// The guest driver's view of one split virtqueue.
struct GuestQueue {
    desc: u64,
    avail: u64,
    used: u64,
    next_desc: u16,
    avail_idx: u16,
}

impl GuestQueue {
    fn at(base: u64) -> Self {
        Self {
            desc: base,
            avail: base + 0x1000,
            used: base + 0x2000,
            next_desc: 0,
            avail_idx: 0,
        }
    }

    fn config(&self, mem: &GuestMemoryMmap) -> VringConfigData {
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
    fn add_chain(&mut self, mem: &GuestMemoryMmap, descs: &[(u64, u32, bool)]) {
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

    fn used_idx(&self, mem: &GuestMemoryMmap) -> u16 {
        mem.read_obj(GuestAddress(self.used + 2)).unwrap()
    }

    fn used_elem(&self, mem: &GuestMemoryMmap, i: u16) -> (u32, u32) {
        let at = self.used + 4 + 8 * u64::from(i % QSIZE);
        (
            mem.read_obj(GuestAddress(at)).unwrap(),
            mem.read_obj(GuestAddress(at + 4)).unwrap(),
        )
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn tso_hdr() -> VirtioNetHdr {
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

fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i % 251) as u8))
        .collect()
}

/// One frontend session: negotiate, set up both rings, move a packet each way.
fn session(socket: &PathBuf, peer: &mut MemoryPeer, round: u8, backend: &NetBackend) {
    let mem = shared_memory(&format!("mem{round}"));
    let mut fe = Frontend::connect(socket, 2).unwrap();
    let calls = [
        EventFd::new(EFD_NONBLOCK).unwrap(),
        EventFd::new(EFD_NONBLOCK).unwrap(),
    ];
    let kicks = [
        EventFd::new(EFD_NONBLOCK).unwrap(),
        EventFd::new(EFD_NONBLOCK).unwrap(),
    ];

    // DPDK virtio-user order: call fds first, then features, then the memory table.
    fe.set_owner().unwrap();
    fe.set_vring_call(RX, &calls[RX]).unwrap();
    fe.set_vring_call(TX, &calls[TX]).unwrap();
    let offered = fe.get_features().unwrap();
    assert_eq!(offered, OFFERED_FEATURES);
    fe.set_features(offered).unwrap();
    let proto = fe.get_protocol_features().unwrap();
    for needed in [
        VhostUserProtocolFeatures::MQ,
        VhostUserProtocolFeatures::REPLY_ACK,
        VhostUserProtocolFeatures::CONFIG,
        VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS,
        VhostUserProtocolFeatures::RESET_DEVICE,
    ] {
        assert!(proto.contains(needed), "{needed:?} offered");
    }
    fe.set_protocol_features(
        VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIG,
    )
    .unwrap();
    assert_eq!(fe.get_queue_num().unwrap(), 2);
    let (_, cfg) = fe
        .get_config(0, 12, VhostUserConfigFlags::empty(), &[0u8; 12])
        .unwrap();
    assert_eq!(&cfg[..6], &MAC);
    assert_eq!(u16::from_le_bytes([cfg[6], cfg[7]]), 1, "link up");
    assert_eq!(u16::from_le_bytes([cfg[8], cfg[9]]), 1, "one queue pair");
    assert_eq!(u16::from_le_bytes([cfg[10], cfg[11]]), 1500, "MTU");

    let region = mem.iter().next().unwrap();
    let info = VhostUserMemoryRegionInfo::from_guest_region(region).unwrap();
    assert_eq!(info.memory_size, region.len());
    fe.set_mem_table(&[info]).unwrap();

    let mut queues = [GuestQueue::at(0x1_0000), GuestQueue::at(0x2_0000)];
    for q in [RX, TX] {
        fe.set_vring_num(q, QSIZE).unwrap();
        fe.set_vring_addr(q, &queues[q].config(&mem)).unwrap();
        fe.set_vring_base(q, 0).unwrap();
        fe.set_vring_kick(q, &kicks[q]).unwrap();
        fe.set_vring_enable(q, true).unwrap();
    }
    // A request with a reply: once it is answered the backend has applied everything before
    // it. Without this barrier a packet published now could meet a started but not yet
    // enabled TX ring, which the device must process and discard.
    assert_eq!(fe.get_features().unwrap(), offered);

    // Guest -> uplink: a TSO packet split over header and two frame descriptors.
    let tx_frame = frame(3000, round);
    mem.write_slice(&tso_hdr().to_bytes(), GuestAddress(0x10_0000))
        .unwrap();
    mem.write_slice(&tx_frame, GuestAddress(0x10_1000)).unwrap();
    queues[TX].add_chain(
        &mem,
        &[
            (0x10_0000, 12, false),
            (0x10_1000, 1000, false),
            (0x10_1000 + 1000, 2000, false),
        ],
    );
    kicks[TX].write(1).unwrap();
    let mut got = Vec::new();
    let start = Instant::now();
    while got.is_empty() {
        peer.recv_with(8, |p| got.push((p.hdr, p.frame().to_vec())));
        assert!(
            start.elapsed() < TIMEOUT,
            "round {round}: TX packet never reached the uplink; used {} stats {:?}",
            queues[TX].used_idx(&mem),
            backend.stats()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(got, vec![(tso_hdr(), tx_frame)]);
    wait_until("the TX used entry", || queues[TX].used_idx(&mem) == 1);
    assert_eq!(queues[TX].used_elem(&mem, 0), (0, 0));
    wait_until("the TX call", || calls[TX].read().is_ok());

    // Uplink -> guest: three 1500-byte mergeable buffers for a 4000-byte GSO frame.
    for i in 0..3u64 {
        queues[RX].add_chain(&mem, &[(0x20_0000 + 0x1000 * i, 1500, true)]);
    }
    kicks[RX].write(1).unwrap();
    let rx_frame = frame(4000, round.wrapping_add(1));
    assert!(peer.send(tso_hdr(), &rx_frame).unwrap());
    wait_until("the RX used entries", || queues[RX].used_idx(&mem) == 3);
    assert_eq!(queues[RX].used_elem(&mem, 0), (0, 1500));
    assert_eq!(queues[RX].used_elem(&mem, 1), (1, 1500));
    assert_eq!(queues[RX].used_elem(&mem, 2), (2, 1012));
    let mut bytes = Vec::new();
    for (i, len) in [(0u64, 1500usize), (1, 1500), (2, 1012)] {
        let mut b = vec![0u8; len];
        mem.read_slice(&mut b, GuestAddress(0x20_0000 + 0x1000 * i))
            .unwrap();
        bytes.extend_from_slice(&b);
    }
    let hdr = VirtioNetHdr::parse(&bytes).unwrap();
    assert_eq!(
        hdr,
        VirtioNetHdr {
            num_buffers: 3,
            ..tso_hdr()
        }
    );
    assert_eq!(&bytes[12..], &rx_frame[..]);
    wait_until("the RX call", || calls[RX].read().is_ok());
    drop(fe);
}

#[test]
fn frontend_negotiates_moves_packets_and_reconnects() {
    let (port, mut peer) = memory_port_pair(256, packet_ring::MAX_FRAME_LEN).unwrap();
    let backend = Arc::new(
        NetBackend::new(
            NetBackendConfig {
                mac: MAC,
                mtu: 1500,
                queue_size: QSIZE,
                batch: 32,
            },
            vec![Box::new(port)],
        )
        .unwrap(),
    );
    let socket = scratch_path("vhost.sock");
    let config = ServeConfig {
        socket: socket.clone(),
        role: Role::Server,
        max_connections: Some(2),
    };
    let server_backend = Arc::clone(&backend);
    let server = std::thread::spawn(move || {
        let stop = AtomicBool::new(false);
        serve(server_backend, &config, &stop)
    });
    wait_until("the socket", || socket.exists());

    session(&socket, &mut peer, 1, &backend);
    // The second frontend starts from scratch: fresh negotiation, fresh memory table.
    session(&socket, &mut peer, 2, &backend);

    server.join().unwrap().unwrap();
    let stats = backend.stats();
    assert_eq!(stats[0].tx_packets, 2);
    assert_eq!(stats[0].rx_packets, 2);
    assert_eq!(stats[0].tx_bytes, 6000);
    assert_eq!(stats[0].rx_bytes, 8000);
    assert!(stats[0].drops.values().all(|&n| n == 0), "{stats:?}");
    let _ = std::fs::remove_file(&socket);
}
