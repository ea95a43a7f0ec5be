//! The service threads: one per DHCP server and one per advertising link, each blocked in
//! a library socket's `recvfrom` with a receive timeout, so that a stop request is seen
//! within [`POLL`]. DHCP and RA are control traffic (a few datagrams per guest per lease
//! or per minutes), so a server's state sits behind a mutex the API also reads.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lkl_netstack::{Icmpv6Socket, Kernel, UdpSocket};
use serde::Serialize;
use tracing::{debug, info, warn};

use super::dhcp::{self, Destination, DhcpDrop, DhcpServer, Outcome};
use super::leases::{Lease, LeaseFile, LeaseTable};
use super::ra::{self, Advert, AnswerBudget, RsDrop};
use super::{ServiceError, ServiceLink, ServicesConfig};

/// How long a service thread waits in `recvfrom` before checking for a stop.
const POLL: Duration = Duration::from_millis(200);
const DHCP_SERVER_PORT: u16 = 67;
const DHCP_CLIENT_PORT: u16 = 68;
/// RFC 4861 §6.2.4: the first few unsolicited adverts come faster (at most 16 s apart).
const INITIAL_ADVERTS: u32 = 3;
const INITIAL_INTERVAL: Duration = Duration::from_secs(16);
/// After a failed send (the link not ready yet), try again this soon.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// Answers to solicitations: a burst of 8, then one per 500 ms per link.
const RS_BURST: u32 = 8;
const RS_REFILL_MS: u64 = 500;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counters of one DHCP server.
#[derive(Debug, Default)]
struct DhcpCounters {
    received: AtomicU64,
    offers: AtomicU64,
    acks: AtomicU64,
    naks: AtomicU64,
    releases: AtomicU64,
    send_errors: AtomicU64,
    lease_write_errors: AtomicU64,
    drops: [AtomicU64; DhcpDrop::ALL.len()],
}

/// A DHCP server's counters, as the API shows them.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DhcpStats {
    pub device: String,
    pub ifname: String,
    pub received: u64,
    pub offers: u64,
    pub acks: u64,
    pub naks: u64,
    pub releases: u64,
    pub send_errors: u64,
    pub lease_write_errors: u64,
    /// Drops by reason (only reasons seen).
    pub drops: BTreeMap<&'static str, u64>,
}

#[derive(Debug)]
struct DhcpShared {
    device: String,
    ifname: String,
    server: Mutex<DhcpServer>,
    file: LeaseFile,
    counters: DhcpCounters,
}

