#!/bin/bash
# Load test (a), issue 3: REGISTER with digest auth per second at < 1% failures,
# our `pbx up` registrar side by side with the Kamailio 5.6 anchor
# (../shared/bench/anchors/A_register), same sipp scenario, same users, same machine,
# same run, one after the other.
#
# Prints exactly three lines on stdout (progress goes to stderr):
#   register: server=pbx regs_per_s=N achieved_per_s=N fail_pct=X retrans=N server_cpu_pct=P cpu_ms_per_1k_regs=Y users=U load1_start=L load1_end=L out=DIR
#   register: server=kamailio ...
#   register: ratio=pbx/kamailio=Z cpu_ratio=W
# regs_per_s is the highest rate the anchor's bisection found clean (<1% failed,
# >=97% of the target reached), confirmed by a 35 s + 25 s run; cpu_ms_per_1k_regs is
# the server's utime+stime (/proc, process tree) over that confirmation window divided
# by the successful registrations in the same window. cpu_ratio = pbx/kamailio of that.
#
# Why not the anchor's run.sh itself: it writes users.csv, db/ and out/ into its own
# (shared, read-only for us) directory and its users (user00000) are not valid extension
# numbers here (digits only). So this script sources the anchor's lib/common.sh (sipp
# trial, /proc CPU accounting, bisection) and uses its reg_auth.xml and
# kamailio-registrar.cfg unchanged, with one users.csv (numeric users, domain
# bench.pbx.test) for both servers; Kamailio's htable is generated from the same file.
#
# pbx runs without NAT keep-alive OPTIONS (PBX_KEEPALIVE=0, its `--sip-keepalive`), as the
# Kamailio anchor sends none; PBX_KEEPALIVE=25 measures with them (one OPTIONS per source address
# every 25 s: sipp's one port here).
# Env knobs: USERS (10000, as the anchor) SERVERS ("pbx kamailio") SERVER_CPUS (0) LOAD_CPUS (1)
#   SKIP_BUILD=1 (use the existing release binary) PBX_BIN  ANCHORS (anchor dir)
#   and the anchor's: START_RATE (500) PRECISION_PCT (6) SEARCH_WARM/SEARCH_MEAS (3/10)
#   FINAL_WARM/FINAL_MEAS (35/25; anchor 5/25) SETTLE_PCT/SETTLE_MAX_S (5/40) FIXED_RATE=<r> (skip the search) NICE (-10)
# Everything targets 127.0.0.1 and is bounded (sipp -m and -timeout, wrapped in timeout).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
WS=$(cd "$HERE/../.." && pwd)
ANCHORS=${ANCHORS:-$(cd "$WS/../shared/bench/anchors" 2>/dev/null && pwd)}
[ -f "$ANCHORS/lib/common.sh" ] || { echo "anchor dir not found (ANCHORS=$ANCHORS)" >&2; exit 2; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/pbx-target}

USERS=${USERS:-10000}
SERVERS=${SERVERS:-pbx kamailio}
# Tenant "bench" under --base-domain pbx.test. (The anchor's bench.local would need
# --base-domain local, which pbx up rejects: the operator address admin@local is not a
# valid email.) Both servers get the same users.csv, so the realm is the same for both;
# Kamailio's cfg takes the realm from the To domain and does not check the domain.
SLUG=bench; BASE_DOMAIN=pbx.test; DOMAIN=$SLUG.$BASE_DOMAIN
FIRST_NUMBER=${FIRST_NUMBER:-100000}
LOCAL_PORT=${LOCAL_PORT:-5061}
KAM_PORT=5060               # fixed in kamailio-registrar.cfg (listen=udp:127.0.0.1:5060)
SCEN="$ANCHORS/A_register/reg_auth.xml"
KAM_CFG="$ANCHORS/A_register/kamailio-registrar.cfg"
PBX_BIN=${PBX_BIN:-$CARGO_TARGET_DIR/release/pbx}

log() { echo "[register $(date +%H:%M:%S)] $*" >&2; }

# ---------------------------------------------------------------- 1. packages
need=()
command -v sipp >/dev/null || need+=(sip-tester)
[ -x /usr/sbin/kamailio ] || need+=(kamailio)
dpkg -s kamailio-extra-modules >/dev/null 2>&1 || need+=(kamailio-extra-modules)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}" >&2 \
    || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}" >&2; } \
    || { echo "apt-get install ${need[*]} failed" >&2; exit 2; }
