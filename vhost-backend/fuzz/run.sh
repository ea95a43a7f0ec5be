#!/usr/bin/env bash
# Builds the queue-pair fuzz target and runs it for a bounded time.
#   vhost-backend/fuzz/run.sh [SECONDS]   (default 60)
# Needs cargo-fuzz (`cargo install cargo-fuzz`); only stable Rust is installed, so the
# nightly-only sanitizer flags are unlocked with RUSTC_BOOTSTRAP=1. An input that makes
# processing run for 10 s (a spin) is reported like a crash.
set -euo pipefail
secs="${1:-60}"
cd "$(dirname "$0")/.."
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
  exit 1
fi
export RUSTC_BOOTSTRAP=1
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"
cargo fuzz build queue_pair
mkdir -p fuzz/corpus/queue_pair
cargo fuzz run queue_pair fuzz/corpus/queue_pair -- -max_total_time="$secs" -timeout=10 -rss_limit_mb=4096
