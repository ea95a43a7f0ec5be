//! A virtio-net device on virtio-mmio (virtio 1.2 §4.2, §5.1) for the library
//! kernel's stock `virtio_net` driver.
//!
//! The device has one or more queue pairs (RX queue `2p`, TX queue `2p + 1`) and, with
//! more than one, a control queue after them. Each pair's TX runs in the kernel's queue
//! kick (the MMIO write to QueueNotify, on the thread that runs kernel code). Each
//! pair's RX runs on a thread of its own (`net0-rx1`: device 0, pair 1) that owns the pair's receiving
//! half of the backend outright; the two directions share no lock. The data path itself
//! (chains, used ring, notification decisions) is [`super::net_queue`].
//!
//! Control queue (virtio 1.2 §5.1.6.5): VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET is handled in
//! the kick, before the driver's busy wait for the answer; other classes are refused
//! (they are not offered). Link state: [`VirtioNetDevice::set_link`] flips
//! VIRTIO_NET_S_LINK_UP in the config space and raises a configuration-change
//! interrupt, on which the driver re-reads it and sets the carrier.
//!
//! Reset (a STATUS write of 0) comes from kernel context whenever the driver wants it,
//! including from its remove path when the device is taken away (`kernel.rs` says in
//! which order). It takes every queue side's lock, so it waits out a receive round in
//! progress, and leaves every side not running: from then on no thread touches the
//! rings, which the driver may free at once.
#![allow(unsafe_code)]

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::thread;

use knic_virtio_net::Direction;
use knic_virtio_net::direct::{DirectReceiver, DirectRing, DirectSender, SendingRing};
use packet_ring::{GuestOffloads, PacketPort};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::features::{
    BASE_FEATURES, F_CSUM, F_HOST_ECN, F_HOST_TSO4, F_HOST_TSO6, MQ_FEATURES, NetFeatures,
    OFFLOAD_FEATURES,
};
use super::memory::kernel_ram;
use super::mmio::MmioDevice;
use super::net_queue::{
    DirectRound, DirectTxRound, DropReason, QUEUE_MAX, QueueCounters, RxPath, RxQueue, RxScratch,
    RxWait, RxWire, TxLimits, TxOpen, TxWire, needs_interrupt, transmit,
};
use super::tap::{Tap, TapConfig};

/// Offloads the device offers (and asks the backend for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offloads {
    /// No checksum or segmentation offload: every frame fits the MTU.
    Off,
    /// CSUM/GUEST_CSUM, TSO4/6 and ECN both ways: 64 KiB frames cross the device. The
    /// transmit half (CSUM, HOST_*) only as far as every port's far side completes it
    /// (`PacketSink::tx_offloads`); `Kernel::set_tx_offloads` narrows it at run time.
    Tso,
}

/// Where a device's frames go.
#[derive(Debug, Clone)]
pub enum NetBackend {
    /// A host TAP: frames cross with one `writev`/`readv` of the kernel's own buffers.
    /// With more than one queue pair the TAP is multi-queue, one TAP queue per pair.
    Tap(TapConfig),
    /// Packet ports of knic (an in-memory peer, a vhost queue pair, an uplink), one per
    /// queue pair: frames are copied once between the kernel's buffers and the port's
    /// packets.
    Port(DevicePort),
}

/// Packet ports handed to a device at boot, one per queue pair. The device takes them
/// and splits each: the sending half goes to the kernel's queue kick, the receiving half
/// to the pair's receive thread, and the two never share a lock. Cloning shares the
/// hand-off (so a `BootConfig` stays `Clone`); only the first device booted with it gets
/// the ports.
///
/// Made [`with_direct_rx`](Self::with_direct_rx), the hand-off also goes the other way: the
/// device leaves one [`DirectRx`] per queue pair in it, which the caller takes with
/// [`take_direct_rx`](Self::take_direct_rx) once the device is added and gives to the
/// threads that write frames straight into the kernel's RX rings (the agent's vhost
/// workers).
///
/// Made [`with_direct_tx`](Self::with_direct_tx) as well, it leaves one [`DirectTx`] per
/// queue pair, for the threads that take the kernel's TX chains straight into their own
/// driver's buffers: the device then sends nothing through its ports (their receiving
/// halves still carry frames in), and its TX chains wait in the ring until a [`DirectTx`]
/// takes them.
#[derive(Debug, Clone)]
pub struct DevicePort {
    ports: Arc<Mutex<Option<PortsPerPair>>>,
    /// `Some`: the device leaves its pairs' direct receivers here.
    direct: Option<Arc<Mutex<Option<Vec<DirectRx>>>>>,
    /// `Some`: the device leaves its pairs' direct senders here.
    direct_tx: Option<Arc<Mutex<Option<Vec<DirectTx>>>>>,
}

/// Ports in queue-pair order, until a device takes them.
type PortsPerPair = Vec<Box<dyn PacketPort>>;

impl DevicePort {
    /// One port, for a device with one queue pair.
    pub fn new(port: impl PacketPort + 'static) -> DevicePort {
        DevicePort::per_queue_pair(vec![Box::new(port)])
    }

    /// One port per queue pair, in order.
    pub fn per_queue_pair(ports: Vec<Box<dyn PacketPort>>) -> DevicePort {
        DevicePort {
            ports: Arc::new(Mutex::new(Some(ports))),
            direct: None,
            direct_tx: None,
        }
    }

