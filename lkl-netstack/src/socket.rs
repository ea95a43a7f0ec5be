//! Sockets inside the library kernel, shaped like `std::net`'s.
//!
//! Every socket is a file descriptor of the kernel's one fd table (shared by all
//! host threads), so a socket made on one thread may be used from another. Struct
//! layouts (`sockaddr_in`, `sockaddr_in6`, `ifreq`) are the host's `libc` ones: the
//! library has the host's ABI.
#![allow(unsafe_code)]

use std::io::{self, Read, Write};
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, SocketAddrV4, SocketAddrV6};

use lkl_sys::nr;

use crate::Kernel;
use crate::sys;

/// A file descriptor inside the library kernel, closed on drop.
#[derive(Debug)]
pub struct Fd(i32);

impl Fd {
    /// Takes ownership of a descriptor the kernel returned.
    pub(crate) fn from_raw(fd: i32) -> Fd {
        Fd(fd)
    }

    pub fn raw(&self) -> i32 {
        self.0
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        let _ = sys::syscall_values(nr::CLOSE, [i64::from(self.0), 0, 0, 0, 0, 0]);
    }
}

/// A socket address in the kernel's wire layout.
#[repr(C)]
union RawSockAddr {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
    storage: libc::sockaddr_storage,
}

impl RawSockAddr {
    fn from_std(addr: &SocketAddr) -> (RawSockAddr, u32) {
        // SAFETY: all-zero is a valid value of every member.
        let mut raw: RawSockAddr = unsafe { zeroed() };
        match addr {
            SocketAddr::V4(a) => {
                raw.v4 = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                (raw, size_of::<libc::sockaddr_in>() as u32)
            }
            SocketAddr::V6(a) => {
                raw.v6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                (raw, size_of::<libc::sockaddr_in6>() as u32)
            }
        }
    }

    fn to_std(&self) -> io::Result<SocketAddr> {
        // SAFETY: every member starts with the family field.
        let family = i32::from(unsafe { self.storage.ss_family });
        match family {
            libc::AF_INET => {
                // SAFETY: the kernel wrote a sockaddr_in for AF_INET.
                let a = unsafe { self.v4 };
                Ok(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes()),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: the kernel wrote a sockaddr_in6 for AF_INET6.
                let a = unsafe { self.v6 };
                Ok(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("address family {family}"),
            )),
        }
    }
}

fn family(addr: &SocketAddr) -> i64 {
    i64::from(if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    })
}

fn socket(domain: i64, kind: i32) -> io::Result<Fd> {
    let fd = sys::syscall_values(
        nr::SOCKET,
        [domain, i64::from(kind | libc::SOCK_CLOEXEC), 0, 0, 0, 0],
    )?;
    Ok(Fd(fd as i32))
}

fn setsockopt(fd: &Fd, level: i32, name: i32, value: &[u8]) -> io::Result<()> {
    // SAFETY: the kernel reads value.len() bytes from value.
    unsafe {
        sys::syscall(
            nr::SETSOCKOPT,
            [
                i64::from(fd.0),
                i64::from(level),
                i64::from(name),
                value.as_ptr() as i64,
                value.len() as i64,
                0,
            ],
        )?;
    }
    Ok(())
}

fn getsockopt(fd: &Fd, level: i32, name: i32, value: &mut [u8]) -> io::Result<usize> {
    let mut len = value.len() as u32;
    // SAFETY: the kernel writes at most `len` bytes into value and updates len.
    unsafe {
        sys::syscall(
            nr::GETSOCKOPT,
            [
                i64::from(fd.0),
                i64::from(level),
                i64::from(name),
                value.as_mut_ptr() as i64,
                &mut len as *mut u32 as i64,
                0,
            ],
        )?;
    }
    Ok(len as usize)
}

pub(crate) fn set_int_option(fd: &Fd, level: i32, name: i32, value: i32) -> io::Result<()> {
    setsockopt(fd, level, name, &value.to_ne_bytes())
}