fi
# Debian enables a kamailio systemd service on install; it would hold 5060 (no systemd
# in containers, but be safe: only stop the packaged service, never other processes).
if command -v systemctl >/dev/null && systemctl is-active --quiet kamailio 2>/dev/null; then
  systemctl stop kamailio || true
fi

# The anchor library (sipp_trial, find_max_rate, tree_ticks, require_loopback, ...).
. "$ANCHORS/lib/common.sh"

# Same as the anchor's sipp_trial, plus the raw numbers for the CPU-per-registration
# figure (the anchor rounds server CPU to whole percent): T_SRV_TICKS, T_MEAS_MS, T_OKW.
sipp_trial() {
  local rate=$1 warm=$2 meas=$3 tag=$4; shift 5
  local total=$(( rate * (warm + meas + 2) ))
  local gto=$(( warm + meas + ${TAIL_S:-10} ))
  local stf="$OUT_DIR/$tag.stat.csv"
  rm -f "$stf"
  local cmd=(sipp "$@" -r "$rate" -m "$total" -timeout "${gto}s" -nostdin -trace_stat -stf "$stf" -fd 1)
  T_CMD="${cmd[*]}"
  local pre=("${PRIO[@]}"); [ -n "${LOAD_CPUS:-}" ] && pre+=(taskset -c "$LOAD_CPUS")
  "${pre[@]}" timeout $((gto + 15)) "${cmd[@]}" > "$OUT_DIR/$tag.screen" 2>&1 &
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

free_port() { python3 -c 'import socket
s=socket.socket(); s.bind(("127.0.0.1",0)); t=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
p=s.getsockname()[1]; t.bind(("127.0.0.1",p)); print(p)'; }
load1() { cut -d' ' -f1 /proc/loadavg; }

OUT=$HERE/out/$(date +%Y%m%d-%H%M%S); mkdir -p "$OUT"
log "output in $OUT"
raise_udp_buffers
trap stop_started EXIT
SERVER_CPUS=${SERVER_CPUS-0}; LOAD_CPUS=${LOAD_CPUS-1}
ensure_port_free "$LOCAL_PORT"
TAIL_S=10
START_RATE=${START_RATE:-500}
# Confirmation run: 35 s warm-up (anchor: 5 s) so that a stateful server's Timer J table
# (32 s) is at steady state, expiring as many transactions as it creates, when the 25 s
# window starts; the 10 s search runs never reach that point.
FINAL_WARM=${FINAL_WARM:-35}

# ---------------------------------------------------------------- users (both servers)
# users.csv in the anchor's format; numbers are digits only (our rule); secrets have
# letters and a digit, never contain the number (digits mapped to letters + one '9').
python3 - "$OUT" "$USERS" "$FIRST_NUMBER" "$DOMAIN" <<'PY'
import os, sys
out, n, first, dom = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
tr = str.maketrans("0123456789", "abcdefghij")
rows = [(str(first + i), "Pw" + str(first + i).translate(tr) + "-9z") for i in range(n)]
for num, sec in rows:
    assert num not in sec and 8 <= len(sec) <= 64
with open(f"{out}/users.csv", "w") as f:
    f.write("SEQUENTIAL\n")
    for num, sec in rows:
        f.write(f"{num};[authentication username={num} password={sec}];{dom}\n")
os.makedirs(f"{out}/kamailio-db", exist_ok=True)
with open(f"{out}/kamailio-db/htable", "w") as f:   # same layout as the anchor's gen_users.sh
    f.write("id(int,auto) key_name(string) key_type(int) value_type(int) key_value(string) expires(int) \n")
    for i, (num, sec) in enumerate(rows, 1):
        f.write(f"{i}:{num}:0:0:{sec}:0\n")
with open(f"{out}/kamailio-db/version", "w") as f:
    f.write("table_name(string) table_version(int) \nsubscriber:7\nhtable:2\nlocation:9\n")
PY
[ -s "$OUT/users.csv" ] || { echo "could not write users.csv" >&2; exit 2; }
LAST_USER=$((FIRST_NUMBER + USERS - 1))
sed -n "1p;\$p" "$OUT/users.csv" > "$OUT/one_user.csv"   # SEQUENTIAL + the last user

# One registration (401 then 200) of the last user; 0 if it registered.
one_register() { # target dir
  ( cd "$2" && timeout 20 sipp "$1" -sf "$SCEN" -inf "$OUT/one_user.csv" -i 127.0.0.1 -p "$LOCAL_PORT" \
      -t u1 -m 1 -recv_timeout 3000 -timeout 10s -timeout_error -nostdin > one_register.log 2>&1 )
}

# Before each trial: wait until the server is idle (< SETTLE_PCT of a core over 1 s, at most
# SETTLE_MAX_S). A stateful server keeps working after an overloaded trial (backlog, and
# UDP non-INVITE transactions live 64*T1 = 32 s in Timer J), which a stateless Kamailio
# does not; without this the next trial starts on a loaded server. Same rule for both.
settle() {
  local i a b
  for i in $(seq 1 "${SETTLE_MAX_S:-40}"); do
    a=$(tree_ticks $SERVER_PIDS); sleep 1; b=$(tree_ticks $SERVER_PIDS)
    [ $(( (b - a) * 100 / CLK_TCK )) -lt "${SETTLE_PCT:-5}" ] && break
  done
  echo "settle: ${i}s" >> "$OUT_DIR/trials.log"
}

# Runs the bisection against SERVER_PIDS/TARGET; sets R_LINE.
measure() { # name
  local name=$1 l0 l1 cpu1k
  l0=$(load1)
  log "$name: load before: $(cat /proc/loadavg); busiest: $(top -bn1 -o %CPU | sed -n '8,10p' | awk '{printf "%s(%s%%) ", $12, $9}')"
  trial_A() {
    settle
    sipp_trial "$1" "$2" "$3" "$4" -- "$TARGET" -sf "$SCEN" -inf "$OUT/users.csv" \
      -i 127.0.0.1 -p "$LOCAL_PORT" -t u1 -recv_timeout 5000
  }
  TRIAL_FN=trial_A
  if [ -n "${FIXED_RATE:-}" ]; then
    trial_A "$FIXED_RATE" "${FINAL_WARM:-5}" "${FINAL_MEAS:-25}" "final_r$FIXED_RATE"; log_trial "$FIXED_RATE" FINAL
    F_RATE=$([ "$T_OK" = 1 ] && echo "$FIXED_RATE" || echo 0)
  else
    find_max_rate
  fi
  l1=$(load1)
  cpu1k=$(awk -v t="$T_SRV_TICKS" -v hz="$CLK_TCK" -v ok="$T_OKW" \
    'BEGIN{ if (ok<=0) {print "n/a"} else printf "%.1f", t*1000.0/hz/ok*1000 }')
  R_LINE="register: server=$name regs_per_s=$F_RATE achieved_per_s=$T_ACH fail_pct=$T_FAILPCT retrans=$T_RETR server_cpu_pct=$T_SRV_CPU gen_cpu_pct=$T_GEN_CPU cpu_ms_per_1k_regs=$cpu1k users=$USERS load1_start=$l0 load1_end=$l1 out=$OUT_DIR"
  echo "$R_LINE" > "$OUT_DIR/summary.txt"
  echo "final sipp: $T_CMD" >> "$OUT_DIR/summary.txt"
  log "$R_LINE"
}

declare -A LINE RATE CPU1K
for server in $SERVERS; do
  OUT_DIR=$OUT/$server; mkdir -p "$OUT_DIR"
  pre=("${PRIO[@]}"); [ -n "$SERVER_CPUS" ] && pre+=(taskset -c "$SERVER_CPUS")
  case $server in
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
    DATA=$(mktemp -d /tmp/pbx-loadtest.XXXXXX)
    "${pre[@]}" "$PBX_BIN" up --data-dir "$DATA" --http "127.0.0.1:$HTTP_PORT" --sip "$TARGET" \
      --sip-digest md5 --base-domain "$BASE_DOMAIN" --edge-http "127.0.0.1:$EDGE_PORT" \
      --sip-keepalive "${PBX_KEEPALIVE:-0}" \
      > "$OUT_DIR/server.log" 2>&1 &
    PBX_PID=$!; remember_pid "$PBX_PID"; SERVER_PIDS=$PBX_PID
    for _ in $(seq 1 300); do grep -q "Data directory:" "$OUT_DIR/server.log" && break
      kill -0 "$PBX_PID" 2>/dev/null || break; sleep 0.2; done
    grep -q "Data directory:" "$OUT_DIR/server.log" \
      || { echo "pbx up did not start, see $OUT_DIR/server.log" >&2; tail -20 "$OUT_DIR/server.log" >&2; exit 5; }
    API=http://127.0.0.1:$HTTP_PORT; TOKEN=$(cat "$DATA/operator.token")
    log "pbx up pid=$PBX_PID api=$API sip=$TARGET data=$DATA"
    # Tenant + USERS extensions over the HTTP API (python3 http.client, one keep-alive
    # connection; `pbx extension create` would be one process per extension).
    t0=$(now_ms)
    python3 "$HERE/provision.py" "$API" "$TOKEN" "$SLUG" "$DOMAIN" "$OUT/users.csv" >&2 \
      || { echo "provisioning failed" >&2; exit 5; }
    log "provisioned $USERS extensions in $(( $(now_ms) - t0 )) ms; waiting for the edge"
    ok=
    for _ in $(seq 1 600); do   # <= 60 s
      n=$(curl -s "http://127.0.0.1:$EDGE_PORT/tenants" | python3 -c 'import json,sys
d=[t for t in json.load(sys.stdin) if t["fqdn"]==sys.argv[1]]; print(len(d[0]["extensions"]) if d else 0)' "$DOMAIN" 2>/dev/null)
      if [ "${n:-0}" -ge "$USERS" ] && one_register "$TARGET" "$OUT_DIR"; then ok=1; break; fi
      sleep 0.1
    done
    [ -n "$ok" ] || { echo "the edge never registered $LAST_USER@$DOMAIN (edge has ${n:-0} extensions), see $OUT_DIR/one_register.log" >&2; exit 5; }
    log "edge has $USERS extensions; $LAST_USER@$DOMAIN registered (401 then 200) after $(( $(now_ms) - t0 )) ms"
    measure pbx
    log "pbx log lines during the run: $(wc -l < "$OUT_DIR/server.log"); warnings/errors: $(grep -c -E 'WARN|ERROR' "$OUT_DIR/server.log")"
    kill "$PBX_PID" 2>/dev/null; for _ in $(seq 1 50); do kill -0 "$PBX_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$PBX_PID" 2>/dev/null
    rm -rf "$DATA"
    ;;
  kamailio)
    # ------------------------------------------------------------ 4. anchor
    TARGET=127.0.0.1:$KAM_PORT
    ensure_port_free "$KAM_PORT"
    "${pre[@]}" /usr/sbin/kamailio -f "$KAM_CFG" -DD -E -m 256 -M 16 -A "DBURL=\"text://$OUT/kamailio-db\"" \
      > "$OUT_DIR/server.log" 2>&1 &
    KAM_PID=$!; remember_pid "$KAM_PID"; SERVER_PIDS=$KAM_PID
    wait_udp_port "$KAM_PORT" || { tail -20 "$OUT_DIR/server.log" >&2; exit 5; }
    one_register "$TARGET" "$OUT_DIR" || { echo "kamailio did not register $LAST_USER, see $OUT_DIR/one_register.log" >&2; exit 5; }
    log "kamailio pid=$KAM_PID on $TARGET; $LAST_USER@$DOMAIN registered"
    measure kamailio
    kill "$KAM_PID" 2>/dev/null; for _ in $(seq 1 50); do kill -0 "$KAM_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$KAM_PID" 2>/dev/null
    ;;
  *) echo "unknown server $server" >&2; exit 2 ;;
  esac
  LINE[$server]=$R_LINE; RATE[$server]=$F_RATE
  CPU1K[$server]=$(sed 's/.*cpu_ms_per_1k_regs=\([^ ]*\).*/\1/' <<<"$R_LINE")
  sleep "${PAUSE_S:-3}"
done

for server in $SERVERS; do echo "${LINE[$server]}"; done
if [ -n "${LINE[pbx]:-}" ] && [ -n "${LINE[kamailio]:-}" ]; then
  awk -v rp="${RATE[pbx]}" -v rk="${RATE[kamailio]}" -v cp="${CPU1K[pbx]}" -v ck="${CPU1K[kamailio]}" 'BEGIN{
    r = (rk>0) ? sprintf("%.2f", rp/rk) : "n/a";
    c = (ck+0>0 && cp+0>0) ? sprintf("%.2f", cp/ck) : "n/a";
    printf "register: ratio=pbx/kamailio=%s cpu_ratio=%s (targets: ratio>=1.0, cpu_ratio<=1.0)\n", r, c }' \
    | tee "$OUT/summary.txt"
fi