    /// Asks the device built from this hand-off for a [`DirectRx`] per queue pair.
    pub fn with_direct_rx(mut self) -> DevicePort {
        self.direct = Some(Arc::new(Mutex::new(None)));
        self
    }

    /// The direct receivers the device left, one per queue pair in order (once; `None`
    /// before a device was built, after they were taken, or without
    /// [`with_direct_rx`](Self::with_direct_rx)).
    pub fn take_direct_rx(&self) -> Option<Vec<DirectRx>> {
        self.direct.as_ref().and_then(|d| lock(d).take())
    }

    /// Asks the device built from this hand-off for a [`DirectTx`] per queue pair.
    pub fn with_direct_tx(mut self) -> DevicePort {
        self.direct_tx = Some(Arc::new(Mutex::new(None)));
        self
    }

    /// The direct senders the device left, one per queue pair in order (once; as
    /// [`take_direct_rx`](Self::take_direct_rx)).
    pub fn take_direct_tx(&self) -> Option<Vec<DirectTx>> {
        self.direct_tx.as_ref().and_then(|d| lock(d).take())
    }

    fn take(&self) -> io::Result<Vec<Box<dyn PacketPort>>> {
        lock(&self.ports).take().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the packet ports were already taken by another device",
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
    /// Queue pairs (1 to [`MAX_QUEUE_PAIRS`]). With more than one the device offers
    /// VIRTIO_NET_F_MQ and a control queue; the kernel starts with one pair per CPU and
    /// `Kernel::set_queue_pairs` (ethtool's `-L combined`) enables the rest.
    pub queue_pairs: u16,
}

/// The HOST_* offload bits the driver must not be offered because the backend's far side
/// does not complete them (an AF_XDP uplink takes no offload): without them the kernel
/// segments and checksums in software, so nothing large is sent only to be dropped. Per
/// virtio 1.2 §5.1.3.1 TSO needs CSUM, and ECN needs TSO.
fn host_offloads_refused(takes: GuestOffloads) -> u64 {
    let tso4 = takes.csum && takes.tso4;
    let tso6 = takes.csum && takes.tso6;
    let ecn = (tso4 || tso6) && takes.ecn;
    [
        (takes.csum, F_CSUM),
        (tso4, F_HOST_TSO4),
        (tso6, F_HOST_TSO6),
        (ecn, F_HOST_ECN),
    ]
    .iter()
    .filter(|(ok, _)| !ok)
    .fold(0, |bits, (_, f)| bits | f)
}

/// Most queue pairs a device offers: queue indices and the MMIO window stay small.
pub const MAX_QUEUE_PAIRS: u16 = 16;

/// Counters of one queue pair (or their sum over a device).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueuePairStats {
    /// Frames the kernel sent, and their bytes (without the virtio-net header).
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames the kernel received, and their bytes.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Frames of 32 KiB or more, each way: segmentation offload at work.
    pub tx_large_frames: u64,
    pub rx_large_frames: u64,
    /// Received frames that spanned more than one receive buffer (MRG_RXBUF).
    pub rx_merged_frames: u64,
    /// Kicks from the driver on the TX and RX queue.
    pub tx_kicks: u64,
    pub rx_kicks: u64,
    /// Interrupts raised for the pair, and those the driver's event index (or its
    /// NO_INTERRUPT flag) let the device skip.
    pub interrupts: u64,
    pub interrupts_suppressed: u64,
    /// Times the device left TX chains in the ring because the backend had no room
    /// (backpressure: not a drop).
    pub tx_stalls: u64,
    /// Of `rx_packets`, frames another thread copied straight into the kernel's buffers
    /// ([`DirectRx`]): the device copied none of them.
    pub rx_direct: u64,
    /// Of `tx_packets`, frames another thread copied straight out of the kernel's buffers
    /// ([`DirectTx`]): the device copied none of them.
    pub tx_direct: u64,
    /// Drops by reason, indexed like [`DropReason::ALL`].
    pub drops: [u64; DropReason::ALL.len()],
}

impl QueuePairStats {
    /// Frames dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }

    /// Drops on the way out (kernel to backend), any reason: the TX ring's own
    /// breakage included, never the RX ring's.
    pub fn tx_dropped(&self) -> u64 {
        self.sum_drops(|r| r.direction() == Direction::Tx)
    }

    /// Drops on the way in (backend to kernel), any reason, the RX ring's breakage
    /// included.
    pub fn rx_dropped(&self) -> u64 {
        self.sum_drops(|r| r.direction() == Direction::Rx)
    }

    fn sum_drops(&self, pick: impl Fn(DropReason) -> bool) -> u64 {
        DropReason::ALL
            .iter()
            .filter(|r| pick(**r))
            .map(|r| self.dropped(*r))
            .sum()
    }

