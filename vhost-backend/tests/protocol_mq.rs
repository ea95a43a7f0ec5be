//! Multi-queue and connection-role behaviour through a real vhost-user frontend:
//! two queue pairs with one uplink each and one named worker each; the backend learns the
//! active pairs from SET_VRING_ENABLE and processes-and-discards TX on a started but disabled
//! ring; RESET_DEVICE; and client mode, which dials a listening frontend, retrying until it
//! appears, and redials after a disconnect.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::time::Duration;

use common::{GuestQueue, QSIZE, frame, scratch_path, shared_memory, wait_until};
use packet_ring::{MemoryPeer, VirtioNetHdr, memory_port_pair};
use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserProtocolFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo};
use vhost_backend::daemon::{Role, ServeConfig, Stop, serve};
use vhost_backend::features::{CTRL_FEATURES, OFFERED_FEATURES};

/// What QEMU acks: everything but the control-queue features, which it emulates itself.
const QEMU_LIKE: u64 = OFFERED_FEATURES & !CTRL_FEATURES;
use vhost_backend::NetBackend;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

fn backend(pairs: usize) -> (Arc<NetBackend>, Vec<MemoryPeer>) {
    let mut ports: Vec<Box<dyn packet_ring::PacketPort>> = Vec::new();
    let mut peers = Vec::new();
    for _ in 0..pairs {
        let (port, peer) = memory_port_pair(64, packet_ring::MAX_FRAME_LEN).unwrap();
        ports.push(Box::new(port));
        peers.push(peer);
    }
    let b = NetBackend::new(common::device_config(16), ports).unwrap();
    (Arc::new(b), peers)
}

/// A negotiated frontend with every ring set up (none enabled yet).
struct Session {
    fe: Frontend,
    mem: GuestMemoryMmap,
    queues: Vec<GuestQueue>,
    kicks: Vec<EventFd>,
    _calls: Vec<EventFd>,
}

impl Session {
    /// Negotiates `features` and sets up queues `0..nqueues` (the control queue is
    /// `2 * pairs`, so `nqueues = 2 * pairs + 1` includes it).
    fn negotiate(mut fe: Frontend, pairs: usize, nqueues: usize, tag: &str, features: u64) -> Self {
        let mem = shared_memory(tag);
        fe.set_owner().unwrap();
        assert_eq!(fe.get_features().unwrap(), OFFERED_FEATURES);
        fe.set_features(features).unwrap();
        fe.set_protocol_features(
            VhostUserProtocolFeatures::MQ
                | VhostUserProtocolFeatures::REPLY_ACK
                | VhostUserProtocolFeatures::CONFIG
                | VhostUserProtocolFeatures::RESET_DEVICE,
        )
        .unwrap();
        assert_eq!(fe.get_queue_num().unwrap(), 2 * pairs as u64 + 1);
        let (_, cfg) = fe
            .get_config(0, 12, VhostUserConfigFlags::empty(), &[0u8; 12])
            .unwrap();
        assert_eq!(
            usize::from(u16::from_le_bytes([cfg[8], cfg[9]])),
            pairs,
            "max_virtqueue_pairs"
        );
        let region = mem.iter().next().unwrap();
        fe.set_mem_table(&[VhostUserMemoryRegionInfo::from_guest_region(region).unwrap()])
            .unwrap();
        let mut queues = Vec::new();
        let mut kicks = Vec::new();
        let mut calls = Vec::new();
        for q in 0..nqueues {
            let gq = GuestQueue::at(0x1_0000 * (q as u64 + 1));
            let kick = EventFd::new(EFD_NONBLOCK).unwrap();
            let call = EventFd::new(EFD_NONBLOCK).unwrap();
            fe.set_vring_num(q, QSIZE).unwrap();
            fe.set_vring_addr(q, &gq.config(&mem)).unwrap();
            fe.set_vring_base(q, 0).unwrap();
            fe.set_vring_call(q, &call).unwrap();
            fe.set_vring_kick(q, &kick).unwrap();
            queues.push(gq);
            kicks.push(kick);
            calls.push(call);
        }
        Self {
            fe,
            mem,
            queues,
            kicks,
            _calls: calls,
        }
    }

    /// Waits until the backend has applied every message sent so far.
    fn barrier(&mut self) {
        self.fe.get_features().unwrap();
    }

    fn enable_pair(&mut self, pair: usize, on: bool) {
        self.fe.set_vring_enable(2 * pair, on).unwrap();
        self.fe.set_vring_enable(2 * pair + 1, on).unwrap();
        self.barrier();
    }

