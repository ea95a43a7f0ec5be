//! Drives the device through a real vhost-user frontend (the `vhost` crate's `Frontend`) over
//! a unix socket: negotiation in DPDK's message order (SET_VRING_CALL before SET_FEATURES and
//! SET_MEM_TABLE), a file-backed shared memory table, kicks and calls, packets both ways
//! through an in-memory uplink, then a disconnect and a second frontend on the same socket
//! that adds its memory with ADD_MEM_REG (CONFIGURE_MEM_SLOTS).

// Test helpers outside #[test] functions: a failed setup step must fail the test loudly.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    GuestQueue, MAC, QSIZE, RX, TIMEOUT, TX, frame, scratch_path, shared_memory, tso_hdr,
    wait_until,
};

use packet_ring::{MemoryPeer, VirtioNetHdr, memory_port_pair};
use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserProtocolFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo};
use vhost_backend::NetBackend;
use vhost_backend::daemon::{Role, ServeConfig, Stop, serve};
use vhost_backend::features::OFFERED_FEATURES;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

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
    // The second frontend hands memory over region by region (CONFIGURE_MEM_SLOTS).
    let mem_slots = round == 2;
    let mut acked = VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::CONFIG;
    if mem_slots {
        acked |= VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS;
    }
    fe.set_protocol_features(acked).unwrap();
    // RX + TX + the control queue (this frontend acks CTRL_VQ, so it would be used).
    assert_eq!(fe.get_queue_num().unwrap(), 3);
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
    if mem_slots {
        assert!(fe.get_max_mem_slots().unwrap() >= 8);
        fe.add_mem_region(&info).unwrap();
    } else {
        fe.set_mem_table(&[info]).unwrap();
    }

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
    let backend =
        Arc::new(NetBackend::new(common::device_config(32), vec![Box::new(port)]).unwrap());
    let socket = scratch_path("vhost.sock");
    let config = ServeConfig {
        socket: socket.clone(),
        role: Role::Server,
        max_connections: Some(2),
    };
    let server_backend = Arc::clone(&backend);
    let server = std::thread::spawn(move || {
        let stop = Stop::default();
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
