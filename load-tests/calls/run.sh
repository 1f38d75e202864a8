#!/bin/bash
# Load test (b), issue 3: call setups per second, INVITE .. BYE, at < 1% failed calls,
# our `pbx up` B2BUA (media anchored on its RTP relay) side by side with the Kamailio 5.6
# stateful-proxy anchor (../shared/bench/anchors/B_proxy), same machine, same run, one
# after the other.
#
# Prints exactly three lines on stdout (progress goes to stderr):
#   calls: server=pbx cps=N achieved=N fail_pct=X retrans=N max_concurrent=N server_cpu_pct=P cpu_us_per_call=Y call_ms=M load1_start=L load1_end=L out=DIR
#   calls: server=kamailio ...
#   calls: ratio=pbx/kamailio=Z cpu_ratio=W
# cps is the highest rate the anchor's bisection found clean (<1% failed calls, >=97% of the
# target reached), confirmed by a FINAL_WARM + FINAL_MEAS run with FINAL_CALL_MS calls;
# cpu_us_per_call is the server's utime+stime (/proc, process tree) over that window divided
# by the calls completed in the same window. cpu_ratio = pbx/kamailio of that.
#
# The flows (sipp UAC on LOAD_CPUS -> server on SERVER_CPUS -> sipp UAS on LOAD_CPUS):
#   kamailio: the anchor's own B_proxy/uac.xml, uas.xml and kamailio-proxy.cfg, as its run.sh
#             runs them: INVITE/100/180/200/ACK, hold, BYE/200 through a tm+rr proxy.
#   pbx:      uac_auth.xml here = the same flow plus the 407 round our edge demands
#             (INVITE/407/ACK/INVITE+digest/100/180/200/ACK, hold, BYE/200), extension 1000
#             calling 2000 of tenant bench.pbx.test; 2000 is REGISTERed (register_callee.xml,
#             Expires 3600) from UAS_PORT, where the anchor's uas.xml then answers unchanged.
#             Both call legs are anchored on pbx's RTP relay (SDP rewritten, 4 UDP ports per
#             call); sipp sends no RTP, so this measures signalling + relay session setup.
#
# Call length: SEARCH_CALL_MS (1000) in the search, FINAL_CALL_MS (1000) in the confirmation,
# same for both servers (CALL_MS=<ms> sets both). The anchor's final uses 10 s calls; here
# they are short because each pbx call holds 4 relay sockets and this box's hard
# `ulimit -n` is 20000 (root cannot raise it): ~4,900 concurrent calls at most. sipp's
# -l (concurrent calls) is the anchor's rate*(s+10), capped at MAX_CALLS (4500), both servers;
# so a confirmation can pass only below ~MAX_CALLS/(call s + setup): with 2 s calls ~2,100 CPS
# (too low for Kamailio, hence 1 s by default).
#
# Env knobs: SERVERS ("pbx kamailio") SKIP_BUILD=1 PBX_BIN FIXED_RATE=<cps> (skip the search,
#   one confirmation-length run; FIXED_RATE_pbx / FIXED_RATE_kamailio per server) CALL_MS SEARCH_CALL_MS FINAL_CALL_MS MAX_CALLS
#   SERVER_CPUS (1) LOAD_CPUS (0) NICE (-10) LOCAL_PORT (5061) UAS_PORT (5080) KAM_PORT (5060)
#   SHM_MB (1024) and the anchor's search knobs: START_RATE (250) PRECISION_PCT (6)
#   SEARCH_WARM/SEARCH_MEAS (3/10) FINAL_WARM/FINAL_MEAS (12/20) PAUSE_S (3)
#   SETTLE_PCT/SETTLE_MAX_S (5/40) ANCHORS (anchor dir).
# Everything targets 127.0.0.1 and is bounded (sipp -m and -timeout, wrapped in timeout).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
WS=$(cd "$HERE/../.." && pwd)
ANCHORS=${ANCHORS:-$(cd "$WS/../shared/bench/anchors" 2>/dev/null && pwd)}
[ -f "$ANCHORS/lib/common.sh" ] || { echo "anchor dir not found (ANCHORS=$ANCHORS)" >&2; exit 2; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/pbx-target-bench}