fn bind(fd: &Fd, addr: &SocketAddr) -> io::Result<()> {
    let (raw, len) = RawSockAddr::from_std(addr);
    // SAFETY: raw holds `len` valid bytes of a socket address.
    unsafe {
        sys::syscall(
            nr::BIND,
            [
                i64::from(fd.0),
                &raw as *const _ as i64,
                i64::from(len),
                0,
                0,
                0,
            ],
        )?
    };
    Ok(())
}

fn connect(fd: &Fd, addr: &SocketAddr) -> io::Result<()> {
    let (raw, len) = RawSockAddr::from_std(addr);
    // SAFETY: as in bind.
    unsafe {
        sys::syscall(
            nr::CONNECT,
            [
                i64::from(fd.0),
                &raw as *const _ as i64,
                i64::from(len),
                0,
                0,
                0,
            ],
        )?
    };
    Ok(())
}

fn sock_name(fd: &Fd, call: i64) -> io::Result<SocketAddr> {
    // SAFETY: all-zero is a valid RawSockAddr.
    let mut raw: RawSockAddr = unsafe { zeroed() };
    let mut len = size_of::<RawSockAddr>() as u32;
    // SAFETY: the kernel writes at most `len` bytes into raw.
    unsafe {
        sys::syscall(
            call,
            [
                i64::from(fd.0),
                &mut raw as *mut _ as i64,
                &mut len as *mut u32 as i64,
                0,
                0,
                0,
            ],
        )?
    };
    raw.to_std()
}

fn read(fd: &Fd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the kernel writes at most buf.len() bytes into buf.
    let n = unsafe {
        sys::syscall(
            nr::READ,
            [
                i64::from(fd.0),
                buf.as_mut_ptr() as i64,
                buf.len() as i64,
                0,
                0,
                0,
            ],
        )?
    };
    Ok(n as usize)
}

fn write(fd: &Fd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: the kernel reads at most buf.len() bytes from buf.
    let n = unsafe {
        sys::syscall(
            nr::WRITE,
            [
                i64::from(fd.0),
                buf.as_ptr() as i64,
                buf.len() as i64,
                0,
                0,
                0,
            ],
        )?
    };
    Ok(n as usize)
}

/// A listening TCP socket inside the library.
#[derive(Debug)]
pub struct TcpListener {
    fd: Fd,
}

impl TcpListener {
    pub fn bind(_kernel: &Kernel, addr: SocketAddr) -> io::Result<TcpListener> {
        let fd = socket(family(&addr), libc::SOCK_STREAM)?;
        set_int_option(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
        bind(&fd, &addr)?;
        sys::syscall_values(nr::LISTEN, [i64::from(fd.0), 4096, 0, 0, 0, 0])?;
        Ok(TcpListener { fd })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        sock_name(&self.fd, nr::GETSOCKNAME)
    }

    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        // SAFETY: all-zero is a valid RawSockAddr.
        let mut raw: RawSockAddr = unsafe { zeroed() };
        let mut len = size_of::<RawSockAddr>() as u32;
        // SAFETY: the kernel writes at most `len` bytes into raw.
        let fd = unsafe {
            sys::syscall(
                nr::ACCEPT4,
                [
                    i64::from(self.fd.0),
                    &mut raw as *mut _ as i64,
                    &mut len as *mut u32 as i64,
                    i64::from(libc::SOCK_CLOEXEC),
                    0,
                    0,
                ],
            )?
        };
        let stream = TcpStream { fd: Fd(fd as i32) };
        Ok((stream, raw.to_std()?))
    }

    pub fn fd(&self) -> &Fd {
        &self.fd
    }
}

/// A connected TCP socket inside the library.
#[derive(Debug)]
pub struct TcpStream {
    fd: Fd,
}

