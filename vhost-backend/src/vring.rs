//! The device's vring: rust-vmm's `VringRwLock` plus two rules the framework does not keep.
//!
//! **An interrupt whenever the frontend installs a call eventfd.** The driver hears of used
//! buffers only through the call eventfd current when the device signals. A ring starts at
//! `SET_VRING_KICK`, but its call eventfd may still be none, or one nobody reads: QEMU gives
//! each ring its `masked_notifier` in `vhost_virtqueue_init` and swaps in the guest notifier
//! only after `SET_VRING_KICK`, in `vhost_virtqueue_start`, and for vhost-user it never polls
//! the masked one. A signal in that window is lost, and with `EVENT_IDX` no later one
//! follows: the driver's `used_event` stays behind the used index, and the driver does not
//! look at the ring again without an interrupt. Used entries that a killed predecessor wrote
//! but never signalled are stranded the same way. So installing a call eventfd signals it
//! once; a spurious interrupt costs the driver one look at an unchanged ring. (QEMU's
//! libvhost-user does the same in `vu_set_vring_call_exec`, "in case of I/O hang after
//! reconnecting".)
//!
//! **A disabled ring still gets its kicks, and a state change applies at once.** vhost-user
//! "Ring states": a started but disabled ring is still processed, without side effects: TX
//! chains are taken and discarded, no RX packet is supplied (and a stopped ring is not
//! touched at all). The framework instead stops delivering a disabled ring's kicks, so its TX
//! chains waited until something else woke the pair's worker. Here the framework's flag stays
//! on, so kicks reach the device whenever the ring is started; the spec's enabled state is
//! kept beside it ([`NetVring::is_enabled`]) and decides what the worker does. Every change of
//! it kicks the ring once, so the worker applies it at once rather than at the next event;
//! so does the start of a ring enabled before it (the worker attaches the pair's uplink queue).

use std::fs::File;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLockReadGuard, RwLockWriteGuard};

use tracing::{debug, warn};
use vhost_user_backend::{VringRwLock, VringState, VringStateGuard, VringStateMutGuard, VringT};
use virtio_queue::{Error as VirtQueError, QueueT};

use crate::backend::GuestMem;

/// One guest virtqueue as the device keeps it. Clones share the ring.
#[derive(Clone)]
pub struct NetVring {
    inner: VringRwLock<GuestMem>,
    control: Arc<RingControl>,
}

#[derive(Debug, Default)]
struct RingControl {
    /// SET_VRING_ENABLE's state (rings start disabled).
    enabled: AtomicBool,
    /// A second handle on the frontend's kick eventfd, to wake the ring's worker. Control path
    /// only: locked when the frontend sets a kick fd or changes the ring's state.
    kick: Mutex<Option<File>>,
}

impl std::fmt::Debug for NetVring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetVring")
            .field("enabled", &self.is_enabled())
            .finish_non_exhaustive()
    }
}

impl NetVring {
    /// Whether the ring is enabled (SET_VRING_ENABLE; without protocol features, on start).
    pub fn is_enabled(&self) -> bool {
        self.control.enabled.load(Ordering::Acquire)
    }

    /// Wakes the ring's worker as a guest kick would, if the ring is started.
    fn self_kick(&self) {
        if !self.inner.get_ref().get_queue().ready() {
            return;
        }
        let kick = self.control.kick.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mut f) = kick.as_ref()
            && let Err(e) = f.write_all(&1u64.to_ne_bytes())
            // A full counter already wakes the worker.
            && e.kind() != io::ErrorKind::WouldBlock
        {
            warn!("cannot wake a ring's worker: {e}");
        }
    }
}

impl<'a> VringStateGuard<'a, GuestMem> for NetVring {
    type G = RwLockReadGuard<'a, VringState<GuestMem>>;
}

impl<'a> VringStateMutGuard<'a, GuestMem> for NetVring {
    type G = RwLockWriteGuard<'a, VringState<GuestMem>>;
}

impl VringT<GuestMem> for NetVring {
    fn new(mem: GuestMem, max_queue_size: u16) -> Result<Self, VirtQueError> {
        let inner = VringRwLock::new(mem, max_queue_size)?;
        // The framework delivers kicks of enabled rings only: always, here (module doc).
        inner.set_enabled(true);
        Ok(Self {
            inner,
            control: Arc::default(),
        })
    }

