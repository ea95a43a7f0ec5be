#!/usr/bin/env bash
# Installs everything knic needs on a fresh Debian bookworm machine: the kernel source we
# build the library from (linux-source-6.12, bookworm-backports), the kernel build tools,
# and the external peers the tests drive (QEMU 10, DPDK testpmd, iperf3, ...). The test
# guests' kernel (Debian's cloud kernel) is unpacked into a cache, never installed into
# the host's /boot. Checks that the Rust toolchain is new enough, or says how to get one.
# Idempotent: a second run only checks. Needs root (or sudo).
set -euo pipefail

log() { printf '[setup] %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then exec sudo -E "$0" "$@"; fi
  log "this step installs Debian packages and needs root: run it as root or install sudo"; exit 1
fi

. /etc/os-release
if [ "${VERSION_CODENAME:-}" != bookworm ]; then
  log "warning: written for Debian bookworm, this is ${PRETTY_NAME:-unknown}; carrying on"
fi

PACKAGES=(
  # the kernel as a library
  linux-source-6.12 build-essential bc bison flex xz-utils ccache python3 binutils rsync
  # external peers and test tools
  qemu-system-x86 busybox-static dpdk iperf3 iproute2 ethtool
  # dpdk-testpmd (the virtio-user frontend the vhost e2e tests drive) ships in dpdk-dev
  dpdk-dev
  tcpdump curl openssl procps psmisc iputils-ping
  # kernel offload: nginx with kTLS + sendfile (guest-tests offload_ktls); nft (with ip
  # and ss) on the library kernel through netlink (knic-agent's offload tests)
  nginx nftables
  # the AF_XDP uplink links Debian's libxdp (its default XDP program ships in libxdp1)
  libxdp-dev libbpf-dev
  # profiling the benchmarks (flame graphs: perf record -g, then inferno)
  linux-perf
  # deploy/ checks: shellcheck, jq (the BlueField script), virt-xml-validate (+ its xmllint)
  shellcheck jq libvirt-clients libxml2-utils
  # knic-cni's tests: the reference CNI plugins (host-local, bandwidth, portmap; portmap
  # needs iptables) and nsenter (util-linux)
  containernetworking-plugins iptables util-linux
  # ... and a real runtime calling it: podman with its CNI backend (installed without
  # recommends, so no netavark), runc as its OCI runtime (crun refuses hybrid cgroups)
  podman runc
  # the Arm build (deploy/dev/arm.sh): Debian's cross gcc and user-mode QEMU to run its tests
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static
  # ... and the arm64 libxdp the uplink links (Debian multiarch: arm64 added below)
  libxdp-dev:arm64
)

# The Arm build links arm64 libraries (libxdp): let dpkg install arm64 packages.
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  log "dpkg --add-architecture arm64 (the Arm build's libxdp)"
  dpkg --add-architecture arm64
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

# The mirror this machine already uses for Debian's main suite, from its own apt
# configuration (deb822 .sources or one-line .list); no host name is written here.
debian_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'BEGIN{RS=""} /Suites:[^\n]*bookworm([ \n]|$)/ && !/security/ {
           if (match($0, /URIs:[ \t]*[^ \t\n]+/)) { u=substr($0,RSTART,RLENGTH); sub(/URIs:[ \t]*/,"",u); print u; exit } }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk '$1=="deb" && $0 ~ / bookworm( |$)/ { for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' "$f"
  done
}

apt_updated=0
apt_update() {
  [ "$apt_updated" = 1 ] && return 0
  if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    mirror=$(debian_mirror | head -n 1)
    if [ -z "$mirror" ]; then
      log "no Debian bookworm source found in /etc/apt: add one for 'bookworm' (main), then re-run"; exit 1
    fi
    log "adding the bookworm-backports suite from $mirror (linux-source-6.12, QEMU 10)"
    cat > /etc/apt/sources.list.d/knic-backports.sources <<SRC
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  fi
  log "apt-get update"
  # Third-party lists on some images may be unreachable; only Debian's suites matter here.
  apt-get update -o Acquire::Retries=3 >/dev/null 2>&1 || apt-get update -o Acquire::Retries=3 || true
  apt_updated=1
}

if [ ${#missing[@]} -eq 0 ]; then
  log "all packages present"
else
  apt_update
  log "installing: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    -t bookworm-backports "${missing[@]}" >/tmp/knic-apt.log 2>&1 || {
    log "apt-get install failed; the last lines of /tmp/knic-apt.log:"; tail -n 20 /tmp/knic-apt.log >&2; exit 1; }
fi

# The test guests' kernel: Debian's cloud kernel (virtio as modules), unpacked into a
# cache that guest-tests reads (KNIC_GUEST_KERNEL_DIR), never installed into /boot.
guest_dir=${KNIC_GUEST_KERNEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/knic/guest-kernel}
if ! compgen -G "$guest_dir/boot/vmlinuz-*-cloud-amd64" >/dev/null; then
  apt_update
  pkg=$(apt-cache depends -t bookworm-backports linux-image-cloud-amd64 2>/dev/null |
        awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
  if [ -z "$pkg" ]; then
    log "cannot resolve linux-image-cloud-amd64 to a kernel package (is bookworm-backports reachable?)"; exit 1
  fi
  log "unpacking the test guests' kernel $pkg into $guest_dir"
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -t bookworm-backports "$pkg" >/tmp/knic-apt.log 2>&1) || {
    log "apt-get download $pkg failed:"; tail -n 20 /tmp/knic-apt.log >&2; rm -rf "$tmp"; exit 1; }
  rm -rf "$guest_dir.new" && mkdir -p "$guest_dir.new"
  dpkg-deb -x "$tmp"/*.deb "$guest_dir.new"
  rm -rf "$tmp" "$guest_dir" && mv "$guest_dir.new" "$guest_dir"
  # Root may run the tests from a clone owned by another user: keep the cache readable.
  chmod -R a+rX "$guest_dir"
fi

# The Rust toolchain: the workspace's rust-version, with rustfmt and clippy. Nothing is
# installed here (a toolchain comes from rustup, as its user wants it); the checks say how.
need_rust=$(awk -F'"' '/^rust-version/ { print $2; exit }' "$(dirname "$0")/../../Cargo.toml")
if ! command -v cargo >/dev/null 2>&1; then
  log "no Rust toolchain: install rustup (Debian: apt-get install rustup, or the installer from rust-lang's site), then run: rustup toolchain install stable --component rustfmt,clippy"; exit 1
fi
have_rust=$(rustc --version | awk '{ print $2 }')
if [ "$(printf '%s\n%s\n' "$need_rust" "$have_rust" | sort -V | head -n 1)" != "$need_rust" ]; then
  log "rustc $have_rust is older than the workspace's rust-version $need_rust: run rustup update stable"; exit 1
fi
for c in fmt:rustfmt clippy:clippy; do
  if ! cargo "${c%%:*}" --version >/dev/null 2>&1; then
    log "cargo ${c%%:*} is missing: run rustup component add ${c#*:}"; exit 1
  fi
done
# cargo-deny checks the offload shim's licences (nic-agent/offload/deny.toml).
if ! cargo deny --version >/dev/null 2>&1; then
  log "cargo install --locked cargo-deny"
  cargo install --locked cargo-deny
fi
log "done"
