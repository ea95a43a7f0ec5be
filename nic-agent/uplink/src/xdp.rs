//! AF_XDP uplink: one XDP socket per queue pair, bound to the interface queue of the same
//! index, each with its own UMEM. libxdp (Debian's `libxdp`) loads its default program
//! `xsk_def_prog` — `bpf_redirect_map(&xsks_map, ctx->rx_queue_index, XDP_PASS)` — on the
//! first socket of an interface and reuses it for the others, so frames a queue receives go
//! to that queue's socket and everything else continues into the host stack.
//!
//! Modes: zero-copy is asked first and, where the driver has no XSK pool support (veth and
//! most virtual devices: EOPNOTSUPP at bind), the socket is re-created in copy mode with an
//! info log. The program is attached native (driver) first; [`XdpMode::Auto`] falls back to
//! generic (skb) mode on a device without native XDP. Rings use `XDP_USE_NEED_WAKEUP`: the
//! TX path makes a syscall only when the kernel asks for one, once per batch.
//!
//! Frames: the UMEM is split between the halves. The receiving half posts its frames on the
//! fill ring and gets them back on the RX ring; the sending half takes a frame from its free
//! list, fills it, posts it on the TX ring and gets it back on the completion ring. Nothing
//! is allocated per packet; each packet is copied once, between a UMEM frame and the
//! caller's batch.
//!
//! Offloads: AF_XDP carries no virtio-net header. Received frames are plain (default header,
//! checksums not verified). For sending, the port declares through
//! [`PacketSink::tx_offloads`] that it takes none, so the device feeding it (the library
//! kernel's virtio-net device) does not offer segmentation or checksum offload to its driver
//! and the kernel segments and checksums in software before the frame reaches this port. A
//! packet that still arrives with a partial checksum has it completed here; one that still
//! needs segmentation is refused (`tx_gso_refused`).
//!
//! Lifetime: libxdp removes a socket from the XSK map when it is deleted (the kernel also
//! does when the socket closes); when the last of our sockets on an interface closes, the
//! program is detached ([`crate::xdp_prog`]). A killed process leaves `xsk_def_prog`
//! attached; the next open finds it by name and reuses it, and its own last close detaches it.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use packet_ring::{GuestOffloads, PacketBatch, PacketSink, PacketSource, PortError, VirtioNetHdr};

use crate::xsk_sys::{
    AttachedProgram, ConsRing, ProdRing, Umem, XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE, Xsk,
    XskParams, attached_program,
};

/// How to attach the XDP program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpMode {
    /// Native (driver) mode, or generic mode on a device without native XDP.
    #[default]
    Auto,
    /// Native mode only: a device without it is an error.
    Native,
    /// Generic (skb) mode: works on every device, copies always.
    Generic,
}

/// Sizes and mode of an AF_XDP uplink. Frame counts are powers of two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XdpConfig {
    pub mode: XdpMode,
    /// Frames the kernel may fill with received packets (the fill and RX ring sizes).
    pub rx_frames: u32,
    /// Frames in flight on transmit (the TX and completion ring sizes).
    pub tx_frames: u32,
}

impl Default for XdpConfig {
    fn default() -> Self {
        Self {
            mode: XdpMode::Auto,
            rx_frames: 2048,
            tx_frames: 2048,
        }
    }
}

/// UMEM frame size: the default of libxdp, one page; aligned mode needs a power of two.
pub const XDP_FRAME_SIZE: u32 = 4096;
/// What the kernel reserves in front of a received frame (`XDP_PACKET_HEADROOM`).
const XDP_PACKET_HEADROOM: u32 = 256;
/// Largest frame received whole (a bigger one is dropped by the kernel: no multi-buffer).
pub const XDP_MAX_RX_FRAME: usize = (XDP_FRAME_SIZE - XDP_PACKET_HEADROOM) as usize;
/// Largest frame sent.
pub const XDP_MAX_TX_FRAME: usize = XDP_FRAME_SIZE as usize;
/// Entries moved per ring operation.
const RING_BATCH: u32 = 64;
/// Shortest frame worth sending or keeping: an Ethernet header.
const ETH_HLEN: usize = 14;

