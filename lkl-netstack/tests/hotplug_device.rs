//! Network devices added to a running kernel: the port's own syscall probes a
//! virtio-mmio device, the stock driver registers an interface, and it carries
//! traffic from a namespace. Needs root (TAP, netns), iproute2 and ping.
#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a failed unwrap is a failed test; results are reported on stdout

mod common;

use common::{Netns, run};
use lkl_netstack::{
    BootConfig, Kernel, NetBackend, NetDeviceConfig, Offloads, TapConfig, UnknownNetDevice,
};

fn tap_device(name: &str, last: u8) -> NetDeviceConfig {
    NetDeviceConfig {
        backend: NetBackend::Tap(TapConfig { name: name.into() }),
        mac: [0x52, 0x54, 0x00, 0x6b, 0x70, last],
        mtu: 1500,
        offloads: Offloads::Tso,
        queue_pairs: 1,
    }
}

#[test]
fn devices_added_after_boot_carry_traffic() {
    let kernel = Kernel::boot(&BootConfig::default()).unwrap();
    assert_eq!(
        kernel.net_device_stats(0),
        Err(UnknownNetDevice { index: 0 }),
        "booted without devices"
    );
    let id = std::process::id() % 100_000;

    for (n, subnet) in [(0u8, 233u8), (1, 234)] {
        let tap = format!("knh{n}-{id}");
        let ns = Netns(format!("knic-hot{n}-{id}"));
        let (index, name) = kernel.add_net_device(&tap_device(&tap, n)).unwrap();
        assert_eq!(index, usize::from(n));
        assert_eq!(name, format!("eth{n}"));
        let link = kernel
            .links()
            .unwrap()
            .into_iter()
            .find(|l| l.name == name)
            .unwrap();
        assert_eq!(link.mac, Some([0x52, 0x54, 0x00, 0x6b, 0x70, n]));
        assert_eq!(link.mtu, 1500);

        run(&format!("ip netns add {}", ns.0));
        run(&format!(
            "ip link set {tap} netns {0} && ip -n {0} link set {tap} up && \
             ip -n {0} addr add 10.{subnet}.0.1/24 dev {tap}",
            ns.0
        ));
        kernel.set_link_up(&name, true).unwrap();
        kernel
            .add_address(&name, format!("10.{subnet}.0.2").parse().unwrap(), 24)
            .unwrap();
        run(&format!(
            "ip netns exec {} ping -c 3 -i 0.2 -W 2 10.{subnet}.0.2",
            ns.0
        ));
        let stats = kernel.net_device_stats(index).unwrap();
        assert!(stats.link_up);
        assert!(
            stats.total.rx_packets >= 3 && stats.total.tx_packets >= 3,
            "{stats:?}"
        );
        println!("{name}: added after boot, ping answered; {stats:?}");
    }

    // A device that cannot be created is refused with the reason, and the
    // running ones are untouched.
    let err = kernel
        .add_net_device(&tap_device("a-tap-name-longer-than-ifnamsiz", 9))
        .unwrap_err();
    let message = format!("{err}: {}", err.source);
    println!("{message}");
    assert!(
        message.starts_with(
            "network device 2 (TAP a-tap-name-longer-than-ifnamsiz) cannot be created"
        ),
        "{message}"
    );
    assert_eq!(
        kernel.net_device_stats(2),
        Err(UnknownNetDevice { index: 2 })
    );
    assert!(kernel.net_device_stats(1).unwrap().link_up);
    kernel.halt().unwrap();
}
