//! Hostile frontends against the real `knic-vhost` (issue 15): each class of attack that once
//! crashed, hung or starved it, played by a frontend that sends arbitrary messages and fds
//! (`test_support::frontend`). After every attack the same process must still serve an honest
//! frontend, count what it refused under its reason, and stop on SIGTERM within a bound.
//! Each test runs its own `knic-vhost` with a TAP uplink of its own: root.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::guest_file;
use common::knic_vhost::{Running, stats_path};
use common::wait_until;
use test_support::footprint;
use test_support::frontend::{
    FLAG_VERSION, PROTO_MEM_SLOTS, PROTO_REPLY_ACK, RawFrontend, Region, raw, req,
};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

/// Where the tests pretend the frontend mapped guest memory.
const USER_ADDR: u64 = 0x7f00_0000_0000;
const MIB: u64 = 1 << 20;
/// A clean stop must take well under the binary's own deadline (5 s).
const STOP_WITHIN: Duration = Duration::from_secs(3);

impl Running {
    fn frontend(&self) -> RawFrontend {
        RawFrontend::connect(&self.socket).unwrap()
    }

    /// The stats socket's `front_door` document.
    fn front_door(&self) -> serde_json::Value {
        let mut s = UnixStream::connect(stats_path(&self.socket)).unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        doc["front_door"].clone()
    }

    fn refused(&self, reason: &str) -> u64 {
        self.front_door()["refused"][reason].as_u64().unwrap()
    }

    /// An honest frontend still gets the whole negotiation answered.
    fn assert_serves(&mut self) {
        self.proc.assert_running();
        let mut fe = self.frontend();
        fe.negotiate(PROTO_REPLY_ACK | PROTO_MEM_SLOTS)
            .unwrap_or_else(|e| {
                panic!("an honest frontend is not served: {e}\n{}", self.log_text())
            });
    }

    /// SIGTERM ends the process, cleanly, within [`STOP_WITHIN`].
    fn assert_stops_in_time(mut self) {
        let started = Instant::now();
        let exited = self.proc.stop("-TERM", STOP_WITHIN);
        let log = self.log_text();
        assert!(exited, "no stop within {STOP_WITHIN:?} of SIGTERM:\n{log}");
        let status = self.proc.child.try_wait().unwrap().unwrap();
        assert!(status.success(), "exit {status}:\n{log}");
        assert!(log.contains("stopped cleanly"), "{log}");
        eprintln!("stopped {:?} after SIGTERM", started.elapsed());
        let _ = std::fs::remove_file(&self.log);
    }
}

/// One way of sending a hostile request on a negotiated connection.
type Attack<'a> = Box<dyn Fn(&RawFrontend) -> std::io::Result<()> + 'a>;

fn region(size: u64, mmap_offset: u64) -> Region {
    Region {
        guest_addr: 0,
        size,
        user_addr: USER_ADDR,
        mmap_offset,
    }
}

