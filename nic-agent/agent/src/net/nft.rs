//! nf_tables netlink messages, encoded here (a small typed encoder; the uapi is
//! `include/uapi/linux/netfilter/nf_tables.h` and `nfnetlink.h`). The bytes go to the
//! library kernel's NETLINK_NETFILTER socket (`lkl_netstack::Kernel::netfilter`), which
//! answers like any Linux: an acknowledgement or an error per message.
//!
//! Writes are one batch (`NFNL_MSG_BATCH_BEGIN` ... `NFNL_MSG_BATCH_END`), applied by the
//! kernel all or nothing. nf_tables' numbers (hook numbers, priorities, verdicts, lengths)
//! are big-endian; attribute headers are host order.

/// NETLINK's header and nfnetlink's `struct nfgenmsg`.
const NLMSG_HDRLEN: usize = 16;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
/// Without it nf_tables puts a new rule first in its chain (nf_tables_newrule).
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;

/// `enum nf_tables_msg_types`.
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_NEWOBJ: u16 = 18;
const NFT_MSG_GETOBJ: u16 = 19;

/// Protocol families (`NFPROTO_*`).
pub const NFPROTO_IPV4: u8 = 2;
pub const NFPROTO_NETDEV: u8 = 5;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_HOOK_DEV: u16 = 3;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_OBJ_TABLE: u16 = 1;
const NFTA_OBJ_NAME: u16 = 2;
const NFTA_OBJ_TYPE: u16 = 3;
const NFTA_OBJ_DATA: u16 = 4;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
const NFT_OBJECT_COUNTER: u32 = 1;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_META_SREG: u16 = 3;
/// `NFT_META_MARK` of `enum nft_meta_keys`: the packet's mark (`skb->mark`).
const NFT_META_MARK: u32 = 3;
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFTA_CT_DIRECTION: u16 = 3;
const NFTA_CT_SREG: u16 = 4;
/// `NFT_CT_ZONE` of `enum nft_ct_keys`.
const NFT_CT_ZONE: u32 = 17;
/// `IP_CT_DIR_ORIGINAL`: a directional ct key about the connection's first packet's way.
const IP_CT_DIR_ORIGINAL: u8 = 0;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_OBJREF_IMM_TYPE: u16 = 1;
const NFTA_OBJREF_IMM_NAME: u16 = 2;
/// The verdict register and the first two 16-byte data registers.
const NFT_REG_VERDICT: u32 = 0;
pub const NFT_REG_1: u32 = 1;
pub const NFT_REG_2: u32 = 2;
const NFTA_NAT_TYPE: u16 = 1;
const NFTA_NAT_FAMILY: u16 = 2;
const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
const NFT_NAT_DNAT: u32 = 1;

/// The netdev family's ingress hook (`NF_NETDEV_INGRESS`).
pub const NF_NETDEV_INGRESS: u32 = 0;
/// The inet hooks NAT uses (`NF_INET_PRE_ROUTING`, `NF_INET_POST_ROUTING`).
pub const NF_INET_PRE_ROUTING: u32 = 0;
pub const NF_INET_POST_ROUTING: u32 = 4;
/// Base chain priorities of `enum nf_ip_hook_priorities`: `raw` runs before conntrack
/// looks the packet up (-200), `mangle` after it and before NAT (-100).
pub const NF_IP_PRI_RAW: i32 = -300;
pub const NF_IP_PRI_MANGLE: i32 = -150;

/// Where a payload expression reads (`enum nft_payload_bases`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    Link = 0,
    Network = 1,
    Transport = 2,
}

/// `enum nft_meta_keys` used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    /// The frame's ethertype (`skb->protocol`, big-endian, 2 bytes).
    Protocol = 1,
    /// The input interface's name (IFNAMSIZ bytes, zero-padded).
    IifName = 6,
    /// The output interface's name (IFNAMSIZ bytes, zero-padded).
    OifName = 7,
}

/// An interface name as meta `iifname`/`oifname` load it: IFNAMSIZ bytes, zero-padded.
pub fn ifname_bytes(name: &str) -> Vec<u8> {
    let mut v = name.as_bytes().to_vec();
    v.resize(16, 0);
    v
}