SERVERS=${SERVERS:-pbx kamailio}
SLUG=bench; BASE_DOMAIN=pbx.test; DOMAIN=$SLUG.$BASE_DOMAIN
CALLER=1000; CALLER_SECRET=Caller-pw-9x   # secrets must not contain the number
CALLEE=2000; CALLEE_SECRET=Callee-pw-7y
LOCAL_PORT=${LOCAL_PORT:-5061}
UAS_PORT=${UAS_PORT:-5080}; UAS_ADDR=127.0.0.1:$UAS_PORT
KAM_PORT=${KAM_PORT:-5060}
SEARCH_CALL_MS=${CALL_MS:-${SEARCH_CALL_MS:-1000}}
FINAL_CALL_MS=${CALL_MS:-${FINAL_CALL_MS:-1000}}
MAX_CALLS=${MAX_CALLS:-4500}
# sipp's default aborts a call on any unexpected message. Kamailio (4 worker processes on one
# core) sometimes relays the UAS's 180 after its 200 when a worker is preempted (seen here at
# 250 CPS with a build running: 1-3% of calls), and the anchor's uac.xml then aborts the call
# in its pause. With -abortunexp the UAC logs and ignores such a message instead (counted in
# trials.log); a call still fails if its 200 or the BYE's 200 never comes. Same for both
# servers. UAC_BEHAVIORS= (empty) restores sipp's default.
UAC_BEHAVIORS=${UAC_BEHAVIORS-all,-abortunexp}
BEHAV=(); [ -n "$UAC_BEHAVIORS" ] && BEHAV=(-default_behaviors "$UAC_BEHAVIORS")
PBX_BIN=${PBX_BIN:-$CARGO_TARGET_DIR/release/pbx}
B="$ANCHORS/B_proxy"
KAM_CFG="$B/kamailio-proxy.cfg"

log() { echo "[calls $(date +%H:%M:%S)] $*" >&2; }

# ---------------------------------------------------------------- 1. packages
need=()
command -v sipp >/dev/null || need+=(sip-tester)
[ -x /usr/sbin/kamailio ] || need+=(kamailio)
dpkg -s kamailio-extra-modules >/dev/null 2>&1 || need+=(kamailio-extra-modules)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}" >&2 \
    || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}" >&2; } \
    || { echo "apt-get install ${need[*]} failed" >&2; exit 2; }
fi
if command -v systemctl >/dev/null && systemctl is-active --quiet kamailio 2>/dev/null; then
  systemctl stop kamailio || true
fi

# The anchor library (sipp_trial, find_max_rate, tree_ticks, require_loopback, ...).
. "$ANCHORS/lib/common.sh"

# Same as the anchor's sipp_trial, plus the raw numbers for the CPU-per-call figure
# (the anchor rounds server CPU to whole percent): T_SRV_TICKS, T_MEAS_MS, T_OKW.
sipp_trial() {
  local rate=$1 warm=$2 meas=$3 tag=$4; shift 5
  local total=$(( rate * (warm + meas + 2) ))
  local gto=$(( warm + meas + ${TAIL_S:-10} ))
  local stf="$OUT_DIR/$tag.stat.csv"
  rm -f "$stf"
  local cmd=(sipp "$@" -r "$rate" -m "$total" -timeout "${gto}s" -nostdin -trace_stat -stf "$stf" -fd 1)
  T_CMD="${cmd[*]}"
  local pre=("${PRIO[@]}"); [ -n "${LOAD_CPUS:-}" ] && pre+=(taskset -c "$LOAD_CPUS")
  ( cd "$OUT_DIR" && exec "${pre[@]}" timeout $((gto + 15)) "${cmd[@]}" ) > "$OUT_DIR/$tag.screen" 2>&1 &
  local sp=$!
  sleep "$warm"
  local s0 g0 t0 s1 g1 t1
  s0=$(tree_ticks ${SERVER_PIDS:-}); g0=$(tree_ticks $sp ${GEN_EXTRA_PIDS:-}); t0=$(now_ms)
  sleep "$meas"
  s1=$(tree_ticks ${SERVER_PIDS:-}); g1=$(tree_ticks $sp ${GEN_EXTRA_PIDS:-}); t1=$(now_ms)
  wait "$sp"; local rc=$?
  T_SRV_TICKS=$((s1 - s0)); T_MEAS_MS=$((t1 - t0))
  T_SRV_CPU=$( [ -n "${SERVER_PIDS:-}" ] && cpu_pct "$s0" "$s1" "$t0" "$t1" || echo n/a )
  T_GEN_CPU=$(cpu_pct "$g0" "$g1" "$t0" "$t1")
  if [ ! -s "$stf" ]; then
    T_OK=0; T_ACH=0; T_OKW=0; T_FAILPCT=100; T_FAILED=0; T_CREATED=0; T_RETR=0; T_MAXCUR=0
    echo "sipp produced no statistics (rc=$rc), see $OUT_DIR/$tag.screen" >&2; return
  fi
  T_OKW=$(window_sum "$stf" "$(stat_col "$stf" "SuccessfulCall(P)")" "$warm" "$((warm + meas))")
  T_ACH=$(awk -v s="$T_OKW" -v m="$meas" 'BEGIN{printf "%.0f", s/m}')
  T_CREATED=$(last_val "$stf" "TotalCallCreated")
  local succ; succ=$(last_val "$stf" "SuccessfulCall(C)")
  T_FAILED=$(( T_CREATED - succ ))
  T_RETR=$(last_val "$stf" "Retransmissions(C)")
  T_MAXCUR=$(max_val "$stf" "CurrentCall")
  T_FAILPCT=$(awk -v f="$T_FAILED" -v c="$T_CREATED" 'BEGIN{ if(c==0){print 100}else{printf "%.2f", f*100/c} }')
  T_OK=$(awk -v fp="$T_FAILPCT" -v a="$T_ACH" -v r="$rate" -v tol="${RATE_TOL:-0.97}" -v c="$T_CREATED" -v t="$total" \
    'BEGIN{ print (fp<1.0 && a>=tol*r && c>=t*0.99) ? 1 : 0 }')
}

