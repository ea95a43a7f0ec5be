//! A hostile guest on a vhost-user port, played by the raw frontend
//! (`test_support::frontend`): it negotiates honestly, shares a small guest memory, starts
//! queue pair 0 and then posts TX chains of the shapes a driver must never post, one per
//! drop reason of the engine's catalogue. The port must return each chain with used length
//! 0 and count it under its reason; nothing else in the process may notice.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::agent::KnicAgent;
use test_support::frontend::{
    PROTO_MEM_SLOTS, PROTO_REPLY_ACK, PROTOCOL_FEATURES, RawFrontend, Region, raw, req,
};

/// VIRTIO_F_VERSION_1 (virtio 1.x §6): the 12-byte virtio-net header.
const VERSION_1: u64 = 1 << 32;
/// The guest memory the frontend shares.
const MEM_SIZE: u64 = 1 << 20;
/// Where the frontend pretends it mapped that memory (SET_VRING_ADDR takes its addresses).
const USER_ADDR: u64 = 0x7f00_0000_0000;
/// Ring size of both rings.
const QUEUE_SIZE: u32 = 8;
/// Split-ring layout (virtio 1.x §2.7): descriptor table, avail ring, used ring, for the RX
/// ring (index 0) and the TX ring (index 1), then frame buffers.
const RX_RING: u64 = 0x0000;
const TX_RING: u64 = 0x4000;
const AVAIL_OFFSET: u64 = 0x1000;
const USED_OFFSET: u64 = 0x2000;
const BUFFERS: u64 = 0x8000;
/// Descriptor flags (§2.7.5).
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
/// The virtio-net header with VERSION_1 (§5.1.6).
const NET_HDR_LEN: u32 = 12;
/// A length of a plausible frame: an Ethernet header and some payload.
const FRAME: u32 = NET_HDR_LEN + 60;

/// One bad TX chain: the descriptors it occupies (`(index, addr, len, flags, next)`), the
/// avail ring entry that names it, and the drop reason it must be counted under.
struct Shape {
    descriptors: &'static [(u16, u64, u32, u16, u16)],
    head: u16,
    reason: &'static str,
}

/// The catalogue: each shape is a chain the engine must refuse, and the counter that
/// says why.
const SHAPES: [Shape; 6] = [
    // A buffer beyond the end of guest memory.
    Shape {
        descriptors: &[(0, MEM_SIZE * 16, FRAME, 0, 0)],
        head: 0,
        reason: "tx_bad_address",
    },
    // A device-writable buffer in a chain the device should only read.
    Shape {
        descriptors: &[(1, BUFFERS, FRAME, F_WRITE, 0)],
        head: 1,
        reason: "tx_write_only_descriptor",
    },
    // Shorter than the virtio-net header.
    Shape {
        descriptors: &[(2, BUFFERS, 4, 0, 0)],
        head: 2,
        reason: "tx_malformed_header",
    },
    // A descriptor that names itself as its successor: a loop.
    Shape {
        descriptors: &[(3, BUFFERS, FRAME, F_NEXT, 3)],
        head: 3,
        reason: "tx_chain_truncated",
    },
    // An avail entry naming no descriptor of the ring.
    Shape {
        descriptors: &[],
        head: 200,
        reason: "tx_empty_chain",
    },
    // A header and 5 bytes: no Ethernet header.
    Shape {
        descriptors: &[(5, BUFFERS, NET_HDR_LEN + 5, 0, 0)],
        head: 5,
        reason: "tx_runt_frame",
    },
];

/// The drop reasons the catalogue must leave counted on the port, once each.
pub fn expected_drops() -> Vec<&'static str> {
    SHAPES.iter().map(|s| s.reason).collect()
}