impl TcpStream {
    pub fn connect(_kernel: &Kernel, addr: SocketAddr) -> io::Result<TcpStream> {
        let fd = socket(family(&addr), libc::SOCK_STREAM)?;
        connect(&fd, &addr)?;
        Ok(TcpStream { fd })
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        sock_name(&self.fd, nr::GETPEERNAME)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        sock_name(&self.fd, nr::GETSOCKNAME)
    }

    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        set_int_option(
            &self.fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            i32::from(on),
        )
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        let how = match how {
            Shutdown::Read => libc::SHUT_RD,
            Shutdown::Write => libc::SHUT_WR,
            Shutdown::Both => libc::SHUT_RDWR,
        };
        sys::syscall_values(
            nr::SHUTDOWN,
            [i64::from(self.fd.0), i64::from(how), 0, 0, 0, 0],
        )?;
        Ok(())
    }

    /// Sets a socket option from its raw bytes (e.g. `SOL_TLS` crypto info).
    pub fn set_option(&self, level: i32, name: i32, value: &[u8]) -> io::Result<()> {
        setsockopt(&self.fd, level, name, value)
    }

    /// Reads a socket option into `value`; returns its length.
    pub fn option(&self, level: i32, name: i32, value: &mut [u8]) -> io::Result<usize> {
        getsockopt(&self.fd, level, name, value)
    }

    /// Sends `count` bytes of the library file `file` from `offset` (sendfile(2)).
    pub fn send_file(&self, file: &Fd, offset: &mut i64, count: usize) -> io::Result<usize> {
        // SAFETY: the kernel reads and updates *offset.
        let n = unsafe {
            sys::syscall(
                nr::SENDFILE,
                [
                    i64::from(self.fd.0),
                    i64::from(file.0),
                    offset as *mut i64 as i64,
                    count as i64,
                    0,
                    0,
                ],
            )?
        };
        Ok(n as usize)
    }

    pub fn fd(&self) -> &Fd {
        &self.fd
    }
}

impl Read for &TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read(&self.fd, buf)
    }
}

impl Write for &TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        write(&self.fd, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// The owned stream reads and writes like a shared one (the kernel serialises).
impl Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A UDP socket inside the library.
#[derive(Debug)]
pub struct UdpSocket {
    fd: Fd,
}

impl UdpSocket {
    pub fn bind(_kernel: &Kernel, addr: SocketAddr) -> io::Result<UdpSocket> {
        let fd = socket(family(&addr), libc::SOCK_DGRAM)?;
        bind(&fd, &addr)?;
        Ok(UdpSocket { fd })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        sock_name(&self.fd, nr::GETSOCKNAME)
    }

    pub fn set_recv_buffer_size(&self, bytes: i32) -> io::Result<()> {
        set_int_option(&self.fd, libc::SOL_SOCKET, libc::SO_RCVBUF, bytes)
    }

    pub fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        send_to(&self.fd, buf, &to)
    }

    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        recv_from(&self.fd, buf)
    }
}

