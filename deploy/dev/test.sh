#!/usr/bin/env bash
# Runs knic's whole test suite on a Debian bookworm machine: installs what is missing
# (root; apt with bookworm-backports), builds the kernel library with progress output,
# then lint, docs and every test. CI runs exactly this (see .ci/run).
set -euo pipefail
cd "$(dirname "$0")/../.."

step() { printf '\n=== %s\n' "$*"; }

step "prerequisites (deploy/dev/setup-debian.sh)"
deploy/dev/setup-debian.sh

step "kernel library (cached by tarball + port; a fresh build takes minutes)"
lkl-netstack/lkl-sys/kernel/build-kernel.sh target/knic-kernel

step "format and lint"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

step "tests"
# Release mode: the stack tests move gigabytes through the library kernel.
cargo test --workspace --release