/// Drops and events of one AF_XDP queue, by reason; each name is its metric name.
#[derive(Debug, Default)]
pub struct XdpStats {
    /// A packet handed to `send` still needed segmentation (the device offered TSO).
    pub tx_gso_refused: AtomicU64,
    /// A packet handed to `send` was too long for a UMEM frame, shorter than an Ethernet
    /// header, or its partial checksum pointed outside it.
    pub tx_bad_frame: AtomicU64,
    /// `send` found no free TX frame or ring entry (completions lag behind).
    pub tx_ring_full: AtomicU64,
    /// The kernel reported a TX descriptor as invalid (`XDP_STATISTICS`).
    pub tx_invalid_descs: AtomicU64,
    /// A received frame did not fit the caller's packet buffer or was runt.
    pub rx_bad_frame: AtomicU64,
    /// The kernel returned an RX descriptor outside the receiving half's frames (kept out
    /// of circulation).
    pub rx_bad_desc: AtomicU64,
}

/// How the socket ended up bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XdpBinding {
    pub zero_copy: bool,
    /// The mode the program was attached in (never `Auto`).
    pub mode: XdpMode,
}

/// One AF_XDP socket: the uplink of one queue pair.
#[derive(Debug)]
pub struct XdpPort {
    sink: XdpSink,
    source: XdpSource,
    binding: XdpBinding,
}

/// The sending half: TX and completion rings, and the transmit frames.
#[derive(Debug)]
pub struct XdpSink {
    xsk: Arc<XskHandle>,
    tx: ProdRing,
    comp: ConsRing,
    umem: Umem,
    /// Transmit frames lie in `[tx_start, umem.len())`.
    tx_start: u64,
    /// Transmit frames not in the kernel's hands (offsets into the UMEM).
    free: Vec<u64>,
    stats: Arc<XdpStats>,
}

/// The receiving half: RX and fill rings, and the receive frames.
#[derive(Debug)]
pub struct XdpSource {
    xsk: Arc<XskHandle>,
    rx: ConsRing,
    fill: ProdRing,
    umem: Umem,
    /// Receive frames lie in `[0, rx_end)`.
    rx_end: u64,
    /// Frame addresses to post again on the fill ring (scratch, fixed capacity).
    recycle: Vec<u64>,
    /// Last cumulative kernel drop count read, to report differences.
    last_drops: u64,
    stats: Arc<XdpStats>,
}

/// The socket and the interface's program reference, dropped when both halves are gone.
#[derive(Debug)]
struct XskHandle {
    xsk: Xsk,
    _prog: crate::xdp_prog::ProgramRef,
}

/// What went wrong opening one queue's socket; mapped to an `UplinkError` by the caller.
#[derive(Debug)]
pub(crate) struct XdpOpenError {
    pub mode: XdpMode,
    pub kind: XdpFailure,
    pub source: io::Error,
}

#[derive(Debug)]
pub(crate) enum XdpFailure {
    /// A program that is not libxdp's runs on the interface (named).
    ForeignProgram(String),
    /// The queue stayed taken by another AF_XDP socket.
    QueueBusy,
    /// Anything else; the errno tells.
    Open,
}

/// How long an open waits for a queue a just-closed socket still holds: the kernel frees a
/// queue's buffer pool after an RCU grace period, not at close.
const QUEUE_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

