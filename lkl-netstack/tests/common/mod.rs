//! Helpers and the TAP scenario shared by the device test binaries (one kernel per
//! process, so each scenario needs its own binary).

#![allow(dead_code)] // each test binary uses part of this module
#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a failed unwrap is a failed test; results are reported on stdout

pub mod frames;
pub mod http;
pub mod pki;
pub mod tap_net;
pub mod tls_record;

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::thread;

use lkl_netstack::{
    BootConfig, Kernel, NetBackend, NetDeviceConfig, NetDeviceStats, Offloads, TapConfig,
    TcpListener, TcpStream,
};

const BULK: usize = 64 << 20;
const HOST_V4: &str = "10.231.0.1";
const LIB_V4: &str = "10.231.0.2";
const HOST_V6: &str = "fd00:231::1";
const LIB_V6: &str = "fd00:231::2";

pub fn run(cmd: &str) -> Output {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}{}\n(tools come from deploy/dev/setup-debian.sh; the test needs root)",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Lines of the kernel log that report a warning, a bug or a reference-count error.
pub fn kernel_complaints(kernel: &Kernel) -> Vec<String> {
    kernel
        .kernel_log()
        .unwrap()
        .lines()
        .filter(|l| l.contains("WARNING") || l.contains("BUG") || l.contains("refcount"))
        .map(str::to_owned)
        .collect()
}

/// Waits until the kernel reports interface `name`'s carrier as `up` (IFF_LOWER_UP
/// over rtnetlink). The driver learns the device's link state from its config work,
/// which runs shortly after the probe, and until the carrier is on the kernel's
/// transmit queues are not started: a frame answered before then is dropped.
pub fn wait_for_carrier(kernel: &Kernel, name: &str, up: bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let link = kernel.links().unwrap().into_iter().find(|l| l.name == name);
        if link.as_ref().is_some_and(|l| l.carrier == up) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "carrier never became {up}: {link:?}"
        );
        thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Moves host TAP `tap` into namespace `ns` as 10.`subnet`.0.1/24, gives library
/// interface `name` 10.`subnet`.0.2/24, brings both up, and pings the library once.
pub fn connect_tap(kernel: &Kernel, name: &str, tap: &str, ns: &Netns, subnet: u8) {
    run(&format!(
        "ip link set {tap} netns {0} && ip -n {0} link set {tap} up && \
         ip -n {0} addr add 10.{subnet}.0.1/24 dev {tap}",
        ns.0
    ));
    kernel.set_link_up(name, true).unwrap();
    kernel
        .add_address(name, format!("10.{subnet}.0.2").parse().unwrap(), 24)
        .unwrap();
    wait_for_carrier(kernel, name, true);
    run(&format!(
        "ip netns exec {} ping -c 1 -W 2 10.{subnet}.0.2",
        ns.0
    ));
}

/// A network namespace that is deleted again when the test ends, pass or fail.
pub struct Netns(pub String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

fn crc32(data: &[u8], mut crc: u32) -> u32 {
    crc = !crc;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (!(crc & 1)).wrapping_add(1));
        }
    }
    !crc
}

pub fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// Boots a kernel whose eth0 is on TAP `tap` with `queue_pairs`, and moves the TAP's
/// host end into namespace `ns` with address `host_v4`/24, up.
pub fn boot_on_tap(
    ns: &Netns,
    tap: &str,
    offloads: Offloads,
    queue_pairs: u16,
    host_v4: &str,
) -> Kernel {
    run(&format!("ip netns add {}", ns.0));
    let kernel = Kernel::boot(&BootConfig {
        net_devices: vec![NetDeviceConfig {
            backend: NetBackend::Tap(TapConfig { name: tap.into() }),
            mac: [0x52, 0x54, 0x00, 0x6b, 0x6e, 0x01],
            mtu: 1500,
            offloads,
            queue_pairs,
        }],
        ..BootConfig::default()
    })
    .unwrap();
    run(&format!("ip link set {tap} netns {}", ns.0));
    run(&format!(
        "ip -n {0} link set lo up && ip -n {0} link set {tap} up",
        ns.0
    ));
    run(&format!("ip -n {} addr add {host_v4}/24 dev {tap}", ns.0));
    kernel
}

