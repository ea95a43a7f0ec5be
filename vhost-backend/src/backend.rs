//! The rust-vmm glue: [`NetBackend`] implements `VhostUserBackend` for the vhost-user daemon.
//!
//! Threading: the framework runs one worker per entry of `queues_per_thread`; we give each
//! queue pair its own worker (RX queue `2i`, TX queue `2i+1`), named `knic-qp<i>`. A pair's
//! state sits in its own `Mutex`, locked once per event by that pair's worker only (the
//! frontend-handler thread takes it briefly on renegotiation), so it is uncontended on the
//! data path. This is why the device implements the interior-mutability `VhostUserBackend`
//! rather than `VhostUserBackendMut`, which the framework would wrap in one device-wide lock
//! and so serialise every queue pair.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use packet_ring::{GuestOffloads, PacketPort};
use tracing::{debug, error, warn};
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackend, VringT};
use virtio_queue::QueueT;
use vm_memory::{
    GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    MemoryRegionAddress,
};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    EventConsumer, EventFlag, EventNotifier, new_event_consumer_and_notifier,
};

use crate::config::NetConfig;
use crate::ctrl::{CtrlQueue, CtrlState};
use crate::features::{NetFeatures, OFFERED_FEATURES, offered_protocol_features};
use crate::front_door::FrontDoorStats;
use crate::guest_fault::FaultOwner;
use crate::queue_pair::{HostError, QueuePair, QueuePairConfig};
use crate::ring;
use crate::rx_filter::SharedRxFilter;
use crate::stats::{QueuePairSnapshot, QueuePairStats};
use crate::vring::NetVring;

/// Guest memory as the framework hands it over (no dirty-page bitmap).
pub type GuestMem = GuestMemoryAtomic<GuestMemoryMmap<()>>;

/// Event id of a pair's RX vring inside its worker (the framework numbers a worker's vrings
/// by their position in its queue mask).
pub const RX_VRING_EVENT: u16 = 0;
/// Event id of a pair's TX vring inside its worker.
pub const TX_VRING_EVENT: u16 = 1;

/// The most queue pairs: the framework's queue masks are 64 bits, two per pair plus the
/// control queue.
pub const MAX_QUEUE_PAIRS: usize = 31;

/// Event id of the control queue inside its own worker.
pub const CTRL_VRING_EVENT: u16 = 0;

/// What the device is, fixed at start-up.
#[derive(Debug, Clone, Copy)]
pub struct NetBackendConfig {
    pub mac: [u8; 6],
    pub mtu: u16,
    pub queue_size: u16,
    /// Packets moved per uplink call.
    pub batch: usize,
    /// Busy-polling of a TX ring after its kick: how long the worker keeps looking for new
    /// chains after the last ones it found before it goes back to waiting for a kick
    /// (the private `BusyPoll` documents how). Zero: no polling, every batch waits for its kick.
    pub busy_poll: Duration,
}

/// The TX busy-poll of one worker, with an adaptive back-off: after a kick the worker
/// drains the ring, then keeps checking the guest's avail index (a read of guest memory, no
/// system call, the ring's lock released between checks) for `idle` after the last chain it
/// found, and drains again whenever chains arrived. Traffic that keeps coming is served
/// without a kick or a wake-up per batch, as DPDK's polling driver does; a quiet ring costs at
/// most `idle` of CPU before the worker sleeps on its kick again. One call holds the worker
/// for at most [`BusyPoll::hold`], so the framework's exit and memory-table events (seen
/// only between calls) are never held up longer than that.
#[derive(Debug, Clone, Copy)]
struct BusyPoll {
    idle: Duration,
}

impl BusyPoll {
    /// Longest one handler call polls before it returns to the framework's event loop (it
    /// comes straight back: the guest's kicks while it polled left the kick fd readable):
    /// 2 ms, or twice `idle` when that is longer, so a whole idle period fits.
    fn hold(self) -> Duration {
        Duration::from_millis(2).max(self.idle * 2)
    }
}

#[derive(Debug)]
struct PairSlot {
    qp: QueuePair,
    busy_poll: BusyPoll,
    mem: Option<GuestMem>,
    /// Whether this connection's worker thread has been given its name.
    named: bool,
}

