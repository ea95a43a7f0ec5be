//! knic-cni is a thin client of the agent's API and must not link the GPL library kernel or
//! the agent: the offload shim's licence check (the allow-list of `nic-agent/offload/deny.toml`
//! over the linked dependency graph), run on this crate.
#[path = "../../../nic-agent/offload/shim/tests/licences.rs"]
mod licences;
