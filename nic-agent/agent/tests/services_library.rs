//! The DHCP server's thread against a client on the library kernel's own sockets, in
//! process: one kernel, the server on `lo` (UDP port 67, device-bound), a client socket
//! on port 68 of the same device. It renews and informs (replies unicast to `ciaddr`),
//! floods the server with hostile datagrams (each dropped and counted by reason, none
//! answered, the server still serving), and restarts the services on the same lease
//! directory (the lease comes back from the file).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use knic_agent::LocalStack;
use knic_agent::services::{DhcpConfig, ServiceLink, Services, ServicesConfig};
use lkl_netstack::UdpSocket;

const SERVER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const MAC: [u8; 6] = [0x02, 0x4b, 0x4c, 0, 0, 1];

fn message(kind: MessageType, ciaddr: Ipv4Addr) -> Vec<u8> {
    let mut m = Message::default();
    m.set_chaddr(&MAC).set_ciaddr(ciaddr);
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    let mut b = Vec::new();
    m.encode(&mut Encoder::new(&mut b)).unwrap();
    b
}

fn answer(client: &UdpSocket) -> Message {
    let mut buf = [0u8; 1500];
    let (n, from) = client.recv_from(&mut buf).expect("a reply from the server");
    assert_eq!(from, SocketAddr::from((SERVER, 67)));
    Message::decode(&mut Decoder::new(&buf[..n])).unwrap()
}

fn wait_received(services: &Services, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while services.dhcp_stats()[0].received < n {
        assert!(Instant::now() < deadline, "{:?}", services.dhcp_stats());
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn library_socket_client_renews_informs_floods_and_the_lease_survives_a_restart() {
    let stack = LocalStack::boot(64 << 20).unwrap();
    let kernel = stack.kernel();
    kernel.set_link_up("lo", true).unwrap();
    let dir = std::env::temp_dir().join(format!("knic-dhcp-lib-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = ServicesConfig {
        dhcp: vec![
            "lo0,pool=127.0.0.100-127.0.0.110,lease=600"
                .parse::<DhcpConfig>()
                .unwrap(),
        ],
        ra: vec![],
        lease_dir: dir.clone(),
        metrics: None,
    };
    let links = [ServiceLink {
        device: "lo0".into(),
        ifname: "lo".into(),
        ifindex: 1,
        mac: None,
        ipv4: vec![(SERVER, 8)],
        ipv6: vec![],
        guest_mac: None,
        routed: false,
    }];
    let mut services = Services::start(kernel, &config, &links).unwrap();
    let client =
        UdpSocket::bind_on_device(kernel, "lo", SocketAddr::from((Ipv4Addr::UNSPECIFIED, 68)))
            .unwrap();
    client.set_read_timeout(Duration::from_secs(5)).unwrap();
    let to_server = SocketAddr::from((SERVER, 67));

    // RENEWING (ciaddr set): ACK with the lease, unicast back to ciaddr.
    let renew = message(MessageType::Request, Ipv4Addr::new(127, 0, 0, 100));
    client.send_to(&renew, to_server).unwrap();
    let ack = answer(&client);
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(ack.yiaddr(), Ipv4Addr::new(127, 0, 0, 100));
    assert_eq!(
        ack.opts().get(OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(600))
    );
    // INFORM: options, no address.
    client
        .send_to(
            &message(MessageType::Inform, Ipv4Addr::new(127, 0, 0, 50)),
            to_server,
        )
        .unwrap();
    let inform = answer(&client);
    assert_eq!(inform.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(inform.yiaddr(), Ipv4Addr::UNSPECIFIED);

    // A flood of hostile datagrams: every one dropped by reason, none answered.
    let mut x: u32 = 0x1234_5678;
    let flood = 2000u64;
    let t = Instant::now();
    for i in 0..flood {
        let mut b = renew.clone();
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        match i % 4 {
            0 => b.truncate((x as usize) % 240),
            1 => b[236 + (x as usize) % 4] ^= 0xff,
            2 => b[0] = 2,
            _ => b[2] = (x % 240) as u8 + 7,
        }
        client.send_to(&b, to_server).unwrap();
        // In bursts the server's receive buffer holds (the kernel drops past it, and
        // counts that in its own RcvbufErrors, not here).
        if i % 100 == 99 || i == flood - 1 {
            wait_received(&services, i + 1 + 2);
        }
    }
    let stats = services.dhcp_stats().remove(0);
    println!(
        "{flood} hostile datagrams handled in {:?} ({:.0}/s)",
        t.elapsed(),
        flood as f64 / t.elapsed().as_secs_f64()
    );
    assert_eq!(stats.received, flood + 2, "{stats:?}");
    assert_eq!(stats.drops.values().sum::<u64>(), flood, "{stats:?}");
    for reason in ["bad_length", "bad_magic", "not_request", "bad_hardware"] {
        assert_eq!(
            stats.drops.get(reason),
            Some(&(flood / 4)),
            "{reason}: {stats:?}"
        );
    }
    assert_eq!(stats.acks, 2, "{stats:?}");
    let mut buf = [0u8; 1500];
    client.set_read_timeout(Duration::from_millis(300)).unwrap();
    assert!(
        client.recv_from(&mut buf).is_err(),
        "nothing answers the flood"
    );
    // Still serving.
    client.send_to(&renew, to_server).unwrap();
    client.set_read_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(answer(&client).opts().msg_type(), Some(MessageType::Ack));

    // Stop (threads joined promptly), start again on the same lease directory.
    let t = Instant::now();
    services.stop();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let services = Services::start(kernel, &config, &links).unwrap();
    let leases = services.leases();
    assert_eq!(leases[0].0, "lo0");
    assert_eq!(leases[0].1.len(), 1, "{leases:?}");
    assert_eq!(leases[0].1[0].ip, Ipv4Addr::new(127, 0, 0, 100));
    drop(services);
    let _ = std::fs::remove_dir_all(&dir);
}
