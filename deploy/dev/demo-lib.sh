# shellcheck shell=bash
# What the demos share (sourced by demo-vhost.sh and demo-agent.sh): the repository as the
# working directory, a scratch directory, children and namespaces removed on exit, bounded
# waits, and the DPDK testpmd guest.
set -euo pipefail
cd "$(dirname "$0")/../.."

dir=$(mktemp -d /tmp/knic-demo.XXXXXX)
pids=()
namespaces=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for ns in "${namespaces[@]}"; do ip netns delete "$ns" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

netns_add() { # netns_add NAME: a namespace deleted on exit
  ip netns add "$1"
  namespaces+=("$1")
}

wait_for() { # wait_for WHAT SECONDS COMMAND...
  local what=$1 secs=$2; shift 2
  for _ in $(seq $((secs * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "timed out waiting for $what" >&2; return 1
}

testpmd_guest() { # testpmd_guest SOCKET: DPDK testpmd (net_virtio_user, icmpecho) on SOCKET
  dpdk-testpmd -l 0-1 --no-huge -m 512 --no-pci --file-prefix="knicdemo$$" \
    --vdev "net_virtio_user0,path=$1,queues=1" -- \
    --forward-mode=icmpecho --auto-start --total-num-mbufs=8192 --stats-period 1 \
    >"$dir/testpmd.log" 2>&1 </dev/null &
  pids+=($!)
  wait_for "testpmd to forward" 30 grep -q "start packet forwarding" "$dir/testpmd.log"
}
