#!/usr/bin/env bash
# The Arm build: cross-compiles the workspace and the library kernel for
# aarch64-unknown-linux-gnu with Debian's cross gcc, then runs the Arm test binaries
# under user-mode QEMU (the cargo runner in .cargo/config.toml), so the Arm build is
# tested, not just compiled. CI runs it from deploy/dev/test.sh.
#
#   deploy/dev/arm.sh            build the workspace, run the Arm tests
#   deploy/dev/arm.sh --build    build only
#
# The offload shim's Arm test runs aarch64 programs with the aarch64 shim preloaded against
# this machine's agent; their exec of themselves needs qemu-aarch64 in binfmt_misc, which
# this script registers (as Debian's systemd-binfmt would at boot) when it is not there.
# Built but not run under QEMU: tests that drive namespaces, TAP/AF_XDP, QEMU guests or
# DPDK testpmd (guest-tests, the agent, the uplink, the device tests): they need a real
# Arm kernel underneath, which user-mode QEMU does not give (its syscalls go to this
# x86-64 kernel).
#
# Environment: KNIC_KERNEL_CACHE as for build-kernel.sh (the aarch64 kernel has trees of
# its own there, suffixed -aarch64).
set -euo pipefail
cd "$(dirname "$0")/../.."

target=aarch64-unknown-linux-gnu
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
step() { printf '\n=== arm: %s\n' "$*"; }
now() { date +%s; }
t0=$(now)

for tool in aarch64-linux-gnu-gcc qemu-aarch64-static readelf; do
  command -v "$tool" >/dev/null || die "'$tool' is missing: run sudo deploy/dev/setup-debian.sh"
done
[ -e /usr/lib/aarch64-linux-gnu/libxdp.so ] ||
  die "the arm64 libxdp (libxdp-dev:arm64) is missing: run sudo deploy/dev/setup-debian.sh"
if ! libdir=$(rustc --print target-libdir --target "$target" 2>/dev/null) || [ ! -d "$libdir" ]; then
  command -v rustup >/dev/null ||
    die "Rust's standard library for $target is missing: install it for this toolchain (rustup target add $target)"
  echo "arm: rustup target add $target"
  rustup target add "$target"
fi

step "library kernel for aarch64 (cached; cold: see the README's Arm section)"
KNIC_KERNEL_ARCH=aarch64 lkl-netstack/lkl-sys/kernel/build-kernel.sh target/knic-kernel-aarch64
t_kernel=$(now)

step "workspace build for $target (release; all targets)"
cargo build --release --target "$target" --workspace --all-targets
t_build=$(now)
[ "${1:-}" = --build ] && { echo "arm: built in $((t_build - t0)) s"; exit 0; }

# Each test binary cargo runs must be an AArch64 executable (run by QEMU, not natively).
step "Arm test binaries are AArch64"
aarch64_only() {
  cargo test --release --target "$target" --no-run "$@" 2>&1 |
    sed -n 's/.*Executable .*(\(.*\))$/\1/p' | while read -r exe; do
    readelf -h "$exe" | grep -q 'Machine:.*AArch64' || die "$exe is not an AArch64 executable"
    echo "  $exe: AArch64"
  done
}
# (Two calls: --test NAME would also filter the other packages' targets.)
aarch64_only -p lkl-netstack --test boot --test tcp_loopback
aarch64_only -p knic-virtio-net -p packet-ring

timed() {
  local name=$1 s; shift
  s=$(now)
  "$@"
  printf 'arm: %s: %s s\n' "$name" "$(($(now) - s))" | tee -a target/arm-timings.txt
}
: >target/arm-timings.txt
step "tests under qemu-aarch64-static"
timed "lkl-netstack boot" cargo test --release --target "$target" -p lkl-netstack --test boot
timed "lkl-netstack tcp_loopback" cargo test --release --target "$target" -p lkl-netstack \
  --test tcp_loopback -- --nocapture
timed "knic-virtio-net + packet-ring" cargo test --release --target "$target" -p knic-virtio-net -p packet-ring
# qemu-aarch64 in binfmt_misc, with Debian's magic and mask, interpreted by the static
# QEMU (so the shim in LD_PRELOAD is loaded by the guest's ld.so only); F: opened now,
# usable inside network namespaces.
register_binfmt() {
  local dir=/proc/sys/fs/binfmt_misc conf=/usr/lib/binfmt.d/qemu-aarch64.conf line
  [ -e "$dir/qemu-aarch64" ] && return 0
  [ -e "$dir/register" ] || mount -t binfmt_misc binfmt_misc "$dir" ||
    die "cannot mount binfmt_misc on $dir (needs root, and a kernel with CONFIG_BINFMT_MISC)"
  [ -f "$conf" ] || die "$conf is missing (qemu-user-binfmt): run sudo deploy/dev/setup-debian.sh"
  line=$(grep -v '^#' "$conf" | head -n 1)
  IFS=: read -r _ _ _ offset magic mask _ <<<"$line"
  printf ':qemu-aarch64:M:%s:%s:%s:%s:F' "$offset" "$magic" "$mask" \
    "$(command -v qemu-aarch64-static)" >"$dir/register" ||
    die "cannot register qemu-aarch64 in $dir/register"
  echo "arm: registered qemu-aarch64-static in binfmt_misc"
}
register_binfmt
# The x86-64 agent (test.sh built it) serves the aarch64 programs and shim.
timed "offload shim (aarch64 cases.c against the agent)" env \
  KNIC_ARM_SHIM="$PWD/target/$target/release/libknic_offload_shim.so" \
  cargo test --release -p knic-agent --test offload -- --ignored --exact arm64_shim_c_cases_under_qemu_user
step "Linux's own unit tests (KUnit) inside the aarch64 library kernel (its kunit build)"
timed "aarch64 kunit kernel (cached)" env KNIC_KERNEL_ARCH=aarch64 KNIC_KERNEL_VARIANT=kunit \
  lkl-netstack/lkl-sys/kernel/build-kernel.sh target/knic-kernel-aarch64-kunit
timed "KUnit (aarch64 kunit kernel)" env KNIC_KERNEL_VARIANT=kunit \
  cargo test --release --target "$target" -p knic-kunit --target-dir target/kunit -- --nocapture
printf 'arm: kernel %s s, workspace build %s s, tests %s s, total %s s\n' \
  "$((t_kernel - t0))" "$((t_build - t_kernel))" "$(($(now) - t_build))" "$(($(now) - t0))" |
  tee -a target/arm-timings.txt
