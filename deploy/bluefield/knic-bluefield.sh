#!/usr/bin/env bash
# knic-bluefield.sh: turns a BlueField DPU into a knic NIC.
#
#   knic-bluefield.sh [--dry-run] build   [--target TRIPLE] [--out DIR]
#   knic-bluefield.sh [--dry-run] bfcfg   --bin-dir DIR [--out FILE] [--agent-args ARGS]
#   knic-bluefield.sh [--dry-run] dpu     [--functions N] [--uplinks p0[,p1]] [--hugepages N]
#                                         [--device DEV] [--api-socket PATH]
#
# build  cross-builds knic-agent and knicctl (with their library kernel) for the Arm cores.
# bfcfg  writes a bf.cfg whose bfb_modify_os hook installs the agent, its flags and its
#        systemd unit into the BFB's root file system (bfb-install --bfb IMG --config bf.cfg).
# dpu    on the DPU's Arm: checks DPU mode and the virtio-net emulation settings (mlxconfig),
#        sets hugepages, creates the emulated virtio-net functions (virtnet), finds their SF
#        representors and registers each as an uplink of the running agent (knicctl), and
#        registers the physical uplink representors (p0, p1).
#
# Every step is idempotent: it looks first and changes only what differs. --dry-run prints
# each change it would make ("would: ...") and makes none. Exit status: 0 done, 1 a check
# failed (the message says what to fix), 2 bad usage.
set -euo pipefail

DRY_RUN=0
MLXCONFIG=${MLXCONFIG:-mlxconfig}
VIRTNET=${VIRTNET:-virtnet}
KNICCTL=${KNICCTL:-knicctl}
HUGEPAGES_FILE=${KNIC_BF_HUGEPAGES_FILE:-/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages}

log() { printf '[knic-bluefield] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

# change DESCRIPTION CMD...: runs CMD, or in dry-run prints what it would do.
change() {
  local what=$1
  shift
  if [ "$DRY_RUN" = 1 ]; then
    log "would: $what"
  else
    log "$what"
    "$@"
  fi
}

# write_file FILE TEXT: FILE holds exactly TEXT afterwards.
write_file() { printf '%s\n' "$2" >"$1"; }

need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found on PATH: $2"; }

# ---- build ----------------------------------------------------------------------------
step_build() {
  local target=aarch64-unknown-linux-gnu out=target/aarch64-unknown-linux-gnu/release
  while [ $# -gt 0 ]; do
    case $1 in
      --target) target=$2; shift 2 ;;
      --out) out=$2; shift 2 ;;
      *) log "build: unknown option $1"; usage 2 ;;
    esac
  done
  need cargo "install Rust (see README.md, Building)"
  if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    die "the Rust target $target is not installed: run \`rustup target add $target\`"
  fi
  local cc=${target%%-unknown-*}-linux-gnu-gcc
  need "$cc" "install Debian's cross compiler (apt-get install gcc-aarch64-linux-gnu)"
  change "cargo build --release --target $target -p knic-agent --bins (agent, knicctl, library kernel) into $out" \
    cargo build --release --target "$target" -p knic-agent --bins
}

