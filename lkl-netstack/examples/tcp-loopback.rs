//! Boots Linux inside this process and moves data over TCP through it: the smallest
//! demonstration that the kernel's stack runs as a library.
//!
//! `cargo run --release -p lkl-netstack --example tcp-loopback -- [MIB]`

use std::io::{Read, Write};
use std::thread;
use std::time::Instant;

use lkl_netstack::{BootConfig, Kernel, TcpListener, TcpStream};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,linux=warn,netlink_packet_route=error".into()),
        )
        .init();
    let mib: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1024);

    let kernel = Kernel::boot(&BootConfig::default())?;
    tracing::info!(
        "booted in {:.1} ms; TCP congestion control {}",
        kernel.boot_time().as_secs_f64() * 1e3,
        kernel.sysctl("net.ipv4.tcp_congestion_control")?
    );

    let listener = TcpListener::bind(&kernel, "127.0.0.1:0".parse()?)?;
    let addr = listener.local_addr()?;
    let started = Instant::now();
    let received = thread::scope(|s| -> std::io::Result<usize> {
        let sink = s.spawn(|| -> std::io::Result<usize> {
            let (mut conn, _) = listener.accept()?;
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 0;
            loop {
                match conn.read(&mut buf)? {
                    0 => return Ok(total),
                    n => total += n,
                }
            }
        });
        let mut conn = TcpStream::connect(&kernel, addr)?;
        let chunk = vec![0x5au8; 256 * 1024];
        for _ in 0..mib * 4 {
            conn.write_all(&chunk)?;
        }
        drop(conn);
        sink.join()
            .map_err(|_| std::io::Error::other("receiver thread panicked"))?
    })?;
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        "{} MiB over TCP inside the library kernel in {secs:.2} s: {:.2} Gbit/s",
        received >> 20,
        received as f64 * 8.0 / secs / 1e9
    );
    kernel.halt()?;
    Ok(())
}