impl XdpPort {
    /// Opens the socket of queue `queue` on `ifname` (which must exist, with at least
    /// `queue + 1` channels).
    pub(crate) fn open(
        ifname: &str,
        ifindex: libc::c_int,
        queue: u32,
        config: &XdpConfig,
    ) -> Result<Self, XdpOpenError> {
        let modes: &[XdpMode] = match config.mode {
            XdpMode::Auto => &[XdpMode::Native, XdpMode::Generic],
            XdpMode::Native => &[XdpMode::Native],
            XdpMode::Generic => &[XdpMode::Generic],
        };
        if let Ok(AttachedProgram::Foreign(name)) = attached_program(ifindex) {
            return Err(XdpOpenError {
                mode: config.mode,
                kind: XdpFailure::ForeignProgram(name),
                source: io::Error::from_raw_os_error(libc::EBUSY),
            });
        }
        let prog = crate::xdp_prog::ProgramRef::take(ifindex);
        let mut last = None;
        for &mode in modes {
            match open_in_mode(ifname, queue, config, mode) {
                Ok((xsk, zero_copy)) => {
                    return Ok(Self::from_xsk(
                        xsk,
                        prog,
                        config,
                        XdpBinding { zero_copy, mode },
                    ));
                }
                Err(e) if mode == XdpMode::Native && e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                    tracing::info!(
                        interface = ifname,
                        queue,
                        "no native XDP on this device ({e}); trying generic (skb) mode"
                    );
                    last = Some(XdpOpenError {
                        mode,
                        kind: XdpFailure::Open,
                        source: e,
                    });
                }
                Err(source) => {
                    let kind = if source.raw_os_error() == Some(libc::EBUSY) {
                        XdpFailure::QueueBusy
                    } else {
                        XdpFailure::Open
                    };
                    return Err(XdpOpenError { mode, kind, source });
                }
            }
        }
        Err(last.unwrap_or(XdpOpenError {
            mode: config.mode,
            kind: XdpFailure::Open,
            source: io::Error::from_raw_os_error(libc::EOPNOTSUPP),
        }))
    }

    fn from_xsk(
        (xsk, rings): (Xsk, crate::xsk_sys::XskRings),
        prog: crate::xdp_prog::ProgramRef,
        config: &XdpConfig,
        binding: XdpBinding,
    ) -> Self {
        let handle = Arc::new(XskHandle { xsk, _prog: prog });
        let stats = Arc::new(XdpStats::default());
        let frame = u64::from(XDP_FRAME_SIZE);
        let rx_end = u64::from(config.rx_frames) * frame;
        let free = (0..u64::from(config.tx_frames))
            .map(|i| rx_end + i * frame)
            .collect();
        let mut source = XdpSource {
            xsk: Arc::clone(&handle),
            rx: rings.rx,
            fill: rings.fill,
            umem: rings.umem.view(),
            rx_end,
            recycle: Vec::with_capacity(RING_BATCH as usize),
            last_drops: 0,
            stats: Arc::clone(&stats),
        };
        source.prime(config.rx_frames);
        Self {
            sink: XdpSink {
                xsk: handle,
                tx: rings.tx,
                comp: rings.comp,
                umem: rings.umem,
                tx_start: rx_end,
                free,
                stats,
            },
            source,
            binding,
        }
    }

    /// Zero-copy or copy, native or generic: what the open resolved to.
    pub fn binding(&self) -> XdpBinding {
        self.binding
    }

    /// The port's drop counters (shared by both halves, readable after a split).
    pub fn stats(&self) -> Arc<XdpStats> {
        Arc::clone(&self.sink.stats)
    }
}

/// Tries zero-copy, then copy, in one attach mode. Returns the socket and whether it is ZC.
fn open_in_mode(
    ifname: &str,
    queue: u32,
    config: &XdpConfig,
    mode: XdpMode,
) -> io::Result<((Xsk, crate::xsk_sys::XskRings), bool)> {
    let xdp_flags = match mode {
        XdpMode::Generic => XDP_FLAGS_SKB_MODE,
        _ => XDP_FLAGS_DRV_MODE,
    };
    let params = |bind_flags| XskParams {
        frame_size: XDP_FRAME_SIZE,
        rx_frames: config.rx_frames,
        tx_frames: config.tx_frames,
        rx_size: config.rx_frames,
        tx_size: config.tx_frames,
        xdp_flags,
        bind_flags: bind_flags | libc::XDP_USE_NEED_WAKEUP,
    };
    // With the foreign-program case ruled out before, EBUSY is the queue: wait for a socket
    // closed a moment ago (by this process too) to let go of it.
    let create = |p: XskParams| {
        let start = std::time::Instant::now();
        loop {
            match Xsk::create(ifname, queue, p) {
                Err(e)
                    if e.raw_os_error() == Some(libc::EBUSY)
                        && start.elapsed() < QUEUE_RELEASE_WAIT =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                r => return r,
            }
        }
    };
    // Generic mode always copies: asking for zero-copy there only costs a failed bind.
    if mode != XdpMode::Generic {
        match create(params(libc::XDP_ZEROCOPY)) {
            Ok(x) => return Ok((x, true)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EINVAL)) => {
                tracing::info!(
                    interface = ifname,
                    queue,
                    "zero-copy AF_XDP not supported by this driver ({e}); using copy mode"
                );
            }
            Err(e) => return Err(e),
        }
    }
    let x = create(params(libc::XDP_COPY))?;
    let zc = x.0.zero_copy();
    Ok((x, zc))
}

