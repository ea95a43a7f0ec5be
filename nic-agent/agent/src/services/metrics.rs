//! Prometheus metrics over HTTP (`--metrics ADDR:PORT`, `GET /metrics`).
//!
//! The exporter is a client of the agent's own control API: each scrape asks for `stats`
//! on the API socket and turns the answer into the Prometheus text format with the
//! `prometheus-client` crate, so the control loop needs no second way in and a scrape sees
//! exactly what `knicctl stats` shows. Names are `knic_<part>_<counter>` with the counter's
//! own name (`_total` added for counters), and drops are one family per part labelled with
//! the engine's drop reason:
//!
//! * `knic_vhost_*{port,queue}`: each vhost queue pair (`tx_packets`, `rx_bytes`, ...);
//!   `knic_vhost_drops_total{port,queue,reason}`;
//! * `knic_library_*{device,kind}`: each library device (port or uplink);
//!   `knic_library_drops_total{device,kind,reason}`;
//! * `knic_dhcp_*{device}` and `knic_ra_*{device}`: the services' messages, and their
//!   drops by reason;
//! * `knic_stack_<Group>_<Name>`: the library kernel's own protocol counters
//!   (`/proc/net/snmp`, `netstat`, `snmp6`: `knic_stack_Tcp_InSegs_total`,
//!   `knic_stack_TcpExt_TCPTimeouts_total`, the gauge `knic_stack_Tcp_CurrEstab`; see
//!   [`super::metrics_stack`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{Map, Value};
use thiserror::Error;
use tracing::{info, warn};

use crate::api::{Request, call};

type Labels = Vec<(String, String)>;

/// Fields that go up and down (gauges); every other number is a counter.
const GAUGES: [&str; 1] = ["active_queue_pairs"];
/// Fields that are identities, not measurements.
const SKIPPED: [&str; 1] = ["queue_pair"];
/// How long a scrape waits for the agent's answer.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// The metrics listener could not start.
#[derive(Debug, Error)]
#[error("cannot serve metrics on {addr}: {reason}; choose a free address with --metrics")]
pub struct MetricsError {
    pub addr: SocketAddr,
    pub reason: String,
}

#[derive(Default)]
struct Families {
    counters: std::collections::BTreeMap<String, Family<Labels, Counter>>,
    gauges: std::collections::BTreeMap<String, Family<Labels, Gauge>>,
}

impl Families {
    fn number(&mut self, name: String, labels: &Labels, value: u64) {
        if GAUGES.iter().any(|g| name.ends_with(g)) {
            let g = self.gauges.entry(name).or_default();
            g.get_or_create(labels)
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        } else {
            let c = self.counters.entry(name).or_default();
            c.get_or_create(labels).inc_by(value);
        }
    }

