#!/usr/bin/env bash
# knic's main job: knic-agent with one guest port and an AF_PACKET uplink on a veth whose
# other end is a peer namespace. A DPDK testpmd guest (net_virtio_user, icmpecho) attaches;
# the peer pings the guest, and every packet crosses the library kernel's routing between
# the uplink's device and the port's. Counters come from knicctl. Run by demo.sh after the
# build; needs root.
# shellcheck source=deploy/dev/demo-lib.sh
source "$(dirname "$0")/demo-lib.sh"
agent_ns=knic-demo-agent-$$
peer_ns=knic-demo-peer-$$
knicctl() { target/release/knicctl --api-socket "$dir/agent.sock" "$@"; }

netns_add "$agent_ns"
netns_add "$peer_ns"
ip -n "$agent_ns" link add kga type veth peer name kgb netns "$peer_ns"
ip -n "$agent_ns" link set kga up
ip -n "$peer_ns" addr add 10.210.0.1/24 dev kgb
ip -n "$peer_ns" link set kgb up
ip -n "$peer_ns" route add 10.210.0.0/16 via 10.210.0.2

echo "=== knic-agent: port vm1 on $dir/vm1.sock, uplink packet:kga (namespace $agent_ns)"
ip netns exec "$agent_ns" target/release/knic-agent --api-socket "$dir/agent.sock" \
  --uplink up0=packet:kga --address up0=10.210.0.2/24 \
  --port "vm1=$dir/vm1.sock" --address vm1=10.210.1.1/24 >"$dir/knic-agent.log" 2>&1 &
pids+=($!)
wait_for "knic-agent's API" 30 knicctl port list

echo "=== guest: DPDK testpmd with net_virtio_user on vm1's socket, answering as 10.210.1.2"
testpmd_guest "$dir/vm1.sock"
wait_for "the guest's link in the library" 20 sh -c \
  "target/release/knicctl --api-socket $dir/agent.sock port list | grep -q guest_connected=true"
knicctl port list

echo "=== ping 10.210.1.2 (the guest) from the peer, routed by the library kernel"
ip netns exec "$peer_ns" ping -c 5 -i 0.2 10.210.1.2

echo "=== the library kernel's routes and the port's counters (knicctl)"
knicctl route list
knicctl stats --output json | python3 -c "import json,sys; d=json.load(sys.stdin); p=d['ports'][0]; \
print('library device of vm1:', {k: v for k, v in p['library'].items() if isinstance(v, int) and v}); \
print('copies per frame:', {k: v['per_frame'] for k, v in p['copies'].items()}); \
print('uplink up0:', {k: v for k, v in d['uplinks'][0]['library'].items() if isinstance(v, int) and v})"
