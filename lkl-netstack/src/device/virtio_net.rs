//! A virtio-net device on virtio-mmio (virtio 1.2 §4.2, §5.1) for the library
//! kernel's stock `virtio_net` driver.
//!
//! TX runs in the kernel's queue kick (the MMIO write to QueueNotify, on the thread
//! that runs kernel code): each chain's buffers are the kernel's skb memory and go
//! to the TAP with one `writev`, no copy. RX runs on a thread per device that
//! `readv`s TAP frames straight into the buffers the kernel posted and raises the
//! device's interrupt. Chains are walked with `virtio-queue` over the kernel's RAM
//! (device/memory.rs), which checks every address and length.
//!
//! The two directions share no backend state: the kick owns the sending half
//! ([`TxWire`]) and the receive thread owns the receiving half ([`RxWire`]) outright,
//! so the receive thread takes no lock to reach its fd or its scratch packet.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use packet_ring::{
    GuestOffloads, MAX_FRAME_LEN, Packet, PacketBatch, PacketPort, PacketSink, PacketSource,
    VirtioNetHdr,
};

use super::memory::kernel_ram;

/// Copies a TX chain (virtio-net header, then the frame, across any buffer layout)
/// into a packet: one copy out of the kernel's memory. The header is parsed, not trusted.
fn gather(bufs: &[libc::iovec], packet: &mut Packet) -> io::Result<()> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let mut hdr = [0u8; VirtioNetHdr::LEN];
    let (mut hdr_len, mut frame_len) = (0, 0);
    let dst = packet.buf_mut();
    for v in bufs {
        // SAFETY: chain_iovecs checked each buffer against the kernel's RAM; the
        // kernel does not touch a chain it has handed to the device.
        let mut src = unsafe { std::slice::from_raw_parts(v.iov_base.cast::<u8>(), v.iov_len) };
        if hdr_len < hdr.len() {
            let n = (hdr.len() - hdr_len).min(src.len());
            hdr[hdr_len..hdr_len + n].copy_from_slice(&src[..n]);
            hdr_len += n;
            src = &src[n..];
        }
        let end = frame_len + src.len();
        dst.get_mut(frame_len..end)
            .ok_or_else(|| invalid("frame larger than a packet"))?
            .copy_from_slice(src);
        frame_len = end;
    }
    if hdr_len < hdr.len() {
        return Err(invalid("chain shorter than the virtio-net header"));
    }
    packet.hdr =
        VirtioNetHdr::parse(&hdr).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    packet.set_len(frame_len);
    Ok(())
}

/// Copies `parts` in order across an RX chain's buffers; returns the bytes written.
fn scatter(bufs: &[libc::iovec], parts: &[&[u8]]) -> io::Result<usize> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    if total > bufs.iter().map(|v| v.iov_len).sum::<usize>() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame larger than the posted buffers",
        ));
    }
    let mut bufs = bufs.iter();
    let mut dst: &mut [u8] = &mut [];
    for mut part in parts.iter().copied() {
        while !part.is_empty() {
            if dst.is_empty() {
                let Some(v) = bufs.next() else { break };
                // SAFETY: chain_iovecs checked each writable buffer against the kernel's RAM.
                dst = unsafe { std::slice::from_raw_parts_mut(v.iov_base.cast::<u8>(), v.iov_len) };
            }
            let n = dst.len().min(part.len());
            let (head, rest) = std::mem::take(&mut dst).split_at_mut(n);
            head.copy_from_slice(&part[..n]);
            dst = rest;
            part = &part[n..];
        }
    }
    Ok(total)
}
use super::mmio::MmioDevice;
use super::tap::{Tap, TapConfig, VNET_HDR_LEN, readv, writev};

/// Offloads the device offers (and asks the TAP for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offloads {
    /// No checksum or segmentation offload: every frame fits the MTU.
    Off,
    /// CSUM/GUEST_CSUM and TSO4/6 both ways: 64 KiB frames cross the device.
    Tso,
}

/// Where a device's frames go.
#[derive(Debug, Clone)]
pub enum NetBackend {
    /// A host TAP: frames cross with one `writev`/`readv` of the kernel's own buffers.
    Tap(TapConfig),
    /// Any packet port of knic (an in-memory peer, a vhost queue pair, an uplink):
    /// frames are copied once between the kernel's buffers and the port's packets.
    Port(DevicePort),
}

