//! The vhost-user front door as a frontend meets it: messages (any code, flags, size and
//! payload, memory tables included), real file descriptors of every kind (eventfds, files of
//! any size, pipes, sockets) attached to them, and replies from the handler's side, all from
//! the input. The front door runs until the connection ends; any panic, hang (the runner's
//! timeout) or fd it keeps after returning is a finding.
//!
//! Input layout: byte 0 is how many bytes follow for the handler's replies (written raw to
//! the handler's end); then messages, each: request (1 byte, folded into the codes that
//! exist, or raw u32 when 0xff, 4 more bytes), flags (1 byte), payload length (2 bytes, may
//! lie), fd count (1 byte, mod 10) and one byte per fd (its kind, and a file's size in pages
//! from the next byte), then the payload.
#![no_main]

use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vhost_backend::front_door::{End, FrontDoorStats, Watch};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

/// Gives up on a run after this long (a real hang shows as the runner's timeout instead).
struct Deadline(Instant);

impl Watch for Deadline {
    fn stop_requested(&self) -> bool {
        Instant::now() > self.0
    }

    fn memory_poisoned(&self) -> bool {
        false
    }
}

fn fd_of_kind(kind: u8, pages: u8) -> Option<Box<dyn AsRawFd>> {
    Some(match kind % 5 {
        0 => Box::new(EventFd::new(if kind & 0x80 != 0 { EFD_NONBLOCK } else { 0 }).ok()?),
        1 => {
            let path = std::env::temp_dir().join(format!(
                "knic-fuzz-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .ok()?;
            let _ = std::fs::remove_file(&path);
            f.set_len(u64::from(pages) * 4096).ok()?;
            Box::new(f)
        }
        2 => Box::new(std::io::pipe().ok()?.0),
        3 => Box::new(std::io::pipe().ok()?.1),
        _ => Box::new(UnixStream::pair().ok()?.0),
    })
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Request codes that exist (vhost-user 1..=42), so most inputs reach a rule.
fn request(b: u8, data: &mut &[u8]) -> u32 {
    if b == 0xff && data.len() >= 4 {
        let r = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        *data = &data[4..];
        r
    } else {
        u32::from(b % 43)
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&reply_len, mut data)) = input.split_first() else {
        return;
    };
    let reply_len = usize::from(reply_len).min(data.len());
    let (replies, rest) = data.split_at(reply_len);
    data = rest;
    let fds_before = open_fds();
    {
        let (frontend, door_frontend) = UnixStream::pair().unwrap();
        let (handler, door_handler) = UnixStream::pair().unwrap();
        frontend.set_nonblocking(true).unwrap();
        handler.set_nonblocking(true).unwrap();
        let _ = (&handler).write_all(replies);

        while data.len() >= 5 {
            let req = request(data[0], &mut data);
            if data.len() < 4 {
                break;
            }
            let flags = u32::from(data[0]);
            let claimed = u16::from_le_bytes([data[1], data[2]]);
            let nfds = usize::from(data[3] % 10);
            data = &data[4..];
            let mut fds = Vec::new();
            for _ in 0..nfds {
                let [kind, pages, ..] = data else { break };
                if let Some(fd) = fd_of_kind(*kind, *pages) {
                    fds.push(fd);
                }
                data = &data[2..];
            }
            let take = usize::from(claimed).min(data.len()).min(512);
            let (payload, rest) = data.split_at(take);
            data = rest;
            let mut msg = Vec::with_capacity(12 + payload.len());
            msg.extend_from_slice(&req.to_le_bytes());
            msg.extend_from_slice(&flags.to_le_bytes());
            msg.extend_from_slice(&u32::from(claimed).to_le_bytes());
            msg.extend_from_slice(payload);
            let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
            if frontend.send_with_fds(&[&msg[..]], &raw).is_err() {
                break;
            }
        }
        let _ = frontend.shutdown(std::net::Shutdown::Write);

        let stats = FrontDoorStats::default();
        let end = vhost_backend::front_door::run(
            &door_frontend,
            &door_handler,
            &stats,
            &Deadline(Instant::now() + Duration::from_secs(2)),
        );
        assert_ne!(end, End::Stopped, "the front door did not finish a closed connection");
    }
    // Everything it held was let go: every fd of the run is closed again.
    assert_eq!(open_fds(), fds_before, "the front door kept file descriptors");
});