udp_rcvbuf_errors() { awk '/^Udp:/ { if (h) { print $6; exit } h=1 }' /proc/net/snmp; }
load1() { cut -d' ' -f1 /proc/loadavg; }
free_port() { python3 -c 'import socket
s=socket.socket(); s.bind(("127.0.0.1",0)); t=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
p=s.getsockname()[1]; t.bind(("127.0.0.1",p)); print(p)'; }

OUT=$HERE/out/$(date +%Y%m%d-%H%M%S); mkdir -p "$OUT"
log "output in $OUT"
raise_udp_buffers
# As the anchor; the hard limit may be lower (20000 here), then this is the hard limit.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
log "ulimit -n $(ulimit -n) (pbx: 4 relay sockets per call)"
trap stop_started EXIT
SERVER_CPUS=${SERVER_CPUS-1}; LOAD_CPUS=${LOAD_CPUS-0}
ensure_port_free "$LOCAL_PORT"; ensure_port_free "$UAS_PORT"
START_RATE=${START_RATE:-250}
FINAL_WARM=${FINAL_WARM:-12}; FINAL_MEAS=${FINAL_MEAS:-20}

# Injection files (sipp's [authentication] keyword; field3 = number dialled).
printf 'SEQUENTIAL\n%s;[authentication username=%s password=%s];%s;%s\n' \
  "$CALLER" "$CALLER" "$CALLER_SECRET" "$DOMAIN" "$CALLEE" > "$OUT/caller.csv"
printf 'SEQUENTIAL\n%s;[authentication username=%s password=%s];%s\n' \
  "$CALLEE" "$CALLEE" "$CALLEE_SECRET" "$DOMAIN" > "$OUT/callee.csv"

# The UAS (the anchor's uas.xml, unchanged) on UAS_PORT, bounded: 50M calls / 30 min.
start_uas() {
  local lpre=("${PRIO[@]}"); [ -n "$LOAD_CPUS" ] && lpre+=(taskset -c "$LOAD_CPUS")
  ( cd "$OUT_DIR" && exec "${lpre[@]}" timeout 1830 sipp -sf "$B/uas.xml" -i 127.0.0.1 -p "$UAS_PORT" -t u1 \
      -m 50000000 -timeout 1800s -nostdin -trace_err -error_file "$OUT_DIR/uas_errors.log" ) \
      > "$OUT_DIR/uas.screen" 2>&1 &
  UAS_PID=$!; remember_pid "$UAS_PID"; GEN_EXTRA_PIDS=$UAS_PID
  wait_udp_port "$UAS_PORT" || exit 5
}
stop_pid() { # pid: TERM, up to 5 s, then KILL (only processes this script started)
  kill "$1" 2>/dev/null; for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null; wait "$1" 2>/dev/null
}

# Before each trial: wait until the server is idle (< SETTLE_PCT of a core over 1 s, at most
# SETTLE_MAX_S): a stateful server keeps working after an overloaded trial (backlog, timers).
settle() {
  local i a b
  for i in $(seq 1 "${SETTLE_MAX_S:-40}"); do
    a=$(tree_ticks $SERVER_PIDS); sleep 1; b=$(tree_ticks $SERVER_PIDS)
    [ $(( (b - a) * 100 / CLK_TCK )) -lt "${SETTLE_PCT:-5}" ] && break
  done
  echo "settle: ${i}s" >> "$OUT_DIR/trials.log"
}

# The UAC of one trial for the current server: the anchor's trial_B shape.
trial_C() { # rate warm meas tag
  local ms=$SEARCH_CALL_MS; case "$4" in final*) ms=$FINAL_CALL_MS ;; esac
  local lim=$(( $1 * (ms / 1000 + 10) )); [ "$lim" -gt "$MAX_CALLS" ] && lim=$MAX_CALLS
  TAIL_S=$(( ms / 1000 + 10 ))
  settle
  local rb0; rb0=$(udp_rcvbuf_errors)
  case $SERVER in
  pbx) sipp_trial "$1" "$2" "$3" "$4" -- "$TARGET" -sf "$HERE/uac_auth.xml" -inf "$OUT/caller.csv" \
         -i 127.0.0.1 -p "$LOCAL_PORT" -t u1 -d "$ms" -recv_timeout 10000 -l "$lim" \
         -trace_err -error_file "$OUT_DIR/$4.errors.log" "${BEHAV[@]}" ;;
  kamailio) sipp_trial "$1" "$2" "$3" "$4" -- "$TARGET" -sf "$B/uac.xml" -key uas "$UAS_ADDR" -s bench \
         -i 127.0.0.1 -p "$LOCAL_PORT" -t u1 -d "$ms" -recv_timeout 10000 -l "$lim" \
         -trace_err -error_file "$OUT_DIR/$4.errors.log" "${BEHAV[@]}" ;;
  esac
  R_CALL_MS=$ms
  echo "$4: UDP RcvbufErrors during the trial (whole host): $(( $(udp_rcvbuf_errors) - rb0 ))" >> "$OUT_DIR/trials.log"
  T_UNEXP=$(grep -c "Continuing call on unexpected message" "$OUT_DIR/$4.errors.log" 2>/dev/null); T_UNEXP=${T_UNEXP:-0}
  [ "$T_UNEXP" -gt 0 ] && echo "$4: $T_UNEXP unexpected messages ignored (UAC_BEHAVIORS=$UAC_BEHAVIORS): $(grep -o "while [a-z]* ([^)]*), received '[^\r]*" "$OUT_DIR/$4.errors.log" | sed 's/ (index [0-9]*)//' | sort | uniq -c | sort -rn | head -3 | tr -s ' ' | tr '\n' ';')" >> "$OUT_DIR/trials.log"
}

