//! `knic-blast IFNAME COUNT`: sends COUNT minimal UDP frames out of IFNAME through an
//! AF_PACKET socket (knic's own uplink port), in batches, retrying refused ones. Used by the
//! end-to-end tests to feed a TAP whose reader is knic-vhost.

use std::io::Write;
use std::process::ExitCode;

use knic_uplink::PacketSocketPort;
use packet_ring::{PacketBatch, PacketSink, VirtioNetHdr};

fn frame() -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[..6].copy_from_slice(&[0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    f[6..12].copy_from_slice(&[0x02, 0x00, 0x00, 0x00, 0x00, 0x99]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    // IPv4 header: 10.77.0.1 -> 10.77.0.2, UDP, 46 bytes.
    f[14..34].copy_from_slice(&[
        0x45, 0, 0, 46, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 77, 0, 1, 10, 77, 0, 2,
    ]);
    f
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(ifname), Some(count)) =
        (args.get(1), args.get(2).and_then(|c| c.parse::<u64>().ok()))
    else {
        let _ = writeln!(std::io::stderr(), "usage: knic-blast IFNAME COUNT");
        return ExitCode::FAILURE;
    };
    let ifindex = match std::fs::read_to_string(format!("/sys/class/net/{ifname}/ifindex"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        Some(i) => i,
        None => {
            let _ = writeln!(std::io::stderr(), "knic-blast: no interface {ifname}");
            return ExitCode::FAILURE;
        }
    };
    let mut port = match PacketSocketPort::open(ifindex, None) {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "knic-blast: {e}");
            return ExitCode::FAILURE;
        }
    };
    let f = frame();
    let mut batch = PacketBatch::new(64, 128);
    let mut sent = 0u64;
    while sent < count {
        batch.clear();
        let n = (count - sent).min(64);
        for _ in 0..n {
            batch.push(VirtioNetHdr::default(), &f);
        }
        match port.send(&batch) {
            Ok(0) => std::thread::yield_now(),
            Ok(k) => sent += k as u64,
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "knic-blast: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let _ = writeln!(std::io::stdout(), "{sent}");
    ExitCode::SUCCESS
}
