#!/usr/bin/env bash
# A QEMU guest on a knic-agent port: the vhost-user options are exactly the ones knic's guest
# tests run (guest-tests/tests/deploy_vmm.rs checks this file against them).
#
#   deploy/vmm/qemu-vhost-user.sh SOCKET DISK [QUEUES]
#
# SOCKET  the port's socket (knicctl port add vm1=/run/knic/vm1.sock[,role=...][,queues=N]);
#         QEMU connects (agent role=server, the default) and redials every second if the
#         agent restarts (reconnect-ms). For QEMU as the server (agent role=client), use
#         -chardev socket,id=c0,path=SOCKET,server=on,wait=off instead.
# QUEUES  queue pairs, at most the port's queues=N; one vCPU per pair.
set -euo pipefail
SOCKET=${1:?usage: $0 SOCKET DISK [QUEUES]}
DISK=${2:?usage: $0 SOCKET DISK [QUEUES]}
QUEUES=${3:-1}
MQ=off
[ "$QUEUES" -gt 1 ] && MQ=on
VECTORS=$((2 * QUEUES + 2))
# Guest RAM must be shared memory the agent can map: memfd, share=on, as the guest's NUMA node.
exec qemu-system-x86_64 \
  -machine q35,accel=kvm:tcg -m 256 -smp "$QUEUES" \
  -object memory-backend-memfd,id=mem0,size=256M,share=on \
  -numa node,memdev=mem0 \
  -drive file="$DISK",if=virtio \
  -chardev socket,id=c0,path="$SOCKET",reconnect-ms=1000 \
  -netdev vhost-user,id=n0,chardev=c0,queues="$QUEUES" \
  -device virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56,mq="$MQ",vectors="$VECTORS" \
  -nographic
