//! The library kernel's conntrack table, read through ctnetlink (a NETLINK_NETFILTER dump
//! of `IPCTNL_MSG_CT_GET`, uapi `linux/netfilter/nfnetlink_conntrack.h`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use super::nft::attrs;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_MARK: u16 = 8;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
/// The zone of one direction, dumped when the zone is directional (ctnetlink_dump_zone_id).
const CTA_TUPLE_ZONE: u16 = 3;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_PROTO_ICMP_ID: u16 = 4;
/// `IPS_SRC_NAT`, `IPS_DST_NAT` and `IPS_ASSURED` of `enum ip_conntrack_status`.
const IPS_ASSURED: u32 = 1 << 2;
const IPS_SRC_NAT: u32 = 1 << 4;
const IPS_DST_NAT: u32 = 1 << 5;

/// The dump request for every entry of every family (AF_UNSPEC).
pub fn dump_request() -> Vec<u8> {
    let mut buf = Vec::with_capacity(20);
    buf.extend_from_slice(&20u32.to_ne_bytes());
    buf.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET).to_ne_bytes());
    buf.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    buf.extend_from_slice(&1u32.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&[0, 0, 0, 0]); // nfgenmsg: AF_UNSPEC, version 0, res_id 0
    buf
}

/// One direction of a connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tuple {
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub protocol: u8,
    /// Ports (TCP, UDP) or the ICMP id as `src_port`.
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    /// The conntrack zone of this direction (a tenant's original direction, see
    /// `net::tenant`; 0 is the default zone).
    pub zone: u16,
}

/// A conntrack entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub original: Tuple,
    pub reply: Tuple,
    pub snat: bool,
    pub dnat: bool,
    pub assured: bool,
    pub mark: u32,
    /// The zone of both directions (`CTA_ZONE`), when the zone is not directional; the
    /// tenants' zones are, and show in `original.zone`.
    pub zone: u16,
}

fn be16(v: &[u8]) -> Option<u16> {
    v.try_into().ok().map(u16::from_be_bytes)
}

fn be32(v: &[u8]) -> Option<u32> {
    v.try_into().ok().map(u32::from_be_bytes)
}

fn ip(v: &[u8]) -> Option<IpAddr> {
    match v.len() {
        4 => <[u8; 4]>::try_from(v)
            .ok()
            .map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        16 => <[u8; 16]>::try_from(v)
            .ok()
            .map(|a| IpAddr::V6(Ipv6Addr::from(a))),
        _ => None,
    }
}

fn tuple(v: &[u8]) -> Tuple {
    let mut t = Tuple::default();
    for (k, v) in attrs(v) {
        match k {
            CTA_TUPLE_IP => {
                for (k, v) in attrs(v) {
                    match k {
                        CTA_IP_V4_SRC | CTA_IP_V6_SRC => t.src = ip(v),
                        CTA_IP_V4_DST | CTA_IP_V6_DST => t.dst = ip(v),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (k, v) in attrs(v) {
                    match k {
                        CTA_PROTO_NUM => t.protocol = v.first().copied().unwrap_or(0),
                        CTA_PROTO_SRC_PORT | CTA_PROTO_ICMP_ID => t.src_port = be16(v),
                        CTA_PROTO_DST_PORT => t.dst_port = be16(v),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_ZONE => t.zone = be16(v).unwrap_or(0),
            _ => {}
        }
    }
    t
}

/// Parses one reply's payload (after the netlink header: `nfgenmsg`, then attributes).
pub fn parse(payload: &[u8]) -> Option<Entry> {
    let mut e = Entry::default();
    let mut any = false;
    for (k, v) in attrs(payload.get(4..)?) {
        match k {
            CTA_TUPLE_ORIG => {
                e.original = tuple(v);
                any = true;
            }
            CTA_TUPLE_REPLY => e.reply = tuple(v),
            CTA_STATUS => {
                let s = be32(v).unwrap_or(0);
                e.snat = s & IPS_SRC_NAT != 0;
                e.dnat = s & IPS_DST_NAT != 0;
                e.assured = s & IPS_ASSURED != 0;
            }
            CTA_MARK => e.mark = be32(v).unwrap_or(0),
            CTA_ZONE => e.zone = be16(v).unwrap_or(0),
            _ => {}
        }
    }
    any.then_some(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NLA_F_NESTED: u16 = 0x8000;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    #[test]
    fn an_snat_entry_parses_and_truncations_do_not_panic() {
        let orig = [
            attr(
                CTA_TUPLE_IP | NLA_F_NESTED,
                &[
                    attr(CTA_IP_V4_SRC, &[10, 1, 0, 10]),
                    attr(CTA_IP_V4_DST, &[10, 62, 0, 1]),
                ]
                .concat(),
            ),
            attr(CTA_TUPLE_ZONE, &3u16.to_be_bytes()),
            attr(
                CTA_TUPLE_PROTO | NLA_F_NESTED,
                &[
                    attr(CTA_PROTO_NUM, &[6]),
                    attr(CTA_PROTO_SRC_PORT, &40000u16.to_be_bytes()),
                    attr(CTA_PROTO_DST_PORT, &80u16.to_be_bytes()),
                ]
                .concat(),
            ),
        ]
        .concat();
        let mut payload = vec![2, 0, 0, 0];
        payload.extend(attr(CTA_TUPLE_ORIG | NLA_F_NESTED, &orig));
        payload.extend(attr(CTA_STATUS, &(IPS_SRC_NAT | IPS_ASSURED).to_be_bytes()));
        let e = parse(&payload).unwrap();
        assert_eq!(e.original.src, Some("10.1.0.10".parse().unwrap()));
        assert_eq!(e.original.dst_port, Some(80));
        assert_eq!(e.original.protocol, 6);
        assert!(e.snat && e.assured && !e.dnat);
        assert_eq!((e.original.zone, e.reply.zone, e.zone), (3, 0, 0));
        for cut in 0..payload.len() {
            let _ = parse(&payload[..cut]);
        }
        assert_eq!(dump_request().len(), 20);
    }
}