impl UdpSocket {
    /// A UDP socket tied to interface `ifname` (`SO_BINDTODEVICE`, set before the bind so
    /// one port may be bound once per interface) and bound to `addr`, with `SO_REUSEADDR`
    /// and `SO_BROADCAST` on: what a server on a link (DHCP's port 67) needs.
    pub fn bind_on_device(
        _kernel: &Kernel,
        ifname: &str,
        addr: SocketAddr,
    ) -> io::Result<UdpSocket> {
        let fd = socket(family(&addr), libc::SOCK_DGRAM)?;
        bind_to_device(&fd, ifname)?;
        set_int_option(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
        set_int_option(&fd, libc::SOL_SOCKET, libc::SO_BROADCAST, 1)?;
        bind(&fd, &addr)?;
        Ok(UdpSocket { fd })
    }

    /// Makes `recv_from` give up after `timeout` (`SO_RCVTIMEO`) with `WouldBlock`.
    pub fn set_read_timeout(&self, timeout: std::time::Duration) -> io::Result<()> {
        set_read_timeout(&self.fd, timeout)
    }

    /// Tells the kernel that `ip` on `ifname` is at `mac` (`SIOCSARP`, a complete entry),
    /// so a datagram to `ip` goes out at once: how a DHCP server reaches a client that
    /// has no address yet to answer ARP with (RFC 2131 §4.1).
    pub fn set_neighbour(&self, ifname: &str, ip: Ipv4Addr, mac: [u8; 6]) -> io::Result<()> {
        // SAFETY: all-zero is a valid arpreq.
        let mut req: libc::arpreq = unsafe { zeroed() };
        let pa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(ip.octets()),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: sockaddr_in fits in the sockaddr arp_pa (both 16 bytes); plain data.
        req.arp_pa = unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(pa) };
        req.arp_ha.sa_family = libc::ARPHRD_ETHER;
        for (d, s) in req.arp_ha.sa_data.iter_mut().zip(mac) {
            *d = s as libc::c_char;
        }
        req.arp_flags = libc::ATF_COM;
        copy_ifname(&mut req.arp_dev, ifname)?;
        // SAFETY: the kernel reads one arpreq from &req, which lives across the call.
        unsafe {
            sys::syscall(
                nr::IOCTL,
                [
                    i64::from(self.fd.0),
                    libc::SIOCSARP as i64,
                    &req as *const libc::arpreq as i64,
                    0,
                    0,
                    0,
                ],
            )?
        };
        Ok(())
    }
}

/// An ICMPv6 raw socket inside the library (`SOCK_RAW`, `IPPROTO_ICMPV6`): the kernel
/// fills in the checksum (RFC 3542 §3.1) and the IPv6 header; a router advertisement
/// daemon sends and receives its neighbour discovery messages on it.
#[derive(Debug)]
pub struct Icmpv6Socket {
    fd: Fd,
}

impl Icmpv6Socket {
    /// A socket tied to interface `ifname` (`SO_BINDTODEVICE`), hop limit 255 both for
    /// unicast and multicast (RFC 4861 §6.1.2: hosts drop neighbour discovery messages
    /// with any other), multicast sent out of `ifindex`, and only ICMPv6 types in
    /// `accept_types` delivered (`ICMP6_FILTER`).
    pub fn on_device(
        _kernel: &Kernel,
        ifname: &str,
        ifindex: u32,
        accept_types: &[u8],
    ) -> io::Result<Icmpv6Socket> {
        let fd = raw_socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6)?;
        bind_to_device(&fd, ifname)?;
        set_int_option(&fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, 255)?;
        set_int_option(&fd, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, 255)?;
        set_int_option(
            &fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_MULTICAST_IF,
            ifindex as i32,
        )?;
        set_int_option(&fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP, 0)?;
        // struct icmp6_filter: a bit set per type means "block" (RFC 3542 §3.2).
        let mut filter = [0xffu8; 32];
        for t in accept_types {
            filter[usize::from(t >> 3)] &= !(1u8 << (t & 7));
        }
        setsockopt(&fd, libc::IPPROTO_ICMPV6, ICMP6_FILTER, &filter)?;
        Ok(Icmpv6Socket { fd })
    }

    /// Joins multicast group `group` on interface `ifindex` (`IPV6_ADD_MEMBERSHIP`).
    pub fn join_multicast(&self, group: Ipv6Addr, ifindex: u32) -> io::Result<()> {
        let mreq = libc::ipv6_mreq {
            ipv6mr_multiaddr: libc::in6_addr {
                s6_addr: group.octets(),
            },
            ipv6mr_interface: ifindex,
        };
        // SAFETY: ipv6_mreq is plain data; its bytes are read by the kernel only.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                &mreq as *const libc::ipv6_mreq as *const u8,
                size_of::<libc::ipv6_mreq>(),
            )
        };
        setsockopt(
            &self.fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_ADD_MEMBERSHIP,
            bytes,
        )
    }

    /// Makes `recv_from` give up after `timeout` with `WouldBlock`.
    pub fn set_read_timeout(&self, timeout: std::time::Duration) -> io::Result<()> {
        set_read_timeout(&self.fd, timeout)
    }

    /// Sends one ICMPv6 message (checksum left 0: the kernel computes it).
    pub fn send_to(&self, message: &[u8], to: SocketAddrV6) -> io::Result<usize> {
        send_to(&self.fd, message, &SocketAddr::V6(to))
    }

    /// Receives one ICMPv6 message (without its IPv6 header) and its sender.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        recv_from(&self.fd, buf)
    }
}