    fn read(c: &QueueCounters) -> QueuePairStats {
        let mut drops = [0; DropReason::ALL.len()];
        for (d, (_, n)) in drops.iter_mut().zip(c.drop_counts()) {
            *d = n;
        }
        QueuePairStats {
            tx_packets: c.tx_packets.get(),
            tx_bytes: c.tx_bytes.get(),
            rx_packets: c.rx_packets.get(),
            rx_bytes: c.rx_bytes.get(),
            tx_large_frames: c.tx_large_frames.get(),
            rx_large_frames: c.rx_large_frames.get(),
            rx_merged_frames: c.rx_merged_frames.get(),
            tx_kicks: c.tx_kicks.get(),
            rx_kicks: c.rx_kicks.get(),
            interrupts: c.tx_notifications.get() + c.rx_notifications.get(),
            interrupts_suppressed: c.tx_notifications_suppressed.get()
                + c.rx_notifications_suppressed.get(),
            tx_stalls: c.tx_stalls.get(),
            rx_direct: c.rx_direct.get(),
            tx_direct: c.tx_direct.get(),
            drops,
        }
    }

    fn add(&mut self, o: &QueuePairStats) {
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.tx_large_frames += o.tx_large_frames;
        self.rx_large_frames += o.rx_large_frames;
        self.rx_merged_frames += o.rx_merged_frames;
        self.tx_kicks += o.tx_kicks;
        self.rx_kicks += o.rx_kicks;
        self.interrupts += o.interrupts;
        self.interrupts_suppressed += o.interrupts_suppressed;
        self.tx_stalls += o.tx_stalls;
        self.rx_direct += o.rx_direct;
        self.tx_direct += o.tx_direct;
        for (d, s) in self.drops.iter_mut().zip(o.drops) {
            *d += s;
        }
    }
}

/// A snapshot of one device's counters and state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetDeviceStats {
    /// The sum over all queue pairs.
    pub total: QueuePairStats,
    /// Per queue pair, in order.
    pub queue_pairs: Vec<QueuePairStats>,
    /// Configuration-change interrupts (link state changes).
    pub config_interrupts: u64,
    /// Feature bits the kernel's driver accepted (virtio 1.2 §5.1.3 numbering).
    pub negotiated_features: u64,
    /// Queue pairs the driver enabled (VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET; 1 without MQ).
    pub active_queue_pairs: u16,
    /// Whether the device reports its link up (VIRTIO_NET_S_LINK_UP).
    pub link_up: bool,
}

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
/// VIRTIO_MMIO_INT_CONFIG: the driver re-reads the config space (link state).
const INTERRUPT_CONFIG_CHANGE: u32 = 2;
/// Device status DRIVER_OK (virtio 1.2 §2.1): features are final, queues may run.
const STATUS_DRIVER_OK: u32 = 4;
const NET_S_LINK_UP: u16 = 1;

// Control queue (virtio 1.2 §5.1.6.5).
const CTRL_CLASS_MQ: u8 = 4;
const CTRL_MQ_VQ_PAIRS_SET: u8 = 0;
const CTRL_OK: u8 = 0;
const CTRL_ERR: u8 = 1;

struct Registers {
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    status: u32,
}

/// What a queue side knows of the negotiation.
#[derive(Debug, Clone, Copy, Default)]
struct Negotiated {
    /// DRIVER_OK was set and no reset since: the queue may run.
    running: bool,
    features: NetFeatures,
    /// Bumped whenever the above or the enabled pairs change, so the receive thread
    /// re-applies offloads and queue attachment.
    epoch: u64,
    /// Whether this pair is among those the driver enabled.
    enabled: bool,
}

struct TxSide {
    queue: Queue,
    wire: TxWire,
    state: Negotiated,
}

struct RxSide {
    queue: Queue,
    state: Negotiated,
}

/// One RX/TX queue pair. The TX side is locked by the kernel's kick, the RX side by the
/// pair's receive thread, each once per batch; register writes take them only while
/// the driver sets queues up or resets the device.
struct QueuePair {
    tx: Mutex<TxSide>,
    rx: Mutex<RxSide>,
    /// Kicks the receive thread when the kernel posts receive buffers, or when TX stalled.
    rx_kick: EventFd,
    /// The TX side stopped for want of backend room; the receive thread then also waits on
    /// the backend's room fd ([`Self::tx_room_fd`]) and transmits again when it fires.
    tx_stalled: AtomicBool,
    /// The TX backend's room fd, if it ever stalls (the agent's seam); fixed at creation.
    tx_room_fd: Option<std::os::fd::RawFd>,
    /// A [`DirectRx`] lender may wait for this pair's RX buffers: raised by each of its
    /// batches before it looks at the ring, lowered when the batch found room.
    direct_waiting: AtomicBool,
    /// Written when the driver kicks the RX queue (or the ring is renegotiated) while a
    /// lender waits: [`DirectRx`]'s wake fd.
    direct_wake: Arc<EventFd>,
    /// A [`DirectTx`] takes this pair's TX chains: the kernel's kick only wakes it.
    direct_tx: bool,
    /// A [`DirectTx`] taker may wait for this pair's TX chains: raised by each of its
    /// batches before it looks at the ring, lowered when the batch did not run dry.
    direct_tx_waiting: AtomicBool,
    /// Written when the driver kicks the TX queue (or the ring is renegotiated) while a
    /// taker waits: [`DirectTx`]'s wake fd.
    direct_tx_wake: Arc<EventFd>,
    counters: QueueCounters,
}

impl QueuePair {
    /// The driver posted RX buffers, or the ring changed state: wakes a waiting lender.
    fn wake_direct(&self) {
        if self.direct_waiting.swap(false, Ordering::SeqCst) {
            // A full counter (2^64 - 1 wakeups unread) is the only failure: it is awake.
            let _ = self.direct_wake.write(1);
        }
    }

