#!/usr/bin/env bash
# A cloud-hypervisor guest on a knic-agent port.
#
#   deploy/vmm/cloud-hypervisor-vhost-user.sh SOCKET KERNEL DISK [QUEUE_PAIRS] [client|server]
#
# vhost_mode=client (default): cloud-hypervisor connects to the agent's socket (agent port
#   role=server, the default); on an agent restart it retries every 100 ms for up to 60 s.
# vhost_mode=server: cloud-hypervisor listens and the agent connects (port role=client),
#   which redials on its own: either side may restart.
# num_queues counts queues, not pairs: 2 per pair. Guest RAM must be shared (shared=on).
# Not run by knic's tests (cloud-hypervisor is not packaged in Debian bookworm); the options
# follow cloud-hypervisor's --net documentation.
set -euo pipefail
SOCKET=${1:?usage: $0 SOCKET KERNEL DISK [QUEUE_PAIRS] [client|server]}
KERNEL=${2:?usage: $0 SOCKET KERNEL DISK [QUEUE_PAIRS] [client|server]}
DISK=${3:?usage: $0 SOCKET KERNEL DISK [QUEUE_PAIRS] [client|server]}
PAIRS=${4:-1}
MODE=${5:-client}
exec cloud-hypervisor \
  --cpus boot="$PAIRS" --memory size=1G,shared=on \
  --kernel "$KERNEL" --cmdline "console=hvc0 root=/dev/vda1 rw" \
  --disk path="$DISK" \
  --net vhost_user=true,socket="$SOCKET",num_queues=$((2 * PAIRS)),queue_size=256,vhost_mode="$MODE",mac=52:54:00:12:34:57