    /// Publishes one plain frame on pair `pair`'s TX ring and kicks it.
    fn transmit(&mut self, pair: usize, f: &[u8]) {
        self.post(pair, f);
        self.kicks[2 * pair + 1].write(1).unwrap();
    }

    /// Publishes one plain frame on pair `pair`'s TX ring without kicking.
    fn post(&mut self, pair: usize, f: &[u8]) {
        let q = 2 * pair + 1;
        let at = 0x20_0000 + 0x1_0000 * q as u64;
        self.mem
            .write_slice(&VirtioNetHdr::default().to_bytes(), GuestAddress(at))
            .unwrap();
        self.mem.write_slice(f, GuestAddress(at + 12)).unwrap();
        self.queues[q].add_chain(&self.mem, &[(at, 12 + f.len() as u32, false)]);
    }
}

fn received(peer: &mut MemoryPeer) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    peer.recv_with(usize::MAX, |p| out.push(p.frame().to_vec()));
    out
}

fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|s| s.trim().to_string())
        .collect()
}

/// Serves one frontend on `socket` from a background thread, once the socket exists.
fn serve_once(
    backend: &Arc<NetBackend>,
    socket: &std::path::Path,
) -> std::thread::JoinHandle<Result<(), vhost_backend::daemon::DaemonError>> {
    let config = ServeConfig {
        socket: socket.to_path_buf(),
        role: Role::Server,
        max_connections: Some(1),
    };
    let b = Arc::clone(backend);
    let server = std::thread::spawn(move || serve(b, &config, &Stop::default()));
    wait_until("the socket", || socket.exists());
    server
}

#[test]
fn two_queue_pairs_follow_set_vring_enable() {
    let (backend, mut peers) = backend(2);
    let socket = scratch_path("mq.sock");
    let server = serve_once(&backend, &socket);

    // Like QEMU: the control queue stays with the frontend.
    let mut s = Session::negotiate(
        Frontend::connect(&socket, 5).unwrap(),
        2,
        4,
        "mq",
        QEMU_LIKE,
    );
    s.enable_pair(0, true);

    // Pair 1 is started but disabled: its TX is processed and discarded on the guest's kick,
    // never forwarded; what its uplink receives is dropped.
    s.transmit(1, &frame(100, 1));
    wait_until("the disabled TX ring to be drained on its kick", || {
        s.queues[3].used_idx(&s.mem) == 1
    });
    assert_eq!(s.queues[3].used_elem(&s.mem, 0), (0, 0));
    assert!(
        peers[1]
            .send(VirtioNetHdr::default(), &frame(60, 9))
            .unwrap()
    );
    wait_until("the disabled RX ring's packet to be dropped", || {
        backend.stats()[1].drops["rx_ring_disabled"] == 1
    });
    let st = backend.stats();
    assert_eq!(st[1].drops["tx_ring_disabled"], 1, "{st:?}");
    assert!(received(&mut peers[1]).is_empty());

    // Pair 0 forwards to its own uplink.
    s.transmit(0, &frame(200, 2));
    wait_until("pair 0's packet", || st_tx(&backend, 0) == 1);
    assert_eq!(received(&mut peers[0]), vec![frame(200, 2)]);

    // Enabling pair 1 makes it forward to uplink 1, not uplink 0.
    s.enable_pair(1, true);
    s.transmit(1, &frame(300, 3));
    wait_until("pair 1's packet", || st_tx(&backend, 1) == 2);
    assert_eq!(received(&mut peers[1]), vec![frame(300, 3)]);
    assert!(received(&mut peers[0]).is_empty());

    // Disabling applies at once: a chain posted without a kick is discarded when its ring is
    // disabled, without waiting for another event.
    s.post(1, &frame(310, 4));
    s.fe.set_vring_enable(3, false).unwrap();
    wait_until(
        "the chain on the just-disabled ring to be discarded",
        || backend.stats()[1].drops["tx_ring_disabled"] == 2,
    );
    assert!(received(&mut peers[1]).is_empty());
    s.enable_pair(1, true);
    s.transmit(1, &frame(320, 5));
    wait_until("pair 1's packet after re-enabling", || {
        st_tx(&backend, 1) == 4
    });
    assert_eq!(received(&mut peers[1]), vec![frame(320, 5)]);

    let names = thread_names();
    for want in ["knic-qp0", "knic-qp1"] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }

    // RESET_DEVICE: rings stop; the device forgets the negotiation.
    s.fe.reset_device().unwrap();
    s.barrier();
    s.transmit(0, &frame(400, 4));
    std::thread::sleep(Duration::from_millis(100));
    assert!(received(&mut peers[0]).is_empty());

    drop(s);
    server.join().unwrap().unwrap();
    let _ = std::fs::remove_file(&socket);
}

