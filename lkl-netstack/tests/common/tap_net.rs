//! A booted kernel whose eth0 is a TAP, with the TAP's host end in a fresh
//! network namespace: the host side of every real-peer test.

use lkl_netstack::{Kernel, Offloads};

use super::{Netns, boot_on_tap, run};

pub struct TapNet {
    pub kernel: Kernel,
    pub netns: Netns,
    /// IPv4 of the host end (in the namespace) and of the library's eth0.
    pub host_ip: String,
    pub lib_ip: String,
}

impl TapNet {
    /// Boots the kernel with eth0 on a TAP and addresses 10.`subnet`.0.{1,2}/24.
    pub fn up(subnet: u8, offloads: Offloads) -> TapNet {
        let id = std::process::id() % 100_000;
        let netns = Netns(format!("knic-{subnet}-{id}"));
        let tap = format!("knt{subnet}-{id}");
        let (host_ip, lib_ip) = (format!("10.{subnet}.0.1"), format!("10.{subnet}.0.2"));
        let kernel = boot_on_tap(&netns, &tap, offloads, 1, &host_ip);
        kernel.set_link_up("eth0", true).unwrap();
        kernel
            .add_address("eth0", lib_ip.parse().unwrap(), 24)
            .unwrap();
        run(&format!(
            "ip netns exec {} ping -c 1 -W 5 {lib_ip}",
            netns.0
        ));
        TapNet {
            kernel,
            netns,
            host_ip,
            lib_ip,
        }
    }

    /// A shell command line that runs `cmd` inside the namespace.
    pub fn in_netns(&self, cmd: &str) -> String {
        format!("ip netns exec {} {cmd}", self.netns.0)
    }
}
