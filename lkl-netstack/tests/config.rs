//! Configuration the Linux way inside the library: rtnetlink for links, addresses
//! and routes; sysctl through procfs; socket options including the kernel TLS ULP.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a failed unwrap is a failed test; results are reported on stdout

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::thread;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Nonce};
use lkl_netstack::{BootConfig, Kernel, TcpListener, TcpStream};

fn tcp_echo_over(kernel: &Kernel, ip: IpAddr) {
    let listener = TcpListener::bind(kernel, SocketAddr::new(ip, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    thread::scope(|s| {
        s.spawn(|| {
            let (mut c, peer) = listener.accept().unwrap();
            assert_eq!(
                peer.ip(),
                ip,
                "the connection came from the configured address"
            );
            let mut buf = [0u8; 5];
            c.read_exact(&mut buf).unwrap();
            c.write_all(&buf).unwrap();
        });
        let mut c = TcpStream::connect(kernel, addr).unwrap();
        c.write_all(b"knic!").unwrap();
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"knic!");
    });
}

fn netlink_links_addresses_routes(kernel: &Kernel) {
    let lo = kernel
        .links()
        .unwrap()
        .into_iter()
        .find(|l| l.name == "lo")
        .expect("lo exists");
    assert!(lo.up, "boot brings lo up through RTM_NEWLINK");
    assert_eq!(lo.mtu, 65536);

    kernel.set_link_mtu("lo", 9000).unwrap();
    let lo = kernel
        .links()
        .unwrap()
        .into_iter()
        .find(|l| l.name == "lo")
        .unwrap();
    assert_eq!(lo.mtu, 9000);

    let v4: IpAddr = "10.77.0.1".parse().unwrap();
    let v6: IpAddr = "fd00:77::1".parse().unwrap();
    kernel.add_address("lo", v4, 24).unwrap();
    kernel.add_address("lo", v6, 64).unwrap();
    let again = kernel.add_address("lo", v4, 24).unwrap_err();
    assert_eq!(
        again.kind(),
        std::io::ErrorKind::AlreadyExists,
        "the kernel's own error comes back: {again}"
    );
    tcp_echo_over(kernel, v4);
    tcp_echo_over(kernel, v6);

    kernel
        .add_route("10.88.0.0".parse().unwrap(), 16, None, Some("lo"))
        .unwrap();
    kernel
        .add_route("fd00:88::".parse().unwrap(), 48, None, Some("lo"))
        .unwrap();
    // The kernel's reason for a refusal (extended ACK) reaches the caller.
    let refused = kernel
        .add_route("fd00:99::".parse().unwrap(), 48, Some(v6), None)
        .unwrap_err();
    assert!(
        refused.to_string().contains("loopback"),
        "no reason in: {refused}"
    );
    let r4 = kernel.routes(false).unwrap();
    assert!(
        r4.iter()
            .any(|r| r.destination == Some("10.88.0.0".parse().unwrap())
                && r.prefix_len == 16
                && r.output_index == Some(lo.index)),
        "route missing from the dump: {r4:?}"
    );
    let r6 = kernel.routes(true).unwrap();
    assert!(
        r6.iter()
            .any(|r| r.destination == Some("fd00:88::".parse().unwrap())
                && r.prefix_len == 48
                && r.output_index == Some(lo.index)),
        "route missing from the dump: {r6:?}"
    );
    let missing = kernel.add_route("10.99.0.0".parse().unwrap(), 16, None, Some("nosuchdev"));
    assert_eq!(missing.unwrap_err().kind(), std::io::ErrorKind::NotFound);
}

/// A VRF and its own routing table: a route added there is not in the main table, and
/// the VRF goes with its routes.
fn vrf_with_its_own_table(kernel: &Kernel) {
    kernel.add_vrf("vrf-test", 1100).unwrap();
    let vrf = kernel
        .links()
        .unwrap()
        .into_iter()
        .find(|l| l.name == "vrf-test")
        .expect("the VRF is listed");
    assert!(vrf.up, "{vrf:?}");
    let net: IpAddr = "10.99.0.0".parse().unwrap();
    kernel
        .add_route_in_table(1100, net, 24, None, Some("vrf-test"))
        .unwrap();
    let routes = kernel.routes_in_table(false, 1100).unwrap();
    assert!(
        routes
            .iter()
            .any(|r| r.destination == Some(net) && r.output_index == Some(vrf.index)),
        "{routes:?}"
    );
    assert!(
        !kernel
            .routes(false)
            .unwrap()
            .iter()
            .any(|r| r.destination == Some(net)),
        "the VRF's route leaked into the main table"
    );
    let e = kernel.add_vrf("vrf-test", 1101).unwrap_err();
    assert!(e.to_string().contains("File exists"), "{e}");
    kernel.delete_link("vrf-test").unwrap();
    assert!(kernel.routes_in_table(false, 1100).unwrap().is_empty());
    assert!(!kernel.links().unwrap().iter().any(|l| l.name == "vrf-test"));
}

fn sysctl_through_procfs(kernel: &Kernel) {
    assert_eq!(
        kernel.sysctl("net.ipv4.tcp_congestion_control").unwrap(),
        "cubic"
    );
    kernel
        .set_sysctl("net.ipv4.tcp_congestion_control", "bbr")
        .unwrap();
    assert_eq!(
        kernel.sysctl("net.ipv4.tcp_congestion_control").unwrap(),
        "bbr"
    );
    let available = kernel
        .sysctl("net.ipv4.tcp_available_congestion_control")
        .unwrap();
    assert!(
        available.contains("cubic") && available.contains("bbr"),
        "{available}"
    );
    kernel.set_sysctl("net.core.somaxconn", "8192").unwrap();
    assert_eq!(kernel.sysctl("net.core.somaxconn").unwrap(), "8192");
}

const SOL_TLS: i32 = 282;
const TLS_TX: i32 = 1;
const TCP_ULP: i32 = 31;

/// Kernel TLS transmit with TLS 1.2 AES-GCM-128: the record leaving the kernel
/// decrypts with an independent AES-GCM implementation.
fn ktls_tx_record_decrypts(kernel: &Kernel) {
    let listener = TcpListener::bind(kernel, "127.0.0.1:0".parse().unwrap()).unwrap();
    let sender = TcpStream::connect(kernel, listener.local_addr().unwrap()).unwrap();
    let (mut receiver, _) = listener.accept().unwrap();

    sender
        .set_option(libc::IPPROTO_TCP, TCP_ULP, b"tls")
        .unwrap();
    let mut ulp = [0u8; 16];
    let n = sender.option(libc::IPPROTO_TCP, TCP_ULP, &mut ulp).unwrap();
    assert_eq!(&ulp[..n].split(|&b| b == 0).next().unwrap(), b"tls");

    let (key, iv, salt, seq) = (
        [7u8; 16],
        [1u8, 2, 3, 4, 5, 6, 7, 8],
        [9u8, 10, 11, 12],
        [0u8; 8],
    );
    // struct tls12_crypto_info_aes_gcm_128: version, cipher, iv, key, salt, rec_seq.
    let mut info = Vec::new();
    info.extend_from_slice(&0x0303u16.to_ne_bytes());
    info.extend_from_slice(&51u16.to_ne_bytes()); // TLS_CIPHER_AES_GCM_128
    info.extend_from_slice(&iv);
    info.extend_from_slice(&key);
    info.extend_from_slice(&salt);
    info.extend_from_slice(&seq);
    sender.set_option(SOL_TLS, TLS_TX, &info).unwrap();

    let plaintext = b"hello from the kernel's TLS";
    (&sender).write_all(plaintext).unwrap();
    let mut record = vec![0u8; 5 + 8 + plaintext.len() + 16];
    receiver.read_exact(&mut record).unwrap();
    assert_eq!(
        &record[..3],
        &[23, 3, 3],
        "application-data record, TLS 1.2"
    );
    assert_eq!(
        usize::from(u16::from_be_bytes([record[3], record[4]])),
        record.len() - 5
    );
    assert_eq!(
        &record[5..13],
        &iv,
        "explicit nonce of the first record is the IV"
    );

    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(&salt);
    nonce[4..].copy_from_slice(&record[5..13]);
    let mut aad = seq.to_vec();
    aad.extend_from_slice(&[23, 3, 3]);
    aad.extend_from_slice(&(plaintext.len() as u16).to_be_bytes());
    let clear = Aes128Gcm::new_from_slice(&key)
        .unwrap()
        .decrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &record[13..],
                aad: &aad,
            },
        )
        .expect("the kernel's record authenticates");
    assert_eq!(clear, plaintext);
}

