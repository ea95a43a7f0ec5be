//! The shim loads into arbitrary programs, so nothing GPL may be linked into it: every crate
//! in its normal dependency graph must carry a licence from `nic-agent/offload/deny.toml`'s
//! allow-list (read from that file, so the two cannot drift). The check is of the crate
//! that compiles this file (`deploy/cni`'s test includes it for knic-cni).
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::process::Command;

use serde_json::Value;

fn allow_list() -> Vec<String> {
    let text = include_str!("../../deny.toml");
    let start = text.find("allow = [").unwrap();
    let end = start + text[start..].find(']').unwrap();
    text[start..end]
        .lines()
        .skip(1)
        .filter_map(|l| {
            l.trim()
                .strip_prefix('"')?
                .split('"')
                .next()
                .map(str::to_owned)
        })
        .collect()
}

/// Whether an SPDX expression is satisfied by the allow-list (OR: one side; AND: both).
fn allowed(expr: &str, allow: &[String]) -> bool {
    let expr = expr.replace(['(', ')'], "");
    expr.split(" OR ").flat_map(|a| a.split('/')).any(|alt| {
        alt.split(" AND ")
            .all(|part| allow.iter().any(|a| a == part.trim()))
    })
}

#[test]
fn the_allow_list_parser_refuses_gpl() {
    let allow = allow_list();
    assert!(allow.contains(&"MIT".to_owned()));
    assert!(allowed("MIT OR Apache-2.0", &allow));
    assert!(allowed("(MIT OR Apache-2.0) AND Unicode-3.0", &allow));
    assert!(!allowed("GPL-2.0-only", &allow));
    assert!(!allowed("MIT AND GPL-2.0-only", &allow));
    assert!(
        allowed("GPL-2.0-only OR MIT", &allow),
        "dual-licensed: MIT is chosen"
    );
}

#[test]
fn no_gpl_crate_in_the_linked_graph() {
    // The graph linked on the platform this test runs on (the one the .so is built for):
    // without the filter, cargo would also need the manifests of other platforms' crates
    // (e.g. Windows-only ones), which a fresh machine's offline registry cache lacks.
    let platform = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--filter-platform",
            &platform,
            "--manifest-path",
        ])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let licences: HashMap<&str, (&str, &str)> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap(),
                (
                    p["name"].as_str().unwrap(),
                    p["license"].as_str().unwrap_or(""),
                ),
            )
        })
        .collect();
    let nodes: HashMap<&str, &Value> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let root = licences
        .iter()
        .find(|(_, (name, _))| *name == env!("CARGO_PKG_NAME"))
        .map(|(id, _)| *id)
        .unwrap();
    // Walk normal (linked) dependencies only; dev and build dependencies are not in the .so.
    let mut seen = HashSet::new();
    let mut todo = vec![root];
    while let Some(id) = todo.pop() {
        if !seen.insert(id) {
            continue;
        }
        for d in nodes[id]["deps"].as_array().unwrap() {
            let normal = d["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null());
            if normal {
                todo.push(d["pkg"].as_str().unwrap());
            }
        }
    }
    let allow = allow_list();
    let bad: Vec<String> = seen
        .iter()
        .map(|id| licences[id])
        .filter(|(_, l)| !allowed(l, &allow))
        .map(|(n, l)| format!("{n} ({l})"))
        .collect();
    assert!(seen.len() >= 2, "the graph walk found only {seen:?}");
    assert!(
        bad.is_empty(),
        "crates {} may not link: {bad:?}",
        env!("CARGO_PKG_NAME")
    );
}