/// `enum nft_cmp_ops` used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq = 0,
    Neq = 1,
}

/// A rule's final verdict (netfilter's `NF_DROP`, `NF_ACCEPT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Drop = 0,
    Accept = 1,
}

/// One expression of a rule; each loads into or compares register 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// Loads `len` bytes at `offset` from `base`.
    Payload {
        base: Base,
        offset: u32,
        len: u32,
    },
    /// Loads a meta value into register 1.
    Meta(MetaKey),
    /// Register 1 = (register 1 & mask) ^ 0, over `mask.len()` bytes.
    Mask(Vec<u8>),
    /// Compares register 1 with `data`; the rule stops here unless it holds.
    Cmp {
        op: CmpOp,
        data: Vec<u8>,
    },
    /// Counts into the named counter object of the rule's table.
    Counter(String),
    Verdict(Verdict),
    /// Loads `data` into register `reg` (1 or 2).
    Load {
        reg: u32,
        data: Vec<u8>,
    },
    /// Source NAT to the output interface's address (`masquerade`).
    Masquerade,
    /// Destination NAT of IPv4 to the address in register 1 and the port in register 2.
    Dnat4,
    /// `ct original zone set` register 1 (2 bytes, host order): the conntrack zone the
    /// packet's connection is looked up and created in, for its original direction only
    /// (`NF_CT_ZONE_DIR_ORIG`; nft_ct_set_zone_eval). Only before conntrack (a `raw` chain),
    /// and only for a packet not yet tracked.
    SetOriginalZone,
    /// Loads the original-direction zone of the packet's connection into register 1 (2
    /// bytes, host order, the register's other bytes zeroed: nft_reg_store16); the rule
    /// stops here for an untracked packet.
    OriginalZone,
    /// Sets the packet's mark (`skb->mark`, what `ip rule fwmark` matches) to register 1.
    SetMark,
}

/// Netlink attributes being written.
#[derive(Debug, Default)]
struct Attrs(Vec<u8>);

impl Attrs {
    fn put(&mut self, kind: u16, value: &[u8]) {
        let len = 4 + value.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(value);
        self.pad();
    }

    fn pad(&mut self) {
        while self.0.len() % 4 != 0 {
            self.0.push(0);
        }
    }

    fn str(&mut self, kind: u16, s: &str) {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.put(kind, &v);
    }

    fn be32(&mut self, kind: u16, v: u32) {
        self.put(kind, &v.to_be_bytes());
    }

    fn nested(&mut self, kind: u16, f: impl FnOnce(&mut Attrs)) {
        let mut inner = Attrs::default();
        f(&mut inner);
        self.put(kind | NLA_F_NESTED, &inner.0);
    }
}