    /// The driver posted TX chains, or the ring changed state: wakes a waiting taker.
    fn wake_direct_tx(&self) {
        if self.direct_tx_waiting.swap(false, Ordering::SeqCst) {
            // As in wake_direct: a full counter means it is awake.
            let _ = self.direct_tx_wake.write(1);
        }
    }
}

pub(crate) struct VirtioNetDevice {
    config: NetDeviceConfig,
    features: u64,
    irq: i32,
    regs: Mutex<Registers>,
    pairs: Box<[QueuePair]>,
    /// The control queue (index 2 × pairs), when MQ is offered.
    ctrl: Option<Mutex<Queue>>,
    active_pairs: AtomicU16,
    interrupt_status: AtomicU32,
    link_up: AtomicBool,
    config_generation: AtomicU32,
    config_interrupts: AtomicU64,
    negotiated: AtomicU64,
    /// Receiving halves, moved into the receive threads when they start.
    rx_paths: Mutex<Vec<RxPath>>,
    /// Tells the receive threads to end (before the kernel's RAM goes away at halt).
    rx_stop: EventFd,
    rx_threads: Mutex<Vec<thread::JoinHandle<()>>>,
    /// Set by [`stop`](Self::stop): direct receivers no longer touch the kernel's RAM.
    halted: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn new_queue() -> io::Result<Queue> {
    Queue::new(QUEUE_MAX).map_err(|e| io::Error::other(format!("virtqueue: {e:?}")))
}

impl VirtioNetDevice {
    /// Creates the device and its backend; `irq` is the line it will raise.
    pub(crate) fn new(config: NetDeviceConfig, irq: i32) -> io::Result<Arc<VirtioNetDevice>> {
        let pairs = config.queue_pairs;
        if pairs == 0 || pairs > MAX_QUEUE_PAIRS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{pairs} queue pairs; a device has 1 to {MAX_QUEUE_PAIRS}"),
            ));
        }
        let mut wires = Vec::with_capacity(usize::from(pairs));
        // What every port's far side completes (all, for a TAP: the host kernel does).
        let mut takes = GuestOffloads::ALL;
        match &config.backend {
            NetBackend::Tap(tap) => {
                for _ in 0..pairs {
                    let file = Tap::open(tap, pairs > 1)?.into_file();
                    wires.push((TxWire::Tap(file.try_clone()?), RxWire::Tap(file)));
                }
            }
            NetBackend::Port(ports) => {
                let ports = ports.take()?;
                if ports.len() != usize::from(pairs) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{} packet ports for {pairs} queue pairs", ports.len()),
                    ));
                }
                for port in ports {
                    let t = port.tx_offloads();
                    takes.csum &= t.csum;
                    takes.tso4 &= t.tso4;
                    takes.tso6 &= t.tso6;
                    takes.ecn &= t.ecn;
                    let (sink, source) = port.split();
                    wires.push((TxWire::port(sink), RxWire::port(source)));
                }
            }
        }
        let mut features = BASE_FEATURES;
        if config.offloads == Offloads::Tso {
            features |= OFFLOAD_FEATURES & !host_offloads_refused(takes);
        }
        if pairs > 1 {
            features |= MQ_FEATURES;
        }
        let direct_tx = matches!(
            &config.backend,
            NetBackend::Port(DevicePort {
                direct_tx: Some(_),
                ..
            })
        );
        let mut queue_pairs = Vec::with_capacity(wires.len());
        let mut rx_paths = Vec::with_capacity(wires.len());
        for (tx_wire, rx_wire) in wires {
            let tx_room_fd = tx_wire.room_fd();
            queue_pairs.push(QueuePair {
                tx: Mutex::new(TxSide {
                    queue: new_queue()?,
                    wire: tx_wire,
                    state: Negotiated::default(),
                }),
                rx: Mutex::new(RxSide {
                    queue: new_queue()?,
                    state: Negotiated::default(),
                }),
                rx_kick: EventFd::new(EFD_NONBLOCK)?,
                tx_stalled: AtomicBool::new(false),
                tx_room_fd,
                direct_waiting: AtomicBool::new(false),
                direct_wake: Arc::new(EventFd::new(EFD_NONBLOCK)?),
                direct_tx,
                direct_tx_waiting: AtomicBool::new(false),
                direct_tx_wake: Arc::new(EventFd::new(EFD_NONBLOCK)?),
                counters: QueueCounters::default(),
            });
            rx_paths.push(RxPath::new(rx_wire));
        }
        let ctrl = if pairs > 1 {
            Some(Mutex::new(new_queue()?))
        } else {
            None
        };
        let device = Arc::new(VirtioNetDevice {
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
            pairs: queue_pairs.into_boxed_slice(),
            ctrl,
            active_pairs: AtomicU16::new(1),
            interrupt_status: AtomicU32::new(0),
            link_up: AtomicBool::new(true),
            config_generation: AtomicU32::new(0),
            config_interrupts: AtomicU64::new(0),
            negotiated: AtomicU64::new(0),
            rx_paths: Mutex::new(rx_paths),
            rx_stop: EventFd::new(EFD_NONBLOCK)?,
            rx_threads: Mutex::new(Vec::new()),
            halted: AtomicBool::new(false),
        });
        if let NetBackend::Port(DevicePort {
            direct: Some(slot), ..
        }) = &device.config.backend
        {
            let handles = (device.pairs.iter().enumerate())
                .map(|(pair, p)| DirectRx {
                    device: Arc::downgrade(&device),
                    pair,
                    wake: Arc::clone(&p.direct_wake),
                    scratch: RxScratch::new(),
                })
                .collect();
            *lock(slot) = Some(handles);
        }
        if let NetBackend::Port(DevicePort {
            direct_tx: Some(slot),
            ..
        }) = &device.config.backend
        {
            let handles = (device.pairs.iter().enumerate())
                .map(|(pair, p)| DirectTx {
                    device: Arc::downgrade(&device),
                    pair,
                    wake: Arc::clone(&p.direct_tx_wake),
                    used: Vec::with_capacity(usize::from(QUEUE_MAX)),
                })
                .collect();
            *lock(slot) = Some(handles);
        }
        Ok(device)
    }

    /// Starts one receive thread per queue pair (each waits until the driver is ready).
    pub(crate) fn start(self: &Arc<Self>, name: &str) -> io::Result<()> {
        let paths = std::mem::take(&mut *lock(&self.rx_paths));
        let mut threads = lock(&self.rx_threads);
        for (index, path) in paths.into_iter().enumerate() {
            let device = Arc::clone(self);
            threads.push(
                thread::Builder::new()
                    .name(format!("{name}-rx{index}"))
                    .spawn(move || device.rx_loop(index, path))?,
            );
        }
        Ok(())
    }

    /// Ends the receive threads and waits for them; each drops its receiving half of
    /// the backend as it ends. After this the device touches the kernel's RAM only
    /// from kernel kicks (TX), which end with the kernel or with the driver's removal.
    pub(crate) fn stop(&self) {
        let _ = self.rx_stop.write(1);
        for handle in lock(&self.rx_threads).drain(..) {
            let _ = handle.join();
        }
        self.halted.store(true, Ordering::SeqCst);
        // Waits out a direct batch in progress; later ones see `halted`.
        for pair in self.pairs.iter() {
            drop(lock(&pair.rx));
        }
    }

    /// A snapshot of the device's counters.
    pub(crate) fn stats(&self) -> NetDeviceStats {
        let queue_pairs: Vec<_> = self
            .pairs
            .iter()
            .map(|p| QueuePairStats::read(&p.counters))
            .collect();
        let mut total = QueuePairStats::default();
        for q in &queue_pairs {
            total.add(q);
        }
        NetDeviceStats {
            total,
            queue_pairs,
            config_interrupts: self.config_interrupts.load(Ordering::Relaxed),
            negotiated_features: self.negotiated.load(Ordering::Relaxed),
            active_queue_pairs: self.active_pairs.load(Ordering::Relaxed),
            link_up: self.link_up.load(Ordering::Relaxed),
        }
    }

    /// Sets the link state the device reports (VIRTIO_NET_S_LINK_UP) and tells the
    /// driver with a configuration-change interrupt (virtio 1.2 §4.2.2: the config
    /// generation changes with it).
    pub(crate) fn set_link(&self, up: bool) {
        if self.link_up.swap(up, Ordering::SeqCst) == up {
            return;
        }
        self.config_generation.fetch_add(1, Ordering::SeqCst);
        self.config_interrupts.fetch_add(1, Ordering::Relaxed);
        self.interrupt_status
            .fetch_or(INTERRUPT_CONFIG_CHANGE, Ordering::SeqCst);
        // SAFETY: raising an interrupt only sets a pending bit in the kernel; any host
        // thread may call it.
        unsafe { lkl_sys::knic_trigger_irq(self.irq) };
    }

    fn raise_interrupt(&self) {
        self.interrupt_status
            .fetch_or(INTERRUPT_USED_BUFFER, Ordering::SeqCst);
        // SAFETY: raising an interrupt only sets a pending bit in the kernel; any host
        // thread may call it.
        unsafe { lkl_sys::knic_trigger_irq(self.irq) };
    }

    /// `struct virtio_net_config`: mac, status, max_virtqueue_pairs, mtu.
    fn config_space(&self) -> [u8; 12] {
        let mut c = [0u8; 12];
        c[..6].copy_from_slice(&self.config.mac);
        let status = if self.link_up.load(Ordering::SeqCst) {
            NET_S_LINK_UP
        } else {
            0
        };
        c[6..8].copy_from_slice(&status.to_le_bytes());
        c[8..10].copy_from_slice(&self.config.queue_pairs.to_le_bytes());
        c[10..12].copy_from_slice(&self.config.mtu.to_le_bytes());
        c
    }

    /// Applies `f` to every queue side's negotiation state, bumping its epoch.
    fn renegotiate(&self, f: impl Fn(usize, &mut Negotiated)) {
        let update = |i: usize, state: &mut Negotiated, queue: &mut Queue| {
            f(i, state);
            state.epoch += 1;
            queue.set_event_idx(state.features.event_idx);
        };
        for (i, pair) in self.pairs.iter().enumerate() {
            let tx = &mut *lock(&pair.tx);
            update(i, &mut tx.state, &mut tx.queue);
            let rx = &mut *lock(&pair.rx);
            update(i, &mut rx.state, &mut rx.queue);
            let _ = pair.rx_kick.write(1);
            pair.wake_direct();
            pair.wake_direct_tx();
        }
    }

    fn driver_ok(&self) {
        let accepted = lock(&self.regs).driver_features & self.features;
        self.negotiated.store(accepted, Ordering::Relaxed);
        let features = NetFeatures::from_acked(accepted);
        if let Some(ctrl) = &self.ctrl {
            lock(ctrl).set_event_idx(features.event_idx);
        }
        let active = usize::from(self.active_pairs.load(Ordering::SeqCst));
        self.renegotiate(|i, n| {
            n.running = true;
            n.features = features;
            n.enabled = i < active;
        });
    }

    fn reset(&self) {
        self.renegotiate(|_, n| {
            n.running = false;
            n.enabled = false;
        });
        for pair in self.pairs.iter() {
            lock(&pair.tx).queue.reset();
            lock(&pair.rx).queue.reset();
        }
        if let Some(ctrl) = &self.ctrl {
            lock(ctrl).reset();
        }
        self.active_pairs.store(1, Ordering::SeqCst);
        self.negotiated.store(0, Ordering::Relaxed);
        self.interrupt_status.store(0, Ordering::SeqCst);
        let mut regs = lock(&self.regs);
        regs.driver_features = 0;
        regs.status = 0;
    }

    /// The kernel kicked queue `index`.
    fn notify(&self, index: usize) {
        let pair = index / 2;
        if let Some(p) = self.pairs.get(pair) {
            if index % 2 == 1 {
                p.counters.tx_kicks.add(1);
                if p.direct_tx {
                    // The taker's thread sends; the kick only wakes it (no lock here).
                    p.wake_direct_tx();
                } else {
                    self.process_tx(p);
                }
            } else {
                p.counters.rx_kicks.add(1);
                let _ = p.rx_kick.write(1);
                p.wake_direct();
            }
        } else if index == 2 * self.pairs.len() {
            self.process_ctrl();
        }
    }

    fn process_tx(&self, pair: &QueuePair) {
        let Some(mem) = kernel_ram() else { return };
        let mut tx = lock(&pair.tx);
        if !tx.state.running {
            return;
        }
        let TxSide { queue, wire, state } = &mut *tx;
        let limits = TxLimits::new(state.features, self.config.mtu);
        let interrupt = transmit(queue, mem, wire, &limits, &pair.counters);
        let stalled = wire.stalled();
        drop(tx);
        if interrupt {
            self.raise_interrupt();
        }
        if stalled && !pair.tx_stalled.swap(true, Ordering::SeqCst) {
            // The receive thread watches the backend's room fd from its next poll on.
            let _ = pair.rx_kick.write(1);
        }
    }

    /// Answers control-queue commands (the driver busy-waits for each answer).
    fn process_ctrl(&self) {
        let (Some(mem), Some(ctrl)) = (kernel_ram(), &self.ctrl) else {
            return;
        };
        let mut queue = lock(ctrl);
        let old_used = queue.next_used();
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let written = self.ctrl_command(mem, chain).unwrap_or(0);
            let _ = queue.add_used(mem, head, written);
        }
        let _ = queue.enable_notification(mem);
        let interrupt = needs_interrupt(&queue, mem, old_used);
        drop(queue);
        if interrupt {
            self.raise_interrupt();
        }
    }

    /// One command: `{class, command}` and its data readable, then the one-byte ack
    /// writable. Returns the bytes written (the ack), or None for a malformed chain.
    fn ctrl_command(
        &self,
        mem: &GuestMemoryMmap,
        chain: virtio_queue::DescriptorChain<&GuestMemoryMmap>,
    ) -> Option<u32> {
        let mut reader = chain.clone().reader(mem).ok()?;
        let mut writer = chain.writer(mem).ok()?;
        let mut hdr = [0u8; 2];
        reader.read_exact(&mut hdr).ok()?;
        let ack = match (hdr[0], hdr[1]) {
            (CTRL_CLASS_MQ, CTRL_MQ_VQ_PAIRS_SET) => {
                let mut pairs = [0u8; 2];
                reader.read_exact(&mut pairs).ok()?;
                let pairs = u16::from_le_bytes(pairs);
                if (1..=self.config.queue_pairs).contains(&pairs) {
                    self.active_pairs.store(pairs, Ordering::SeqCst);
                    let active = usize::from(pairs);
                    self.renegotiate(|i, n| n.enabled = n.running && i < active);
                    CTRL_OK
                } else {
                    CTRL_ERR
                }
            }
            _ => CTRL_ERR,
        };
        writer.write_all(&[ack]).ok()?;
        Some(1)
    }

    fn rx_loop(&self, index: usize, mut path: RxPath) {
        let pair = &self.pairs[index];
        let mut wait = RxWait::Buffers;
        let mut applied_epoch = 0;
        let poll_in = |fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            // Watch the backend only while the kernel has buffers posted, or it would spin;
            // its room fd only while TX waits for room. poll ignores a negative fd.
            let backend = match wait {
                RxWait::Backend => path.wire.ready_fd(),
                RxWait::Buffers | RxWait::Ready => -1,
            };
            let room = match pair.tx_room_fd {
                Some(fd) if pair.tx_stalled.load(Ordering::SeqCst) => fd,
                _ => -1,
            };
            let mut fds = [
                poll_in(self.rx_stop.as_raw_fd()),
                poll_in(pair.rx_kick.as_raw_fd()),
                poll_in(backend),
                poll_in(room),
            ];
            let timeout = if wait == RxWait::Ready { 0 } else { -1 };
            // SAFETY: `fds` holds `fds.len()` valid pollfds.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
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
                let _ = pair.rx_kick.read();
            }
            if fds[3].revents != 0 {
                // The backend drained: take the chains the kernel left in its TX ring (the
                // driver wakes its queue on the interrupt for their used entries).
                pair.tx_stalled.store(false, Ordering::SeqCst);
                self.process_tx(pair);
            }
            let Some(mem) = kernel_ram() else { continue };
            let mut rx = lock(&pair.rx);
            if rx.state.epoch != applied_epoch {
                applied_epoch = rx.state.epoch;
                if rx.state.running
                    && let Err(e) = path.wire.apply(rx.state.features, rx.state.enabled)
                {
                    tracing::warn!("queue pair {index}: cannot configure the backend: {e}");
                }
            }
            if !rx.state.running || !rx.state.enabled {
                wait = RxWait::Buffers;
                continue;
            }
            let RxSide { queue, state } = &mut *rx;
            let round = path.receive(RxQueue {
                queue,
                mem,
                features: state.features,
                mtu: self.config.mtu,
                counters: &pair.counters,
                keep_kicks: pair.direct_waiting.load(Ordering::SeqCst),
            });
            drop(rx);
            if round.interrupt {
                self.raise_interrupt();
            }
            wait = round.wait;
        }
    }

    /// Applies a register write to the queue selected by QueueSel.
    fn queue_write(&self, offset: u64, value: u32) {
        let sel = lock(&self.regs).queue_sel as usize;
        self.with_queue(sel, |q| match offset {
            QUEUE_NUM => q.set_size(value as u16),
            QUEUE_READY => q.set_ready(value == 1),
            QUEUE_DESC_LOW => q.set_desc_table_address(Some(value), None),
            QUEUE_DESC_HIGH => q.set_desc_table_address(None, Some(value)),
            QUEUE_DRIVER_LOW => q.set_avail_ring_address(Some(value), None),
            QUEUE_DRIVER_HIGH => q.set_avail_ring_address(None, Some(value)),
            QUEUE_DEVICE_LOW => q.set_used_ring_address(Some(value), None),
            QUEUE_DEVICE_HIGH => q.set_used_ring_address(None, Some(value)),
            _ => {}
        });
    }

    fn with_queue<R>(&self, index: usize, f: impl FnOnce(&mut Queue) -> R) -> Option<R> {
        if let Some(pair) = self.pairs.get(index / 2) {
            if index % 2 == 1 {
                Some(f(&mut lock(&pair.tx).queue))
            } else {
                Some(f(&mut lock(&pair.rx).queue))
            }
        } else if index == 2 * self.pairs.len() {
            self.ctrl.as_ref().map(|c| f(&mut lock(c)))
        } else {
            None
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
        let (features_sel, queue_sel, status) = {
            let regs = lock(&self.regs);
            (regs.device_features_sel, regs.queue_sel, regs.status)
        };
        let value: u32 = match offset {
            MAGIC_VALUE => MMIO_MAGIC,
            VERSION => 2,
            DEVICE_ID => VIRTIO_ID_NET,
            VENDOR_ID => 0x4349_4e4b, // "KNIC"
            DEVICE_FEATURES => match features_sel {
                0 => self.features as u32,
                1 => (self.features >> 32) as u32,
                _ => 0,
            },
            QUEUE_NUM_MAX => self
                .with_queue(queue_sel as usize, |_| u32::from(QUEUE_MAX))
                .unwrap_or(0),
            QUEUE_READY => self
                .with_queue(queue_sel as usize, |q| u32::from(q.ready()))
                .unwrap_or(0),
            INTERRUPT_STATUS => self.interrupt_status.load(Ordering::SeqCst),
            STATUS => status,
            CONFIG_GENERATION => self.config_generation.load(Ordering::SeqCst),
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
            QUEUE_NOTIFY => self.notify(value as usize),
            INTERRUPT_ACK => {
                self.interrupt_status.fetch_and(!value, Ordering::SeqCst);
            }
            STATUS => {
                if value == 0 {
                    self.reset();
                } else {
                    let was = std::mem::replace(&mut lock(&self.regs).status, value);
                    if value & STATUS_DRIVER_OK != 0 && was & STATUS_DRIVER_OK == 0 {
                        self.driver_ok();
                    }
                }
            }
            _ => self.queue_write(offset, value),
        }
    }
}

