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

step "fuzzing (bounded, split over the targets; log in target/fuzz.log)"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi
mkdir -p target
if ! deploy/dev/fuzz.sh "${KNIC_FUZZ_SECONDS:-60}" >target/fuzz.log 2>&1; then
  tail -n 40 target/fuzz.log; echo "fuzzing found a problem (see above)"; exit 1
fi
grep -E '^Done [0-9]+ runs' target/fuzz.log || tail -n 2 target/fuzz.log

step "tests"
# Release mode: the stack tests move gigabytes through the library kernel. The
# end-to-end tests (guest-tests) run knic-vhost from target/release, so the binaries
# are built first (with the libraries: the offload tests preload the shim's cdylib, which
# `cargo test` alone does not produce); they share two cores, testpmd lcores and
# namespaces: one at a time.
cargo build --workspace --bins --lib --release
cargo test --workspace --release --exclude guest-tests --exclude knic-kunit
cargo test --release -p guest-tests -- --test-threads=1

step "Linux's own unit tests (KUnit) inside the library: the kunit build of the kernel"
# A kernel of its own (variants/kunit.config, cached like the product one) and a target
# directory of its own, so the product kernel's build is never disturbed.
KNIC_KERNEL_VARIANT=kunit lkl-netstack/lkl-sys/kernel/build-kernel.sh target/knic-kernel-kunit
KNIC_KERNEL_VARIANT=kunit cargo test -p knic-kunit --target-dir target/kunit -- --nocapture

step "the library's debug build: TCP, UDP, hammer and device tests under the kernel's checkers"
# variants/debug.config: SLUB_DEBUG_ON, DEBUG_LIST, spinlock/mutex/rwsem (not DEBUG_OBJECTS:
# see the config) debugging. Any BUG/WARNING/corruption report aborts the test process
# (lkl-netstack host.rs).
KNIC_KERNEL_VARIANT=debug lkl-netstack/lkl-sys/kernel/build-kernel.sh target/knic-kernel-debug
KNIC_KERNEL_VARIANT=debug cargo test --release -p lkl-netstack --target-dir target/kdebug \
  --test tcp_loopback --test hammer --test port_device --test hotplug_device --test device_removal \
  --test tap_device --test af_packet_device --test ktls --test ktls_ciphers

step "the Arm build: the workspace and library kernel for aarch64, its tests under QEMU"
# deploy/dev/arm.sh: cross build (cached aarch64 kernel), boot + TCP loopback + virtio-net
# engine tests run by qemu-aarch64-static; timings in target/arm-timings.txt.
deploy/dev/arm.sh