#[derive(Debug)]
struct CtrlSlot {
    ctrl: CtrlQueue,
    mem: Option<GuestMem>,
}

/// The vhost-user virtio-net device.
#[derive(Debug)]
pub struct NetBackend {
    config: NetBackendConfig,
    pairs: Vec<Mutex<PairSlot>>,
    stats: Vec<Arc<QueuePairStats>>,
    acked_features: AtomicU64,
    /// The control queue (last queue), served on its own worker.
    ctrl: Mutex<CtrlSlot>,
    /// Pairs that carry traffic: all of them, unless a frontend passing the control queue
    /// through says otherwise with VQ_PAIRS_SET (it starts at 1, virtio 1.2 §5.1.6.5.5).
    active_pairs: AtomicUsize,
    /// What the front door refused, by reason.
    front_door: FrontDoorStats,
    /// This device's guest memory in the process's SIGBUS containment table (`guest_fault`);
    /// `None` when the table had no room for another device.
    fault_owner: Option<FaultOwner>,
    /// Host ranges of the memory table before the current one (still registered: a worker
    /// may hold it for the event it handles).
    previous_ranges: Mutex<Vec<(usize, usize)>>,
    /// Exit-event consumers handed to the framework, which leaks them (README): each raw
    /// number with our own clone of it, to close it once the daemon is dropped.
    exit_events: Mutex<Vec<(RawFd, EventConsumer)>>,
}

/// Why the device could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BackendError {
    #[error("{0} queue pairs requested; between 1 and {MAX_QUEUE_PAIRS} are supported")]
    QueuePairs(usize),
    #[error("queue size {0} is not a power of two between 2 and 32768")]
    QueueSize(u16),
}

impl NetBackend {
    /// One queue pair per uplink port.
    pub fn new(
        config: NetBackendConfig,
        uplinks: Vec<Box<dyn PacketPort>>,
    ) -> Result<Self, BackendError> {
        if uplinks.is_empty() || uplinks.len() > MAX_QUEUE_PAIRS {
            return Err(BackendError::QueuePairs(uplinks.len()));
        }
        if !config.queue_size.is_power_of_two() || config.queue_size < 2 {
            return Err(BackendError::QueueSize(config.queue_size));
        }
        let rx_filter = SharedRxFilter::new(config.mac);
        let mut pairs = Vec::with_capacity(uplinks.len());
        let mut stats = Vec::with_capacity(uplinks.len());
        for (index, uplink) in uplinks.into_iter().enumerate() {
            let s = Arc::new(QueuePairStats::default());
            let qp = QueuePair::new(
                QueuePairConfig {
                    index,
                    batch: config.batch,
                    mtu: config.mtu,
                    max_queue_size: config.queue_size,
                },
                uplink,
                Arc::clone(&rx_filter),
                Arc::clone(&s),
            );
            pairs.push(Mutex::new(PairSlot {
                qp,
                busy_poll: BusyPoll {
                    idle: config.busy_poll,
                },
                mem: None,
                named: false,
            }));
            stats.push(s);
        }
        let all = pairs.len();
        Ok(Self {
            config,
            pairs,
            stats,
            acked_features: AtomicU64::new(0),
            ctrl: Mutex::new(CtrlSlot {
                ctrl: CtrlQueue::new(rx_filter),
                mem: None,
            }),
            active_pairs: AtomicUsize::new(all),
            front_door: FrontDoorStats::default(),
            fault_owner: {
                let owner = FaultOwner::new();
                if owner.is_none() {
                    warn!(
                        "too many devices in one process: guest memory faults of this one are not contained"
                    );
                }
                owner
            },
            previous_ranges: Mutex::new(Vec::new()),
            exit_events: Mutex::new(Vec::new()),
        })
    }

    pub fn queue_pairs(&self) -> usize {
        self.pairs.len()
    }

    /// Event id of the uplink's readiness fd in every worker: above the framework's reserved
    /// ids (vrings, then `num_queues` for its exit/vring-enable events).
    pub fn uplink_event(&self) -> u16 {
        // num_queues <= 64, so this fits.
        (self.num_queues() + 1) as u16
    }