/// A packet port handed to a device at boot. The device takes it and splits it: the
/// sending half goes to the kernel's queue kick, the receiving half to the device's
/// receive thread, and the two never share a lock. Cloning shares the hand-off (so a
/// `BootConfig` stays `Clone`); only the first device booted with it gets the port.
#[derive(Debug, Clone)]
pub struct DevicePort(Arc<Mutex<Option<Box<dyn PacketPort>>>>);

impl DevicePort {
    pub fn new(port: impl PacketPort + 'static) -> DevicePort {
        DevicePort(Arc::new(Mutex::new(Some(Box::new(port)))))
    }

    fn take(&self) -> io::Result<Box<dyn PacketPort>> {
        lock(&self.0).take().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the packet port was already taken by another device",
            )
        })
    }
}

/// A network device of the library kernel.
#[derive(Debug, Clone)]
pub struct NetDeviceConfig {
    pub backend: NetBackend,
    pub mac: [u8; 6],
    pub mtu: u16,
    pub offloads: Offloads,
}

/// Counters of one device, from the device's point of view.
#[derive(Debug, Default)]
pub struct NetDeviceStats {
    /// Frames the kernel sent (to the TAP).
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    /// Frames the kernel received (from the TAP).
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    /// Frames of 32 KiB or more, each way: segmentation offload at work.
    pub tx_large_frames: AtomicU64,
    pub rx_large_frames: AtomicU64,
    /// Frames dropped: the TAP refused a write / a chain was malformed.
    pub tx_errors: AtomicU64,
    pub rx_errors: AtomicU64,
}

const LARGE_FRAME: usize = 32 * 1024;

/// Room for one chain's buffers (see `chain_iovecs`).
const MAX_CHAIN: usize = 64;
type IovArray = [libc::iovec; MAX_CHAIN];
const EMPTY_IOVS: IovArray = [libc::iovec {
    iov_base: std::ptr::null_mut(),
    iov_len: 0,
}; MAX_CHAIN];
const QUEUE_MAX: u16 = 256;
const RX_QUEUE: usize = 0;
const TX_QUEUE: usize = 1;

// virtio-mmio v2 registers (virtio 1.2 §4.2.2).
const MAGIC_VALUE: u64 = 0x000;
const VERSION: u64 = 0x004;
const DEVICE_ID: u64 = 0x008;
const VENDOR_ID: u64 = 0x00c;
const DEVICE_FEATURES: u64 = 0x010;
const DEVICE_FEATURES_SEL: u64 = 0x014;
const DRIVER_FEATURES: u64 = 0x020;
const DRIVER_FEATURES_SEL: u64 = 0x024;
const QUEUE_SEL: u64 = 0x030;
const QUEUE_NUM_MAX: u64 = 0x034;
const QUEUE_NUM: u64 = 0x038;
const QUEUE_READY: u64 = 0x044;
const QUEUE_NOTIFY: u64 = 0x050;
const INTERRUPT_STATUS: u64 = 0x060;
const INTERRUPT_ACK: u64 = 0x064;
const STATUS: u64 = 0x070;
const QUEUE_DESC_LOW: u64 = 0x080;
const QUEUE_DESC_HIGH: u64 = 0x084;
const QUEUE_DRIVER_LOW: u64 = 0x090;
const QUEUE_DRIVER_HIGH: u64 = 0x094;
const QUEUE_DEVICE_LOW: u64 = 0x0a0;
const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
const CONFIG_GENERATION: u64 = 0x0fc;
const CONFIG: u64 = 0x100;

const VIRTIO_ID_NET: u32 = 1;
const MMIO_MAGIC: u32 = 0x7472_6976; // "virt"
const INTERRUPT_USED_BUFFER: u32 = 1;

