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
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use packet_ring::{GuestOffloads, PacketPort};
use tracing::{debug, error, warn};
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackend, VringT};
use virtio_queue::QueueT;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    EventConsumer, EventFlag, EventNotifier, new_event_consumer_and_notifier,
};

use crate::config::NetConfig;
use crate::ctrl::{CtrlQueue, CtrlState};
use crate::features::{NetFeatures, OFFERED_FEATURES, offered_protocol_features};
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
}

#[derive(Debug)]
struct PairSlot {
    qp: QueuePair,
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
    /// The current connection's worker exit fds, which the framework leaks (see there).
    exit_fds: crate::sys::LeakedExitFds,
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
            exit_fds: crate::sys::LeakedExitFds::default(),
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

    /// The uplink readiness fds, one per pair, for registration in each worker's epoll.
    pub fn uplink_fds(&self) -> Vec<RawFd> {
        (0..self.pairs.len())
            .filter_map(|i| self.slot(i).map(|s| s.qp.uplink().ready_fd()))
            .collect()
    }

    /// Forgets everything the last frontend set up: features, pending packets, guest memory
    /// (dropping the last reference unmaps it). Uplinks stay. Called between connections.
    pub fn reset(&self) {
        self.reset_state(true);
        // The connection's daemon is gone (its workers joined), so the exit fds it leaked
        // have no user left.
        self.exit_fds.close_all();
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
                    state.signal_used_queue()?;
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
        let mut state = vring.get_mut();
        if !state.get_queue().ready() {
            // Not started: RX packets wait in the uplink; the framework calls us on start.
            return Ok(());
        }
        let enabled = vring.is_enabled() && pair_active;
        let queue = state.get_queue_mut();
        let notify = if rx {
            slot.qp.process_rx(queue, mem, enabled)?
        } else {
            slot.qp.process_tx(queue, mem, enabled)?
        };
        if notify {
            state.signal_used_queue().map_err(HostError::Notify)?;
            let stats = slot.qp.stats();
            if rx {
                stats.rx_notifications.add(1);
            } else {
                stats.tx_notifications.add(1);
            }
        }
        Ok(())
    }
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
            Ok(pair) => {
                self.exit_fds
                    .record(std::os::fd::AsRawFd::as_raw_fd(&pair.0));
                Some(pair)
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

impl Drop for NetBackend {
    fn drop(&mut self) {
        // Every daemon holds an `Arc` of the device, so none is left: a connection that
        // ended without a reset (a stop request) leaked its exit fds too.
        self.exit_fds.close_all();
    }
}