/// Boots a kernel with eth0 on a TAP, pings it both families from a namespace and
/// moves 64 MiB each way; returns the device's counters at the end.
pub fn tap_scenario(offloads: Offloads) -> NetDeviceStats {
    tap_scenario_with(offloads, |_| {})
}

/// [`tap_scenario`], with `configure` run on the kernel once eth0 is up, before traffic.
pub fn tap_scenario_with(offloads: Offloads, configure: impl FnOnce(&Kernel)) -> NetDeviceStats {
    let id = std::process::id() % 100_000;
    let ns = Netns(format!("knic-tap-{id}"));
    let tap = format!("knt{id}");
    let kernel = boot_on_tap(&ns, &tap, offloads, 1, HOST_V4);
    run(&format!(
        "ip -n {} addr add {HOST_V6}/64 dev {tap} nodad",
        ns.0
    ));

    // Library end: the kernel named the virtio-net device eth0.
    let eth0 = kernel
        .links()
        .unwrap()
        .into_iter()
        .find(|l| l.name == "eth0")
        .expect("eth0 probed");
    assert_eq!(eth0.mtu, 1500, "MTU from the device's config space");
    kernel
        .set_sysctl("net.ipv6.conf.eth0.accept_dad", "0")
        .unwrap();
    kernel.set_link_up("eth0", true).unwrap();
    kernel
        .add_address("eth0", LIB_V4.parse().unwrap(), 24)
        .unwrap();
    kernel
        .add_address("eth0", LIB_V6.parse().unwrap(), 64)
        .unwrap();
    configure(&kernel);

    run(&format!(
        "ip netns exec {} ping -c 3 -i 0.2 -W 2 {LIB_V4}",
        ns.0
    ));
    run(&format!(
        "ip netns exec {} ping -6 -c 3 -i 0.2 -W 2 {LIB_V6}",
        ns.0
    ));

    // Host -> library: the host's TCP stack hands the TAP 64 KiB TSO frames.
    let listener = TcpListener::bind(&kernel, format!("{LIB_V4}:5001").parse().unwrap()).unwrap();
    let data = pattern(BULK);
    let expected_crc = crc32(&data, 0);
    thread::scope(|s| {
        let receiver = s.spawn(|| {
            let (mut conn, _) = listener.accept().unwrap();
            let mut got = Vec::with_capacity(BULK);
            conn.read_to_end(&mut got).unwrap();
            got
        });
        run(&format!(
            "ip netns exec {} /usr/bin/python3 -c \"import socket\n\
             data = bytes(((i * 2654435761) >> 13) & 0xff for i in range({BULK}))\n\
             s = socket.create_connection(('{LIB_V4}', 5001)); s.sendall(data); s.close()\"",
            ns.0
        ));
        let got = receiver.join().unwrap();
        assert_eq!(got.len(), BULK);
        assert!(got == data, "host -> library content differs");
    });

    // Library -> host: a Python sink in the namespace reports length and CRC-32.
    let mut sink = Command::new("ip")
        .args(["netns", "exec", &ns.0, "/usr/bin/python3", "-c"])
        .arg(format!(
            "import socket, zlib\n\
             l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             l.bind(('{HOST_V4}', 5002)); l.listen(1); print('ready', flush=True)\n\
             c, _ = l.accept(); n = 0; crc = 0\n\
             while True:\n    b = c.recv(1 << 20)\n    if not b: break\n    n += len(b); crc = zlib.crc32(b, crc)\n\
             print(n, crc, flush=True)"
        ))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = sink.stdout.take().unwrap();
    let mut ready = [0u8; 6];
    out.read_exact(&mut ready).unwrap();
    assert_eq!(&ready, b"ready\n");
    let mut conn = TcpStream::connect(&kernel, format!("{HOST_V4}:5002").parse().unwrap()).unwrap();
    conn.write_all(&data).unwrap();
    drop(conn);
    let mut report = String::new();
    out.read_to_string(&mut report).unwrap();
    assert!(sink.wait().unwrap().success());
    assert_eq!(
        report.trim(),
        format!("{BULK} {expected_crc}"),
        "library -> host content differs"
    );

    let stats = kernel.net_device_stats(0).unwrap();
    println!("eth0: {stats:?}");
    kernel.halt().unwrap();
    stats
}