    fn slot(&self, pair: usize) -> Option<MutexGuard<'_, PairSlot>> {
        // A poisoned lock means a worker panicked; its state is still plain data, so carry on.
        self.pairs
            .get(pair)
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The uplink readiness fds, one per pair, for registration in each worker's epoll:
    /// a pair's direct sender's wake fd when it has one (`QueuePair::rx_ready_fd`).
    pub fn uplink_fds(&self) -> Vec<RawFd> {
        (0..self.pairs.len())
            .filter_map(|i| self.slot(i).map(|s| s.qp.rx_ready_fd()))
            .collect()
    }

    /// Event id of the uplink's room fd in every worker (readable when an uplink that had
    /// no room for the guest's TX chains drained): the id after [`uplink_event`](Self::uplink_event).
    pub fn uplink_room_event(&self) -> u16 {
        self.uplink_event() + 1
    }

    /// Per pair, the uplink's room fd, for those uplinks that apply backpressure.
    pub fn uplink_room_fds(&self) -> Vec<Option<RawFd>> {
        (0..self.pairs.len())
            .map(|i| self.slot(i).and_then(|s| s.qp.tx_room_fd()))
            .collect()
    }

    /// Gives pair `pair` a direct receiver for its guest's TX chains (one copy per frame
    /// into the library kernel's RX ring, `QueuePair::set_direct_receiver`). Call before
    /// serving: the worker's room fd becomes the receiver's wake fd. False: no such pair.
    pub fn set_direct_receiver(
        &self,
        pair: usize,
        direct: Box<dyn knic_virtio_net::direct::DirectReceiver>,
    ) -> bool {
        self.slot(pair)
            .map(|mut s| s.qp.set_direct_receiver(direct))
            .is_some()
    }

    /// Gives pair `pair` a direct sender for its guest's RX chains (one copy per frame out
    /// of the library kernel's TX ring, `QueuePair::set_direct_sender`). Call before
    /// serving: the worker's readiness fd becomes the sender's wake fd. False: no such pair.
    pub fn set_direct_sender(
        &self,
        pair: usize,
        direct: Box<dyn knic_virtio_net::direct::DirectSender>,
    ) -> bool {
        self.slot(pair)
            .map(|mut s| s.qp.set_direct_sender(direct))
            .is_some()
    }

    /// The front door's counters.
    pub fn front_door_stats(&self) -> &FrontDoorStats {
        &self.front_door
    }

    /// Whether a fault was contained in this device's guest memory since the last call.
    pub fn take_memory_poisoned(&self) -> bool {
        self.fault_owner
            .as_ref()
            .is_some_and(FaultOwner::take_poisoned)
    }

    /// Closes the exit-event fds the framework leaked for the daemon just dropped (README,
    /// "The per-connection fd leak"). Call only after the daemon is dropped. Returns how many
    /// were closed.
    pub fn reclaim_exit_events(&self) -> usize {
        let events = std::mem::take(&mut *lock(&self.exit_events));
        let closed = events
            .iter()
            .filter(|(leaked, witness)| crate::sys::close_leaked_fd(*leaked, witness))
            .count();
        self.front_door
            .leaked_fds_reclaimed
            .fetch_add(closed as u64, Ordering::Relaxed);
        closed
    }

    /// Forgets everything the last frontend set up: features, pending packets, guest memory
    /// (dropping the last reference unmaps it). Uplinks stay. Called between connections.
    pub fn reset(&self) {
        self.reset_state(true);
    }

    /// `RESET_DEVICE` keeps the connection and its memory table (the frontend need not send
    /// it again), so only the negotiated state goes.
    fn reset_state(&self, forget_memory: bool) {
        self.acked_features.store(0, Ordering::Relaxed);
        self.active_pairs.store(self.pairs.len(), Ordering::Relaxed);
        {
            let mut c = self.ctrl_slot();
            c.ctrl.reset();
            if forget_memory {
                c.mem = None;
            }
        }
        if forget_memory {
            lock(&self.previous_ranges).clear();
            if let Some(owner) = &self.fault_owner {
                owner.set_regions(&[]);
                owner.take_poisoned();
            }
        }
        for i in 0..self.pairs.len() {
            if let Some(mut s) = self.slot(i) {
                s.qp.reset();
                // Until the next negotiation, ask the uplink for plain frames again, and for
                // none at all until a ring can take them.
                if let Err(e) =
                    s.qp.uplink_mut()
                        .set_guest_offloads(GuestOffloads::default())
                {
                    warn!(queue_pair = i, "cannot reset uplink offloads: {e}");
                }
                if let Err(e) = s.qp.attach_uplink(false) {
                    warn!(queue_pair = i, "cannot detach the uplink: {e}");
                }
                if forget_memory {
                    s.mem = None;
                    s.named = false;
                }
            }
        }
    }