// Feature bits (virtio 1.2 §5.1.3, §6).
const F_CSUM: u64 = 1 << 0;
const F_GUEST_CSUM: u64 = 1 << 1;
const F_MTU: u64 = 1 << 3;
const F_MAC: u64 = 1 << 5;
const F_GUEST_TSO4: u64 = 1 << 7;
const F_GUEST_TSO6: u64 = 1 << 8;
const F_HOST_TSO4: u64 = 1 << 11;
const F_HOST_TSO6: u64 = 1 << 12;
const F_STATUS: u64 = 1 << 16;
const F_VERSION_1: u64 = 1 << 32;
const NET_S_LINK_UP: u16 = 1;

struct Registers {
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    status: u32,
}

/// The sending half of the backend, driven by the kernel's TX kick.
enum TxWire {
    Tap(File),
    Port {
        sink: Box<dyn PacketSink>,
        /// The kick's packet (one chain at a time), allocated once.
        packet: PacketBatch,
    },
}

/// The receiving half of the backend, owned by the receive thread.
enum RxWire {
    Tap(File),
    Port {
        source: Box<dyn PacketSource>,
        /// The receive thread's packet, allocated once.
        packet: PacketBatch,
    },
}

impl RxWire {
    fn ready_fd(&self) -> RawFd {
        match self {
            RxWire::Tap(tap) => tap.as_raw_fd(),
            RxWire::Port { source, .. } => source.ready_fd(),
        }
    }
}