/// Guest memory as a regular file with no name (as a memfd is): both sides map it shared.
fn guest_memory(tag: &str) -> io::Result<File> {
    let path = std::env::temp_dir().join(format!("knic-hostile-{}-{tag}", std::process::id()));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    file.set_len(MEM_SIZE)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

/// A connected frontend with queue pair 0 running; memory and eventfds kept alive.
#[derive(Debug)]
pub struct HostileGuest {
    pub frontend: RawFrontend,
    memory: File,
    _call: [EventFd; 2],
    kick: [EventFd; 2],
}

fn le32(v: u32) -> [u8; 4] {
    v.to_le_bytes()
}

impl HostileGuest {
    /// Connects to `socket`, negotiates VERSION_1 and the protocol features, shares its
    /// memory and starts both rings of queue pair 0, empty.
    pub fn attach(socket: &Path, tag: &str) -> io::Result<Self> {
        let mut fe = RawFrontend::connect(socket)?;
        fe.request(req::SET_OWNER, &[])?;
        let offered = fe.get_u64(req::GET_FEATURES)?;
        let features = offered & (VERSION_1 | PROTOCOL_FEATURES);
        fe.request(req::SET_FEATURES, &features.to_le_bytes())?;
        let proto = fe.get_u64(req::GET_PROTOCOL_FEATURES)?;
        fe.request(
            req::SET_PROTOCOL_FEATURES,
            &(proto & !(PROTO_REPLY_ACK | PROTO_MEM_SLOTS)).to_le_bytes(),
        )?;
        let memory = guest_memory(tag)?;
        fe.set_mem_table(
            &[Region {
                guest_addr: 0,
                size: MEM_SIZE,
                user_addr: USER_ADDR,
                mmap_offset: 0,
            }],
            &[raw(&memory)],
        )?;
        let call = [EventFd::new(EFD_NONBLOCK)?, EventFd::new(EFD_NONBLOCK)?];
        let kick = [EventFd::new(EFD_NONBLOCK)?, EventFd::new(EFD_NONBLOCK)?];
        for (index, base) in [(0u32, RX_RING), (1, TX_RING)] {
            fe.request(
                req::SET_VRING_NUM,
                &[le32(index), le32(QUEUE_SIZE)].concat(),
            )?;
            let mut addr = [le32(index), le32(0)].concat();
            // Descriptor table, used ring, avail ring, log (unused without LOG_ALL).
            for a in [base, base + USED_OFFSET, base + AVAIL_OFFSET] {
                addr.extend((USER_ADDR + a).to_le_bytes());
            }
            addr.extend(0u64.to_le_bytes());
            fe.request(req::SET_VRING_ADDR, &addr)?;
            fe.request(req::SET_VRING_BASE, &[le32(index), le32(0)].concat())?;
            fe.set_vring_fd(
                req::SET_VRING_CALL,
                index.into(),
                raw(&call[index as usize]),
            )?;
            fe.set_vring_fd(
                req::SET_VRING_KICK,
                index.into(),
                raw(&kick[index as usize]),
            )?;
            fe.request(req::SET_VRING_ENABLE, &[le32(index), le32(1)].concat())?;
        }
        // A round trip: everything before it has been handled.
        fe.get_u64(req::GET_FEATURES)?;
        Ok(Self {
            frontend: fe,
            memory,
            _call: call,
            kick,
        })
    }

    /// Posts every shape of the catalogue on the TX ring and kicks it once.
    pub fn post_bad_chains(&self) -> io::Result<()> {
        let mut heads = Vec::new();
        for shape in &SHAPES {
            for &(i, addr, len, flags, next) in shape.descriptors {
                let mut d = addr.to_le_bytes().to_vec();
                d.extend(len.to_le_bytes());
                d.extend(flags.to_le_bytes());
                d.extend(next.to_le_bytes());
                self.memory.write_all_at(&d, TX_RING + 16 * u64::from(i))?;
            }
            heads.push(shape.head);
        }
        let avail = TX_RING + AVAIL_OFFSET;
        for (slot, head) in heads.iter().enumerate() {
            self.memory
                .write_all_at(&head.to_le_bytes(), avail + 4 + 2 * slot as u64)?;
        }
        // flags 0, then idx: the driver publishes the entries.
        let idx = u16::try_from(heads.len()).map_err(io::Error::other)?;
        self.memory.write_all_at(&0u16.to_le_bytes(), avail)?;
        self.memory.write_all_at(&idx.to_le_bytes(), avail + 2)?;
        self.kick[1].write(1)
    }

    /// The TX used ring's index: how many chains the port has returned.
    pub fn tx_used(&self) -> io::Result<u16> {
        let mut b = [0u8; 2];
        self.memory
            .read_exact_at(&mut b, TX_RING + USED_OFFSET + 2)?;
        Ok(u16::from_le_bytes(b))
    }

    /// The used length of every returned chain (each must be 0: nothing was read as a
    /// frame).
    pub fn tx_used_lengths(&self) -> io::Result<Vec<u32>> {
        let n = self.tx_used()?;
        let mut out = Vec::new();
        for slot in 0..u64::from(n.min(QUEUE_SIZE as u16)) {
            let mut b = [0u8; 4];
            self.memory
                .read_exact_at(&mut b, TX_RING + USED_OFFSET + 4 + 8 * slot + 4)?;
            out.push(u32::from_le_bytes(b));
        }
        Ok(out)
    }
}

/// Attaches a hostile guest to the agent's port `port`, posts the catalogue and asserts
/// the port returned every chain unread and counted each under its reason, and that the
/// agent still runs. Returns the port's drop counters.
pub fn attack_port(agent: &mut KnicAgent, port: &str, socket: &Path) -> serde_json::Value {
    let counted = |agent: &KnicAgent, reason: &str| {
        agent.port_stats(port)["vhost"][0]["drops"][reason]
            .as_u64()
            .unwrap_or(0)
    };
    let before: Vec<u64> = expected_drops().iter().map(|r| counted(agent, r)).collect();
    // The catalogue is TX chains, so only TX reasons are summed: the guest never fills its
    // RX ring, and a frame the stack sends it meanwhile (an IPv6 router solicitation, a
    // broadcast from a neighbour) is rightly counted as `rx_ring_disabled`.
    let total = |drops: &serde_json::Value| -> u64 {
        drops
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(reason, _)| reason.starts_with("tx_"))
                    .filter_map(|(_, n)| n.as_u64())
                    .sum()
            })
            .unwrap_or(0)
    };
    let total_before = total(&agent.port_stats(port)["vhost"][0]["drops"]);
    let guest = HostileGuest::attach(socket, port).unwrap_or_else(|e| {
        panic!(
            "the hostile frontend's negotiation on {port}: {e}\n{}",
            agent.log_text()
        )
    });
    agent.wait_guest(port, true, Duration::from_secs(20));
    guest
        .post_bad_chains()
        .unwrap_or_else(|e| panic!("post the bad chains: {e}"));
    // A chain with no descriptor cannot be returned (there is no id to name); every other
    // one comes back.
    let returnable = SHAPES.iter().filter(|s| !s.descriptors.is_empty()).count();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while guest.tx_used().ok().map(usize::from) != Some(returnable) {
        if std::time::Instant::now() > deadline {
            let log = agent.log_text();
            panic!(
                "{port} returned {:?} of the {returnable} bad chains: {}\nagent log (end):\n{}",
                guest.tx_used(),
                agent.port_stats(port),
                &log[log.len().saturating_sub(4000)..]
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let lengths = guest
        .tx_used_lengths()
        .unwrap_or_else(|e| panic!("read the used ring: {e}"));
    assert!(
        lengths.iter().all(|l| *l == 0),
        "{port}: a bad chain was returned as read: {lengths:?}"
    );
    agent.proc.assert_running();
    let drops = agent.port_stats(port)["vhost"][0]["drops"].clone();
    for (reason, before) in expected_drops().into_iter().zip(before) {
        assert_eq!(
            drops[reason].as_u64(),
            Some(before + 1),
            "{port}: {reason} not counted once: {drops}"
        );
    }
    assert_eq!(
        total(&drops) - total_before,
        SHAPES.len() as u64,
        "{port}: TX drops beyond the catalogue: {drops}"
    );
    drop(guest);
    drops
}