impl XdpSink {
    /// Takes completed transmit frames back into the free list.
    fn reclaim(&mut self) {
        loop {
            let (n, idx) = self.comp.peek(RING_BATCH);
            if n == 0 {
                return;
            }
            for i in 0..n {
                let addr = self.comp.addr(idx.wrapping_add(i));
                // Only transmit frames we posted come back; anything else is not trusted.
                let ours = addr >= self.tx_start
                    && addr < self.umem.len() as u64
                    && addr % u64::from(XDP_FRAME_SIZE) == 0;
                if !ours || self.free.len() == self.free.capacity() {
                    continue;
                }
                self.free.push(addr);
            }
            self.comp.release(n);
        }
    }

    /// Makes the kernel transmit what the TX ring holds. Copy mode moves 32 frames per
    /// call (EAGAIN while more wait), so this loops, boundedly; a busy device (EBUSY,
    /// ENOBUFS) leaves the rest for the next call.
    fn kick(&mut self) -> Result<(), PortError> {
        if !self.tx.needs_wakeup() {
            return Ok(());
        }
        for _ in 0..(self.free.capacity() / 32 + 2) {
            match self.xsk.xsk.kick_tx() {
                Ok(()) => {}
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN | libc::EINTR) => {}
                    Some(libc::EBUSY | libc::ENOBUFS | libc::ENETDOWN | libc::ENXIO) => {
                        return Ok(());
                    }
                    _ => return Err(PortError::Send(e)),
                },
            }
            if self.tx.pending() == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Copies `pkt` into frame `addr`, completing a partial checksum. `false` when it
    /// cannot go out as it is.
    fn place(&mut self, addr: u64, pkt: &packet_ring::Packet) -> bool {
        let frame = pkt.frame();
        if frame.len() < ETH_HLEN || frame.len() > XDP_MAX_TX_FRAME {
            self.stats.tx_bad_frame.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let Some(dst) = self.umem.bytes_mut(addr, frame.len()) else {
            self.stats.tx_bad_frame.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        dst.copy_from_slice(frame);
        if pkt.hdr.flags & VirtioNetHdr::F_NEEDS_CSUM != 0
            && !complete_checksum(dst, pkt.hdr.csum_start, pkt.hdr.csum_offset)
        {
            self.stats.tx_bad_frame.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// Fills in a partial checksum as a device would (virtio 1.2, 5.1.6.2: the ones'-complement
/// sum from `csum_start` to the end, stored at `csum_start + csum_offset`, which already holds
/// the pseudo-header sum). `false` when the offsets lie outside the frame.
fn complete_checksum(frame: &mut [u8], start: u16, offset: u16) -> bool {
    let start = usize::from(start);
    let at = start + usize::from(offset);
    if at + 2 > frame.len() || start > frame.len() {
        return false;
    }
    let mut sum: u32 = 0;
    let mut chunks = frame[start..].chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    frame[at..at + 2].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    true
}

impl PacketSink for XdpSink {
    fn send(&mut self, batch: &PacketBatch) -> Result<usize, PortError> {
        self.reclaim();
        let pkts = batch.packets();
        let mut sent = 0;
        let mut next = 0;
        while next < pkts.len() {
            let want = (pkts.len() - next)
                .min(RING_BATCH as usize)
                .min(self.free.len()) as u32;
            let want = want.min(self.tx.free(want));
            if want == 0 {
                // Every frame or ring entry is in flight: let the kernel finish some, then
                // look once more before giving up on the rest.
                self.kick()?;
                self.reclaim();
                if self.free.is_empty() || self.tx.free(1) == 0 {
                    let left = (pkts.len() - next) as u64;
                    self.stats.tx_ring_full.fetch_add(left, Ordering::Relaxed);
                    break;
                }
                continue;
            }
            let Some(idx) = self.tx.reserve(want) else {
                break;
            };
            let mut used = 0;
            for pkt in &pkts[next..next + want as usize] {
                if pkt
                    .hdr
                    .gso()
                    .is_ok_and(|(k, _)| k != packet_ring::GsoKind::None)
                {
                    self.stats.tx_gso_refused.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let Some(&addr) = self.free.last() else { break };
                if !self.place(addr, pkt) {
                    continue;
                }
                self.free.pop();
                self.tx
                    .set_desc(idx.wrapping_add(used), addr, pkt.len() as u32);
                used += 1;
            }
            self.tx.unreserve(want - used);
            self.tx.submit(used);
            sent += used as usize;
            next += want as usize;
            self.kick()?;
        }
        Ok(sent)
    }

    fn tx_offloads(&self) -> GuestOffloads {
        GuestOffloads::default()
    }
}

impl XdpSource {
    /// Posts every receive frame on the fill ring (at open).
    fn prime(&mut self, frames: u32) {
        let frame = u64::from(XDP_FRAME_SIZE);
        if let Some(idx) = self.fill.reserve(frames) {
            for i in 0..frames {
                self.fill
                    .set_addr(idx.wrapping_add(i), u64::from(i) * frame);
            }
            self.fill.submit(frames);
        }
    }

    /// Posts the frames in `recycle` on the fill ring again.
    fn refill(&mut self) {
        let n = self.recycle.len() as u32;
        if n == 0 {
            return;
        }
        // The fill ring holds every receive frame, so room for the ones returned is certain.
        if let Some(idx) = self.fill.reserve(n) {
            for (i, &addr) in self.recycle.iter().enumerate() {
                self.fill.set_addr(idx.wrapping_add(i as u32), addr);
            }
            self.fill.submit(n);
        }
        self.recycle.clear();
        if self.fill.needs_wakeup() {
            self.xsk.xsk.kick_rx();
        }
    }
}

impl PacketSource for XdpSource {
    fn recv(&mut self, batch: &mut PacketBatch) -> Result<usize, PortError> {
        let frame_mask = !(u64::from(XDP_FRAME_SIZE) - 1);
        let mut total = 0;
        loop {
            let spare = batch.spare_mut();
            let asked = (spare.len() as u32).min(RING_BATCH);
            if asked == 0 {
                break;
            }
            let (n, idx) = self.rx.peek(asked);
            if n == 0 {
                break;
            }
            let mut kept = 0;
            for i in 0..n {
                let d = self.rx.desc(idx.wrapping_add(i));
                let base = d.addr & frame_mask;
                if base >= self.rx_end {
                    self.stats.rx_bad_desc.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                self.recycle.push(base);
                let len = d.len as usize;
                let slot = &mut spare[kept];
                let fits = d.addr + d.len as u64 <= base + u64::from(XDP_FRAME_SIZE);
                match self.umem.bytes(d.addr, len) {
                    Some(bytes)
                        if fits && len >= ETH_HLEN && slot.fill(VirtioNetHdr::default(), bytes) =>
                    {
                        kept += 1;
                    }
                    _ => {
                        self.stats.rx_bad_frame.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            self.rx.release(n);
            self.refill();
            batch.commit_n(kept);
            total += kept;
            if n < asked {
                break;
            }
        }
        Ok(total)
    }

    fn ready_fd(&self) -> std::os::fd::RawFd {
        self.xsk.xsk.fd()
    }

    /// Frames the kernel could not hand over (RX ring full, no fill frame, invalid fill
    /// entries) since the last call.
    fn kernel_drops(&mut self) -> u64 {
        let Ok(st) = self.xsk.xsk.statistics() else {
            return 0;
        };
        self.stats
            .tx_invalid_descs
            .store(st.tx_invalid_descs, Ordering::Relaxed);
        let now = st.rx_dropped + st.rx_ring_full + st.rx_invalid_descs;
        let d = now.saturating_sub(self.last_drops);
        self.last_drops = now;
        d
    }
}

packet_ring::port_from_halves!(XdpPort);

#[cfg(test)]
mod tests {
    use super::*;

    fn fold(mut sum: u32) -> u16 {
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    #[test]
    fn partial_checksum_is_completed_like_a_device() {
        // UDP 10.0.0.1:1 -> 10.0.0.2:2 with an odd-length payload "hi!", after a 34-byte
        // Ethernet + IPv4 header; the checksum field holds the pseudo-header sum, as a stack
        // leaves it for CHECKSUM_PARTIAL.
        let mut f = vec![0u8; 34];
        f.extend_from_slice(&[0, 1, 0, 2, 0, 11, 0, 0, b'h', b'i', b'!']);
        let pseudo = u32::from(fold(0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 17 + 11));
        f[40..42].copy_from_slice(&(pseudo as u16).to_be_bytes());
        assert!(complete_checksum(&mut f, 34, 6));
        // A receiver's check: pseudo-header + segment (checksum included) sums to 0xffff.
        let mut sum = pseudo;
        for c in f[34..].chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]));
        }
        assert_eq!(fold(sum), 0xffff);
        assert!(
            !complete_checksum(&mut f, 40, 200),
            "checksum field outside the frame"
        );
        assert!(
            !complete_checksum(&mut f, 200, 0),
            "start outside the frame"
        );
    }
}
