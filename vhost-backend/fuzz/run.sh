#!/usr/bin/env bash
# Builds the queue-pair fuzz target and runs it for a bounded time.
#   vhost-backend/fuzz/run.sh [SECONDS]   (default 60)
# The shared runner (every target, split budget) is deploy/dev/fuzz.sh.
set -euo pipefail
exec "$(dirname "$0")/../../deploy/dev/fuzz.sh" "${1:-60}" queue_pair