    /// Every number of `obj` as `prefix_<field>`, and its `drops` map as `prefix_drops`
    /// with a `reason` label.
    fn object(&mut self, prefix: &str, labels: &Labels, obj: &Map<String, Value>) {
        for (k, v) in obj {
            if SKIPPED.contains(&k.as_str()) {
                continue;
            }
            match v {
                Value::Number(n) => {
                    if let Some(n) = n.as_u64() {
                        self.number(format!("{prefix}_{k}"), labels, n);
                    }
                }
                Value::Object(drops) if k == "drops" => {
                    for (reason, n) in drops {
                        let mut l = labels.clone();
                        l.push(("reason".into(), reason.clone()));
                        if let Some(n) = n.as_u64() {
                            self.number(format!("{prefix}_drops"), &l, n);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// The library kernel's counters (`stats.stack`): gauges where the kernel reports a
    /// level, counters (never negative) for the rest.
    fn stack(&mut self, stack: &Map<String, Value>) {
        let labels = Labels::new();
        for (group, counters) in stack {
            let Some(counters) = counters.as_object() else {
                continue;
            };
            for (name, v) in counters {
                let metric = format!("knic_stack_{group}_{name}");
                let Some(v) = v.as_i64() else { continue };
                if super::metrics_stack::is_gauge(group, name) {
                    self.gauges
                        .entry(metric)
                        .or_default()
                        .get_or_create(&labels)
                        .set(v);
                } else if let Ok(v) = u64::try_from(v) {
                    self.counters
                        .entry(metric)
                        .or_default()
                        .get_or_create(&labels)
                        .inc_by(v);
                }
            }
        }
    }

    fn render(self) -> String {
        let mut registry = Registry::default();
        for (name, f) in self.counters {
            registry.register(name, "knic-agent counter (see knicctl stats)", f);
        }
        for (name, f) in self.gauges {
            registry.register(name, "knic-agent gauge (see knicctl stats)", f);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}

fn label(k: &str, v: &Value) -> (String, String) {
    (
        k.to_owned(),
        v.as_str().map_or_else(|| v.to_string(), str::to_owned),
    )
}

fn items(v: &Value) -> impl Iterator<Item = &Map<String, Value>> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
}

/// The Prometheus text form of a `stats` answer.
pub fn render(stats: &Value) -> String {
    let mut f = Families::default();
    for (kind, list) in [("port", &stats["ports"]), ("uplink", &stats["uplinks"])] {
        for dev in items(list) {
            let name = dev.get("name").unwrap_or(&Value::Null);
            if let Some(lib) = dev.get("library").and_then(Value::as_object) {
                let labels = vec![label("device", name), ("kind".into(), kind.into())];
                f.object("knic_library", &labels, lib);
            }
            for q in items(dev.get("vhost").unwrap_or(&Value::Null)) {
                let queue = q.get("queue_pair").unwrap_or(&Value::Null);
                let labels = vec![label("port", name), label("queue", queue)];
                f.object("knic_vhost", &labels, q);
            }
        }
    }
    for (prefix, list) in [("knic_dhcp", &stats["dhcp"]), ("knic_ra", &stats["ra"])] {
        for s in items(list) {
            let labels = vec![label("device", s.get("device").unwrap_or(&Value::Null))];
            f.object(prefix, &labels, s);
        }
    }
    if let Some(stack) = stats["stack"].as_object() {
        f.stack(stack);
    }
    f.render()
}

fn scrape(api: &Path) -> Result<String, String> {
    call(api, &Request::Stats, SCRAPE_TIMEOUT)
        .map(|v| render(&v))
        .map_err(|e| crate::error_chain(&e))
}

/// Serves `GET /metrics` on `addr` from the agent whose API socket is `api`, on a thread
/// of its own for the life of the process.
pub fn serve(addr: SocketAddr, api: PathBuf) -> Result<(), MetricsError> {
    let server = tiny_http::Server::http(addr).map_err(|e| MetricsError {
        addr,
        reason: e.to_string(),
    })?;
    let content_type =
        tiny_http::Header::from_bytes("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            .map_err(|()| MetricsError {
            addr,
            reason: "bad header".into(),
        })?;
    thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            info!(%addr, "metrics on http://{addr}/metrics");
            for request in server.incoming_requests() {
                let response = if request.url() != "/metrics" {
                    tiny_http::Response::from_string("only /metrics is served\n")
                        .with_status_code(404)
                } else {
                    match scrape(&api) {
                        Ok(body) => {
                            tiny_http::Response::from_string(body).with_header(content_type.clone())
                        }
                        Err(e) => {
                            warn!("metrics scrape: {e}");
                            tiny_http::Response::from_string(format!("{e}\n")).with_status_code(503)
                        }
                    }
                };
                let _ = request.respond(response);
            }
        })
        .map_err(|e| MetricsError {
            addr,
            reason: e.to_string(),
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_become_named_families_with_drop_reasons() {
        let stats = serde_json::json!({
            "ports": [{
                "name": "vm1",
                "vhost": [{"queue_pair": 0, "tx_packets": 5, "rx_bytes": 700,
                           "drops": {"tx_malformed_header": 2, "rx_buffer_too_small": 0}}],
                "library": {"rx_packets": 9, "active_queue_pairs": 1, "link_up": true,
                            "drops": {"rx_no_buffer": 3}, "negotiated_features": ["csum"]},
            }],
            "uplinks": [{"name": "up0", "library": {"tx_bytes": 42, "drops": {}}}],
            "dhcp": [{"device": "vm1", "ifname": "eth1", "acks": 1, "drops": {"bad_magic": 2}}],
            "ra": [{"device": "vm1", "sent_solicited": 4, "drops": {}}],
            "stack": {"Tcp": {"InSegs": 12, "CurrEstab": 2, "MaxConn": -1},
                      "TcpExt": {"TCPTimeouts": 3}},
        });
        let text = render(&stats);
        for line in [
            "knic_vhost_tx_packets_total{port=\"vm1\",queue=\"0\"} 5",
            "knic_vhost_rx_bytes_total{port=\"vm1\",queue=\"0\"} 700",
            "knic_vhost_drops_total{port=\"vm1\",queue=\"0\",reason=\"tx_malformed_header\"} 2",
            "knic_vhost_drops_total{port=\"vm1\",queue=\"0\",reason=\"rx_buffer_too_small\"} 0",
            "knic_library_rx_packets_total{device=\"vm1\",kind=\"port\"} 9",
            "knic_library_active_queue_pairs{device=\"vm1\",kind=\"port\"} 1",
            "knic_library_drops_total{device=\"vm1\",kind=\"port\",reason=\"rx_no_buffer\"} 3",
            "knic_library_tx_bytes_total{device=\"up0\",kind=\"uplink\"} 42",
            "knic_dhcp_acks_total{device=\"vm1\"} 1",
            "knic_dhcp_drops_total{device=\"vm1\",reason=\"bad_magic\"} 2",
            "knic_ra_sent_solicited_total{device=\"vm1\"} 4",
            "# TYPE knic_library_active_queue_pairs gauge",
            "knic_stack_Tcp_InSegs_total 12",
            "knic_stack_Tcp_CurrEstab 2",
            "knic_stack_Tcp_MaxConn -1",
            "knic_stack_TcpExt_TCPTimeouts_total 3",
            "# TYPE knic_stack_Tcp_CurrEstab gauge",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
        assert!(!text.contains("queue_pair_total"), "{text}");
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
    }
}