pub(crate) struct VirtioNetDevice {
    config: NetDeviceConfig,
    features: u64,
    irq: i32,
    regs: Mutex<Registers>,
    queues: [Mutex<Queue>; 2],
    interrupt_status: AtomicU32,
    /// Taken by the TX kick once per kick; the receive thread never touches it.
    tx_wire: Mutex<TxWire>,
    /// Moved into the receive thread when it starts.
    rx_wire: Mutex<Option<RxWire>>,
    /// Kicks the RX thread when the kernel posts receive buffers.
    rx_kick: EventFd,
    /// Tells the RX thread to end (before the kernel's RAM goes away at halt).
    rx_stop: EventFd,
    rx_thread: Mutex<Option<thread::JoinHandle<()>>>,
    pub(crate) stats: NetDeviceStats,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl VirtioNetDevice {
    /// Creates the device and its TAP; `irq` is the line it will raise.
    pub(crate) fn new(config: NetDeviceConfig, irq: i32) -> io::Result<Arc<VirtioNetDevice>> {
        let offloads = config.offloads == Offloads::Tso;
        let (tx_wire, rx_wire) = match &config.backend {
            NetBackend::Tap(tap) => {
                let tap = Tap::open(tap, offloads)?.into_file();
                (TxWire::Tap(tap.try_clone()?), RxWire::Tap(tap))
            }
            NetBackend::Port(port) => {
                let (sink, mut source) = port.take()?.split();
                let accepted = GuestOffloads {
                    csum: offloads,
                    tso4: offloads,
                    tso6: offloads,
                    ecn: false,
                };
                source
                    .set_guest_offloads(accepted)
                    .map_err(io::Error::other)?;
                (
                    TxWire::Port {
                        sink,
                        packet: PacketBatch::new(1, MAX_FRAME_LEN),
                    },
                    RxWire::Port {
                        source,
                        packet: PacketBatch::new(1, MAX_FRAME_LEN),
                    },
                )
            }
        };
        let mut features = F_VERSION_1 | F_MAC | F_MTU | F_STATUS;
        if offloads {
            features |=
                F_CSUM | F_GUEST_CSUM | F_HOST_TSO4 | F_HOST_TSO6 | F_GUEST_TSO4 | F_GUEST_TSO6;
        }
        let queue = || {
            Queue::new(QUEUE_MAX)
                .map(Mutex::new)
                .map_err(|e| io::Error::other(format!("{e:?}")))
        };
        Ok(Arc::new(VirtioNetDevice {
            config,
            features,
            irq,
            regs: Mutex::new(Registers {
                device_features_sel: 0,
                driver_features_sel: 0,
                driver_features: 0,
                queue_sel: 0,
                status: 0,
            }),
            queues: [queue()?, queue()?],
            interrupt_status: AtomicU32::new(0),
            tx_wire: Mutex::new(tx_wire),
            rx_wire: Mutex::new(Some(rx_wire)),
            rx_kick: EventFd::new(EFD_NONBLOCK)?,
            rx_stop: EventFd::new(EFD_NONBLOCK)?,
            rx_thread: Mutex::new(None),
            stats: NetDeviceStats::default(),
        }))
    }

    /// Starts the receive thread (it waits until the driver sets the queue up).
    pub(crate) fn start(self: &Arc<Self>, name: &str) -> io::Result<()> {
        let device = Arc::clone(self);
        let wire = lock(&self.rx_wire).take().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                "receive thread already started",
            )
        })?;
        let handle = thread::Builder::new()
            .name(format!("{name}-rx"))
            .spawn(move || device.rx_loop(wire))?;
        *lock(&self.rx_thread) = Some(handle);
        Ok(())
    }

    /// Ends the receive thread and waits for it: after this the device touches the
    /// kernel's RAM only from kernel kicks (TX), which end with the kernel.
    pub(crate) fn stop(&self) {
        let _ = self.rx_stop.write(1);
        if let Some(handle) = lock(&self.rx_thread).take() {
            let _ = handle.join();
        }
    }

    fn raise_interrupt(&self) {
        self.interrupt_status
            .fetch_or(INTERRUPT_USED_BUFFER, Ordering::SeqCst);
        // SAFETY: raising an interrupt only sets a pending bit in the kernel.
        unsafe { lkl_sys::knic_trigger_irq(self.irq) };
    }

    fn config_space(&self) -> [u8; 12] {
        let mut c = [0u8; 12];
        c[..6].copy_from_slice(&self.config.mac);
        c[6..8].copy_from_slice(&NET_S_LINK_UP.to_le_bytes());
        c[8..10].copy_from_slice(&1u16.to_le_bytes()); // max_virtqueue_pairs
        c[10..12].copy_from_slice(&self.config.mtu.to_le_bytes());
        c
    }

    fn reset(&self) {
        for q in &self.queues {
            lock(q).reset();
        }
        self.interrupt_status.store(0, Ordering::SeqCst);
        let mut regs = lock(&self.regs);
        regs.driver_features = 0;
        regs.status = 0;
    }

    /// Gathers a chain's buffers as iovecs over kernel RAM, checking each one. The
    /// array lives on the caller's stack: no allocation per kick. A chain longer than it
    /// (virtio-net uses at most MAX_SKB_FRAGS + 2 = 19) is refused like a malformed one.
    fn chain_iovecs<'a>(
        mem: &GuestMemoryMmap,
        chain: impl Iterator<Item = virtio_queue::desc::split::Descriptor>,
        want_writable: bool,
        iov: &'a mut IovArray,
    ) -> Option<&'a [libc::iovec]> {
        let mut n = 0;
        for desc in chain {
            if desc.is_write_only() != want_writable {
                return None;
            }
            let len = desc.len() as usize;
            let slice = mem.get_slice(desc.addr(), len).ok()?;
            *iov.get_mut(n)? = libc::iovec {
                iov_base: slice.ptr_guard_mut().as_ptr().cast(),
                iov_len: len,
            };
            n += 1;
        }
        Some(&iov[..n])
    }

    /// The kernel kicked the TX queue: send every available chain to the TAP.
    fn process_tx(&self) {
        let Some(mem) = kernel_ram() else { return };
        let mut queue = lock(&self.queues[TX_QUEUE]);
        let mut wire = lock(&self.tx_wire);
        let mut iov = EMPTY_IOVS;
        let mut completed = false;
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            match Self::chain_iovecs(mem, chain, false, &mut iov) {
                Some(bufs) => {
                    let total: usize = bufs.iter().map(|v| v.iov_len).sum();
                    match Self::send(&mut wire, bufs) {
                        Ok(()) => {
                            let frame = total.saturating_sub(VNET_HDR_LEN);
                            self.stats.tx_packets.fetch_add(1, Ordering::Relaxed);
                            self.stats
                                .tx_bytes
                                .fetch_add(frame as u64, Ordering::Relaxed);
                            if frame >= LARGE_FRAME {
                                self.stats.tx_large_frames.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(_) => {
                            self.stats.tx_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                None => {
                    self.stats.tx_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            if queue.add_used(mem, head, 0).is_err() {
                self.stats.tx_errors.fetch_add(1, Ordering::Relaxed);
            }
            completed = true;
        }
        drop(wire);
        drop(queue);
        if completed {
            self.raise_interrupt();
        }
    }

    /// Receives TAP frames into the kernel's posted buffers until either runs out.
    /// Returns false when the kernel has no buffer posted.
    fn fill_rx(&self, mem: &GuestMemoryMmap, wire: &mut RxWire, iov: &mut IovArray) -> bool {
        let mut queue = lock(&self.queues[RX_QUEUE]);
        if !queue.ready() {
            return false;
        }
        let mut delivered = false;
        let has_buffers = loop {
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                break false;
            };
            let head = chain.head_index();
            let Some(bufs) = Self::chain_iovecs(mem, chain, true, iov) else {
                self.stats.rx_errors.fetch_add(1, Ordering::Relaxed);
                let _ = queue.add_used(mem, head, 0);
                delivered = true;
                continue;
            };
            match Self::receive(wire, bufs) {
                Ok(n) => {
                    let frame = n.saturating_sub(VNET_HDR_LEN);
                    self.stats.rx_packets.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .rx_bytes
                        .fetch_add(frame as u64, Ordering::Relaxed);
                    if frame >= LARGE_FRAME {
                        self.stats.rx_large_frames.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = queue.add_used(mem, head, n as u32);
                    delivered = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    queue.go_to_previous_position(); // keep the buffer for the next frame
                    break true;
                }
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    // A frame from the port that the kernel's buffers cannot hold.
                    self.stats.rx_errors.fetch_add(1, Ordering::Relaxed);
                    queue.go_to_previous_position();
                    continue;
                }
                Err(_) => {
                    self.stats.rx_errors.fetch_add(1, Ordering::Relaxed);
                    queue.go_to_previous_position();
                    break true;
                }
            }
        };
        drop(queue);
        if delivered {
            self.raise_interrupt();
        }
        has_buffers
    }

    fn rx_loop(&self, mut wire: RxWire) {
        let mut iov = EMPTY_IOVS;
        let mut have_buffers = false;
        let poll_in = |fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            // Watch the backend only while the kernel has buffers posted, or it would spin.
            let mut fds = [
                poll_in(self.rx_stop.as_raw_fd()),
                poll_in(self.rx_kick.as_raw_fd()),
                poll_in(wire.ready_fd()),
            ];
            let nfds = if have_buffers { 3 } else { 2 };
            // SAFETY: `fds` holds `nfds` valid pollfds.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), nfds, -1) };
            if rc < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!("rx poll failed: {}", io::Error::last_os_error());
                return;
            }
            if fds[0].revents != 0 {
                return; // the kernel is about to halt
            }
            if fds[1].revents != 0 {
                let _ = self.rx_kick.read();
            }
            let Some(mem) = kernel_ram() else { continue };
            have_buffers = self.fill_rx(mem, &mut wire, &mut iov);
        }
    }

    /// Sends one frame, given as the chain's buffers (virtio-net header first).
    fn send(wire: &mut TxWire, bufs: &[libc::iovec]) -> io::Result<()> {
        match wire {
            // SAFETY: chain_iovecs checked each buffer against the kernel's RAM, and the
            // kernel does not touch a chain it has handed to the device until it is used.
            TxWire::Tap(tap) => unsafe { writev(tap, bufs) }.map(|_| ()),
            TxWire::Port { sink, packet } => {
                packet.clear();
                let Some(slot) = packet.next_slot() else {
                    return Err(io::Error::other("no scratch packet"));
                };
                gather(bufs, slot)?;
                packet.commit();
                match sink.send(packet) {
                    Ok(1) => Ok(()),
                    Ok(_) => Err(io::Error::new(io::ErrorKind::WouldBlock, "port full")),
                    Err(e) => Err(io::Error::other(e)),
                }
            }
        }
    }

    /// Receives one frame into the chain's buffers; returns header + frame length.
    fn receive(wire: &mut RxWire, bufs: &[libc::iovec]) -> io::Result<usize> {
        match wire {
            // SAFETY: chain_iovecs checked each writable buffer against the kernel's RAM;
            // the kernel posted them for the device and reads them only once used.
            RxWire::Tap(tap) => unsafe { readv(tap, bufs) },
            RxWire::Port { source, packet } => {
                packet.clear();
                if source.recv(packet).map_err(io::Error::other)? == 0 {
                    return Err(io::Error::from(io::ErrorKind::WouldBlock));
                }
                let packet = &packet.packets()[0];
                scatter(bufs, &[&packet.hdr.to_bytes(), packet.frame()])
            }
        }
    }

    fn queue_write(&self, offset: u64, value: u32) {
        let sel = lock(&self.regs).queue_sel as usize;
        let Some(q) = self.queues.get(sel) else {
            return;
        };
        let mut q = lock(q);
        match offset {
            QUEUE_NUM => q.set_size(value as u16),
            QUEUE_READY => q.set_ready(value == 1),
            QUEUE_DESC_LOW => q.set_desc_table_address(Some(value), None),
            QUEUE_DESC_HIGH => q.set_desc_table_address(None, Some(value)),
            QUEUE_DRIVER_LOW => q.set_avail_ring_address(Some(value), None),
            QUEUE_DRIVER_HIGH => q.set_avail_ring_address(None, Some(value)),
            QUEUE_DEVICE_LOW => q.set_used_ring_address(Some(value), None),
            QUEUE_DEVICE_HIGH => q.set_used_ring_address(None, Some(value)),
            _ => {}
        }
    }
}

impl MmioDevice for VirtioNetDevice {
    fn read(&self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG {
            let config = self.config_space();
            let start = (offset - CONFIG) as usize;
            for (i, b) in data.iter_mut().enumerate() {
                *b = config.get(start + i).copied().unwrap_or(0);
            }
            return;
        }
        let regs = lock(&self.regs);
        let value: u32 = match offset {
            MAGIC_VALUE => MMIO_MAGIC,
            VERSION => 2,
            DEVICE_ID => VIRTIO_ID_NET,
            VENDOR_ID => 0x4349_4e4b, // "KNIC"
            DEVICE_FEATURES => match regs.device_features_sel {
                0 => self.features as u32,
                1 => (self.features >> 32) as u32,
                _ => 0,
            },
            QUEUE_NUM_MAX => u32::from(QUEUE_MAX),
            QUEUE_READY => {
                let sel = regs.queue_sel as usize;
                self.queues
                    .get(sel)
                    .map(|q| u32::from(lock(q).ready()))
                    .unwrap_or(0)
            }
            INTERRUPT_STATUS => self.interrupt_status.load(Ordering::SeqCst),
            STATUS => regs.status,
            CONFIG_GENERATION => 0,
            _ => 0,
        };
        let bytes = value.to_le_bytes();
        let n = data.len().min(4);
        data[..n].copy_from_slice(&bytes[..n]);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        if offset >= CONFIG {
            return; // virtio-net's config space is read-only to the driver
        }
        let mut bytes = [0u8; 4];
        let n = data.len().min(4);
        bytes[..n].copy_from_slice(&data[..n]);
        let value = u32::from_le_bytes(bytes);
        match offset {
            DEVICE_FEATURES_SEL => lock(&self.regs).device_features_sel = value,
            DRIVER_FEATURES_SEL => lock(&self.regs).driver_features_sel = value,
            DRIVER_FEATURES => {
                let mut regs = lock(&self.regs);
                match regs.driver_features_sel {
                    0 => {
                        regs.driver_features =
                            (regs.driver_features & !0xffff_ffff) | u64::from(value)
                    }
                    1 => {
                        regs.driver_features =
                            (regs.driver_features & 0xffff_ffff) | (u64::from(value) << 32)
                    }
                    _ => {}
                }
            }
            QUEUE_SEL => lock(&self.regs).queue_sel = value,
            QUEUE_NOTIFY => match value as usize {
                TX_QUEUE => self.process_tx(),
                RX_QUEUE => {
                    let _ = self.rx_kick.write(1);
                }
                _ => {}
            },
            INTERRUPT_ACK => {
                self.interrupt_status.fetch_and(!value, Ordering::SeqCst);
            }
            STATUS => {
                if value == 0 {
                    self.reset();
                } else {
                    lock(&self.regs).status = value;
                }
            }
            _ => self.queue_write(offset, value),
        }
    }
}