    fn get_ref(&self) -> <Self as VringStateGuard<'_, GuestMem>>::G {
        self.inner.get_ref()
    }

    fn get_mut(&self) -> <Self as VringStateMutGuard<'_, GuestMem>>::G {
        self.inner.get_mut()
    }

    fn add_used(&self, desc_index: u16, len: u32) -> Result<(), VirtQueError> {
        self.inner.add_used(desc_index, len)
    }

    fn signal_used_queue(&self) -> io::Result<()> {
        match self.inner.signal_used_queue() {
            // The call eventfd's counter is full (the front door made it non-blocking): the
            // driver has an interrupt pending already.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            r => r,
        }
    }

    fn enable_notification(&self) -> Result<bool, VirtQueError> {
        self.inner.enable_notification()
    }

    fn disable_notification(&self) -> Result<(), VirtQueError> {
        self.inner.disable_notification()
    }

    fn needs_notification(&self) -> Result<bool, VirtQueError> {
        self.inner.needs_notification()
    }

    fn set_enabled(&self, enabled: bool) {
        if self.control.enabled.swap(enabled, Ordering::AcqRel) != enabled {
            debug!(enabled, "ring state changed");
            self.self_kick();
        }
    }

    fn set_queue_info(
        &self,
        desc_table: u64,
        avail_ring: u64,
        used_ring: u64,
    ) -> Result<(), VirtQueError> {
        self.inner.set_queue_info(desc_table, avail_ring, used_ring)
    }

    fn queue_next_avail(&self) -> u16 {
        self.inner.queue_next_avail()
    }

    fn set_queue_next_avail(&self, base: u16) {
        self.inner.set_queue_next_avail(base)
    }

    fn set_queue_next_used(&self, idx: u16) {
        self.inner.set_queue_next_used(idx)
    }

    fn queue_used_idx(&self) -> Result<u16, VirtQueError> {
        self.inner.queue_used_idx()
    }

    fn set_queue_size(&self, num: u16) {
        self.inner.set_queue_size(num)
    }

    fn set_queue_event_idx(&self, enabled: bool) {
        self.inner.set_queue_event_idx(enabled)
    }

    fn set_queue_ready(&self, ready: bool) {
        let was_ready = self.inner.get_ref().get_queue().ready();
        self.inner.set_queue_ready(ready);
        if ready && !was_ready && self.is_enabled() {
            // Enabled before it started (QEMU's order): the worker learns of the start here.
            self.self_kick();
        }
    }

    fn set_kick(&self, file: Option<File>) {
        let writer = file.as_ref().and_then(|f| match f.try_clone() {
            Ok(w) => Some(w),
            Err(e) => {
                warn!("cannot keep a handle on the kick eventfd: {e}");
                None
            }
        });
        *self.control.kick.lock().unwrap_or_else(|p| p.into_inner()) = writer;
        self.inner.set_kick(file)
    }

    fn read_kick(&self) -> io::Result<bool> {
        match self.inner.read_kick() {
            // A wake-up with the counter already drained (or a spurious one): nothing to read,
            // but the ring is looked at anyway. Failing here would end the worker.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                Ok(self.inner.get_ref().is_enabled())
            }
            r => r,
        }
    }

    fn set_call(&self, file: Option<File>) {
        let installed = file.is_some();
        self.inner.set_call(file);
        if installed {
            // Module doc: a signal may have been lost before this fd was in place.
            if let Err(e) = VringT::signal_used_queue(self) {
                warn!("cannot signal a new call eventfd: {e}");
            }
        }
    }

    fn set_err(&self, file: Option<File>) {
        self.inner.set_err(file)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    use packet_ring::{MAX_FRAME_LEN, VirtioNetHdr, memory_port_pair};
    use vhost_user_backend::VhostUserBackend;
    use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
    use virtio_queue::desc::{RawDescriptor, split::Descriptor as SplitDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryAtomic, GuestMemoryMmap};
    use vmm_sys_util::epoll::EventSet;

    use super::*;
    use crate::backend::{NetBackend, NetBackendConfig};
    use crate::features::OFFERED_FEATURES;

    const QUEUE_SIZE: u16 = 16;
    const BUF: u64 = 0x10_0000;

    /// A call "eventfd" for the vring and the end the test reads it from (a socket pair: the
    /// framework only writes 8 bytes to it).
    fn call_fd() -> (File, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        theirs.set_nonblocking(true).unwrap();
        (File::from(std::os::fd::OwnedFd::from(ours)), theirs)
    }

    /// A one-pair device over `mem` and `port` (batches of 8, every offered feature acked)
    /// and its two rings, not yet set up.
    fn device(
        mem: &GuestMemoryMmap,
        port: impl packet_ring::PacketPort + 'static,
        busy_poll: std::time::Duration,
    ) -> (NetBackend, NetVring, NetVring) {
        let config = NetBackendConfig {
            mac: [2, 0, 0, 0, 0, 1],
            mtu: 1500,
            queue_size: QUEUE_SIZE,
            batch: 8,
            busy_poll,
        };
        let backend = NetBackend::new(config, vec![Box::new(port)]).unwrap();
        let gm = GuestMemoryAtomic::new(mem.clone());
        backend.update_memory(gm.clone()).unwrap();
        backend.acked_features(OFFERED_FEATURES);
        let rx = NetVring::new(gm.clone(), QUEUE_SIZE).unwrap();
        let tx = NetVring::new(gm, QUEUE_SIZE).unwrap();
        (backend, rx, tx)
    }

    /// Interrupts delivered through `end` so far.
    fn interrupts(end: &mut UnixStream) -> usize {
        let mut buf = [0u8; 64];
        match end.read(&mut buf) {
            Ok(n) => n / 8,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => panic!("reading the call end: {e}"),
        }
    }

    /// QEMU's order on a (re)connect: SET_VRING_KICK starts the ring while its call fd is still
    /// the masked notifier nobody reads; a packet arriving then is written and "signalled"
    /// into the void, and EVENT_IDX suppresses every later signal because the driver never
    /// moves `used_event`. The guest notifier that SET_VRING_CALL installs next must get the
    /// interrupt the driver missed.
    #[test]
    fn a_signal_sent_before_the_call_fd_arrives_is_repeated_on_it() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap();
        let mock = MockSplitQueue::create(&mem, GuestAddress(0), QUEUE_SIZE);
        let bufs: Vec<RawDescriptor> = (0..2)
            .map(|i| {
                RawDescriptor::from(SplitDescriptor::new(
                    BUF + 0x1000 * i,
                    2048,
                    VRING_DESC_F_WRITE as u16,
                    0,
                ))
            })
            .collect();
        mock.add_desc_chains(&bufs, 0).unwrap();

        let (port, mut peer) = memory_port_pair(8, MAX_FRAME_LEN).unwrap();
        let (backend, rx, tx) = device(&mem, port, std::time::Duration::ZERO);
        rx.set_queue_size(QUEUE_SIZE);
        rx.set_queue_info(
            mock.desc_table_addr().0,
            mock.avail_addr().0,
            mock.used_addr().0,
        )
        .unwrap();
        rx.set_queue_event_idx(true);
        let (masked, mut masked_end) = call_fd();
        rx.set_call(Some(masked));
        rx.set_queue_ready(true);
        rx.set_enabled(true);
        interrupts(&mut masked_end);

        let vrings = [rx.clone(), tx];
        let frame = [0xabu8; 60];
        for expected_used in 1..=2u16 {
            assert!(peer.send(VirtioNetHdr::default(), &frame).unwrap());
            backend
                .handle_event(backend.uplink_event(), EventSet::IN, &vrings, 0)
                .unwrap();
            assert_eq!(mock.used().idx().load(), expected_used);
        }
        // The first packet was signalled (to the masked fd); the second was suppressed, since
        // the driver's used_event (0) was already passed.
        let stats = &backend.pair_stats()[0];
        assert_eq!(stats.rx_notifications.get(), 1);
        assert_eq!(stats.rx_notifications_suppressed.get(), 1);
        assert_eq!(interrupts(&mut masked_end), 1);

        let (guest, mut guest_end) = call_fd();
        rx.set_call(Some(guest));
        assert_eq!(
            interrupts(&mut guest_end),
            1,
            "the driver never hears of the 2 used RX entries"
        );
    }

    /// The front door makes every frontend eventfd non-blocking; the vring must then take
    /// `EAGAIN` as "nothing to do", never as an error that would end the worker: a kick
    /// counter already drained, a call counter already full.
    #[test]
    fn would_block_on_frontend_eventfds_is_not_an_error() {
        use std::io::Write;
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let vring = NetVring::new(GuestMemoryAtomic::new(mem), QUEUE_SIZE).unwrap();
        // Non-blocking stand-ins (socket pairs): nothing to read, no room to write.
        let (kick, _kick_peer) = UnixStream::pair().unwrap();
        kick.set_nonblocking(true).unwrap();
        vring.set_kick(Some(File::from(std::os::fd::OwnedFd::from(kick))));
        assert!(
            vring.read_kick().unwrap(),
            "an empty kick counter is a spurious wake"
        );
        let (call, _call_peer) = UnixStream::pair().unwrap();
        call.set_nonblocking(true).unwrap();
        let mut filler = &call;
        while filler.write(&[0u8; 4096]).is_ok() {}
        vring.set_call(Some(File::from(std::os::fd::OwnedFd::from(call))));
        vring.signal_used_queue().unwrap();
    }

    /// A state change of a started ring wakes its worker through the kick fd; the framework's
    /// own flag stays on so the kicks of a disabled ring keep coming.
    #[test]
    fn enabling_or_disabling_a_started_ring_kicks_it_once() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let vring = NetVring::new(GuestMemoryAtomic::new(mem), QUEUE_SIZE).unwrap();
        // The kick "eventfd" as a socket pair (the worker's reads are not under test here).
        let (kick, mut kick_end) = call_fd();
        vring.set_kick(Some(kick));
        assert!(
            vring.get_ref().is_enabled(),
            "the framework must deliver kicks"
        );
        assert!(!vring.is_enabled(), "rings start disabled");

        vring.set_enabled(true);
        assert_eq!(interrupts(&mut kick_end), 0, "not started: nothing to wake");
        vring.set_queue_ready(true);
        assert_eq!(
            interrupts(&mut kick_end),
            1,
            "an enabled ring starting is woken"
        );
        vring.set_queue_ready(true);
        assert_eq!(interrupts(&mut kick_end), 0, "already started");
        vring.set_enabled(false);
        assert_eq!(interrupts(&mut kick_end), 1);
        assert!(!vring.is_enabled() && vring.get_ref().is_enabled());
        vring.set_enabled(false);
        assert_eq!(interrupts(&mut kick_end), 0, "no change, no kick");
        vring.set_enabled(true);
        assert_eq!(interrupts(&mut kick_end), 1);
        assert!(vring.is_enabled());
    }

    /// Busy-polling (`NetBackendConfig::busy_poll`): chains the driver adds after the kick's
    /// drain, without kicking again, are taken by the poll, in order and whole; the worker
    /// returns once the ring has been idle for the budget, and not before.
    #[test]
    fn busy_poll_takes_chains_added_without_a_kick() {
        const HDR: usize = VirtioNetHdr::LEN;
        const IDLE: std::time::Duration = std::time::Duration::from_millis(400);
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap();
        let mock = MockSplitQueue::create(&mem, GuestAddress(0), QUEUE_SIZE);
        let buf = |i: u16| BUF + 0x1000 * u64::from(i);
        for i in 0..4u16 {
            mem.write_slice(&[0u8; HDR], GuestAddress(buf(i))).unwrap();
            mem.write_slice(&[0xa0 + i as u8; 60], GuestAddress(buf(i) + HDR as u64))
                .unwrap();
        }
        let len = (HDR + 60) as u32;
        mock.add_desc_chains(
            &[RawDescriptor::from(SplitDescriptor::new(buf(0), len, 0, 0))],
            0,
        )
        .unwrap();

        let (port, mut peer) = memory_port_pair(8, MAX_FRAME_LEN).unwrap();
        let (backend, rx, tx) = device(&mem, port, IDLE);
        tx.set_queue_size(QUEUE_SIZE);
        tx.set_queue_info(
            mock.desc_table_addr().0,
            mock.avail_addr().0,
            mock.used_addr().0,
        )
        .unwrap();
        tx.set_queue_event_idx(true);
        let (call, _call_end) = call_fd();
        tx.set_call(Some(call));
        tx.set_queue_ready(true);
        tx.set_enabled(true);

        // The driver adds three more chains, one at a time, after the kick's drain, and
        // never kicks: descriptor i, avail entry i, then the avail index.
        let (desc, avail) = (mock.desc_table_addr().0, mock.avail_addr().0);
        let driver = std::thread::spawn({
            let mem = mem.clone();
            move || {
                for i in 1..4u16 {
                    std::thread::sleep(std::time::Duration::from_millis(30));
                    let d = SplitDescriptor::new(buf(i), len, 0, 0);
                    mem.write_obj(
                        RawDescriptor::from(d),
                        GuestAddress(desc + 16 * u64::from(i)),
                    )
                    .unwrap();
                    mem.write_obj(i.to_le(), GuestAddress(avail + 4 + 2 * u64::from(i)))
                        .unwrap();
                    std::sync::atomic::fence(Ordering::Release);
                    mem.write_obj((i + 1).to_le(), GuestAddress(avail + 2))
                        .unwrap();
                }
            }
        });
        let started = std::time::Instant::now();
        backend
            .handle_event(crate::backend::TX_VRING_EVENT, EventSet::IN, &[rx, tx], 0)
            .unwrap();
        let held = started.elapsed();
        driver.join().unwrap();

        let stats = &backend.pair_stats()[0];
        assert_eq!(stats.tx_kicks.get(), 1);
        assert_eq!(stats.tx_packets.get(), 4, "every chain taken on one kick");
        assert!(stats.tx_polled.get() >= 1, "later chains found by polling");
        assert_eq!(mock.used().idx().load(), 4);
        assert!(
            held >= IDLE,
            "returned after {held:?}, before the idle budget"
        );
        let mut seen = Vec::new();
        peer.recv_with(usize::MAX, |p| seen.push(p.frame().to_vec()));
        let want: Vec<Vec<u8>> = (0..4u8).map(|i| vec![0xa0 + i; 60]).collect();
        assert_eq!(seen, want, "the frames, in order");
    }
}
