//! A vhost-user frontend that sends whatever it is told: any request code, flags, payload and
//! file descriptors, in any order. The tests play hostile frontends with it, against
//! knic-vhost's front door and against knic-agent's ports.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use vmm_sys_util::sock_ctrl_msg::ScmSocket;

/// Request codes (vhost-user spec, "Front-end message types").
pub mod req {
    pub const GET_FEATURES: u32 = 1;
    pub const SET_FEATURES: u32 = 2;
    pub const SET_OWNER: u32 = 3;
    pub const SET_MEM_TABLE: u32 = 5;
    pub const SET_VRING_NUM: u32 = 8;
    pub const SET_VRING_ADDR: u32 = 9;
    pub const SET_VRING_BASE: u32 = 10;
    pub const SET_VRING_KICK: u32 = 12;
    pub const SET_VRING_CALL: u32 = 13;
    pub const GET_PROTOCOL_FEATURES: u32 = 15;
    pub const SET_PROTOCOL_FEATURES: u32 = 16;
    pub const SET_VRING_ENABLE: u32 = 18;
    pub const GET_MAX_MEM_SLOTS: u32 = 36;
    pub const ADD_MEM_REG: u32 = 37;
}

pub const FLAG_VERSION: u32 = 0x1;
pub const FLAG_NEED_REPLY: u32 = 0x8;
/// VHOST_USER_F_PROTOCOL_FEATURES.
pub const PROTOCOL_FEATURES: u64 = 1 << 30;
/// REPLY_ACK | CONFIGURE_MEM_SLOTS.
pub const PROTO_REPLY_ACK: u64 = 1 << 3;
pub const PROTO_MEM_SLOTS: u64 = 1 << 15;

/// One memory region as SET_MEM_TABLE and ADD_MEM_REG carry it.
#[derive(Debug, Clone, Copy)]
pub struct Region {
    pub guest_addr: u64,
    pub size: u64,
    pub user_addr: u64,
    pub mmap_offset: u64,
}

impl Region {
    fn bytes(&self) -> Vec<u8> {
        [self.guest_addr, self.size, self.user_addr, self.mmap_offset]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    }
}

#[derive(Debug)]
pub struct RawFrontend {
    pub sock: UnixStream,
}

impl RawFrontend {
    pub fn connect(path: &Path) -> io::Result<Self> {
        let sock = UnixStream::connect(path)?;
        sock.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(Self { sock })
    }

    /// Sends one message; `Err` when the backend has hung up.
    pub fn send(&self, request: u32, flags: u32, payload: &[u8], fds: &[RawFd]) -> io::Result<()> {
        let mut msg = Vec::with_capacity(12 + payload.len());
        msg.extend_from_slice(&request.to_le_bytes());
        msg.extend_from_slice(&flags.to_le_bytes());
        msg.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        msg.extend_from_slice(payload);
        let n = self
            .sock
            .send_with_fds(&[&msg[..]], fds)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
        if n != msg.len() {
            return Err(io::ErrorKind::WriteZero.into());
        }
        Ok(())
    }

    pub fn request(&self, request: u32, payload: &[u8]) -> io::Result<()> {
        self.send(request, FLAG_VERSION, payload, &[])
    }

    /// Reads one reply: (request, payload). `Err` on timeout or hang-up.
    pub fn reply(&mut self) -> io::Result<(u32, Vec<u8>)> {
        let mut hdr = [0u8; 12];
        self.sock.read_exact(&mut hdr)?;
        let size = u32::from_le_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]) as usize;
        let mut payload = vec![0u8; size];
        self.sock.read_exact(&mut payload)?;
        Ok((
            u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]),
            payload,
        ))
    }

    /// A request whose reply is a u64 (GET_FEATURES, GET_PROTOCOL_FEATURES, ...).
    pub fn get_u64(&mut self, request: u32) -> io::Result<u64> {
        self.request(request, &[])?;
        let (code, p) = self.reply()?;
        if code != request || p.len() != 8 {
            return Err(io::Error::other(format!(
                "reply {code} of {} bytes",
                p.len()
            )));
        }
        let mut v = [0u8; 8];
        v.copy_from_slice(&p);
        Ok(u64::from_le_bytes(v))
    }

    /// SET_OWNER, features (with PROTOCOL_FEATURES) and protocol features `proto`.
    pub fn negotiate(&mut self, proto: u64) -> io::Result<()> {
        self.request(req::SET_OWNER, &[])?;
        let features = self.get_u64(req::GET_FEATURES)?;
        self.request(req::SET_FEATURES, &features.to_le_bytes())?;
        let offered = self.get_u64(req::GET_PROTOCOL_FEATURES)?;
        self.request(req::SET_PROTOCOL_FEATURES, &(offered & proto).to_le_bytes())?;
        // A round trip: everything before it has been handled.
        self.get_u64(req::GET_FEATURES).map(drop)
    }

    pub fn set_mem_table(&self, regions: &[Region], fds: &[RawFd]) -> io::Result<()> {
        let mut p = (regions.len() as u64).to_le_bytes().to_vec();
        for r in regions {
            p.extend(r.bytes());
        }
        self.send(req::SET_MEM_TABLE, FLAG_VERSION, &p, fds)
    }

    pub fn add_mem_reg(&self, region: &Region, fd: RawFd) -> io::Result<()> {
        let mut p = 0u64.to_le_bytes().to_vec();
        p.extend(region.bytes());
        self.send(req::ADD_MEM_REG, FLAG_VERSION, &p, &[fd])
    }

    /// SET_VRING_KICK/CALL/ERR of ring `index` with `fd`.
    pub fn set_vring_fd(&self, request: u32, index: u64, fd: RawFd) -> io::Result<()> {
        self.send(request, FLAG_VERSION, &index.to_le_bytes(), &[fd])
    }

    /// Whether the backend has closed the connection (within the read timeout).
    pub fn closed_by_backend(&mut self) -> bool {
        let mut b = [0u8; 64];
        loop {
            match self.sock.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

/// Raw fd of anything, for `send`.
pub fn raw(f: &impl AsRawFd) -> RawFd {
    f.as_raw_fd()
}