/// sendfile(2) from a file in the kernel's ramfs to a TCP socket.
fn sendfile_from_ramfs(kernel: &Kernel) {
    let content: Vec<u8> = (0..4u32 << 20).map(|i| (i * 7 + i / 4096) as u8).collect();
    kernel.write_file("/served", &content).unwrap();
    let file = kernel.open_file("/served").unwrap();
    let listener = TcpListener::bind(kernel, "127.0.0.1:0".parse().unwrap()).unwrap();
    let sender = TcpStream::connect(kernel, listener.local_addr().unwrap()).unwrap();
    let (mut receiver, _) = listener.accept().unwrap();
    thread::scope(|s| {
        s.spawn(|| {
            let mut offset = 0i64;
            while (offset as usize) < content.len() {
                let rest = content.len() - offset as usize;
                let n = sender.send_file(&file, &mut offset, rest).unwrap();
                assert!(n > 0);
            }
            sender.shutdown(std::net::Shutdown::Write).unwrap();
        });
        let mut got = Vec::new();
        receiver.read_to_end(&mut got).unwrap();
        assert!(
            got == content,
            "sendfile delivered {} bytes that differ",
            got.len()
        );
    });
}

#[test]
fn configure_with_netlink_sysctl_and_socket_options() {
    let kernel = Kernel::boot(&BootConfig::default()).unwrap();
    netlink_links_addresses_routes(&kernel);
    vrf_with_its_own_table(&kernel);
    sysctl_through_procfs(&kernel);
    ktls_tx_record_decrypts(&kernel);
    sendfile_from_ramfs(&kernel);
    kernel.halt().unwrap();
}