    fn ctrl_slot(&self) -> MutexGuard<'_, CtrlSlot> {
        self.ctrl.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the control queue last acknowledged (all defaults unless a frontend passes the
    /// control queue through), and how many pairs carry traffic.
    pub fn control_state(&self) -> (CtrlState, usize) {
        (
            self.ctrl_slot().ctrl.state(),
            self.active_pairs.load(Ordering::Relaxed),
        )
    }

    /// Counters of every pair. Also collects the uplinks' kernel-side drop counts, taking
    /// each pair's lock briefly (the stats reader is rare; the data path never waits on it).
    pub fn stats(&self) -> Vec<QueuePairSnapshot> {
        for i in 0..self.pairs.len() {
            if let Some(mut s) = self.slot(i) {
                let dropped = s.qp.uplink_mut().kernel_drops();
                s.qp.stats().uplink_kernel_drops.add(dropped);
            }
        }
        self.stats
            .iter()
            .enumerate()
            .map(|(i, s)| s.snapshot(i))
            .collect()
    }

    /// Per-pair counters, shared.
    pub fn pair_stats(&self) -> &[Arc<QueuePairStats>] {
        &self.stats
    }

    fn net_config(&self) -> NetConfig {
        NetConfig {
            mac: self.config.mac,
            max_queue_pairs: self.pairs.len() as u16,
            mtu: self.config.mtu,
        }
    }

    fn handle_ctrl_event(&self, device_event: u16, vrings: &[NetVring]) -> io::Result<()> {
        if device_event != CTRL_VRING_EVENT {
            return Ok(());
        }
        let mut c = self.ctrl_slot();
        crate::sys::set_current_thread_name("knic-ctrl");
        let (Some(mem), [vring]) = (c.mem.clone(), vrings) else {
            return Ok(());
        };
        let mem = mem.memory();
        if !vring.is_enabled() {
            return Ok(());
        }
        let mut state = vring.get_mut();
        if !state.get_queue().ready() {
            return Ok(());
        }
        let old_used = state.get_queue().next_used();
        match c.ctrl.process(
            state.get_queue_mut(),
            &*mem,
            &self.active_pairs,
            self.pairs.len(),
        ) {
            Ok(true) => {
                if ring::needs_notification(state.get_queue(), &*mem, old_used).unwrap_or(true) {
                    signal(&state)?;
                }
            }
            Ok(false) => {}
            Err(e) => warn!("control queue: {e}"),
        }
        Ok(())
    }

    /// Processes one ring of the pair (`rx` chooses which) if it is started, then signals the
    /// guest if the ring's notification rules ask for it.
    fn run_ring(
        slot: &mut PairSlot,
        mem: &GuestMemoryMmap<()>,
        vring: &NetVring,
        rx: bool,
        pair_active: bool,
    ) -> Result<(), HostError> {
        let Some(enabled) = Self::drain(slot, mem, vring, rx, pair_active)? else {
            return Ok(());
        };
        // A stalled uplink wakes the worker through its room fd; polling meanwhile would
        // only find the same chains again.
        if !rx && enabled && !slot.busy_poll.idle.is_zero() && !slot.qp.tx_stalled() {
            Self::poll_tx(slot, mem, vring, slot.busy_poll, pair_active)?;
        }
        Ok(())
    }

    /// Busy-polls `vring` (a TX ring) after a drain ([`BusyPoll`]).
    fn poll_tx(
        slot: &mut PairSlot,
        mem: &GuestMemoryMmap<()>,
        vring: &NetVring,
        poll: BusyPoll,
        pair_active: bool,
    ) -> Result<(), HostError> {
        let start = Instant::now();
        let mut last_work = start;
        loop {
            let now = Instant::now();
            if now.duration_since(last_work) >= poll.idle
                || now.duration_since(start) >= poll.hold()
            {
                return Ok(());
            }
            let waiting = {
                let state = vring.get_ref();
                let queue = state.get_queue();
                // An unreadable avail ring ends the poll: the next kick's drain counts it
                // (`ring::avail_is_empty` reads it as "not empty", which would drain and
                // count the same fault on every turn of the poll).
                queue.ready()
                    && queue
                        .avail_idx(mem, Ordering::Acquire)
                        .is_ok_and(|idx| idx.0 != queue.next_avail())
            };
            if waiting {
                slot.qp.stats().tx_polled.add(1);
                if Self::drain(slot, mem, vring, false, pair_active)? != Some(true)
                    || slot.qp.tx_stalled()
                {
                    return Ok(());
                }
                last_work = Instant::now();
            } else {
                std::hint::spin_loop();
            }
        }
    }

    /// Processes `vring` once and signals the guest when the ring asks for it. Returns
    /// whether the ring was enabled (None: not started yet; RX packets wait in the uplink and
    /// the framework calls again on start).
    fn drain(
        slot: &mut PairSlot,
        mem: &GuestMemoryMmap<()>,
        vring: &NetVring,
        rx: bool,
        pair_active: bool,
    ) -> Result<Option<bool>, HostError> {
        let mut state = vring.get_mut();
        if !state.get_queue().ready() {
            return Ok(None);
        }
        let enabled = vring.is_enabled() && pair_active;
        let queue = state.get_queue_mut();
        let notify = if rx {
            slot.qp.process_rx(queue, mem, enabled)?
        } else {
            slot.qp.process_tx(queue, mem, enabled)?
        };
        if notify {
            signal(&state).map_err(HostError::Notify)?;
            let stats = slot.qp.stats();
            if rx {
                stats.rx_notifications.add(1);
            } else {
                stats.tx_notifications.add(1);
            }
        }
        Ok(Some(enabled))
    }
}

impl NetBackend {
    /// Puts the host ranges of `mem` (and of the table before it) in the SIGBUS containment
    /// table, before any worker sees `mem`.
    fn register_for_faults(&self, mem: &GuestMem) {
        let Some(owner) = &self.fault_owner else {
            return;
        };
        let current: Vec<(usize, usize)> = mem
            .memory()
            .iter()
            .filter_map(|r| {
                let start = r.get_host_address(MemoryRegionAddress(0)).ok()?;
                Some((start as usize, r.len() as usize))
            })
            .collect();
        let mut previous = lock(&self.previous_ranges);
        let both: Vec<(usize, usize)> = current.iter().chain(previous.iter()).copied().collect();
        let missed = owner.set_regions(&both);
        if missed > 0 {
            warn!(
                missed,
                "containment table full: some guest memory faults are not contained"
            );
        }
        *previous = current;
    }
}

/// Signals the guest through the ring's call eventfd. The front door made it non-blocking,
/// so a full counter is `WouldBlock`: an interrupt is pending already, nothing is lost.
fn signal(state: &vhost_user_backend::VringState<GuestMem>) -> io::Result<()> {
    match state.signal_used_queue() {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        r => r,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn guest_offloads(f: &NetFeatures) -> GuestOffloads {
    GuestOffloads {
        csum: f.guest_csum,
        tso4: f.guest_tso4,
        tso6: f.guest_tso6,
        ecn: f.guest_ecn,
    }
}

impl VhostUserBackend for NetBackend {
    type Bitmap = ();
    type Vring = NetVring;

    fn num_queues(&self) -> usize {
        // RX/TX per pair, then the control queue.
        2 * self.pairs.len() + 1
    }

    fn max_queue_size(&self) -> usize {
        usize::from(self.config.queue_size)
    }

    fn features(&self) -> u64 {
        OFFERED_FEATURES
    }

    fn acked_features(&self, features: u64) {
        self.acked_features.store(features, Ordering::Relaxed);
        let nf = NetFeatures::from_acked(features);
        debug!(features = format_args!("{features:#x}"), "features acked");
        let active = if nf.ctrl_vq { 1 } else { self.pairs.len() };
        self.active_pairs.store(active, Ordering::Relaxed);
        for i in 0..self.pairs.len() {
            if let Some(mut s) = self.slot(i) {
                s.qp.set_features(nf);
                if let Err(e) = s.qp.uplink_mut().set_guest_offloads(guest_offloads(&nf)) {
                    warn!(queue_pair = i, "cannot set uplink offloads: {e}");
                }
            }
        }
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        offered_protocol_features()
    }

    fn reset_device(&self) {
        self.reset_state(false);
    }

    fn set_event_idx(&self, _enabled: bool) {
        // The framework sets EVENT_IDX on each queue; the data path reads it from the queue.
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        self.net_config().read(offset, size)
    }

    fn update_memory(&self, mem: GuestMem) -> io::Result<()> {
        self.register_for_faults(&mem);
        self.ctrl_slot().mem = Some(mem.clone());
        for i in 0..self.pairs.len() {
            if let Some(mut s) = self.slot(i) {
                s.mem = Some(mem.clone());
            }
        }
        Ok(())
    }

    fn queues_per_thread(&self) -> Vec<u64> {
        let pairs = self.pairs.len();
        (0..pairs)
            .map(|i| 0b11u64 << (2 * i))
            .chain(std::iter::once(1u64 << (2 * pairs)))
            .collect()
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        match new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC) {
            Ok((consumer, notifier)) => {
                // The framework keeps only the raw number of `consumer` (README): remember it
                // with a clone to close it by once the daemon is gone.
                match consumer.try_clone() {
                    Ok(witness) => lock(&self.exit_events).push((consumer.as_raw_fd(), witness)),
                    Err(e) => warn!("cannot track a worker exit event: {e}"),
                }
                Some((consumer, notifier))
            }
            Err(e) => {
                warn!("cannot create a worker exit event: {e}");
                None
            }
        }
    }

    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[NetVring],
        thread_id: usize,
    ) -> io::Result<()> {
        if thread_id == self.pairs.len() {
            return self.handle_ctrl_event(device_event, vrings);
        }
        let uplink_event = self.uplink_event();
        let room_event = self.uplink_room_event();
        let pair_active = thread_id < self.active_pairs.load(Ordering::Relaxed);
        let Some(mut slot) = self.slot(thread_id) else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        if !slot.named {
            crate::sys::set_current_thread_name(&format!("knic-qp{thread_id}"));
            slot.named = true;
        }
        let Some(mem) = slot.mem.clone() else {
            // No memory table yet (a frontend may kick before SET_MEM_TABLE): nothing to touch.
            return Ok(());
        };
        let mem = mem.memory();
        let [rx, tx] = vrings else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        // Every event of the pair re-checks whether its RX ring can receive: ring starts and
        // SET_VRING_ENABLE changes reach the worker as kicks (`vring` module doc).
        let can_receive = pair_active && rx.is_enabled() && rx.get_ref().get_queue().ready();
        let result = slot
            .qp
            .attach_uplink(can_receive)
            .and_then(|()| match device_event {
                RX_VRING_EVENT => {
                    slot.qp.stats().rx_kicks.add(1);
                    Self::run_ring(&mut slot, &mem, rx, true, pair_active)
                }
                TX_VRING_EVENT => {
                    slot.qp.stats().tx_kicks.add(1);
                    Self::run_ring(&mut slot, &mem, tx, false, pair_active)
                }
                e if e == uplink_event => {
                    slot.qp.stats().uplink_events.add(1);
                    Self::run_ring(&mut slot, &mem, rx, true, pair_active)
                }
                e if e == room_event => {
                    // The uplink drained: take the TX chains it had no room for.
                    Self::run_ring(&mut slot, &mem, tx, false, pair_active)
                }
                other => {
                    warn!(queue_pair = thread_id, event = other, "unexpected event id");
                    Ok(())
                }
            });
        // A started, disabled TX ring gets its kicks (`vring` module doc), so it is processed
        // and discarded on those, not here.
        result.map_err(|e| {
            // Returning an error ends this pair's worker; say so where an operator looks.
            error!(queue_pair = thread_id, "worker stops on a host error: {e}");
            io::Error::other(e)
        })
    }
}

/// The backend is shared between the daemon and the stats reader.
pub type SharedBackend = Arc<NetBackend>;