# ---- bf.cfg ---------------------------------------------------------------------------
step_bfcfg() {
  local bin_dir='' out=bf.cfg agent_args=''
  while [ $# -gt 0 ]; do
    case $1 in
      --bin-dir) bin_dir=$2; shift 2 ;;
      --out) out=$2; shift 2 ;;
      --agent-args) agent_args=$2; shift 2 ;;
      *) log "bfcfg: unknown option $1"; usage 2 ;;
    esac
  done
  [ -n "$bin_dir" ] || { log "bfcfg: --bin-dir DIR (holding knic-agent and knicctl) is required"; usage 2; }
  local f
  for f in knic-agent knicctl; do
    [ -x "$bin_dir/$f" ] || die "$bin_dir/$f is missing: run the build step first (or point --bin-dir at it)"
  done
  local here stage payload
  here=$(cd "$(dirname "$0")/.." && pwd)
  stage=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now: the path is fixed
  trap "rm -rf '$stage'" RETURN
  install -D -m 0755 "$bin_dir/knic-agent" "$stage/usr/bin/knic-agent"
  install -D -m 0755 "$bin_dir/knicctl" "$stage/usr/bin/knicctl"
  install -D -m 0644 "$here/systemd/knic-agent.service" "$stage/usr/lib/systemd/system/knic-agent.service"
  install -D -m 0644 "$here/systemd/knic.sysusers" "$stage/usr/lib/sysusers.d/knic.conf"
  install -D -m 0755 "$0" "$stage/usr/sbin/knic-bluefield"
  mkdir -p "$stage/etc/default"
  printf 'KNIC_AGENT_ARGS="%s"\n' "$agent_args" >"$stage/etc/default/knic-agent"
  # Reproducible archive, so an unchanged input gives a byte-identical bf.cfg.
  payload=$(tar -C "$stage" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - . | gzip -n | base64 -w 76)
  local new
  new=$(cat <<CFG
# bf.cfg written by knic-bluefield.sh: bfb-install --bfb IMAGE.bfb --rshim rshim0 --config bf.cfg
# The BFB installer calls bfb_modify_os with the new root file system mounted at /mnt.
bfb_modify_os()
{
  local root=\${KNIC_BFB_ROOT:-/mnt}
  base64 -d <<'KNIC_PAYLOAD' | tar -C "\$root" -xzf - --no-same-owner
$payload
KNIC_PAYLOAD
  chroot "\$root" /bin/systemd-sysusers /usr/lib/sysusers.d/knic.conf || true
  mkdir -p "\$root/etc/systemd/system/multi-user.target.wants"
  ln -sf /usr/lib/systemd/system/knic-agent.service \\
    "\$root/etc/systemd/system/multi-user.target.wants/knic-agent.service"
}
CFG
)
  if [ -f "$out" ] && [ "$(cat "$out")" = "$new" ]; then
    log "$out is up to date"
    return 0
  fi
  change "write $out (installs knic-agent, knicctl, knic-agent.service, /etc/default/knic-agent)" \
    write_file "$out" "$new"
}

# ---- dpu ------------------------------------------------------------------------------
# mlxconfig value of KEY in `mlxconfig -d DEV q KEY` (the last column, e.g. True(1) -> 1).
mlx_value() {
  "$MLXCONFIG" -d "$1" q "$2" | awk -v k="$2" '$1 == k { v = $NF; gsub(/.*\(|\)/, "", v); print v }'
}

