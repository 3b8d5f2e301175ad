# tests/cluster/lib_repl.sh - sourced by the replication tests (test_repl_*.sh) instead of lib.sh
# (it sources lib.sh itself). Waits on replication, compares servers, runs writers in the
# background and drives tests/tools/faultproxy (found in $LS_TOOLS).
#
#   start_node NAME [serve flags...]
#                     start_server (which gives the server a peer port, kept across restarts);
#                     sets PEER_<NAME> (127.0.0.1:PEERPORT) too
#   peer_of NAME      prints 127.0.0.1:PEERPORT
#   node_log NAME     the server's log file
#   wait_caught_up DOWN UP [SECONDS] until DOWN is live at UP's seq (fails the test on timeout)
#   assert_same_digest A B [digest args...]     the same digest, item count and seq
#   check_bodies NAME FILE [WHAT]    every "PATH BODY ..." line of FILE reads back from NAME
#   writer_loop NAME PREFIX COUNT ACKFILE [put flags...]    puts, one line per acknowledged one
#   wait_pids SECONDS PID...         wait for background jobs (fails the test on timeout)
#   start_proxy NAME TARGET          a faultproxy on a new port to TARGET (HOST:PORT): sets
#                                    PROXY_<NAME> (HOST:PORT); log in $T/proxy-NAME.log
#   proxy_set NAME LINES...          rewrite its control file ("delay 200", "stall 1",
#                                    "refuse 1") and wait until the proxy applied it
#   proxy_cut NAME                   reset every connection through it (SIGUSR1)
#   stop_proxy NAME
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LS_TOOLS=${LS_TOOLS:-$(dirname "$LOCKSTEP_SERVE")}
FAULTPROXY=$LS_TOOLS/faultproxy

declare -A _PROXY_PID=() _PROXY_GEN=() _PROXY_PORT=()

# the test's own line that called into these helpers (fail names a line of this file otherwise)
_at() {
    local i=1
    while [[ ${BASH_SOURCE[$i]:-} == */lib*.sh ]]; do i=$((i + 1)); done
    printf '%s:%s' "$(basename "${BASH_SOURCE[$i]:-?}")" "${BASH_LINENO[$((i - 1))]:-?}"
}

# lib.sh gives every server a peer port (--listen), kept across restarts
peer_of() { printf '127.0.0.1:%s' "${_LISTEN[$1]}"; }
node_log() { printf '%s/%s.log' "$T" "$1"; }

# start_node NAME [FLAGS...]: start_server, plus PEER_<NAME>
start_node() {
    local name=$1
    shift
    start_server "$name" "$@"
    [[ -n "${_LISTEN[$name]:-}" ]] || fail "lib.sh gave $name no peer port"
    printf -v "PEER_$name" '%s' "$(peer_of "$name")"
}

# true when DOWN is live and at UP's seq
_caught_up() {
    local up down
    up=$(lsc "$2" status --json 2>/dev/null | jq -r '.seq') || return 1
    down=$(lsc "$1" status --json 2>/dev/null | jq -r '"\(.state) \(.seq)"') || return 1
    [[ "$down" == "live $up" ]]
}

# wait_caught_up DOWN UP [SECONDS]: fails the test on timeout
wait_caught_up() {
    local down=$1 up=$2 limit=${3:-30}
    if ! wait_until "$limit" _caught_up "$down" "$up"; then
        fail "[$(_at)] $down did not catch up with $up within ${limit}s: $down: $(lsc "$down" status --json 2>&1 | jq -c '{state,seq,upstream_seq,last_sync,last_error}' 2>&1); $up seq $(seq_of "$up" 2>&1)"
    fi
}

# assert_same_digest A B [digest args...]: digest, item count and seq all equal
assert_same_digest() {
    local a=$1 b=$2 da db
    shift 2
    da=$(lsc "$a" digest --json "$@" | jq -c '{seq,items,digest}')
    db=$(lsc "$b" digest --json "$@" | jq -c '{seq,items,digest}')
    assert_eq "$da" "$db" "[$(_at)] digest ${*:-} of $b against $a"
}

# ---------------------------------------------------------------- faultproxy

start_proxy() {
    local name=$1 target=$2 port i pid logf
    [[ -x "$FAULTPROXY" ]] || fail "faultproxy not built ($FAULTPROXY); set LS_TOOLS"
    logf="$T/proxy-$name.log"
    for ((i = 0; i < 5; i++)); do
        port=$(free_port)
        : >"$T/proxy-$name.ctl"
        "$FAULTPROXY" --listen "$port" --target "$target" --control "$T/proxy-$name.ctl" \
            --max-runtime 600 2>>"$logf" &
        pid=$!
        bg_track "$pid"
        if wait_until 5 grep -q "listening on 127.0.0.1:$port" "$logf"; then
            _PROXY_PID[$name]=$pid
            _PROXY_PORT[$name]=$port
            _PROXY_GEN[$name]=0
            printf -v "PROXY_$name" '127.0.0.1:%s' "$port"
            return 0
        fi
        _signal TERM "$pid"
        wait "$pid" 2>/dev/null || true
    done
    fail "faultproxy $name did not start: $(tail -n 3 "$logf")"
}

