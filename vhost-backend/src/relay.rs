//! A vhost-user message relay between the frontend and the rust-vmm request handler, so the
//! device does not depend on the frontend's message order.
//!
//! QEMU sends `SET_VRING_ENABLE` right after `SET_PROTOCOL_FEATURES`, before `SET_FEATURES`;
//! the rust-vmm `vhost` 0.18 handler refuses it there (`PROTOCOL_FEATURES` not yet acked) and
//! drops the connection. The relay holds such early requests (acking them itself when the
//! frontend asked for an ack) and replays them, without the ack request, right after
//! `SET_FEATURES`. Every other message, with its file descriptors, passes unchanged both
//! ways. Control path only: messages are small and rare.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use tracing::debug;

use crate::sys;

/// vhost-user request codes and header flags the relay looks at (vhost-user spec).
const SET_FEATURES: u32 = 2;
const SET_VRING_ENABLE: u32 = 18;
const FLAG_VERSION: u32 = 0x1;
const FLAG_REPLY: u32 = 0x4;
const FLAG_NEED_REPLY: u32 = 0x8;
const HDR_LEN: usize = 12;
/// Largest payload accepted (the spec's messages are at most a few KiB).
const MAX_PAYLOAD: usize = 64 * 1024;

struct Msg {
    hdr: [u8; HDR_LEN],
    payload: Vec<u8>,
    fds: Vec<OwnedFd>,
}

impl Msg {
    fn field(&self, i: usize) -> u32 {
        u32::from_le_bytes([
            self.hdr[4 * i],
            self.hdr[4 * i + 1],
            self.hdr[4 * i + 2],
            self.hdr[4 * i + 3],
        ])
    }

    fn request(&self) -> u32 {
        self.field(0)
    }

    fn flags(&self) -> u32 {
        self.field(1)
    }

    fn set_flags(&mut self, flags: u32) {
        self.hdr[4..8].copy_from_slice(&flags.to_le_bytes());
    }
}

/// Reads one message; `None` at end of stream.
fn read_msg(s: &mut UnixStream) -> io::Result<Option<Msg>> {
    let mut hdr = [0u8; HDR_LEN];
    let mut fds = Vec::new();
    let mut got = 0;
    while got < HDR_LEN {
        let n = sys::recv_with_fds(s.as_raw_fd(), &mut hdr[got..], &mut fds)?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        got += n;
    }
    let size = u32::from_le_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]) as usize;
    if size > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("vhost-user message of {size} bytes"),
        ));
    }
    let mut payload = vec![0u8; size];
    s.read_exact(&mut payload)?;
    Ok(Some(Msg { hdr, payload, fds }))
}

fn write_msg(s: &UnixStream, msg: &Msg) -> io::Result<()> {
    let mut buf = Vec::with_capacity(HDR_LEN + msg.payload.len());
    buf.extend_from_slice(&msg.hdr);
    buf.extend_from_slice(&msg.payload);
    let fds: Vec<RawFd> = msg.fds.iter().map(|f| f.as_raw_fd()).collect();
    let mut sent = sys::send_with_fds(s.as_raw_fd(), &buf, &fds)?;
    while sent < buf.len() {
        let n = sys::send_with_fds(s.as_raw_fd(), &buf[sent..], &[])?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        sent += n;
    }
    Ok(())
}

/// Relays between `frontend` and `backend` until either side closes. Blocks; run it on its
/// own thread.
pub fn relay(frontend: UnixStream, backend: UnixStream) -> io::Result<()> {
    let to_frontend = Arc::new(Mutex::new(frontend.try_clone()?));
    let mut from_backend = backend.try_clone()?;
    let replies = Arc::clone(&to_frontend);
    let back = std::thread::Builder::new()
        .name("knic-relay".to_string())
        .spawn(move || -> io::Result<()> {
            while let Some(msg) = read_msg(&mut from_backend)? {
                let f = replies.lock().unwrap_or_else(|p| p.into_inner());
                write_msg(&f, &msg)?;
            }
            let f = replies.lock().unwrap_or_else(|p| p.into_inner());
            let _ = f.shutdown(std::net::Shutdown::Both);
            Ok(())
        })?;

    let mut from_frontend = frontend;
    let mut features_set = false;
    let mut held: Vec<Msg> = Vec::new();
    let result = (|| -> io::Result<()> {
        while let Some(mut msg) = read_msg(&mut from_frontend)? {
            match msg.request() {
                SET_VRING_ENABLE if !features_set => {
                    debug!("holding SET_VRING_ENABLE until SET_FEATURES");
                    if msg.flags() & FLAG_NEED_REPLY != 0 {
                        let mut ack = Msg {
                            hdr: [0; HDR_LEN],
                            payload: 0u64.to_le_bytes().to_vec(),
                            fds: Vec::new(),
                        };
                        ack.hdr[..4].copy_from_slice(&SET_VRING_ENABLE.to_le_bytes());
                        ack.set_flags(FLAG_VERSION | FLAG_REPLY);
                        ack.hdr[8..].copy_from_slice(&8u32.to_le_bytes());
                        let f = to_frontend.lock().unwrap_or_else(|p| p.into_inner());
                        write_msg(&f, &ack)?;
                        msg.set_flags(msg.flags() & !FLAG_NEED_REPLY);
                    }
                    held.push(msg);
                }
                SET_FEATURES => {
                    write_msg(&backend, &msg)?;
                    features_set = true;
                    for h in held.drain(..) {
                        write_msg(&backend, &h)?;
                    }
                }
                _ => write_msg(&backend, &msg)?,
            }
        }
        Ok(())
    })();
    let _ = backend.shutdown(std::net::Shutdown::Both);
    let back_result = back
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("relay thread panicked")));
    result.and(back_result)
}