step_dpu() {
  local functions=1 uplinks=p0 hugepages=1024 device=/dev/mst/mt41692_pciconf0
  local api=/run/knic/agent.sock
  while [ $# -gt 0 ]; do
    case $1 in
      --functions) functions=$2; shift 2 ;;
      --uplinks) uplinks=$2; shift 2 ;;
      --hugepages) hugepages=$2; shift 2 ;;
      --device) device=$2; shift 2 ;;
      --api-socket) api=$2; shift 2 ;;
      *) log "dpu: unknown option $1"; usage 2 ;;
    esac
  done
  [[ $functions =~ ^[0-9]+$ ]] || { log "dpu: --functions wants a number"; usage 2; }
  [[ $hugepages =~ ^[0-9]+$ ]] || { log "dpu: --hugepages wants a number"; usage 2; }
  need "$MLXCONFIG" "install NVIDIA's MFT (or Debian's mstflint and set MLXCONFIG=mstconfig)"
  need "$VIRTNET" "install DOCA's virtio-net-controller and start virtio-net-controller.service"
  need "$KNICCTL" "install knic (the bfcfg step puts it in /usr/bin)"
  need jq "apt-get install jq"

  # 1. Firmware: DPU mode (the Arm owns the eSwitch) and virtio-net emulation. Changing
  # these needs a firmware reset / power cycle, so they are checked, never set here.
  local v
  v=$(mlx_value "$device" INTERNAL_CPU_MODEL)
  [ "$v" = 1 ] || die "$device is not in DPU mode (INTERNAL_CPU_MODEL=$v, want EMBEDDED_CPU(1)): run \`$MLXCONFIG -d $device s INTERNAL_CPU_MODEL=1\` and power-cycle the host"
  v=$(mlx_value "$device" VIRTIO_NET_EMULATION_ENABLE)
  [ "$v" = 1 ] || die "virtio-net emulation is off (VIRTIO_NET_EMULATION_ENABLE=$v): run \`$MLXCONFIG -d $device s VIRTIO_NET_EMULATION_ENABLE=1 VIRTIO_NET_EMULATION_NUM_PF=$functions\` and power-cycle the host"
  v=$(mlx_value "$device" VIRTIO_NET_EMULATION_NUM_PF)
  if ! [[ $v =~ ^[0-9]+$ ]] || [ "$v" -lt "$functions" ]; then die "only ${v:-?} emulated virtio-net PFs are enabled, $functions asked: run \`$MLXCONFIG -d $device s VIRTIO_NET_EMULATION_NUM_PF=$functions\` and power-cycle the host"; fi
  log "firmware: DPU mode, virtio-net emulation with $v PFs"

  # 2. Hugepages (the virtio-net controller and OVS-DOCA want them; knic itself does not).
  local have
  have=$(cat "$HUGEPAGES_FILE")
  if [ "$have" -lt "$hugepages" ]; then
    change "set 2 MiB hugepages $have -> $hugepages ($HUGEPAGES_FILE)" \
      write_file "$HUGEPAGES_FILE" "$hugepages"
  else
    log "hugepages: $have (>= $hugepages)"
  fi

  # 3. Emulated virtio-net functions: hot-plug until there are N.
  local list count i
  list=$("$VIRTNET" list)
  count=$(jq '[.devices[]?] | length' <<<"$list")
  for ((i = count; i < functions; i++)); do
    change "hot-plug emulated virtio-net function $i" \
      "$VIRTNET" hotplug -i mlx5_0 -f 0x0 -m "$(printf '02:4b:4e:00:00:%02x' "$i")" -t 1500 -n 3 -s 1024
  done
  [ "$DRY_RUN" = 1 ] || list=$("$VIRTNET" list)

  # 4. Their SF representors become agent uplinks fn0..fnN-1; 5. the physical uplinks too.
  local existing rep up
  existing=$("$KNICCTL" --api-socket "$api" --output json uplink list | jq -r '.[].name')
  i=0
  while read -r rep; do
    [ -n "$rep" ] || continue
    register_uplink "fn$i" "$rep" "$api" "$existing" "the SF representor of emulated function $i"
    i=$((i + 1))
  done < <(jq -r '.devices[]?.sf_rep_net_device // empty' <<<"$list")
  IFS=, read -ra up <<<"$uplinks"
  i=0
  for rep in "${up[@]}"; do
    register_uplink "up$i" "$rep" "$api" "$existing" "the uplink representor (is the DPU in DPU mode, is --uplinks right?)"
    i=$((i + 1))
  done
}

# register_uplink NAME REP API EXISTING WHAT: REP becomes agent uplink NAME unless EXISTING
# (the agent's uplink names, one a line) has it.
register_uplink() {
  local name=$1 rep=$2 api=$3 existing=$4 what=$5
  if grep -qx "$name" <<<"$existing"; then
    log "uplink $name ($rep) already registered"
    return 0
  fi
  [ -e "/sys/class/net/$rep" ] || die "$rep, $what, is not a network device here"
  change "set $rep up" ip link set "$rep" up
  change "register $rep as agent uplink $name" \
    "$KNICCTL" --api-socket "$api" uplink add "$name=packet:$rep"
}

# ---- main -----------------------------------------------------------------------------
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage 0 ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || usage 2
cmd=$1
shift
case $cmd in
  build) step_build "$@" ;;
  bfcfg) step_bfcfg "$@" ;;
  dpu) step_dpu "$@" ;;
  -h|--help|help) usage 0 ;;
  *) log "unknown step $cmd"; usage 2 ;;
esac
