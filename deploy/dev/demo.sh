#!/usr/bin/env bash
# The main job with a working default, on a fresh Debian bookworm machine (root):
# installs prerequisites, builds Linux as an in-process library (progress shown; a
# few minutes the first time), boots it and moves TCP traffic through it.
set -euo pipefail
cd "$(dirname "$0")/../.."

deploy/dev/setup-debian.sh
lkl-netstack/lkl-sys/kernel/build-kernel.sh target/knic-kernel
echo
echo "=== Linux ${KNIC_DEMO_MIB:-1024} MiB over TCP inside this process (lkl-netstack example)"
cargo run --quiet --release -p lkl-netstack --example tcp-loopback -- "${KNIC_DEMO_MIB:-1024}"

echo
cargo build --quiet --release -p vhost-backend --bins
deploy/dev/demo-vhost.sh
