#!/usr/bin/env bash
# Builds this crate's fuzz targets (queue_pair, front_door) and runs them for a bounded time,
# split between them.
#   vhost-backend/fuzz/run.sh [SECONDS]   (default 60)
# The shared runner (every target, split budget) is deploy/dev/fuzz.sh.
set -euo pipefail
exec "$(dirname "$0")/../../deploy/dev/fuzz.sh" "${1:-60}" queue_pair front_door