/// One queue pair's RX ring of a library device, driven from another thread: a lender
/// (the agent's vhost worker) copies each frame straight into the buffers the kernel's
/// driver posted ([`DirectReceiver`], issue 8's one copy per frame), instead of handing
/// a packet to the pair's receive thread, which would copy it a second time.
///
/// Each [`with_ring`](DirectReceiver::with_ring) takes the pair's RX lock once (the receive
/// thread's rounds and the driver's resets are ordered against it), delivers the batch and
/// raises the kernel's interrupt at most once, after the lock is released. The ring is
/// opened only while the driver runs it and the device is not stopping; otherwise every
/// frame gets [`Delivery::NoRoom`](knic_virtio_net::direct::Delivery::NoRoom) and the
/// lender waits. Waiting for buffers needs no room signal of its own: the batch raises
/// the pair's `direct_waiting` flag before it looks at the ring (so the kick it asks for
/// cannot be missed), and the driver's next RX kick, or the ring's renegotiation, writes
/// [`wake_fd`](DirectReceiver::wake_fd).
///
/// The handle holds the device weakly: a removed device is gone for it too.
pub struct DirectRx {
    device: Weak<VirtioNetDevice>,
    pair: usize,
    /// The pair's `direct_wake`, shared, so the fd outlives the device.
    wake: Arc<EventFd>,
    scratch: RxScratch,
}