impl Expr {
    fn encode(&self, a: &mut Attrs) {
        let (name, data): (&str, Attrs) = match self {
            Expr::Payload { base, offset, len } => {
                let mut d = Attrs::default();
                d.be32(NFTA_PAYLOAD_DREG, NFT_REG_1);
                d.be32(NFTA_PAYLOAD_BASE, *base as u32);
                d.be32(NFTA_PAYLOAD_OFFSET, *offset);
                d.be32(NFTA_PAYLOAD_LEN, *len);
                ("payload", d)
            }
            Expr::Meta(key) => {
                let mut d = Attrs::default();
                d.be32(NFTA_META_DREG, NFT_REG_1);
                d.be32(NFTA_META_KEY, *key as u32);
                ("meta", d)
            }
            Expr::Mask(mask) => {
                let mut d = Attrs::default();
                d.be32(NFTA_BITWISE_SREG, NFT_REG_1);
                d.be32(NFTA_BITWISE_DREG, NFT_REG_1);
                d.be32(NFTA_BITWISE_LEN, mask.len() as u32);
                d.nested(NFTA_BITWISE_MASK, |v| v.put(NFTA_DATA_VALUE, mask));
                let zero = vec![0u8; mask.len()];
                d.nested(NFTA_BITWISE_XOR, |v| v.put(NFTA_DATA_VALUE, &zero));
                ("bitwise", d)
            }
            Expr::Cmp { op, data } => {
                let mut d = Attrs::default();
                d.be32(NFTA_CMP_SREG, NFT_REG_1);
                d.be32(NFTA_CMP_OP, *op as u32);
                d.nested(NFTA_CMP_DATA, |v| v.put(NFTA_DATA_VALUE, data));
                ("cmp", d)
            }
            Expr::Counter(name) => {
                let mut d = Attrs::default();
                d.be32(NFTA_OBJREF_IMM_TYPE, NFT_OBJECT_COUNTER);
                d.str(NFTA_OBJREF_IMM_NAME, name);
                ("objref", d)
            }
            Expr::Load { reg, data } => {
                let mut d = Attrs::default();
                d.be32(NFTA_IMMEDIATE_DREG, *reg);
                d.nested(NFTA_IMMEDIATE_DATA, |v| v.put(NFTA_DATA_VALUE, data));
                ("immediate", d)
            }
            Expr::Masquerade => ("masq", Attrs::default()),
            Expr::SetOriginalZone => {
                let mut d = Attrs::default();
                d.be32(NFTA_CT_KEY, NFT_CT_ZONE);
                d.put(NFTA_CT_DIRECTION, &[IP_CT_DIR_ORIGINAL]);
                d.be32(NFTA_CT_SREG, NFT_REG_1);
                ("ct", d)
            }
            Expr::OriginalZone => {
                let mut d = Attrs::default();
                d.be32(NFTA_CT_DREG, NFT_REG_1);
                d.be32(NFTA_CT_KEY, NFT_CT_ZONE);
                d.put(NFTA_CT_DIRECTION, &[IP_CT_DIR_ORIGINAL]);
                ("ct", d)
            }
            Expr::SetMark => {
                let mut d = Attrs::default();
                d.be32(NFTA_META_KEY, NFT_META_MARK);
                d.be32(NFTA_META_SREG, NFT_REG_1);
                ("meta", d)
            }
            Expr::Dnat4 => {
                let mut d = Attrs::default();
                d.be32(NFTA_NAT_TYPE, NFT_NAT_DNAT);
                d.be32(NFTA_NAT_FAMILY, u32::from(NFPROTO_IPV4));
                d.be32(NFTA_NAT_REG_ADDR_MIN, NFT_REG_1);
                d.be32(NFTA_NAT_REG_PROTO_MIN, NFT_REG_2);
                ("nat", d)
            }
            Expr::Verdict(v) => {
                let mut d = Attrs::default();
                d.be32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
                d.nested(NFTA_IMMEDIATE_DATA, |data| {
                    data.nested(NFTA_DATA_VERDICT, |verdict| {
                        verdict.be32(NFTA_VERDICT_CODE, *v as u32)
                    })
                });
                ("immediate", d)
            }
        };
        a.nested(NFTA_LIST_ELEM, |e| {
            e.str(NFTA_EXPR_NAME, name);
            e.put(NFTA_EXPR_DATA | NLA_F_NESTED, &data.0);
        });
    }
}

/// A base chain's hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub hooknum: u32,
    pub priority: i32,
    /// The device of a netdev-family chain.
    pub device: Option<String>,
    /// `filter`, `nat` or `route`.
    pub chain_type: &'static str,
}

