#!/usr/bin/env bash
# knic-vhost serving one guest port with a TAP uplink, and a DPDK testpmd guest
# (net_virtio_user, icmpecho) answering ping from a network namespace through it.
# Run by demo.sh after the build; needs root.
set -euo pipefail
cd "$(dirname "$0")/../.."

ns=knic-demo-$$
dir=$(mktemp -d /tmp/knic-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns delete "$ns" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

wait_for() { # wait_for WHAT SECONDS COMMAND...
  local what=$1 secs=$2; shift 2
  for _ in $(seq $((secs * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "timed out waiting for $what" >&2; return 1
}

ip netns add "$ns"
echo "=== knic-vhost: vhost-user socket $dir/vhost.sock, uplink tap:kvtap0 in namespace $ns"
ip netns exec "$ns" target/release/knic-vhost --socket "$dir/vhost.sock" --stats-socket "$dir/stats.sock" \
  --uplink tap:kvtap0 --queues 1 >"$dir/knic-vhost.log" 2>&1 &
pids+=($!)
wait_for "knic-vhost's socket" 10 test -S "$dir/vhost.sock"
ip -n "$ns" addr add 10.77.0.1/24 dev kvtap0
ip -n "$ns" link set kvtap0 up

echo "=== guest: DPDK testpmd with net_virtio_user on the socket, answering ICMP echo"
dpdk-testpmd -l 0-1 --no-huge -m 512 --no-pci --file-prefix="knicdemo$$" \
  --vdev "net_virtio_user0,path=$dir/vhost.sock,queues=1" -- \
  --forward-mode=icmpecho --auto-start --total-num-mbufs=8192 --stats-period 1 \
  >"$dir/testpmd.log" 2>&1 </dev/null &
pids+=($!)
wait_for "testpmd to forward" 30 grep -q "start packet forwarding" "$dir/testpmd.log"

echo "=== ping 10.77.0.2 (the guest) from the namespace, through knic-vhost"
ip netns exec "$ns" ping -c 5 -i 0.2 10.77.0.2

echo "=== knic-vhost counters (stats socket)"
python3 -c "import socket,sys,json; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); \
b=b''.join(iter(lambda: s.recv(65536), b'')); q=json.loads(b)['queue_pairs'][0]; \
print({k: v for k, v in q.items() if not isinstance(v, dict) and v})" "$dir/stats.sock"
