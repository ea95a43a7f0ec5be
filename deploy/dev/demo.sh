#!/usr/bin/env bash
# The main job with a working default, on a fresh Debian bookworm machine (root):
# installs prerequisites, builds Linux as an in-process library (progress shown; a
# few minutes the first time), boots it and moves TCP traffic through it, then runs the
# device alone and knic-agent (a guest routed through the library's stack to a peer).
set -euo pipefail
cd "$(dirname "$0")/../.."

deploy/dev/setup-debian.sh
lkl-netstack/lkl-sys/kernel/build-kernel.sh target/knic-kernel
echo
echo "=== Linux ${KNIC_DEMO_MIB:-1024} MiB over TCP inside this process (lkl-netstack example)"
cargo run --quiet --release -p lkl-netstack --example tcp-loopback -- "${KNIC_DEMO_MIB:-1024}"

echo
cargo build --quiet --release -p vhost-backend -p knic-agent --bins
deploy/dev/demo-vhost.sh

echo
deploy/dev/demo-agent.sh
