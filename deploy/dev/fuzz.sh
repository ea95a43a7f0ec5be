#!/usr/bin/env bash
# Builds knic's cargo-fuzz targets and runs each for its share of a bounded time.
#   deploy/dev/fuzz.sh [SECONDS [TARGET...]]   (default: 60 s split over every target)
# Targets, each in its crate's own fuzz workspace (never built by the main workspace):
#   queue_pair     vhost-backend/fuzz   the vhost-user device's queue pair and control queue
#   front_door     vhost-backend/fuzz   the vhost-user front door: messages, fds, memory tables
#   device_queues  lkl-netstack/fuzz    the library kernel's virtio-net data path (links the
#                                       kernel library: lkl-sys builds it or takes it from
#                                       ~/.cache/knic, as for the workspace)
# Needs cargo-fuzz (`cargo install cargo-fuzz`); only stable Rust is installed, so the
# nightly-only sanitizer flags are unlocked with RUSTC_BOOTSTRAP=1. An input that makes
# processing run for 10 s (a spin) is reported like a crash; a crash stops the script.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-60}"
shift $(($# > 0 ? 1 : 0))
declare -A crate_of=([queue_pair]=vhost-backend [front_door]=vhost-backend [device_queues]=lkl-netstack)
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(queue_pair front_door device_queues)
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
  exit 1
fi
export RUSTC_BOOTSTRAP=1
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"
share=$((secs / ${#targets[@]}))
if [ "$share" -lt 1 ]; then
  share=1
fi
for target in "${targets[@]}"; do
  crate="${crate_of[$target]:-}"
  if [ -z "$crate" ]; then
    echo "unknown fuzz target: $target (known: ${!crate_of[*]})" >&2
    exit 2
  fi
  echo "=== $target ($crate/fuzz), ${share} s"
  (
    cd "$crate"
    cargo fuzz build "$target"
    mkdir -p "fuzz/corpus/$target"
    # Committed seeds (if any) are read too; new inputs go to the (ignored) corpus.
    seeds=()
    if [ -d "fuzz/seeds/$target" ]; then
      seeds=("fuzz/seeds/$target")
    fi
    cargo fuzz run "$target" "fuzz/corpus/$target" "${seeds[@]}" -- \
      -max_total_time="$share" -timeout=10 -rss_limit_mb=4096
  )
done