/// Counters of one advertising link.
#[derive(Debug, Default)]
struct RaCounters {
    sent_unsolicited: AtomicU64,
    sent_solicited: AtomicU64,
    solicitations: AtomicU64,
    send_errors: AtomicU64,
    drops: [AtomicU64; RsDrop::ALL.len()],
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RaStats {
    pub device: String,
    pub ifname: String,
    pub sent_unsolicited: u64,
    pub sent_solicited: u64,
    pub solicitations: u64,
    pub send_errors: u64,
    pub drops: BTreeMap<&'static str, u64>,
}

#[derive(Debug)]
struct RaShared {
    device: String,
    ifname: String,
    counters: RaCounters,
}

/// The running services; dropping it stops and joins every thread.
#[derive(Debug, Default)]
pub struct Services {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    dhcp: Vec<Arc<DhcpShared>>,
    ra: Vec<Arc<RaShared>>,
}

fn find<'a>(
    links: &'a [ServiceLink],
    service: &'static str,
    device: &str,
) -> Result<&'a ServiceLink, ServiceError> {
    links
        .iter()
        .find(|l| l.device == device)
        .ok_or_else(|| ServiceError::UnknownDevice {
            service,
            device: device.to_owned(),
            known: if links.is_empty() {
                "none".into()
            } else {
                links
                    .iter()
                    .map(|l| l.device.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        })
}

impl Services {
    /// Starts every service of `config` on `links`, all or none: on an error the ones
    /// started are stopped again.
    pub fn start(
        kernel: &Kernel,
        config: &ServicesConfig,
        links: &[ServiceLink],
    ) -> Result<Services, ServiceError> {
        let mut s = Services::default();
        for (i, c) in config.dhcp.iter().enumerate() {
            c.validate()?;
            if config.dhcp[..i].iter().any(|o| o.device == c.device) {
                return Err(ServiceError::Duplicate {
                    service: "DHCP server",
                    device: c.device.clone(),
                });
            }
            let link = find(links, "DHCP server", &c.device)?;
            let (server_ip, prefix) = *link.ipv4.first().ok_or_else(|| ServiceError::NoIpv4 {
                device: c.device.clone(),
            })?;
            let subnet = c.subnet(server_ip, prefix, link.guest_mac)?;
            let file = LeaseFile::new(config.lease_dir.join(format!("{}.json", c.device)));
            let mut table = LeaseTable::from_leases(file.load()?);
            table.expire(now_secs());
            let sock = UdpSocket::bind_on_device(
                kernel,
                &link.ifname,
                SocketAddr::from((Ipv4Addr::UNSPECIFIED, DHCP_SERVER_PORT)),
            )
            .and_then(|u| u.set_read_timeout(POLL).map(|()| u))
            .map_err(|source| ServiceError::Socket {
                service: "DHCP server",
                device: c.device.clone(),
                source,
            })?;
            let shared = Arc::new(DhcpShared {
                device: c.device.clone(),
                ifname: link.ifname.clone(),
                server: Mutex::new(DhcpServer::new(subnet, table)),
                file,
                counters: DhcpCounters::default(),
            });
            let (sh, stop) = (Arc::clone(&shared), Arc::clone(&s.stop));
            let t = thread::Builder::new()
                .name(format!("dhcp-{}", c.device))
                .spawn(move || dhcp_loop(&sock, &sh, &stop))
                .map_err(|source| ServiceError::Thread {
                    service: "DHCP server",
                    device: c.device.clone(),
                    source,
                })?;
            info!(device = %c.device, ifname = %link.ifname, server = %server_ip, "DHCP server started");
            s.threads.push(t);
            s.dhcp.push(shared);
        }
        for (i, c) in config.ra.iter().enumerate() {
            c.validate()?;
            if config.ra[..i].iter().any(|o| o.device == c.device) {
                return Err(ServiceError::Duplicate {
                    service: "router advertisements",
                    device: c.device.clone(),
                });
            }
            let link = find(links, "router advertisements", &c.device)?;
            let prefixes: Vec<Ipv6Addr> = link
                .ipv6
                .iter()
                .filter(|(a, p)| *p == 64 && !a.is_unicast_link_local() && !a.is_multicast())
                .map(|(a, _)| ra::prefix64(*a))
                .collect();
            if prefixes.is_empty() {
                return Err(ServiceError::NoIpv6Prefix {
                    device: c.device.clone(),
                });
            }
            let advert = Advert {
                router_lifetime: c.router_lifetime_secs,
                prefixes,
                mtu: c.mtu,
                mac: link.mac,
                on_link: !link.routed,
            };
            let sock_err = |source| ServiceError::Socket {
                service: "router advertisements",
                device: c.device.clone(),
                source,
            };
            let sock = Icmpv6Socket::on_device(
                kernel,
                &link.ifname,
                link.ifindex,
                &[ra::ROUTER_SOLICITATION],
            )
            .map_err(sock_err)?;
            sock.join_multicast(ALL_ROUTERS, link.ifindex)
                .map_err(sock_err)?;
            sock.set_read_timeout(POLL).map_err(sock_err)?;
            let shared = Arc::new(RaShared {
                device: c.device.clone(),
                ifname: link.ifname.clone(),
                counters: RaCounters::default(),
            });
            let (sh, stop) = (Arc::clone(&shared), Arc::clone(&s.stop));
            let interval = Duration::from_secs(u64::from(c.interval_secs));
            let ifindex = link.ifindex;
            let t = thread::Builder::new()
                .name(format!("ra-{}", c.device))
                .spawn(move || ra_loop(&sock, ifindex, &advert, interval, &sh, &stop))
                .map_err(|source| ServiceError::Thread {
                    service: "router advertisements",
                    device: c.device.clone(),
                    source,
                })?;
            info!(device = %c.device, ifname = %link.ifname, "router advertisements started");
            s.threads.push(t);
            s.ra.push(shared);
        }
        Ok(s)
    }

    /// Every server's leases (offers included), by device.
    pub fn leases(&self) -> Vec<(String, Vec<Lease>)> {
        self.dhcp
            .iter()
            .map(|d| {
                (
                    d.device.clone(),
                    lock(&d.server).leases.iter().cloned().collect(),
                )
            })
            .collect()
    }

    pub fn dhcp_stats(&self) -> Vec<DhcpStats> {
        self.dhcp
            .iter()
            .map(|d| {
                let c = &d.counters;
                let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
                DhcpStats {
                    device: d.device.clone(),
                    ifname: d.ifname.clone(),
                    received: get(&c.received),
                    offers: get(&c.offers),
                    acks: get(&c.acks),
                    naks: get(&c.naks),
                    releases: get(&c.releases),
                    send_errors: get(&c.send_errors),
                    lease_write_errors: get(&c.lease_write_errors),
                    drops: seen(DhcpDrop::ALL.iter().map(|r| r.name()), &c.drops),
                }
            })
            .collect()
    }

    pub fn ra_stats(&self) -> Vec<RaStats> {
        self.ra
            .iter()
            .map(|r| {
                let c = &r.counters;
                let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
                RaStats {
                    device: r.device.clone(),
                    ifname: r.ifname.clone(),
                    sent_unsolicited: get(&c.sent_unsolicited),
                    sent_solicited: get(&c.sent_solicited),
                    solicitations: get(&c.solicitations),
                    send_errors: get(&c.send_errors),
                    drops: seen(RsDrop::ALL.iter().map(|r| r.name()), &c.drops),
                }
            })
            .collect()
    }

    /// Stops and joins every thread (also on drop).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Counters by name, those above zero only.
fn seen(
    names: impl Iterator<Item = &'static str>,
    counters: &[AtomicU64],
) -> BTreeMap<&'static str, u64> {
    names
        .zip(counters)
        .map(|(r, n)| (r, n.load(Ordering::Relaxed)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

fn dhcp_loop(sock: &UdpSocket, shared: &DhcpShared, stop: &AtomicBool) {
    let c = &shared.counters;
    let mut buf = vec![0u8; dhcp::MAX_MESSAGE_LEN + 1];
    while !stop.load(Ordering::Relaxed) {
        let n = match sock.recv_from(&mut buf) {
            Ok((n, _from)) => n,
            Err(e) if is_timeout(&e) => continue,
            Err(e) => {
                warn!(device = %shared.device, "DHCP receive failed: {e}; retrying");
                thread::sleep(POLL);
                continue;
            }
        };
        c.received.fetch_add(1, Ordering::Relaxed);
        let (outcome, to_save) = {
            let mut server = lock(&shared.server);
            let outcome = server.handle(&buf[..n.min(buf.len())], now_secs());
            let to_save = server.leases.dirty().then(|| {
                server.leases.clean();
                server.leases.persistent()
            });
            (outcome, to_save)
        };
        // Written outside the lock, so the API's lease listing never waits for an fsync.
        if let Some(leases) = to_save {
            if let Err(e) = shared.file.save(leases) {
                c.lease_write_errors.fetch_add(1, Ordering::Relaxed);
                warn!(device = %shared.device, "{}", crate::error_chain(&e));
            }
        }
        match outcome {
            Outcome::Dropped(why) => {
                if let Some(i) = DhcpDrop::ALL.iter().position(|r| *r == why) {
                    c.drops[i].fetch_add(1, Ordering::Relaxed);
                }
                debug!(device = %shared.device, reason = why.name(), "DHCP datagram dropped");
            }
            Outcome::Done => {
                c.releases.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Reply(r) => {
                let counter = match r.kind {
                    dhcproto::v4::MessageType::Offer => &c.offers,
                    dhcproto::v4::MessageType::Nak => &c.naks,
                    _ => &c.acks,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let to = match r.to {
                    Destination::Broadcast => Ipv4Addr::BROADCAST,
                    Destination::Client(ip) => ip,
                    Destination::NewClient { ip, mac } => {
                        // The client cannot answer ARP before it has the address.
                        match sock.set_neighbour(&shared.ifname, ip, mac.0) {
                            Ok(()) => ip,
                            Err(e) => {
                                debug!(device = %shared.device, "cannot add the neighbour entry ({e}); broadcasting");
                                Ipv4Addr::BROADCAST
                            }
                        }
                    }
                };
                if let Err(e) = sock.send_to(
                    &r.bytes,
                    SocketAddr::V4(SocketAddrV4::new(to, DHCP_CLIENT_PORT)),
                ) {
                    c.send_errors.fetch_add(1, Ordering::Relaxed);
                    warn!(device = %shared.device, "sending a DHCP reply to {to} failed: {e}");
                }
            }
        }
    }
}

fn ra_loop(
    sock: &Icmpv6Socket,
    ifindex: u32,
    advert: &Advert,
    interval: Duration,
    shared: &RaShared,
    stop: &AtomicBool,
) {
    let c = &shared.counters;
    let message = advert.encode();
    let start = Instant::now();
    let mut budget = AnswerBudget::new(RS_BURST, RS_REFILL_MS);
    let mut sent = 0u32;
    let mut next = Instant::now();
    let mut buf = [0u8; 1280];
    let send = |to: Ipv6Addr, counter: &AtomicU64| match sock
        .send_to(&message, SocketAddrV6::new(to, 0, 0, ifindex))
    {
        Ok(_) => {
            counter.fetch_add(1, Ordering::Relaxed);
            true
        }
        Err(e) => {
            // EADDRNOTAVAIL until the link's own link-local address has passed DAD.
            c.send_errors.fetch_add(1, Ordering::Relaxed);
            debug!(device = %shared.device, "sending a router advertisement to {to} failed: {e}");
            false
        }
    };
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() >= next {
            let wait = if !send(ALL_NODES, &c.sent_unsolicited) {
                RETRY_INTERVAL
            } else {
                sent += 1;
                if sent < INITIAL_ADVERTS {
                    interval.min(INITIAL_INTERVAL)
                } else {
                    interval
                }
            };
            next = Instant::now() + wait;
        }
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e) if is_timeout(&e) => continue,
            Err(e) => {
                warn!(device = %shared.device, "receiving router solicitations failed: {e}; retrying");
                thread::sleep(POLL);
                continue;
            }
        };
        c.solicitations.fetch_add(1, Ordering::Relaxed);
        let source = match from.ip() {
            IpAddr::V6(a) => a,
            IpAddr::V4(_) => Ipv6Addr::UNSPECIFIED,
        };
        let checked = ra::check_solicitation(&buf[..n.min(buf.len())], source).and_then(|()| {
            if budget.take(start.elapsed().as_millis() as u64) {
                Ok(())
            } else {
                Err(RsDrop::RateLimited)
            }
        });
        match checked {
            Ok(()) => {
                // RFC 4861 §6.2.6: answer a solicitation from an address by unicast.
                let to = if source.is_unspecified() {
                    ALL_NODES
                } else {
                    source
                };
                let _ = send(to, &c.sent_solicited);
            }
            Err(why) => {
                if let Some(i) = RsDrop::ALL.iter().position(|r| *r == why) {
                    c.drops[i].fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}