# Runs the bisection (or FIXED_RATE) against SERVER_PIDS/TARGET; sets R_LINE.
measure() {
  local l0 l1 cpu
  l0=$(load1)
  log "$SERVER: load before: $(cat /proc/loadavg); busiest: $(top -bn1 -o %CPU | sed -n '8,11p' | awk '{printf "%s(%s%%) ", $12, $9}')"
  TRIAL_FN=trial_C
  local fixed; fixed=$(eval echo "\${FIXED_RATE_$SERVER:-\${FIXED_RATE:-}}")
  if [ -n "$fixed" ]; then
    trial_C "$fixed" "$FINAL_WARM" "$FINAL_MEAS" "final_r$fixed"; log_trial "$fixed" FINAL
    F_RATE=$([ "$T_OK" = 1 ] && echo "$fixed" || echo 0)
  else
    find_max_rate
  fi
  l1=$(load1)
  log "$SERVER: load after: $(cat /proc/loadavg); busiest: $(top -bn1 -o %CPU | sed -n '8,11p' | awk '{printf "%s(%s%%) ", $12, $9}')"
  cpu=$(awk -v t="$T_SRV_TICKS" -v hz="$CLK_TCK" -v ok="$T_OKW" \
    'BEGIN{ if (ok<=0) {print "n/a"} else printf "%.0f", t*1000000.0/hz/ok }')
  R_LINE="calls: server=$SERVER cps=$F_RATE achieved=$T_ACH fail_pct=$T_FAILPCT retrans=$T_RETR max_concurrent=$T_MAXCUR server_cpu_pct=$T_SRV_CPU cpu_us_per_call=$cpu call_ms=$R_CALL_MS load1_start=$l0 load1_end=$l1 out=$OUT_DIR"
  { echo "$R_LINE"; echo "gen_cpu_pct=$T_GEN_CPU (uac+uas, 100%=1 core)"; echo "final sipp: $T_CMD"; } > "$OUT_DIR/summary.txt"
  log "$R_LINE"
}

