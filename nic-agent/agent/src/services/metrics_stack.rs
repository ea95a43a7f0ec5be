//! The library kernel's own protocol counters: `/proc/net/snmp`, `/proc/net/netstat` and
//! `/proc/net/snmp6` of its procfs (read with `Kernel::read_file`, no host file involved),
//! in `knicctl stats` as `stack` and in the metrics as `knic_stack_<Group>_<Name>` (the
//! kernel's own group and counter names, as node_exporter's `node_netstat_*` keeps them).
//!
//! `snmp` and `netstat` come as pairs of lines, `Tcp: RtoAlgorithm RtoMin ...` then
//! `Tcp: 1 200 ...`; `snmp6` as one `Ip6InReceives 42` per line, grouped here by the
//! prefix the kernel gives each (`Ip6`, `Icmp6`, `Udp6`, `UdpLite6`). The text is the
//! kernel's (this process's, not a guest's), but it is parsed without trusting it: a line
//! that does not fit is skipped, never a panic.

use std::collections::BTreeMap;

use lkl_netstack::Kernel;

/// Group name → counter name → value. Values are signed: `Tcp MaxConn` is -1.
pub type StackCounters = BTreeMap<String, BTreeMap<String, i64>>;

/// The procfs files read, each with its format.
const FILES: [(&str, Format); 3] = [
    ("/proc/net/snmp", Format::Pairs),
    ("/proc/net/netstat", Format::Pairs),
    ("/proc/net/snmp6", Format::Lines),
];

/// Prefixes of `/proc/net/snmp6` names, longest first so `UdpLite6` is not taken for `Udp6`.
const SNMP6_GROUPS: [&str; 4] = ["UdpLite6", "Icmp6", "Udp6", "Ip6"];

/// Counters that are levels or settings, not counts (RFC 4022 / RFC 4293 gauges).
const GAUGES: [(&str, &str); 7] = [
    ("Ip", "Forwarding"),
    ("Ip", "DefaultTTL"),
    ("Tcp", "RtoAlgorithm"),
    ("Tcp", "RtoMin"),
    ("Tcp", "RtoMax"),
    ("Tcp", "MaxConn"),
    ("Tcp", "CurrEstab"),
];

#[derive(Debug, Clone, Copy)]
enum Format {
    Pairs,
    Lines,
}

/// Whether `group`'s `name` is a gauge (a level) rather than a counter.
pub fn is_gauge(group: &str, name: &str) -> bool {
    GAUGES.contains(&(group, name))
}

/// The kernel's counters now; a file the kernel does not have (a protocol configured out)
/// is left out.
pub fn read(kernel: &Kernel) -> StackCounters {
    let mut out = StackCounters::new();
    for (path, format) in FILES {
        if let Ok(text) = kernel.read_file(path) {
            match format {
                Format::Pairs => parse_pairs(&text, &mut out),
                Format::Lines => parse_lines(&text, &mut out),
            }
        }
    }
    out
}

/// `Group: name name ...` followed by `Group: value value ...`.
pub fn parse_pairs(text: &str, out: &mut StackCounters) {
    let mut lines = text.lines();
    while let Some(names) = lines.next() {
        let Some(values) = lines.next() else { break };
        let (Some((group, names)), Some((group2, values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            continue;
        };
        if group != group2 || group.is_empty() {
            continue;
        }
        let counters = out.entry(group.to_owned()).or_default();
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(v) = value.parse::<i64>() {
                counters.insert(name.to_owned(), v);
            }
        }
    }
}

/// `Ip6InReceives 42` lines (`/proc/net/snmp6`).
pub fn parse_lines(text: &str, out: &mut StackCounters) {
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some(full), Some(value), None) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        let Ok(v) = value.parse::<i64>() else {
            continue;
        };
        let Some(group) = SNMP6_GROUPS.iter().find(|g| full.starts_with(**g)) else {
            continue;
        };
        let name = &full[group.len()..];
        if !name.is_empty() {
            out.entry((*group).to_owned())
                .or_default()
                .insert(name.to_owned(), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_formats_parse_and_odd_lines_are_skipped() {
        let mut c = StackCounters::new();
        parse_pairs(
            "Ip: Forwarding DefaultTTL InReceives\nIp: 1 64 1234\n\
             Tcp: RtoAlgorithm MaxConn CurrEstab InSegs\nTcp: 1 -1 2 99\n\
             Udp: InDatagrams\nIcmp: InMsgs\n\
             Bad: a b\nBad: 1 x\n",
            &mut c,
        );
        parse_pairs("TcpExt: SyncookiesSent TCPTimeouts\nTcpExt: 0 7\n", &mut c);
        parse_lines(
            "Ip6InReceives                   \t5\nIcmp6InMsgs 3\nUdpLite6InErrors 1\n\
             Udp6InDatagrams 4\nIcmp6InType133 2\nnonsense\nIp6 x\n",
            &mut c,
        );
        assert_eq!(c["Ip"]["InReceives"], 1234);
        assert_eq!(c["Tcp"]["MaxConn"], -1);
        assert_eq!(c["Tcp"]["InSegs"], 99);
        assert_eq!(c["TcpExt"]["TCPTimeouts"], 7);
        assert_eq!(c["Ip6"]["InReceives"], 5);
        assert_eq!(c["Icmp6"]["InType133"], 2);
        assert_eq!(c["Udp6"]["InDatagrams"], 4);
        assert_eq!(c["UdpLite6"]["InErrors"], 1);
        // Mismatched pairs: the names line of Udp met Icmp's, both dropped.
        assert!(!c.contains_key("Udp") && !c.contains_key("Icmp"), "{c:?}");
        assert_eq!(c["Bad"].get("a"), Some(&1));
        assert_eq!(c["Bad"].get("b"), None);
        assert!(is_gauge("Tcp", "CurrEstab") && !is_gauge("Tcp", "InSegs"));
    }
}
