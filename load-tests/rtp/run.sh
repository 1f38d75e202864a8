#!/bin/bash
# Load test (c): RTP relay, our MediaRelay vs the rtpengine anchor
# (../shared/bench/anchors/C_rtp), same load generator (rtpload, G.711 20 ms, 172-byte
# packets, both directions per call), same NG setup script (ng.py), same machine, same run,
# one server after the other, each pinned to CPU 1 with the load on CPU 0.
#
# Prints one line per run and a ratio line on stdout (progress on stderr):
#   rtp: server=rtpengine record=off max_calls=N streams=S pps=P loss_pct=L server_cpu_pct=C us_per_pkt=U streams_per_core=K out=DIR
#   rtp: server=pbx record=off ...
#   rtp: server=pbx record=on ...
#   rtp: ratio calls pbx/rtpengine=X (record on: Y) us_per_pkt pbx/rtpengine=Z (record on: W)
# max_calls: highest number of concurrent calls the anchor's bisection found loss-free
# (<=0.01% lost, >=97% of the offered rate), confirmed by a 3 s + 25 s run; us_per_pkt = the
# server's utime+stime (/proc, whole process) over that window / packets relayed in it;
# streams_per_core = streams / (server CPU / 100%).
#
# Env: RUNS ("rtpengine pbx pbx-rec"), SKIP_BUILD=1, ANCHORS (anchor dir), NG (127.0.0.1:2223),
#   RELAY_THREADS (ours; default = the relay's), and the anchor's knobs, passed through:
#   FIXED_RATE=<calls> (skip the search), START_RATE (250), PRECISION_PCT, SEARCH_MEAS,
#   FINAL_MEAS, LOSS_MAX_PCT, SERVER_CPUS (1), LOAD_CPUS (0), NICE (-10; also the nice of the
#   bench's own autogroup unless AUTOGROUP= is empty, see below).
# Only loopback; every load is bounded (rtpload's duration, wrapped in timeout).
set -u
NICE=${NICE--10}
# The kernel's autogroup scheduling makes nice values count only inside one session: a build
# in another terminal gets its share of a core whatever our nice. So the bench runs in a
# session of its own (setsid) whose autogroup gets NICE, which is what the anchor's nice -10
# means; every server and load generator inherits it. AUTOGROUP= (empty) turns this off.
AUTOGROUP=${AUTOGROUP-1}
if [ -n "$AUTOGROUP" ] && [ -n "$NICE" ] && [ -z "${RTP_BENCH_SESSION:-}" ] && [ -w /proc/self/autogroup ]; then
  export RTP_BENCH_SESSION=1
  exec setsid -w "$0" "$@"
fi
if [ -n "${RTP_BENCH_SESSION:-}" ]; then
  echo "$NICE" 2>/dev/null > /proc/self/autogroup || echo "could not set the autogroup's nice" >&2
fi
HERE=$(cd "$(dirname "$0")" && pwd)
WS=$(cd "$HERE/../.." && pwd)
ANCHORS=${ANCHORS:-$(cd "$WS/../shared/bench/anchors" 2>/dev/null && pwd)}
[ -f "$ANCHORS/C_rtp/run.sh" ] || { echo "anchor dir not found (ANCHORS=$ANCHORS)" >&2; exit 2; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/pbx-target}
RUNS=${RUNS:-rtpengine pbx pbx-rec}
NG=${NG:-127.0.0.1:2223}
case "${NG%:*}" in 127.*) ;; *) echo "NG must be on loopback" >&2; exit 2 ;; esac
SERVER_CPUS=${SERVER_CPUS-1}
BIN=$CARGO_TARGET_DIR/release/examples/ng_relay
OUT=$HERE/out/$(date +%Y%m%d-%H%M%S); mkdir -p "$OUT"
log() { echo "[rtp $(date +%H:%M:%S)] $* ($(uptime | sed 's/.*load/load/'))" >&2; }

# The anchor's run.sh writes out/ and its compiled rtpload beside itself: run a private copy
# (unchanged) so the shared directory stays untouched.
mkdir -p "$OUT/anchors"
cp -r "$ANCHORS/lib" "$ANCHORS/C_rtp" "$OUT/anchors/"
chmod -R u+w "$OUT/anchors"
rm -rf "$OUT/anchors/C_rtp/out"

if [[ " $RUNS " == *" rtpengine "* ]] && ! command -v rtpengine >/dev/null; then
  log "installing rtpengine-daemon"
  apt-get install -y rtpengine-daemon >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y rtpengine-daemon >/dev/null 2>&1; } \
    || { echo "cannot install rtpengine-daemon" >&2; exit 2; }
fi
command -v gcc >/dev/null || { echo "gcc is needed for the anchor's rtpload.c (apt-get install build-essential)" >&2; exit 2; }
if [ -z "${SKIP_BUILD:-}" ]; then
  log "building the bench server (cargo build --release -p pbx-edge-node --example ng_relay)"
  (cd "$WS" && cargo build --release -p pbx-edge-node --example ng_relay) >&2 || exit 1