fn message(
    buf: &mut Vec<u8>,
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    attrs: &[u8],
) {
    let len = NLMSG_HDRLEN + 4 + attrs.len();
    buf.extend_from_slice(&(len as u32).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.push(family);
    buf.push(0); // NFNETLINK_V0
    buf.extend_from_slice(&res_id.to_be_bytes());
    buf.extend_from_slice(attrs);
}

/// An nf_tables batch being written.
#[derive(Debug)]
pub struct Batch {
    buf: Vec<u8>,
    seq: u32,
    acks: usize,
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

impl Batch {
    pub fn new() -> Batch {
        let mut buf = Vec::new();
        message(
            &mut buf,
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            1,
            0,
            NFNL_SUBSYS_NFTABLES,
            &[],
        );
        Batch {
            buf,
            seq: 1,
            acks: 0,
        }
    }

    fn push(&mut self, msg: u16, family: u8, flags: u16, attrs: Attrs) {
        self.seq += 1;
        self.acks += 1;
        message(
            &mut self.buf,
            (NFNL_SUBSYS_NFTABLES << 8) | msg,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            self.seq,
            family,
            0,
            &attrs.0,
        );
    }

    pub fn add_table(&mut self, family: u8, name: &str) {
        let mut a = Attrs::default();
        a.str(NFTA_TABLE_NAME, name);
        self.push(NFT_MSG_NEWTABLE, family, NLM_F_CREATE, a);
    }

    pub fn delete_table(&mut self, family: u8, name: &str) {
        let mut a = Attrs::default();
        a.str(NFTA_TABLE_NAME, name);
        self.push(NFT_MSG_DELTABLE, family, 0, a);
    }

    /// A base chain (with `hook`, policy accept) or a regular one.
    pub fn add_chain(&mut self, family: u8, table: &str, name: &str, hook: Option<&Hook>) {
        let mut a = Attrs::default();
        a.str(NFTA_CHAIN_TABLE, table);
        a.str(NFTA_CHAIN_NAME, name);
        if let Some(h) = hook {
            a.nested(NFTA_CHAIN_HOOK, |n| {
                n.be32(NFTA_HOOK_HOOKNUM, h.hooknum);
                n.be32(NFTA_HOOK_PRIORITY, h.priority as u32);
                if let Some(d) = &h.device {
                    n.str(NFTA_HOOK_DEV, d);
                }
            });
            a.be32(NFTA_CHAIN_POLICY, Verdict::Accept as u32);
            a.str(NFTA_CHAIN_TYPE, h.chain_type);
        }
        self.push(NFT_MSG_NEWCHAIN, family, NLM_F_CREATE, a);
    }

    /// A named counter object.
    pub fn add_counter(&mut self, family: u8, table: &str, name: &str) {
        let mut a = Attrs::default();
        a.str(NFTA_OBJ_TABLE, table);
        a.str(NFTA_OBJ_NAME, name);
        a.be32(NFTA_OBJ_TYPE, NFT_OBJECT_COUNTER);
        a.nested(NFTA_OBJ_DATA, |_| {});
        self.push(NFT_MSG_NEWOBJ, family, NLM_F_CREATE, a);
    }

    /// Appends a rule to a chain.
    pub fn add_rule(&mut self, family: u8, table: &str, chain: &str, exprs: &[Expr]) {
        let mut a = Attrs::default();
        a.str(NFTA_RULE_TABLE, table);
        a.str(NFTA_RULE_CHAIN, chain);
        a.nested(NFTA_RULE_EXPRESSIONS, |list| {
            for e in exprs {
                e.encode(list);
            }
        });
        self.push(NFT_MSG_NEWRULE, family, NLM_F_CREATE | NLM_F_APPEND, a);
    }

    /// The batch's bytes and how many acknowledgements the kernel will send.
    pub fn finish(mut self) -> (Vec<u8>, usize) {
        message(
            &mut self.buf,
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            self.seq + 1,
            0,
            NFNL_SUBSYS_NFTABLES,
            &[],
        );
        (self.buf, self.acks)
    }
}

/// A dump request for every counter object of `family`.
pub fn get_counters(family: u8) -> Vec<u8> {
    let mut buf = Vec::new();
    message(
        &mut buf,
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETOBJ,
        NLM_F_REQUEST | NLM_F_DUMP,
        1,
        family,
        0,
        &{
            let mut a = Attrs::default();
            a.be32(NFTA_OBJ_TYPE, NFT_OBJECT_COUNTER);
            a.0
        },
    );
    buf
}

/// A counter object as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterValue {
    pub table: String,
    pub name: String,
    pub packets: u64,
    pub bytes: u64,
}

/// Walks attributes (the nested flag cleared from their types); a malformed one ends the
/// walk (the kernel's replies are trusted no further than their lengths).
pub(crate) fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([b[0], b[1]]));
        let kind = u16::from_ne_bytes([b[2], b[3]]) & !NLA_F_NESTED;
        if len < 4 || len > b.len() {
            return None;
        }
        let value = &b[4..len];
        b = b.get((len + 3) & !3..).unwrap_or_default();
        Some((kind, value))
    })
}

fn c_str(v: &[u8]) -> String {
    String::from_utf8_lossy(v.split(|c| *c == 0).next().unwrap_or_default()).into_owned()
}

