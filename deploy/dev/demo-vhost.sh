#!/usr/bin/env bash
# knic-vhost serving one guest port with a TAP uplink, and a DPDK testpmd guest
# (net_virtio_user, icmpecho) answering ping from a network namespace through it.
# Run by demo.sh after the build; needs root.
# shellcheck source=deploy/dev/demo-lib.sh
source "$(dirname "$0")/demo-lib.sh"
ns=knic-demo-$$

netns_add "$ns"
echo "=== knic-vhost: vhost-user socket $dir/vhost.sock, uplink tap:kvtap0 in namespace $ns"
ip netns exec "$ns" target/release/knic-vhost --socket "$dir/vhost.sock" --stats-socket "$dir/stats.sock" \
  --uplink tap:kvtap0 --queues 1 >"$dir/knic-vhost.log" 2>&1 &
pids+=($!)
wait_for "knic-vhost's socket" 10 test -S "$dir/vhost.sock"
ip -n "$ns" addr add 10.77.0.1/24 dev kvtap0
ip -n "$ns" link set kvtap0 up

echo "=== guest: DPDK testpmd with net_virtio_user on the socket, answering ICMP echo"
testpmd_guest "$dir/vhost.sock"

echo "=== ping 10.77.0.2 (the guest) from the namespace, through knic-vhost"
ip netns exec "$ns" ping -c 5 -i 0.2 10.77.0.2

echo "=== knic-vhost counters (stats socket)"
python3 -c "import socket,sys,json; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); \
b=b''.join(iter(lambda: s.recv(65536), b'')); q=json.loads(b)['queue_pairs'][0]; \
print({k: v for k, v in q.items() if not isinstance(v, dict) and v})" "$dir/stats.sock"
