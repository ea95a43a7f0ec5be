//! The library device gives its kernel only the transmit offloads its far side completes:
//! a port whose sink takes none (an AF_XDP uplink) gets a device that offers the driver no
//! HOST_TSO*/CSUM, while a port that takes all (TAP, AF_PACKET) keeps them. (Run-time
//! changes: `tap_device_tx_offloads_off.rs`.)

#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a failed unwrap is a failed test

mod common;

use std::os::fd::RawFd;

use lkl_netstack::{BootConfig, DevicePort, Kernel, NetBackend, NetDeviceConfig, Offloads};
use packet_ring::{
    GuestOffloads, PacketBatch, PacketPort, PacketSink, PacketSource, PortError, memory_port_pair,
};

// Feature bits (virtio 1.2 §5.1.3).
const F_CSUM: u64 = 1 << 0;
const F_GUEST_CSUM: u64 = 1 << 1;
const F_GUEST_TSO4: u64 = 1 << 7;
const F_HOST_TSO4: u64 = 1 << 11;
const F_HOST_TSO6: u64 = 1 << 12;
const F_HOST_ECN: u64 = 1 << 13;
const HOST_OFFLOADS: u64 = F_CSUM | F_HOST_TSO4 | F_HOST_TSO6 | F_HOST_ECN;

/// A memory port whose far side says it completes no offload, as an AF_XDP uplink does.
#[derive(Debug)]
struct NoOffloadSink(Box<dyn PacketSink>);

impl PacketSink for NoOffloadSink {
    fn send(&mut self, batch: &PacketBatch) -> Result<usize, PortError> {
        self.0.send(batch)
    }

    fn tx_offloads(&self) -> GuestOffloads {
        GuestOffloads::default()
    }
}

#[derive(Debug)]
struct Source(Box<dyn PacketSource>);

impl PacketSource for Source {
    fn recv(&mut self, batch: &mut PacketBatch) -> Result<usize, PortError> {
        self.0.recv(batch)
    }

    fn ready_fd(&self) -> RawFd {
        self.0.ready_fd()
    }
}

#[derive(Debug)]
struct NoOffloadPort {
    sink: NoOffloadSink,
    source: Source,
}

packet_ring::port_from_halves!(NoOffloadPort);

fn device(port: DevicePort, last: u8) -> NetDeviceConfig {
    NetDeviceConfig {
        backend: NetBackend::Port(port),
        mac: [0x52, 0x54, 0x00, 0x6b, 0x6f, last],
        mtu: 1500,
        offloads: Offloads::Tso,
        queue_pairs: 1,
    }
}

#[test]
fn a_port_that_takes_no_offload_gets_a_device_without_host_tso() {
    let (plain, _plain_peer) = memory_port_pair(64, 2048).unwrap();
    let (inner, _peer) = memory_port_pair(64, 2048).unwrap();
    let (sink, source) = (Box::new(inner) as Box<dyn PacketPort>).split();
    let bare = NoOffloadPort {
        sink: NoOffloadSink(sink),
        source: Source(source),
    };
    assert_eq!(bare.tx_offloads(), GuestOffloads::default());
    let kernel = Kernel::boot(&BootConfig {
        net_devices: vec![
            device(DevicePort::new(plain), 1),
            device(DevicePort::new(bare), 2),
        ],
        ..BootConfig::default()
    })
    .unwrap();
    let takes_all = kernel.net_device_stats(0).unwrap().negotiated_features;
    let takes_none = kernel.net_device_stats(1).unwrap().negotiated_features;
    println!("features: takes all {takes_all:#x}, takes none {takes_none:#x}");
    assert_eq!(
        takes_all & HOST_OFFLOADS,
        HOST_OFFLOADS,
        "a port that takes every offload keeps them"
    );
    assert_eq!(
        takes_none & HOST_OFFLOADS,
        0,
        "the driver is offered no transmit offload the port cannot complete"
    );
    assert_eq!(
        takes_none & (F_GUEST_TSO4 | F_GUEST_CSUM),
        F_GUEST_TSO4 | F_GUEST_CSUM,
        "receiving large frames is the device's own business and stays"
    );
    kernel.halt().unwrap();
}