# proxy_set NAME LINE...: the whole control state ("delay MS", "stall 0|1", "refuse 0|1");
# what is not given is reset (delay 0, stall 0, refuse 0)
proxy_set() {
    local name=$1 gen ctl
    shift
    gen=$((${_PROXY_GEN[$name]} + 1))
    _PROXY_GEN[$name]=$gen
    ctl="$T/proxy-$name.ctl"
    {
        echo "gen $gen"
        echo "delay 0"
        echo "stall 0"
        echo "refuse 0"
        printf '%s\n' "$@"
    } >"$ctl.tmp"
    mv "$ctl.tmp" "$ctl"
    wait_until 5 grep -q "control gen $gen applied" "$T/proxy-$name.log" ||
        fail "faultproxy $name did not apply control gen $gen"
}

proxy_cut() {
    local name=$1 before
    before=$(grep -c 'cut: reset' "$T/proxy-$name.log" || true)
    _signal USR1 "${_PROXY_PID[$name]}"
    wait_until 5 _grep_count_gt 'cut: reset' "$T/proxy-$name.log" "$before" ||
        fail "faultproxy $name did not cut"
}
_grep_count_gt() { (($(grep -c "$1" "$2" || true) > $3)); }

stop_proxy() {
    local pid=${_PROXY_PID[$1]}
    _signal TERM "$pid"
    bg_wait "$pid" 10 || true
}

# ---------------------------------------------------------------- writers

# writer_loop NAME PREFIX COUNT ACKFILE [put flags...]: COUNT puts of PREFIX/i to NAME, one after
# the other, with the body "PREFIX-i" less its leading slash (/w/3 gets "w-3"); "PATH BODY SEQ" per
# acknowledged put in ACKFILE, failures in ACKFILE.err. Run it in the background and bg_track it. It stops early once ACKFILE.stop exists.
writer_loop() {
    local name=$1 prefix=$2 count=$3 ack=$4 i out rc
    shift 4
    : >"$ack"
    for ((i = 1; i <= count; i++)); do
        [[ ! -e "$ack.stop" ]] || break
        rc=0
        out=$(printf '%s-%d' "${prefix#/}" "$i" | lsc "$name" put "$prefix/$i" - "$@" 2>>"$ack.err") || rc=$?
        if ((rc == 0)); then
            echo "$prefix/$i ${prefix#/}-$i ${out##* }" >>"$ack"
        else
            echo "$prefix/$i rc=$rc" >>"$ack.err"
        fi
    done
}

# wait_pids SECONDS PID...: waits for background jobs, at most SECONDS in all; fails the test
# when one is still running then (it is killed at exit)
wait_pids() {
    local limit=$1 pid end
    shift
    end=$((SECONDS + limit))
    for pid in "$@"; do
        while _alive "$pid"; do
            ((SECONDS < end)) || fail "background job $pid still running after ${limit}s"
            sleep 0.1
        done
        wait "$pid" 2>/dev/null || true
    done
}

# check_bodies NAME FILE [WHAT]: every "PATH BODY ..." line of FILE reads back from NAME with
# exactly that body (one python process: quick for thousands of items)
check_bodies() {
    local name=$1 file=$2 what=${3:-acknowledged writes} out
    out=$(python3 - "${_URL[$name]}" "$file" <<'PY'
import sys, urllib.request, urllib.error, urllib.parse
base, path = sys.argv[1], sys.argv[2]
bad = 0
n = 0
for line in open(path):
    parts = line.split()
    if len(parts) < 2:
        continue
    n += 1
    p, body = parts[0], parts[1]
    try:
        got = urllib.request.urlopen(base + "/v1/items" + urllib.parse.quote(p), timeout=10).read().decode()
    except urllib.error.HTTPError as e:
        got = "<HTTP %d>" % e.code
    if got != body:
        bad += 1
        if bad <= 5:
            print("%s: expected %r, got %r" % (p, body, got))
print("checked %d, %d wrong" % (n, bad))
sys.exit(1 if bad else 0)
PY
    ) || fail "[$(_at)] $what on $name: $out"
}

# ---------------------------------------------------------------- logs

# assert_same_log A B: B's change log equals A's, entry by entry (seq, op, path, version, to,
# published); names the first seq that is missing on one side or differs. Equal digests do not
# show a replica that skipped a change later overwritten; equal logs do.
assert_same_log() {
    local a=$1 b=$2 out
    out=$(python3 - "${_URL[$a]}" "${_URL[$b]}" "$a" "$b" <<'PY'
import json, sys, urllib.request
def log(base):
    out, since = {}, 0
    while True:
        r = json.load(urllib.request.urlopen("%s/v1/changes?since=%d&limit=10000" % (base, since), timeout=30))
        for c in r["changes"]:
            out[c["seq"]] = (c["op"], c["path"], c.get("version"), c.get("to"), c.get("published", False))
        if not r["changes"]:
            return out
        since = r["next"]
la, lb = log(sys.argv[1]), log(sys.argv[2])
na, nb = sys.argv[3], sys.argv[4]
missing = sorted(set(la) - set(lb))
extra = sorted(set(lb) - set(la))
differ = sorted(s for s in set(la) & set(lb) if la[s] != lb[s])
if missing or extra or differ:
    if missing: print("%d seqs of %s missing on %s, first %s" % (len(missing), na, nb, missing[:10]))
    if extra: print("%d seqs on %s not on %s, first %s" % (len(extra), nb, na, extra[:10]))
    if differ: print("seq %d differs: %s %s, %s %s" % (differ[0], na, la[differ[0]], nb, lb[differ[0]]))
    sys.exit(1)
print("%d entries equal" % len(la))
PY
    ) || fail "[$(_at)] log of $b against $a: $out"
    log "log of $b equals $a's: $out"
}