impl std::fmt::Debug for DirectRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectRx")
            .field("pair", &self.pair)
            .finish()
    }
}

impl DirectReceiver for DirectRx {
    fn with_ring(&mut self, batch: &mut dyn FnMut(&mut dyn DirectRing)) {
        let device = self.device.upgrade();
        let pair = device
            .as_ref()
            .and_then(|d| d.pairs.get(self.pair).map(|p| (d, p)));
        let (Some((device, pair)), Some(mem)) = (pair, kernel_ram()) else {
            batch(&mut DirectRound::closed(&mut self.scratch));
            return;
        };
        // Readiness reset first, so only a wakeup after this batch's look fires it.
        let _ = self.wake.read();
        pair.direct_waiting.store(true, Ordering::SeqCst);
        let mut rx = lock(&pair.rx);
        let RxSide { queue, state } = &mut *rx;
        let open = state.running && state.enabled && !device.halted.load(Ordering::SeqCst);
        let mut round = if open {
            DirectRound::open(
                &mut self.scratch,
                RxQueue {
                    queue,
                    mem,
                    features: state.features,
                    mtu: device.config.mtu,
                    counters: &pair.counters,
                    keep_kicks: false,
                },
            )
        } else {
            DirectRound::closed(&mut self.scratch)
        };
        batch(&mut round);
        let (interrupt, waits) = round.finish();
        if !waits {
            pair.direct_waiting.store(false, Ordering::SeqCst);
        }
        drop(rx);
        if interrupt {
            device.raise_interrupt();
        }
    }

