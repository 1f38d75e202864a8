#!/bin/bash
# Queue engine benchmark (issue 5): dispatch latency p50/p99 from caller-ready (or agent-free)
# to the agent-ring decision, and engine throughput, at 100 calls/s into 50 queues served by
# 1,000 agents over 10 simulated minutes. Prints exactly one line on stdout:
#   queue_dispatch p50_us=.. p99_us=.. max_us=.. throughput_calls_per_s=.. calls=.. rings=.. answered=.. abandoned=..
# Progress and a summary go to stderr. Arguments pass through:
#   ./run.sh [SIM_SECONDS (600)] [RATE (100)] [QUEUES (50)] [AGENTS (1000)] [SEED (1)]
# Env: SKIP_BUILD=1 uses the existing binary; CARGO_TARGET_DIR (default /root/.cache/pbx-target).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
WS=$(cd "$HERE/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/pbx-target}
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    (cd "$WS" && cargo build --release -q -p pbx-edge-node --example queue_dispatch) >&2
fi
exec "$CARGO_TARGET_DIR/release/examples/queue_dispatch" "$@"