declare -A LINE RATE CPU
for SERVER in $SERVERS; do
  OUT_DIR=$OUT/$SERVER; mkdir -p "$OUT_DIR"
  pre=("${PRIO[@]}"); [ -n "$SERVER_CPUS" ] && pre+=(taskset -c "$SERVER_CPUS")
  case $SERVER in
  pbx)
    # ------------------------------------------------------------ 2. build
    if [ -z "${SKIP_BUILD:-}" ]; then
      log "cargo build --release -p pbx (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
      ( cd "$WS" && cargo build --release -p pbx ) > "$OUT/build.log" 2>&1 \
        || { echo "release build failed, see $OUT/build.log" >&2; tail -20 "$OUT/build.log" >&2; exit 4; }
    fi
    [ -x "$PBX_BIN" ] || { echo "no pbx binary at $PBX_BIN" >&2; exit 4; }
    # ------------------------------------------------------------ 3. pbx up
    HTTP_PORT=$(free_port); SIP_PORT=$(free_port); EDGE_PORT=$(free_port)
    TARGET=127.0.0.1:$SIP_PORT; require_loopback "${TARGET%:*}"
    DATA=$(mktemp -d /tmp/pbx-calltest.XXXXXX)
    "${pre[@]}" "$PBX_BIN" up --data-dir "$DATA" --http "127.0.0.1:$HTTP_PORT" --sip "$TARGET" \
      --sip-digest md5 --base-domain "$BASE_DOMAIN" --edge-http "127.0.0.1:$EDGE_PORT" \
      --rtp-ports 20000-59999 --media-ip 127.0.0.1 --sip-keepalive "${PBX_KEEPALIVE:-0}" \
      > "$OUT_DIR/server.log" 2>&1 &
    PBX_PID=$!; remember_pid "$PBX_PID"; SERVER_PIDS=$PBX_PID
    for _ in $(seq 1 300); do grep -q "Data directory:" "$OUT_DIR/server.log" && break
      kill -0 "$PBX_PID" 2>/dev/null || break; sleep 0.2; done
    grep -q "Data directory:" "$OUT_DIR/server.log" \
      || { echo "pbx up did not start, see $OUT_DIR/server.log" >&2; tail -20 "$OUT_DIR/server.log" >&2; exit 5; }
    log "pbx up pid=$PBX_PID sip=$TARGET data=$DATA ($(grep -m1 'SIP over UDP' "$OUT_DIR/server.log"))"
    {
      "$PBX_BIN" tenant create --slug "$SLUG" --name "call load test" --data-dir "$DATA" &&
      "$PBX_BIN" extension create --tenant "$SLUG" --number "$CALLER" --secret "$CALLER_SECRET" --ring-timeout 60 --data-dir "$DATA" &&
      "$PBX_BIN" extension create --tenant "$SLUG" --number "$CALLEE" --secret "$CALLEE_SECRET" --ring-timeout 60 --data-dir "$DATA"
    } > "$OUT_DIR/provision.log" 2>&1 || { echo "provisioning failed, see $OUT_DIR/provision.log" >&2; tail -5 "$OUT_DIR/provision.log" >&2; exit 5; }
    # The callee registers from UAS_PORT (retried until the edge's snapshot has the tenant).
    ok=
    for _ in $(seq 1 100); do   # <= ~60 s
      if ( cd "$OUT_DIR" && timeout 20 sipp "$TARGET" -sf "$HERE/register_callee.xml" -inf "$OUT/callee.csv" \
             -i 127.0.0.1 -p "$UAS_PORT" -t u1 -m 1 -recv_timeout 3000 -timeout 10s -timeout_error -nostdin \
             > register_callee.log 2>&1 ); then ok=1; break; fi
      sleep 0.5
    done
    [ -n "$ok" ] || { echo "$CALLEE@$DOMAIN never registered, see $OUT_DIR/register_callee.log" >&2; exit 5; }
    log "$CALLEE@$DOMAIN registered from $UAS_ADDR (Expires 3600)"
    start_uas
    # One call end to end before measuring.
    if ! ( cd "$OUT_DIR" && timeout 30 sipp "$TARGET" -sf "$HERE/uac_auth.xml" -inf "$OUT/caller.csv" \
             -i 127.0.0.1 -p "$LOCAL_PORT" -t u1 -d 100 -m 1 -recv_timeout 5000 -timeout 15s -timeout_error \
             -nostdin -trace_msg -message_file "$OUT_DIR/one_call.msg" "${BEHAV[@]}" > one_call.log 2>&1 ); then
      echo "one call $CALLER -> $CALLEE through pbx failed, see $OUT_DIR/one_call.log, one_call.msg, server.log" >&2
      tail -20 "$OUT_DIR/server.log" >&2; exit 5
    fi
    log "one call $CALLER -> $CALLEE@$DOMAIN completed (407 round, 200, ACK, BYE)"
    measure
    log "pbx log lines: $(wc -l < "$OUT_DIR/server.log"); WARN/ERROR lines: $(grep -c -E 'WARN|ERROR' "$OUT_DIR/server.log")"
    curl -s "http://127.0.0.1:$EDGE_PORT/metrics" > "$OUT_DIR/metrics.txt" 2>/dev/null || true
    stop_pid "$UAS_PID"; stop_pid "$PBX_PID"
    rm -rf "$DATA"
    ;;
  kamailio)
    # ------------------------------------------------------------ 4. anchor, as B_proxy/run.sh tm
    TARGET=127.0.0.1:$KAM_PORT
    ensure_port_free "$KAM_PORT"
    cfg=$KAM_CFG
    if [ "$KAM_PORT" != 5060 ]; then   # the anchor's cfg listens on 5060; a copy for another port
      sed "s/^listen=udp:127.0.0.1:5060/listen=udp:127.0.0.1:$KAM_PORT/" "$KAM_CFG" > "$OUT_DIR/kamailio-proxy.cfg"
      cfg=$OUT_DIR/kamailio-proxy.cfg
    fi
    "${pre[@]}" /usr/sbin/kamailio -f "$cfg" -DD -E -m "${SHM_MB:-1024}" -M 16 > "$OUT_DIR/server.log" 2>&1 &
    KAM_PID=$!; remember_pid "$KAM_PID"; SERVER_PIDS=$KAM_PID
    wait_udp_port "$KAM_PORT" || { tail -20 "$OUT_DIR/server.log" >&2; exit 5; }
    start_uas
    if ! ( cd "$OUT_DIR" && timeout 30 sipp "$TARGET" -sf "$B/uac.xml" -key uas "$UAS_ADDR" -s bench \
             -i 127.0.0.1 -p "$LOCAL_PORT" -t u1 -d 100 -m 1 -recv_timeout 5000 -timeout 15s -timeout_error \
             -nostdin "${BEHAV[@]}" > one_call.log 2>&1 ); then
      echo "one call through kamailio failed, see $OUT_DIR/one_call.log" >&2; exit 5
    fi
    log "kamailio pid=$KAM_PID on $TARGET; one call completed"
    measure
    stop_pid "$UAS_PID"; stop_pid "$KAM_PID"
    ;;
  *) echo "unknown server $SERVER" >&2; exit 2 ;;
  esac
  LINE[$SERVER]=$R_LINE; RATE[$SERVER]=$F_RATE
  CPU[$SERVER]=$(sed 's/.*cpu_us_per_call=\([^ ]*\).*/\1/' <<<"$R_LINE")
  sleep "${PAUSE_S:-3}"
done

for s in $SERVERS; do echo "${LINE[$s]}"; done
if [ -n "${LINE[pbx]:-}" ] && [ -n "${LINE[kamailio]:-}" ]; then
  awk -v rp="${RATE[pbx]}" -v rk="${RATE[kamailio]}" -v cp="${CPU[pbx]}" -v ck="${CPU[kamailio]}" 'BEGIN{
    r = (rk>0) ? sprintf("%.2f", rp/rk) : "n/a";
    c = (ck+0>0 && cp+0>0) ? sprintf("%.2f", cp/ck) : "n/a";
    printf "calls: ratio=pbx/kamailio=%s cpu_ratio=%s (target: ratio>=0.5)\n", r, c }' \
    | tee "$OUT/summary.txt"
fi