fn st_tx(b: &NetBackend, pair: usize) -> u64 {
    b.stats()[pair].tx_packets
}

#[test]
fn client_mode_dials_retries_and_redials() {
    let (backend, mut peers) = backend(1);
    let socket = scratch_path("client.sock");
    let _ = std::fs::remove_file(&socket);
    let config = ServeConfig {
        socket: socket.clone(),
        role: Role::Client {
            retry: Duration::from_millis(20),
        },
        max_connections: Some(2),
    };
    let b = Arc::clone(&backend);
    // The backend starts first and must keep retrying until the frontend listens.
    let client = std::thread::spawn(move || serve(b, &config, &Stop::default()));
    std::thread::sleep(Duration::from_millis(100));
    let listener = UnixListener::bind(&socket).unwrap();

    for round in 0..2u8 {
        let (stream, _) = listener.accept().unwrap();
        let mut s = Session::negotiate(
            Frontend::from_stream(stream, 3),
            1,
            2,
            &format!("cl{round}"),
            QEMU_LIKE,
        );
        s.enable_pair(0, true);
        s.transmit(0, &frame(80, round));
        wait_until("the packet", || {
            backend.stats()[0].tx_packets == u64::from(round) + 1
        });
        assert_eq!(received(&mut peers[0]), vec![frame(80, round)]);
        // Dropping the session disconnects; the backend redials.
    }
    client.join().unwrap().unwrap();
    let _ = std::fs::remove_file(&socket);
}

impl Session {
    /// Sends one control command (class, command, data) on control queue `q` and returns
    /// the device's status byte.
    fn control(&mut self, q: usize, cmd: &[u8]) -> u8 {
        let at = 0x30_0000;
        let status = at + 0x100;
        self.mem.write_slice(cmd, GuestAddress(at)).unwrap();
        self.mem.write_obj(0xffu8, GuestAddress(status)).unwrap();
        let used = self.queues[q].used_idx(&self.mem);
        self.queues[q].add_chain(
            &self.mem,
            &[(at, cmd.len() as u32, false), (status, 1, true)],
        );
        self.kicks[q].write(1).unwrap();
        wait_until("the control command's answer", || {
            self.queues[q].used_idx(&self.mem) == used.wrapping_add(1)
        });
        self.mem.read_obj(GuestAddress(status)).unwrap()
    }
}

#[test]
fn passed_through_control_queue_sets_active_pairs() {
    let (backend, mut peers) = backend(2);
    let socket = scratch_path("ctrl.sock");
    let server = serve_once(&backend, &socket);

    // This frontend acks CTRL_VQ and sets up queue 4, the control queue.
    let mut s = Session::negotiate(
        Frontend::connect(&socket, 5).unwrap(),
        2,
        5,
        "ctrl",
        OFFERED_FEATURES,
    );
    s.enable_pair(0, true);
    s.enable_pair(1, true);
    s.fe.set_vring_enable(4, true).unwrap();
    s.barrier();

    // Until VQ_PAIRS_SET only the first pair carries traffic.
    assert_eq!(backend.control_state().1, 1);
    s.transmit(1, &frame(100, 1));
    wait_until("pair 1's TX to be discarded", || {
        backend.stats()[1].drops["tx_ring_disabled"] == 1
    });
    assert!(received(&mut peers[1]).is_empty());

    // VIRTIO_NET_CTRL_MQ / VQ_PAIRS_SET 2: acknowledged, and pair 1 forwards.
    assert_eq!(s.control(4, &[4, 0, 2, 0]), 0);
    assert_eq!(backend.control_state().1, 2);
    s.transmit(1, &frame(120, 2));
    wait_until("pair 1's packet", || st_tx(&backend, 1) == 2);
    assert_eq!(received(&mut peers[1]), vec![frame(120, 2)]);

    // Out of range and unknown commands are refused; MAC_ADDR_SET is recorded.
    assert_eq!(s.control(4, &[4, 0, 3, 0]), 1);
    assert_eq!(s.control(4, &[9, 9]), 1);
    assert_eq!(s.control(4, &[1, 1, 2, 0, 0, 0, 0, 7]), 0);
    let (ctrl, active) = backend.control_state();
    assert_eq!(active, 2);
    assert_eq!(ctrl.mac, Some([2, 0, 0, 0, 0, 7]));
    assert_eq!((ctrl.commands, ctrl.rejected), (4, 2));
    assert!(thread_names().iter().any(|n| n == "knic-ctrl"));

    drop(s);
    server.join().unwrap().unwrap();
    let _ = std::fs::remove_file(&socket);
}