/// Issue 15, class 1 (first half): regions claiming more than their file holds, or backed by
/// something that is not a file, are refused before anything maps them, in SET_MEM_TABLE and
/// ADD_MEM_REG alike.
#[test]
fn memory_regions_beyond_their_file_are_refused_before_mapping() {
    let mut kv = Running::start("hregion");
    let file = guest_file("region", MIB);
    let attacks: [(&str, Attack<'_>); 4] = [
        (
            "region_beyond_file",
            Box::new(|fe| fe.set_mem_table(&[region(2 * MIB, 0)], &[raw(&file)])),
        ),
        (
            "region_beyond_file",
            Box::new(|fe| fe.set_mem_table(&[region(MIB, 4096)], &[raw(&file)])),
        ),
        (
            "region_beyond_file",
            Box::new(|fe| fe.add_mem_reg(&region(MIB + 4096, 0), raw(&file))),
        ),
        (
            "region_fd_not_file",
            Box::new(|fe| {
                let efd = EventFd::new(0).unwrap();
                fe.add_mem_reg(&region(4096, 0), efd.as_raw_fd())
            }),
        ),
    ];
    for (i, (reason, attack)) in attacks.iter().enumerate() {
        let before = kv.refused(reason);
        let mut fe = kv.frontend();
        fe.negotiate(PROTO_REPLY_ACK | PROTO_MEM_SLOTS).unwrap();
        attack(&fe).unwrap();
        assert!(fe.closed_by_backend(), "attack {i}: the connection stays");
        wait_until("the refusal to be counted", || {
            kv.refused(reason) == before + 1
        });
        kv.assert_serves();
    }
    // A region within its file is taken.
    let mut fe = kv.frontend();
    fe.negotiate(PROTO_REPLY_ACK | PROTO_MEM_SLOTS).unwrap();
    fe.set_mem_table(&[region(MIB, 0)], &[raw(&file)]).unwrap();
    assert!(fe.get_u64(req::GET_FEATURES).is_ok(), "{}", kv.log_text());
    drop(fe);
    assert!(kv.log_text().contains("claims bytes"), "{}", kv.log_text());
    kv.assert_stops_in_time();
}

/// Issue 15, class 1 (second half): a file shrunk after its table was accepted. The handler
/// itself touches the used ring at SET_VRING_ADDR; the SIGBUS is contained, that connection
/// alone is ended, and the process serves on.
#[test]
fn a_file_shrunk_under_its_mapping_costs_only_that_connection() {
    let mut kv = Running::start("hshrink");
    for round in 0..3u64 {
        let file = guest_file(&format!("shrink{round}"), MIB);
        let mut fe = kv.frontend();
        fe.negotiate(PROTO_REPLY_ACK | PROTO_MEM_SLOTS).unwrap();
        fe.set_mem_table(&[region(MIB, 0)], &[raw(&file)]).unwrap();
        fe.get_u64(req::GET_FEATURES).unwrap();
        file.set_len(0).unwrap();
        let ring = 1u32; // TX
        fe.request(
            req::SET_VRING_NUM,
            &[ring.to_le_bytes(), 256u32.to_le_bytes()].concat(),
        )
        .unwrap();
        fe.request(
            req::SET_VRING_BASE,
            &[ring.to_le_bytes(), 0u32.to_le_bytes()].concat(),
        )
        .unwrap();
        let mut addr = Vec::new();
        addr.extend(ring.to_le_bytes());
        addr.extend(0u32.to_le_bytes());
        for a in [USER_ADDR, USER_ADDR + 0x2000, USER_ADDR + 0x1000, 0] {
            addr.extend(a.to_le_bytes());
        }
        fe.request(req::SET_VRING_ADDR, &addr).unwrap();
        assert!(
            fe.closed_by_backend(),
            "the poisoned connection stays:\n{}",
            kv.log_text()
        );
        let d = kv.front_door();
        assert!(d["sigbus_contained"].as_u64().unwrap() > round, "{d}");
        assert_eq!(d["guest_memory_faults"].as_u64().unwrap(), round + 1, "{d}");
        kv.assert_serves();
    }
    assert!(
        kv.log_text().contains("fault contained"),
        "{}",
        kv.log_text()
    );
    kv.assert_stops_in_time();
}

/// Issue 15, class 2: kick/call fds that would block a thread. A pipe is refused as a kick
/// or call fd; a blocking eventfd with its counter at the maximum is accepted but made
/// non-blocking, so signalling it (which the device does as soon as a call fd is installed)
/// does not hang the handler; and the process still stops on SIGTERM.
#[test]
fn vring_fds_are_checked_and_can_never_block_a_thread() {
    let mut kv = Running::start("hvringfd");
    for request in [req::SET_VRING_KICK, req::SET_VRING_CALL] {
        let (reader, writer) = std::io::pipe().unwrap();
        for fd in [reader.as_raw_fd(), writer.as_raw_fd()] {
            let before = kv.refused("vring_fd_not_eventfd");
            let mut fe = kv.frontend();
            fe.negotiate(PROTO_REPLY_ACK).unwrap();
            fe.set_vring_fd(request, 0, fd).unwrap();
            assert!(fe.closed_by_backend(), "a pipe as fd of request {request}");
            wait_until("the refusal to be counted", || {
                kv.refused("vring_fd_not_eventfd") == before + 1
            });
        }
    }
    // A blocking eventfd one short of overflowing: a write of 1 would block forever.
    let full = EventFd::new(0).unwrap();
    full.write(u64::MAX - 1).unwrap();
    let mut fe = kv.frontend();
    fe.negotiate(PROTO_REPLY_ACK).unwrap();
    for ring in 0..2 {
        fe.set_vring_fd(req::SET_VRING_CALL, ring, full.as_raw_fd())
            .unwrap();
        fe.set_vring_fd(req::SET_VRING_KICK, ring, full.as_raw_fd())
            .unwrap();
    }
    // The handler answers at once: nothing blocked on the fds.
    let t = Instant::now();
    fe.get_u64(req::GET_FEATURES)
        .unwrap_or_else(|e| panic!("the handler is stuck: {e}\n{}", kv.log_text()));
    assert!(t.elapsed() < Duration::from_secs(2));
    drop(fe);
    kv.assert_serves();
    // With one such frontend still connected, SIGTERM ends everything in time.
    let mut fe = kv.frontend();
    fe.negotiate(PROTO_REPLY_ACK).unwrap();
    fe.set_vring_fd(req::SET_VRING_CALL, 0, full.as_raw_fd())
        .unwrap();
    fe.get_u64(req::GET_FEATURES).unwrap();
    kv.assert_stops_in_time();
}

/// Issue 15, class 3: a frontend that floods requests with replies and never reads one, then
/// closes, used to leave both relay threads blocked writing to each other for good. The door
/// must bound what it queues, notice the close, and serve the next frontend.
#[test]
fn a_flood_that_never_reads_replies_cannot_wedge_the_front_door() {
    let mut kv = Running::start("hflood");
    for _ in 0..2 {
        let fe = kv.frontend();
        fe.request(req::SET_OWNER, &[]).unwrap();
        fe.sock.set_nonblocking(true).unwrap();
        let mut sent = 0usize;
        let deadline = Instant::now() + Duration::from_secs(5);
        // Until our socket is full: the door has stopped reading (its queues are bounded).
        while Instant::now() < deadline {
            match fe.request(req::GET_FEATURES, &[]) {
                Ok(()) => sent += 1,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("after {sent} requests: {e}"),
            }
        }
        assert!(
            Instant::now() < deadline,
            "the door took every request ({sent})"
        );
        let rss = footprint(kv.proc.child.id()).rss_kib;
        assert!(
            rss < 64 * 1024,
            "{rss} KiB resident after a flood of {sent}"
        );
        drop(fe);
        kv.assert_serves();
    }
    // A flood still in progress when SIGTERM comes.
    let fe = kv.frontend();
    fe.sock.set_nonblocking(true).unwrap();
    while fe.request(req::GET_FEATURES, &[]).is_ok() {}
    kv.assert_stops_in_time();
    drop(fe);
}

/// Issue 15, class 3: everything else a frontend can make the door hold is bounded and
/// counted: early SET_VRING_ENABLEs, fds on requests that take none, more fds than any
/// request carries, oversized payloads, replies posing as requests.
#[test]
fn what_a_frontend_can_make_the_door_hold_is_bounded_and_counted() {
    let mut kv = Running::start("hbounds");
    let efd = EventFd::new(EFD_NONBLOCK).unwrap();
    let many: Vec<i32> = (0..12).map(|_| efd.as_raw_fd()).collect();
    // Each attack may find the connection cut half-way: its own send errors do not matter.
    let cases: [(&str, Attack<'_>); 5] = [
        (
            "too_many_held",
            Box::new(|fe| {
                // No ack asked: the acks would fill the socket of a frontend not reading.
                let enable = [0u32.to_le_bytes(), 1u32.to_le_bytes()].concat();
                (0..200)
                    .try_for_each(|_| fe.send(req::SET_VRING_ENABLE, FLAG_VERSION, &enable, &[]))
            }),
        ),
        (
            "unexpected_fds",
            Box::new(|fe| fe.send(req::GET_FEATURES, FLAG_VERSION, &[], &[efd.as_raw_fd()])),
        ),
        (
            "too_many_fds",
            Box::new(|fe| fe.send(req::SET_MEM_TABLE, FLAG_VERSION, &[0; 8], &many)),
        ),
        (
            "payload_too_large",
            Box::new(|fe| fe.send(req::SET_FEATURES, FLAG_VERSION, &vec![0; 1 << 16], &[])),
        ),
        (
            "bad_header",
            Box::new(|fe| fe.send(req::GET_FEATURES, FLAG_VERSION | 0x4, &[], &[])),
        ),
    ];
    for (reason, attack) in &cases {
        let before = kv.refused(reason);
        let mut fe = kv.frontend();
        fe.request(req::SET_OWNER, &[]).unwrap();
        let _ = attack(&fe);
        assert!(fe.closed_by_backend(), "{reason}: the connection stays");
        wait_until(&format!("{reason} to be counted"), || {
            kv.refused(reason) == before + 1
        });
        kv.assert_serves();
    }
    // The slot count a frontend is told matches what the door accepts.
    let mut fe = kv.frontend();
    fe.negotiate(PROTO_REPLY_ACK | PROTO_MEM_SLOTS).unwrap();
    assert_eq!(fe.get_u64(req::GET_MAX_MEM_SLOTS).unwrap(), 64);
    drop(fe);
    kv.assert_stops_in_time();
}

/// Issue 15, class 3: the handler's socket used to be a named path another local process
/// could connect to and take over. Now no name of it exists while a frontend is served.
#[test]
fn the_request_handler_cannot_be_reached_by_any_name() {
    let mut kv = Running::start("hreach");
    let mut fe = kv.frontend();
    fe.negotiate(PROTO_REPLY_ACK).unwrap();
    let pid = kv.proc.child.id();
    let dir = kv.socket.parent().unwrap().to_path_buf();
    let ours =
        |name: &str| name.starts_with(&format!(".knic-{pid}-")) || name.contains("knic-internal");
    let listed: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| ours(n))
        .collect();
    assert!(
        listed.is_empty(),
        "handler socket names in {}: {listed:?}",
        dir.display()
    );
    // Nor does any listening socket carry such a name, even unlinked (/proc/net/unix lists
    // those too; the handler's accepted end keeps the listener's name as a label, but
    // nothing can connect to an accepted socket). Columns: Num RefCount Protocol Flags Type
    // St Inode Path; St 01 is listening.
    let unix = std::fs::read_to_string("/proc/net/unix").unwrap();
    let bound: Vec<&str> = unix
        .lines()
        .filter(|l| l.contains(&format!(".knic-{pid}-")) || l.contains("knic-internal"))
        .filter(|l| l.split_whitespace().nth(5) == Some("01"))
        .collect();
    assert!(bound.is_empty(), "{bound:?}");
    fe.get_u64(req::GET_FEATURES).unwrap();
    drop(fe);
    kv.assert_serves();
    kv.assert_stops_in_time();
}

/// Issue 15, class 4: every connection used to leak the framework's two exit eventfds, so a
/// frontend reconnecting a few hundred times exhausted the fd limit. 1,000 connect /
/// negotiate / memory table / disconnect cycles now leave the fd count and the thread count
/// exactly as they were and resident memory flat.
#[test]
fn a_thousand_reconnects_leave_fds_threads_and_memory_flat() {
    let mut kv = Running::start("hcycles");
    let pid = kv.proc.child.id();
    let file = guest_file("cycles", MIB);
    let cycle = |kv: &Running| {
        let mut fe = kv.frontend();
        fe.negotiate(PROTO_REPLY_ACK | PROTO_MEM_SLOTS).unwrap();
        fe.set_mem_table(&[region(MIB, 0)], &[raw(&file)]).unwrap();
        let call = EventFd::new(EFD_NONBLOCK).unwrap();
        fe.set_vring_fd(req::SET_VRING_CALL, 0, call.as_raw_fd())
            .unwrap();
        fe.get_u64(req::GET_FEATURES).unwrap();
        fe
    };
    // Warm up (allocator pools, the stats thread's first reply), then measure with a
    // frontend connected, at the same point of a cycle as at the end.
    for _ in 0..20 {
        drop(cycle(&kv));
    }
    let fe = cycle(&kv);
    let start = footprint(pid);
    drop(fe);
    let t = Instant::now();
    for i in 0..1000 {
        let fe = cycle(&kv);
        if i == 999 {
            let end = footprint(pid);
            eprintln!(
                "start {start:?}, end {end:?}, 1000 cycles in {:?}",
                t.elapsed()
            );
            assert_eq!(end.fds, start.fds, "fds");
            assert_eq!(end.threads, start.threads, "threads");
            assert!(
                end.rss_kib <= start.rss_kib + 4096,
                "resident memory grew from {} to {} KiB",
                start.rss_kib,
                end.rss_kib
            );
        }
        drop(fe);
    }
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    let reclaimed = kv.front_door()["leaked_fds_reclaimed"].as_u64().unwrap();
    assert!(reclaimed >= 2 * 1000, "{reclaimed} framework fds reclaimed");
    kv.assert_serves();
    kv.assert_stops_in_time();
    let _ = std::io::stderr().flush();
}