    fn wake_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }
}

/// One queue pair's TX ring of a library device, driven from another thread: a taker (the
/// agent's vhost worker) copies each of the kernel's TX chains straight into its own
/// driver's buffers ([`DirectSender`], issue 8's one copy per frame toward a guest),
/// instead of the device copying it into a packet that a second copy moves on.
///
/// Each [`with_ring`](DirectSender::with_ring) takes the pair's TX lock once (the driver's
/// resets are ordered against it), lends the batch's chains, publishes their used entries
/// together and raises the kernel's interrupt at most once, after the lock is released.
/// The ring is opened only while the driver runs it and the device is not stopping;
/// otherwise it lends nothing and the taker waits. A chain the taker has no room for stays
/// in the ring (its driver stops the queue once the ring is full, and wakes it on the
/// interrupt for the chains taken later). A batch that finds the ring empty has asked for
/// the driver's kick, which writes [`wake_fd`](DirectSender::wake_fd): the batch raises
/// the pair's `direct_tx_waiting` flag before it looks, so that kick cannot be missed.
///
/// The handle holds the device weakly: a removed device is gone for it too.
pub struct DirectTx {
    device: Weak<VirtioNetDevice>,
    pair: usize,
    /// The pair's `direct_tx_wake`, shared, so the fd outlives the device.
    wake: Arc<EventFd>,
    /// The batch's completed chains, allocated once.
    used: Vec<(u16, u32)>,
}