/// `ICMP6_FILTER` (`<netinet/icmp6.h>`), which the libc crate does not name.
const ICMP6_FILTER: i32 = 1;

fn copy_ifname(dst: &mut [libc::c_char; libc::IFNAMSIZ], ifname: &str) -> io::Result<()> {
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ || ifname.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {ifname:?}"),
        ));
    }
    for (d, s) in dst.iter_mut().zip(ifname.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(())
}

fn bind_to_device(fd: &Fd, ifname: &str) -> io::Result<()> {
    let mut name = [0 as libc::c_char; libc::IFNAMSIZ];
    copy_ifname(&mut name, ifname)?;
    let bytes: Vec<u8> = name.iter().map(|c| *c as u8).collect();
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_BINDTODEVICE, &bytes)
}

fn set_read_timeout(fd: &Fd, timeout: std::time::Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros() as i32),
    };
    let mut bytes = [0u8; size_of::<libc::timeval>()];
    bytes[..8].copy_from_slice(&tv.tv_sec.to_ne_bytes());
    bytes[8..].copy_from_slice(&tv.tv_usec.to_ne_bytes());
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &bytes)
}

fn send_to(fd: &Fd, buf: &[u8], to: &SocketAddr) -> io::Result<usize> {
    let (raw, len) = RawSockAddr::from_std(to);
    // SAFETY: the kernel reads buf.len() bytes from buf and `len` bytes from raw.
    let n = unsafe {
        sys::syscall(
            nr::SENDTO,
            [
                i64::from(fd.0),
                buf.as_ptr() as i64,
                buf.len() as i64,
                0,
                &raw as *const _ as i64,
                i64::from(len),
            ],
        )?
    };
    Ok(n as usize)
}

fn recv_from(fd: &Fd, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    // SAFETY: all-zero is a valid RawSockAddr.
    let mut raw: RawSockAddr = unsafe { zeroed() };
    let mut len = size_of::<RawSockAddr>() as u32;
    // SAFETY: the kernel writes at most buf.len() bytes into buf and `len` into raw.
    let n = unsafe {
        sys::syscall(
            nr::RECVFROM,
            [
                i64::from(fd.0),
                buf.as_mut_ptr() as i64,
                buf.len() as i64,
                0,
                &mut raw as *mut _ as i64,
                &mut len as *mut u32 as i64,
            ],
        )?
    };
    Ok((n as usize, raw.to_std()?))
}

/// A socket of any family, e.g. `AF_NETLINK` for configuration.
pub(crate) fn raw_socket(domain: i32, kind: i32, protocol: i32) -> io::Result<Fd> {
    let fd = sys::syscall_values(
        nr::SOCKET,
        [
            i64::from(domain),
            i64::from(kind | libc::SOCK_CLOEXEC),
            i64::from(protocol),
            0,
            0,
            0,
        ],
    )?;
    Ok(Fd(fd as i32))
}

pub(crate) fn send(fd: &Fd, buf: &[u8]) -> io::Result<usize> {
    write(fd, buf)
}

pub(crate) fn recv(fd: &Fd, buf: &mut [u8]) -> io::Result<usize> {
    read(fd, buf)
}