fi
[ -x "$BIN" ] || { echo "missing $BIN" >&2; exit 2; }

# line SERVER RECORD SUMMARY -> our result line
result_line() {
  local server=$1 rec=$2 s=$3 calls pps loss cpu
  calls=$(sed -n 's/.* max_calls=\([0-9]*\).*/\1/p' <<<"$s"); calls=${calls:-0}
  pps=$(sed -n 's/.*relayed \([0-9]*\) pps.*/\1/p' <<<"$s"); pps=${pps:-0}
  loss=$(sed -n 's/.* loss=\([0-9.]*\)%.*/\1/p' <<<"$s")
  cpu=$(sed -n 's/.* server_cpu=\([0-9.n/a]*\)%.*/\1/p' <<<"$s")
  awk -v srv="$server" -v rec="$rec" -v c="$calls" -v p="$pps" -v l="$loss" -v cpu="$cpu" -v out="$OUT" 'BEGIN{
    us = (p > 0 && cpu+0 > 0) ? sprintf("%.2f", cpu / 100 * 1e6 / p) : "n/a";
    spc = (cpu+0 > 0) ? sprintf("%.0f", 2 * c / (cpu / 100)) : "n/a";
    printf "rtp: server=%s record=%s max_calls=%d streams=%d pps=%d loss_pct=%s server_cpu_pct=%s us_per_pkt=%s streams_per_core=%s out=%s\n",
      srv, rec, c, 2 * c, p, l, cpu, us, spc, out }'
}

wait_udp_port() {
  local i
  for i in $(seq 1 100); do ss -Hlun "sport = :$1" | grep -q . && return 0; sleep 0.1; done
  return 1
}

run_anchor() {
  log "rtpengine (userspace, the anchor's own settings)"
  local s
  s=$(cd "$OUT/anchors/C_rtp" && ./run.sh rtpengine 2> >(tee "$OUT/rtpengine.trials.log" >&2) | tail -1)
  echo "$s" > "$OUT/rtpengine.summary"
  result_line rtpengine off "$s"
}

run_ours() { # record (0|1)
  local rec=$1 pre=() pid s
  log "pbx MediaRelay (ng_relay example), recording=$rec"
  if ss -Hlun "sport = :${NG##*:}" | grep -q .; then echo "UDP port ${NG##*:} in use" >&2; return 1; fi
  [ -n "$NICE" ] && pre+=(nice -n "$NICE")
  [ -n "$SERVER_CPUS" ] && pre+=(taskset -c "$SERVER_CPUS")
  NG_LISTEN=$NG RECORD=$rec SPOOL="$OUT/spool-rec$rec" timeout 7200 "${pre[@]}" "$BIN" 2> "$OUT/ng_relay-rec$rec.log" &
  pid=$!
  wait_udp_port "${NG##*:}" || { echo "ng_relay did not start, see $OUT/ng_relay-rec$rec.log" >&2; kill "$pid"; return 1; }
  # SERVER_PID: the timeout wrapper's tree = ng_relay and its threads.
  s=$(cd "$OUT/anchors/C_rtp" && TARGET=$NG NG=$NG SERVER_PID=$pid ./run.sh external 2> >(tee "$OUT/pbx-rec$rec.trials.log" >&2) | tail -1)
  kill -INT "$pid" 2>/dev/null; sleep 2; kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  rm -rf "$OUT/spool-rec$rec"
  echo "$s" > "$OUT/pbx-rec$rec.summary"
  result_line pbx "$([ "$rec" = 1 ] && echo on || echo off)" "$s"
}

declare -A LINES
for r in $RUNS; do
  case $r in
    rtpengine) LINES[$r]=$(run_anchor) ;;
    pbx) LINES[$r]=$(run_ours 0) ;;
    pbx-rec) LINES[$r]=$(run_ours 1) ;;
    *) echo "unknown run $r" >&2; exit 2 ;;
  esac
  echo "${LINES[$r]}"
  sleep 3
done
get() { sed -n "s/.* $2=\([0-9.]*\).*/\1/p" <<<"${LINES[$1]:-}"; }
if [ -n "${LINES[rtpengine]:-}" ]; then
  awk -v rc="$(get rtpengine max_calls)" -v ru="$(get rtpengine us_per_pkt)" \
      -v pc="$(get pbx max_calls)" -v pu="$(get pbx us_per_pkt)" \
      -v qc="$(get pbx-rec max_calls)" -v qu="$(get pbx-rec us_per_pkt)" 'BEGIN{
    printf "rtp: ratio calls pbx/rtpengine=%s (record on: %s) us_per_pkt pbx/rtpengine=%s (record on: %s) (targets: calls>=1.0, us_per_pkt<=1.0)\n",
      (rc > 0 && pc != "") ? sprintf("%.2f", pc / rc) : "n/a", (rc > 0 && qc != "") ? sprintf("%.2f", qc / rc) : "n/a",
      (ru > 0 && pu != "") ? sprintf("%.2f", pu / ru) : "n/a", (ru > 0 && qu != "") ? sprintf("%.2f", qu / ru) : "n/a" }'
fi