impl std::fmt::Debug for DirectTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectTx")
            .field("pair", &self.pair)
            .finish()
    }
}

impl DirectSender for DirectTx {
    fn with_ring(&mut self, batch: &mut dyn FnMut(&mut dyn SendingRing)) {
        let device = self.device.upgrade();
        let pair = device
            .as_ref()
            .and_then(|d| d.pairs.get(self.pair).map(|p| (d, p)));
        let (Some((device, pair)), Some(mem)) = (pair, kernel_ram()) else {
            batch(&mut DirectTxRound::closed(&mut self.used));
            return;
        };
        // Readiness reset first, so only a wakeup after this batch's look fires it.
        let _ = self.wake.read();
        pair.direct_tx_waiting.store(true, Ordering::SeqCst);
        let mut tx = lock(&pair.tx);
        let TxSide { queue, state, .. } = &mut *tx;
        let open = state.running && state.enabled && !device.halted.load(Ordering::SeqCst);
        let mut round = if open {
            DirectTxRound::open(
                &mut self.used,
                TxOpen {
                    queue,
                    mem,
                    limits: TxLimits::new(state.features, device.config.mtu),
                    counters: &pair.counters,
                },
            )
        } else {
            DirectTxRound::closed(&mut self.used)
        };
        batch(&mut round);
        let (interrupt, waits) = round.finish();
        if !waits {
            pair.direct_tx_waiting.store(false, Ordering::SeqCst);
        }
        drop(tx);
        if interrupt {
            device.raise_interrupt();
        }
    }

    fn wake_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }
}
