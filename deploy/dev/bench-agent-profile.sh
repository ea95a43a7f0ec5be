#!/bin/sh
# Runs knic-vhost-bench and, while each agent case runs, profiles the agent with perf and
# reads its counters (knicctl stats): where the time goes and where frames go (seam stalls,
# refusals, drops). As root, after
#   cargo build --release -p vhost-backend -p knic-agent -p guest-tests --bins
# Usage: deploy/dev/bench-agent-profile.sh [SECONDS] [OUTDIR]
# OUTDIR (default /tmp/knic-bench-profile) gets, per agent case (frame size), stats-N.json
# and perf-N.txt (perf report, no children, top symbols). The bench itself appends its
# numbers to guest-tests/benches/results/vhost.jsonl as usual.
set -eu
secs=${1:-5}
out=${2:-/tmp/knic-bench-profile}
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/target/release
mkdir -p "$out"
command -v perf >/dev/null || { echo "perf is missing: run deploy/dev/setup-debian.sh" >&2; exit 1; }
"$bin/knic-vhost-bench" "$secs" > "$out/bench.txt" 2>&1 &
bench=$!
seen=""
while kill -0 "$bench" 2>/dev/null; do
    for dir in /tmp/knic-e2e-bench-agent-*-"$bench"; do
        [ -S "$dir/agent.sock" ] || continue
        frame=${dir#/tmp/knic-e2e-bench-agent-}; frame=${frame%-"$bench"}
        case " $seen " in *" $frame "*) continue ;; esac
        seen="$seen $frame"
        # The agent is the process serving this API socket.
        pid=$(pgrep -f -- "--api-socket $dir/agent.sock" | head -n1) || continue
        sleep 2 # testpmd attaches and the measurement starts
        perf record -F 999 -g -p "$pid" -o "$out/perf-$frame.data" -- sleep $((secs / 2 + 1)) \
            > /dev/null 2>&1 || true
        "$bin/knicctl" --api-socket "$dir/agent.sock" --output json stats > "$out/stats-$frame.json" 2>&1 || true
        perf report -i "$out/perf-$frame.data" --no-children --sort comm,dso,sym --stdio 2>/dev/null \
            | grep -v '^$' | head -n 120 > "$out/perf-$frame.txt" || true
    done
    sleep 0.2
done
wait "$bench"
cat "$out/bench.txt"
echo "profiles and counters in $out"
