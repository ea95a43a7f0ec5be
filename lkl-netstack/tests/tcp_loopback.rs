//! TCP, UDP and IPv6 over the loopback interface inside the library kernel, with host
//! threads on both ends. One kernel per process: this binary boots once and runs
//! its scenarios in order.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a failed unwrap is a failed test; results are reported on stdout

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::thread;
use std::time::Instant;

use lkl_netstack::{BootConfig, Kernel, TcpListener, TcpStream, UdpSocket};

const GIB: usize = 1 << 30;
const CHUNK: usize = 256 * 1024;

/// Deterministic bytes that differ per position and per direction, so a lost,
/// duplicated or reordered chunk shows up in the comparison.
fn pattern(seed: u8, offset: usize, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        let x = (offset + i) as u64;
        *b = (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8 ^ seed;
    }
}

fn send_pattern(mut stream: &TcpStream, seed: u8, total: usize) {
    let mut buf = vec![0u8; CHUNK];
    let mut sent = 0;
    while sent < total {
        let n = CHUNK.min(total - sent);
        pattern(seed, sent, &mut buf[..n]);
        stream.write_all(&buf[..n]).expect("write");
        sent += n;
    }
}

fn receive_pattern(mut stream: &TcpStream, seed: u8, total: usize) {
    let mut buf = vec![0u8; CHUNK];
    let mut want = vec![0u8; CHUNK];
    let mut got = 0;
    while got < total {
        let n = stream.read(&mut buf).expect("read");
        assert!(n > 0, "connection closed after {got} of {total} bytes");
        pattern(seed, got, &mut want[..n]);
        assert!(
            buf[..n] == want[..n],
            "content differs in bytes {got}..{}",
            got + n
        );
        got += n;
    }
}

/// 1 GiB each way at the same time over one connection, four host threads.
fn tcp_both_ways(kernel: &Kernel, addr: SocketAddr) {
    let listener = TcpListener::bind(kernel, addr).expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    let started = Instant::now();
    let (client, server) = thread::scope(|s| {
        let server = s.spawn(|| listener.accept().expect("accept").0);
        let client = TcpStream::connect(kernel, addr).expect("connect");
        (client, server.join().expect("accept thread"))
    });
    thread::scope(|s| {
        let (client, server) = (&client, &server);
        s.spawn(move || send_pattern(client, 0x11, GIB));
        s.spawn(move || receive_pattern(server, 0x11, GIB));
        s.spawn(move || send_pattern(server, 0x22, GIB));
        s.spawn(move || receive_pattern(client, 0x22, GIB));
    });
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{addr}: 2 GiB verified in {secs:.1} s ({:.2} Gbit/s total)",
        2.0 * 8.0 / secs
    );
}

fn udp_round_trip(kernel: &Kernel, addr: SocketAddr) {
    let a = UdpSocket::bind(kernel, addr).expect("bind a");
    let b = UdpSocket::bind(kernel, addr).expect("bind b");
    let (a_addr, b_addr) = (a.local_addr().expect("a"), b.local_addr().expect("b"));
    let mut buf = [0u8; 2048];
    for i in 0..1000u32 {
        let msg = i.to_be_bytes().repeat(100 + (i as usize % 200));
        assert_eq!(a.send_to(&msg, b_addr).expect("send"), msg.len());
        let (n, from) = b.recv_from(&mut buf).expect("recv");
        assert_eq!(from, a_addr);
        assert_eq!(&buf[..n], &msg[..], "datagram {i}");
    }
}

fn many_connections(kernel: &Kernel, count: usize) {
    let listener = TcpListener::bind(kernel, "127.0.0.1:0".parse().unwrap()).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let before = kernel.task_count().expect("tasks");
    thread::scope(|s| {
        let acceptor = s.spawn(|| {
            let mut accepted = Vec::with_capacity(count);
            for _ in 0..count {
                accepted.push(listener.accept().expect("accept").0);
            }
            for conn in &accepted {
                let mut byte = [0u8; 1];
                assert_eq!((&*conn).read(&mut byte).expect("read"), 1);
                (&*conn).write_all(&byte).expect("echo");
            }
            accepted
        });
        let clients: Vec<TcpStream> = (0..count)
            .map(|_| TcpStream::connect(kernel, addr).expect("connect"))
            .collect();
        for (i, c) in clients.iter().enumerate() {
            (&*c).write_all(&[i as u8]).expect("write");
        }
        for (i, c) in clients.iter().enumerate() {
            let mut byte = [0u8; 1];
            (&*c).read_exact(&mut byte).expect("echo back");
            assert_eq!(byte[0], i as u8);
            c.shutdown(Shutdown::Both).expect("shutdown");
        }
        let accepted = acceptor.join().expect("acceptor");
        assert_eq!(accepted.len(), count);
    });
    println!("{count} connections accepted, echoed and closed; tasks before {before}");
}

#[test]
fn loopback_tcp_udp_ipv6() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .try_init();
    let kernel = Kernel::boot(&BootConfig {
        memory_bytes: 512 << 20,
        ..BootConfig::default()
    })
    .expect("boot");

    tcp_both_ways(&kernel, "127.0.0.1:0".parse().unwrap());
    tcp_both_ways(&kernel, "[::1]:0".parse().unwrap());
    udp_round_trip(&kernel, "127.0.0.1:0".parse().unwrap());
    udp_round_trip(&kernel, "[::1]:0".parse().unwrap());
    many_connections(&kernel, 1000);

    kernel.halt().expect("halt");
}