fn be64(v: &[u8]) -> u64 {
    v.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

/// Parses one NEWOBJ reply payload (after the netlink header) of a counter dump.
pub fn parse_counter(payload: &[u8]) -> Option<CounterValue> {
    let mut c = CounterValue {
        table: String::new(),
        name: String::new(),
        packets: 0,
        bytes: 0,
    };
    let mut counter = false;
    for (kind, value) in attrs(payload.get(4..)?) {
        match kind {
            NFTA_OBJ_TABLE => c.table = c_str(value),
            NFTA_OBJ_NAME => c.name = c_str(value),
            NFTA_OBJ_TYPE => counter = value == NFT_OBJECT_COUNTER.to_be_bytes(),
            NFTA_OBJ_DATA => {
                for (k, v) in attrs(value) {
                    match k {
                        NFTA_COUNTER_PACKETS => c.packets = be64(v),
                        NFTA_COUNTER_BYTES => c.bytes = be64(v),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    counter.then_some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_framed_by_begin_and_end_with_one_ack_per_message() {
        let mut b = Batch::new();
        b.add_table(NFPROTO_NETDEV, "t");
        b.add_rule(NFPROTO_NETDEV, "t", "c", &[Expr::Verdict(Verdict::Drop)]);
        let (bytes, acks) = b.finish();
        assert_eq!(acks, 2);
        // BATCH_BEGIN: 20 bytes, type 0x10, res_id NFNL_SUBSYS_NFTABLES big-endian.
        assert_eq!(u32::from_ne_bytes(bytes[0..4].try_into().unwrap()), 20);
        assert_eq!(u16::from_ne_bytes(bytes[4..6].try_into().unwrap()), 0x10);
        assert_eq!(&bytes[18..20], &[0, 10]);
        // NEWTABLE: type (10 << 8) | 0, family netdev, name "t\0" padded.
        assert_eq!(
            u16::from_ne_bytes(bytes[24..26].try_into().unwrap()),
            10 << 8
        );
        assert_eq!(bytes[36], NFPROTO_NETDEV);
        assert_eq!(&bytes[40..46], &[6, 0, 1, 0, b't', 0]);
        // Every message is a multiple of 4 long, and the last one is BATCH_END.
        let mut at = 0;
        let mut kinds = Vec::new();
        while at < bytes.len() {
            let len = u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            assert_eq!(len % 4, 0);
            kinds.push(u16::from_ne_bytes(
                bytes[at + 4..at + 6].try_into().unwrap(),
            ));
            at += len;
        }
        assert_eq!(kinds, [0x10, 10 << 8, (10 << 8) | 6, 0x11]);
        // The rule is appended (NLM_F_APPEND), else each new rule would go first.
        let rule = 20 + u32::from_ne_bytes(bytes[20..24].try_into().unwrap()) as usize;
        let flags = u16::from_ne_bytes(bytes[rule + 6..rule + 8].try_into().unwrap());
        assert_eq!(flags & NLM_F_APPEND, NLM_F_APPEND);
    }

    #[test]
    fn counter_replies_parse_and_malformed_ones_do_not_panic() {
        let mut a = Attrs::default();
        a.str(NFTA_OBJ_TABLE, "knic-vm1");
        a.str(NFTA_OBJ_NAME, "ipv4");
        a.be32(NFTA_OBJ_TYPE, NFT_OBJECT_COUNTER);
        a.nested(NFTA_OBJ_DATA, |d| {
            d.put(NFTA_COUNTER_BYTES, &840u64.to_be_bytes());
            d.put(NFTA_COUNTER_PACKETS, &10u64.to_be_bytes());
        });
        let mut payload = vec![NFPROTO_NETDEV, 0, 0, 0];
        payload.extend_from_slice(&a.0);
        assert_eq!(
            parse_counter(&payload),
            Some(CounterValue {
                table: "knic-vm1".into(),
                name: "ipv4".into(),
                packets: 10,
                bytes: 840
            })
        );
        for cut in 0..payload.len() {
            let _ = parse_counter(&payload[..cut]);
        }
        let mut bad = payload.clone();
        bad[4] = 0xff; // an attribute longer than the message
        assert_eq!(parse_counter(&bad), None);
    }
}
