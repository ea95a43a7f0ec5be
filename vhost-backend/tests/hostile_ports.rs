//! Many ports in one process, as the agent serves them through `daemon::serve`: a hostile
//! frontend on one port (guest memory cut under its mapping, a flood it never reads, fds
//! that would block) must never cost the frontend of another port anything.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{guest_file, scratch_path, wait_until};
use packet_ring::memory_port_pair;
use test_support::frontend::{PROTO_MEM_SLOTS, PROTO_REPLY_ACK, RawFrontend, Region, raw, req};
use vhost_backend::NetBackend;
use vhost_backend::daemon::{Role, ServeConfig, Stop, serve};
use vmm_sys_util::eventfd::EventFd;

const MIB: u64 = 1 << 20;
const USER_ADDR: u64 = 0x7f00_0000_0000;

struct Port {
    backend: Arc<NetBackend>,
    socket: PathBuf,
    stop: Arc<Stop>,
    server: JoinHandle<()>,
    _peer: packet_ring::MemoryPeer,
}

fn port(tag: &str) -> Port {
    let (uplink, peer) = memory_port_pair(64, packet_ring::MAX_FRAME_LEN).unwrap();
    let backend =
        Arc::new(NetBackend::new(common::device_config(32), vec![Box::new(uplink)]).unwrap());
    let socket = scratch_path(&format!("ports-{tag}.sock"));
    let config = ServeConfig {
        socket: socket.clone(),
        role: Role::Server,
        max_connections: None,
    };
    let stop = Arc::new(Stop::default());
    let (b, s) = (Arc::clone(&backend), Arc::clone(&stop));
    let server = std::thread::spawn(move || serve(b, &config, &s).unwrap());
    wait_until("the port's socket", || socket.exists());
    Port {
        backend,
        socket,
        stop,
        server,
        _peer: peer,
    }
}

fn region() -> Region {
    Region {
        guest_addr: 0,
        size: MIB,
        user_addr: USER_ADDR,
        mmap_offset: 0,
    }
}

#[test]
fn a_hostile_frontend_on_one_port_costs_another_nothing() {
    let a = port("a");
    let b = port("b");
    // B: an honest frontend with its memory table, connected throughout.
    let b_file = guest_file("ports-b", MIB);
    let mut honest = RawFrontend::connect(&b.socket).unwrap();
    honest.negotiate(PROTO_REPLY_ACK | PROTO_MEM_SLOTS).unwrap();
    honest.set_mem_table(&[region()], &[raw(&b_file)]).unwrap();
    honest.get_u64(req::GET_FEATURES).unwrap();

    // A, attack 1: its guest memory file cut, then the handler touches the used ring.
    let a_file = guest_file("ports-a", MIB);
    let mut fe = RawFrontend::connect(&a.socket).unwrap();
    fe.negotiate(PROTO_REPLY_ACK | PROTO_MEM_SLOTS).unwrap();
    fe.set_mem_table(&[region()], &[raw(&a_file)]).unwrap();
    fe.get_u64(req::GET_FEATURES).unwrap();
    a_file.set_len(0).unwrap();
    let mut addr = 1u32.to_le_bytes().to_vec();
    addr.extend(0u32.to_le_bytes());
    for x in [USER_ADDR, USER_ADDR + 0x2000, USER_ADDR + 0x1000, 0] {
        addr.extend(x.to_le_bytes());
    }
    fe.request(
        req::SET_VRING_NUM,
        &[1u32.to_le_bytes(), 256u32.to_le_bytes()].concat(),
    )
    .unwrap();
    fe.request(req::SET_VRING_ADDR, &addr).unwrap();
    assert!(fe.closed_by_backend());
    let a_door = a.backend.front_door_stats().snapshot();
    assert_eq!(a_door.guest_memory_faults, 1, "{a_door:?}");

    // A, attack 2: a blocking eventfd at its maximum as a call fd, then a flood never read,
    // left open.
    let full = EventFd::new(0).unwrap();
    full.write(u64::MAX - 1).unwrap();
    let flood = RawFrontend::connect(&a.socket).unwrap();
    flood.request(req::SET_OWNER, &[]).unwrap();
    flood
        .set_vring_fd(req::SET_VRING_CALL, 0, full.as_raw_fd())
        .unwrap();
    flood.sock.set_nonblocking(true).unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until && flood.request(req::GET_FEATURES, &[]).is_ok() {}

    // B never noticed: its connection answers at once, nothing was refused or faulted there.
    let t = Instant::now();
    honest.get_u64(req::GET_FEATURES).unwrap();
    honest.get_u64(req::GET_PROTOCOL_FEATURES).unwrap();
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    let b_door = b.backend.front_door_stats().snapshot();
    assert_eq!(b_door.guest_memory_faults, 0, "{b_door:?}");
    assert_eq!(b_door.connections, 1, "{b_door:?}");
    assert_eq!(
        serde_json::to_value(b_door.refused).unwrap(),
        serde_json::to_value(
            vhost_backend::front_door::FrontDoorStats::default()
                .snapshot()
                .refused
        )
        .unwrap()
    );
    // And a new frontend on B is served while A's flood is still open.
    drop(honest);
    let mut next = RawFrontend::connect(&b.socket).unwrap();
    next.negotiate(PROTO_REPLY_ACK).unwrap();
    drop(next);

    // Both ports stop within a bound, A with its flood still connected.
    let t = Instant::now();
    for p in [a, b] {
        p.stop.request();
        p.server.join().unwrap();
        let _ = std::fs::remove_file(&p.socket);
    }
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    drop(flood);
}
