#!/usr/bin/env bash
# bench/repl.sh - replication figures: lockstep next to Redis replication, same workload, same
# run, same machine (bench/README.md, "Replication"). run.sh calls it last; it also runs alone.
#
# It runs once per medium of BENCH_MEDIA ("shm disk": /dev/shm, where fsync is free and what is
# measured is CPU and protocol, and BENCH_DISK_DIR, /tmp, where fsync counts), each run with a
# fresh lockstep primary + replica and a fresh Redis master + replica on that medium. Each
# scenario runs lockstep, then Redis, so that whatever else the machine does weighs on both alike.
# Documents are 1 KiB of pseudo-random letters, each its own (nothing to gain by compressing
# across documents), with unique keys; the CPU per document of each process is read from /proc.
#   0  redis-benchmark -P 64 -t set -d 1024 -n 200000 against the Redis master (and with -r, for
#      unique keys), printed next to what the harness gets from Redis in 1: a comparison is only
#      worth its weaker side.
#   1  streamed writes: BENCH_REPL_DOCS (200k) docs in batches of BENCH_REPL_STREAM_BATCH (64)
#      over BENCH_REPL_STREAM_CONNS (4) connections (lockstep: POST /v1/batch; Redis: pipelines
#      of SETs from bench_loadgen redis, two in flight a connection), timed until the replica
#      has applied them (lockstep: replica seq == primary seq; Redis: slave_repl_offset).
#   4  one primary feeding BENCH_REPL_FANOUT (4) replicas, the same writes: the primary's CPU per
#      document against 1's (one replica). Run after 1; the extra replicas first sync what is there.
#   2  one `lockstep import` of BENCH_REPL_IMPORT (200k) docs (an NDJSON file made before the
#      clock starts), timed until the replica has applied them; Redis: the same keys, pipelined
#      as in 1.
#   3  catch-up: the replica stopped, BENCH_REPL_CATCHUP (100k) docs written, the replica
#      restarted: time until caught up. lockstep must say last_sync "continue"; Redis 7.0 with
#      appendonly yes asks for a full resync after a restart (what happened is printed).
# With BENCH_REPL_EXTRA=1 (shm only), then:
#   snapshot    the primaries filled to BENCH_REPL_SNAPSHOT (1M) docs, then a fresh replica:
#               time until live; peak RSS (VmHWM; the primary's reset just before) of both sides.
#   stalled     that replica SIGSTOPped, BENCH_REPL_STALL (1M) more docs written; the primary's
#               RSS sampled every second. The lockstep primary runs with --heartbeat-timeout 10m
#               so that the stalled replica stays connected (the default 10s would drop it).
#               Redis: --client-output-buffer-limit "replica 256mb 64mb 60" (its default).
# Then a table of figures and lockstep/Redis ratios, one per medium.
#
# Redis: Debian's redis-server, never the system service: every instance on free 127.0.0.1
# ports with its own dir, appendonly yes + appendfsync everysec (the same durability class as
# lockstep's primary, lockstep being stricter: an acknowledged write is on disk), save "" (no
# RDB snapshots), repl-backlog-size 256mb, repl-diskless-sync-delay 0.
#
# Environment: BENCH_REPL_DOCS BENCH_REPL_IMPORT BENCH_REPL_CATCHUP BENCH_REPL_FANOUT
#   BENCH_REPL_STREAM_BATCH BENCH_REPL_STREAM_CONNS BENCH_REPL_EXTRA BENCH_REPL_SNAPSHOT
#   BENCH_REPL_STALL BENCH_REPL_LS_FLAGS (extra flags for every lockstep serve)
#   BENCH_REPL_REPLICA_FLAGS (extra flags for lockstep replicas, e.g. --sync normal)
#   BENCH_MEDIA ("shm disk") BENCH_DISK_DIR (/tmp) BENCH_REPL_DIR (one directory instead of the
#   media) BENCH_REPL_BUDGET (seconds a medium, 480: the extra phases are skipped past it)
#   BENCH_REPL_SCENARIOS ("1 2 3 4": which scenarios run)
#   BENCH_STEP_LIMIT (120) LOCKSTEP BENCH_BUILD_DIR
# It stops every process it started (by PID), removes its directories, and exits 0 unless it
# cannot run at all.
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${BENCH_REPL_DIR:-}" ]; then # one run per medium
    for medium in ${BENCH_MEDIA:-shm disk}; do
        case $medium in
        shm) d=/dev/shm ;;
        disk) d=${BENCH_DISK_DIR:-/tmp} ;;
        *) d=$medium ;;
        esac
        BENCH_REPL_DIR=$d "${BASH_SOURCE[0]}"
    done
    exit 0
fi
BUILD=${BENCH_BUILD_DIR:-$ROOT/build/release}
LOCKSTEP=${LOCKSTEP:-$ROOT/build/lockstep}
LOADGEN=$BUILD/bench_loadgen

DOCS=${BENCH_REPL_DOCS:-200000}
IMPORT=${BENCH_REPL_IMPORT:-200000}
CATCHUP=${BENCH_REPL_CATCHUP:-100000}
FANOUT=${BENCH_REPL_FANOUT:-4}
STREAM_BATCH=${BENCH_REPL_STREAM_BATCH:-64}
STREAM_CONNS=${BENCH_REPL_STREAM_CONNS:-4}
LS_R_FLAGS=${BENCH_REPL_REPLICA_FLAGS:-}
EXTRA=${BENCH_REPL_EXTRA:-0}
SCENARIOS=${BENCH_REPL_SCENARIOS:-1 2 3 4} # which of the four run (4 compares with 1)
SNAP=${BENCH_REPL_SNAPSHOT:-1000000}
STALL=${BENCH_REPL_STALL:-1000000}
BASE=$BENCH_REPL_DIR
BUDGET=${BENCH_REPL_BUDGET:-480}
BATCH=${BENCH_BATCH:-1000}
CONNS=${BENCH_CONNS:-2}
LIMIT=${BENCH_STEP_LIMIT:-120}
BIG_LIMIT=$((LIMIT * 2)) # the 1M-document steps
BODY=1024
LS_FLAGS=${BENCH_REPL_LS_FLAGS:-} # extra serve flags for every lockstep server, e.g. --compress none
REDIS_LIMIT="replica 256mb 64mb 60"

declare -A R # figures: R[key] = value
BENCH_NAME="repl bench"
source "$ROOT/bench/lib.sh"

secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b - a) / 1e6 }'; }           # secs T0 T1
rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { if (b > a) printf "%.0f", n * 1e6 / (b - a) }'; }
T_START=$(now_us)
elapsed() { echo $((($(now_us) - T_START) / 1000000)); }
over_budget() { [ "$(elapsed)" -ge "$BUDGET" ]; }
want() { [[ " $SCENARIOS " == *" $1 "* ]]; } # want N: scenario N is in BENCH_REPL_SCENARIOS


# /proc figures
kb() { sed -n "s/^$2:[[:space:]]*\([0-9]*\) kB/\1/p" "/proc/$1/status" 2>/dev/null; } # kb PID FIELD
mb() { awk -v k="${1:-}" 'BEGIN { if (k != "") printf "%.0f", k / 1024 }'; }
reset_hwm() { echo 5 >"/proc/$1/clear_refs" 2>/dev/null; } # VmHWM := VmRSS (Linux >= 4.0)
proc_cpu() { # CPU seconds of PID, its threads and its reaped children (Redis forks)
    sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null |
        awk -v t="$(getconf CLK_TCK)" '{ printf "%.2f", ($12 + $13 + $14 + $15) / t }'
}
us_per() { awk -v a="${1:-}" -v b="${2:-}" -v n="$3" 'BEGIN { if (a != "" && b != "") printf "%.1f", (b - a) * 1e6 / n }'; }

# ---------------------------------------------------------------- checks

[ -x "$LOCKSTEP" ] || { say "repl bench: $LOCKSTEP is missing: cannot run"; exit 1; }
[ -x "$LOADGEN" ] || { say "repl bench: $LOADGEN is missing (make bench): cannot run"; exit 1; }
command -v timeout >/dev/null || { say "repl bench: timeout(1) is missing: cannot run"; exit 1; }
HAVE_REDIS=1
for t in redis-server redis-cli; do
    command -v $t >/dev/null || { HAVE_REDIS=0; say "repl bench: $t is missing (scripts/deps.sh bench; redis-tools): lockstep figures only"; }
done
HAVE_CURL=1
command -v curl >/dev/null || HAVE_CURL=0

# Space: what the stores, the AOF files and the Redis datasets take at their largest (measured:
# ~1.6 KB a document in a lockstep store, ~1.4 KB in Redis' memory, ~1.1 KB in an AOF), with
# each side's 1M-document phases run one after the other. Halve the big phases until it fits.
[ "$EXTRA" = 1 ] || SNAP=0 STALL=0
fits() {
    local p=$((2 * DOCS + IMPORT + CATCHUP)) s t need a b avail shm
    s=$((SNAP > p ? SNAP : p))
    t=$((s + STALL))
    a=$((16 * (t + s) + (14 + 22 + 14 + 11) * s)) # lockstep stalled: its stores, Redis at s docs
    b=$(((14 + 22) * t + (14 + 11) * s + 11 * STALL)) # Redis stalled (lockstep gone): + the RESP file
    need=$(((a > b ? a : b) / 10)) # KiB
    avail=$(sed -n 's/^MemAvailable: *\([0-9]*\) kB/\1/p' /proc/meminfo)
    shm=$(df -Pk "$BASE" 2>/dev/null | awk 'NR == 2 { print $4 }')
    [ "$need" -lt "$((avail * 8 / 10))" ] && [ "$need" -lt "${shm:-0}" ]
}
SCALED=
while [ "$SNAP" -gt 0 ] && ! fits && [ "$SNAP" -gt 100000 ]; do
    SNAP=$((SNAP / 2))
    STALL=$((STALL / 2))
    SCALED="scaled down to fit memory/$BASE: snapshot $SNAP, stalled $STALL"
done
[ -n "$SCALED" ] && say "repl bench: $SCALED"

if ! WORK=$(mktemp -d "$BASE/lockstep-repl.XXXXXX"); then
    say "repl bench: cannot create a directory in $BASE: cannot run"
    exit 1
fi
DIRS+=("$WORK")
FSTYPE=$(stat -f -c %T "$WORK" 2>/dev/null || echo '?')

# ---------------------------------------------------------------- lockstep

LS_P= LS_R= LS_P_HTTP= LS_P_PEER= LS_R_HTTP= LS_R_PEER=

# ls_start VAR NAME DATA HTTPPORT PEERPORT LOG [ARGS...]: sets VAR to the server's pid
ls_start() {
    local var=$1 name=$2 data=$3 hp=$4 pp=$5 log=$6 pid
    shift 6
    "$LOCKSTEP" serve --data "$data" --http "127.0.0.1:$hp" --listen "127.0.0.1:$pp" --name "$name" \
        --log-level info $LS_FLAGS "$@" >>"$log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    printf -v "$var" '%s' "$pid"
}

ls_status() {
    if [ $HAVE_CURL = 1 ]; then
        curl -s --max-time 3 "http://127.0.0.1:$1/v1/status"
    else
        "$LOCKSTEP" status --json --server "http://127.0.0.1:$1" 2>/dev/null
    fi
}

LS_FIRST_UP= # when a replica being watched first answered
# ls_caught_up PORT TARGET [live]: the server's seq >= TARGET (and state live)
ls_caught_up() {
    local s seq
    s=$(ls_status "$1") || return 1
    [ -n "$s" ] || return 1
    [ -n "$LS_FIRST_UP" ] || LS_FIRST_UP=$(now_us)
    seq=$(jget seq "$s")
    [ "${seq:-0}" -ge "$2" ] || return 1
    [ "${3:-}" != live ] || [ "$(jget state "$s")" = live ]
}
ls_seq() { jget seq "$(ls_status "$1")"; }

# ls_write TAG N OUT: N docs to the primary via POST /v1/batch; sets WROTE (docs applied)
ls_write() {
    local lim=$LIMIT
    [ "$2" -ge 500000 ] && lim=$BIG_LIMIT
    timeout -k 5 "$((lim + 10))" "$LOADGEN" batch --port "$LS_P_HTTP" --docs "$2" --batch "$BATCH" \
        --conns "$CONNS" --body "$BODY" --tag "$1" --time-limit "$lim" >"$3" 2>&1
    WROTE=$(sed -n 's/^RESULT.* docs=\([0-9]*\).*/\1/p' "$3")
    [ -n "$WROTE" ] || { say "  lockstep write FAILED:"; tail -n 3 "$3" >&2; WROTE=0; return 1; }
    [ "$WROTE" = "$2" ] || say "  (lockstep: time limit, $WROTE of $2 written)"
    return 0
}

# ---------------------------------------------------------------- Redis

RD_M= RD_R= RD_M_PORT= RD_R_PORT= RD_DEAD_PORT=

# rd_start VAR PORT DIR [ARGS...]
rd_start() {
    local var=$1 port=$2 dir=$3 pid
    shift 3
    mkdir -p "$dir"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --logfile "$dir/redis.log" \
        --daemonize no --save '' --appendonly yes --appendfsync everysec "$@" >/dev/null 2>&1 &
    pid=$!
    PIDS+=("$pid")
    printf -v "$var" '%s' "$pid"
    poll_until 15 rd_ping "$port"
}
rcli() { local p=$1; shift; timeout -k 2 10 redis-cli -p "$p" "$@" 2>/dev/null | tr -d '\r'; }
rd_ping() { [ "$(rcli "$1" ping)" = PONG ]; }
rget() { sed -n "s/^$1:\(.*\)/\1/p" <<<"$2" | head -n 1; } # rget KEY INFO-TEXT
rd_moff() { rget master_repl_offset "$(rcli "$1" info replication)"; }
# rd_caught_up REPLICAPORT TARGET-OFFSET: link up and the replica has processed up to TARGET
rd_caught_up() {
    local i
    i=$(rcli "$1" info replication)
    [ "$(rget master_link_status "$i")" = up ] && [ "$(rget slave_repl_offset "$i")" -ge "$2" ] 2>/dev/null
}
rd_linked() { [ "$(rget master_link_status "$(rcli "$1" info replication)")" = up ]; }
rd_no_replicas() { [ "$(rget connected_slaves "$(rcli "$1" info replication)")" = 0 ]; }
rd_synced() { rd_caught_up "$1" "$(rd_moff "$2")"; } # rd_synced REPLICAPORT MASTERPORT

# gen_resp FILE TAG N: N SET commands of 1 KiB values with unique keys bench:TAG:NNNNNNNNN
gen_resp() {
    awk -v n="$3" -v tag="$2" -v body="$BODY" 'BEGIN {
        srand(42); al = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,.-"
        for (i = 0; i < body; i++) p = p substr(al, int(rand() * length(al)) + 1, 1)
        for (d = 0; d < n; d++) {
            k = sprintf("bench:%s:%09d", tag, d); v = sprintf("doc %d ", d); v = v substr(p, length(v) + 1)
            printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, length(v), v
        } }' >"$1"
}
# rd_pipe FILE N OUT: redis-cli --pipe of FILE to the master; 0 when all N replies came back clean
rd_pipe() {
    local lim=$LIMIT
    [ "$2" -ge 500000 ] && lim=$BIG_LIMIT
    timeout -k 5 "$lim" redis-cli -p "$RD_M_PORT" --pipe <"$1" >"$3" 2>&1
    grep -q "errors: 0, replies: $2\$" "$3" || { say "  redis write FAILED:"; tail -n 3 "$3" >&2; return 1; }
}
# rd_write TAG N: generates (not timed) then pipes; sets T0/T1 around the pipe
rd_write() {
    local f=$WORK/resp.$1
    gen_resp "$f" "$1" "$2"
    T0=$(now_us)
    rd_pipe "$f" "$2" "$WORK/redis-pipe.$1.out"
    local rc=$?
    T1=$(now_us)
    rm -f "$f"
    return $rc
}

# ---------------------------------------------------------------- start the primaries

say ""
say "== replication: lockstep vs Redis ($(nproc) CPUs, $BASE ($FSTYPE), load average $(cut -d' ' -f1-3 /proc/loadavg))"
[ "$FSTYPE" = tmpfs ] || say "   (not a tmpfs: fsync costs count on both sides)"
R[load0]=$(cut -d' ' -f1-3 /proc/loadavg)

pick_port && LS_P_HTTP=$PORT && pick_port && LS_P_PEER=$PORT && pick_port && LS_R_HTTP=$PORT &&
    pick_port && LS_R_PEER=$PORT || { say "repl bench: no free ports"; exit 0; }
ls_start LS_P ls-p "$WORK/ls-p" "$LS_P_HTTP" "$LS_P_PEER" "$WORK/ls-p.log" --heartbeat-timeout 10m
if ! "$LOADGEN" status --port "$LS_P_HTTP" --time-limit 15 >/dev/null 2>&1; then
    say "repl bench: the lockstep primary does not start:"
    tail -n 5 "$WORK/ls-p.log" >&2
    exit 0
fi

if [ $HAVE_REDIS = 1 ]; then
    say "   $(redis-server --version | cut -d' ' -f1-3)"
    pick_port && RD_M_PORT=$PORT && pick_port && RD_R_PORT=$PORT && pick_port && RD_DEAD_PORT=$PORT
    if ! rd_start RD_M "$RD_M_PORT" "$WORK/rd-m" --repl-backlog-size 256mb \
        --repl-diskless-sync-delay 0 --client-output-buffer-limit "$REDIS_LIMIT"; then
        say "repl bench: redis-server does not start: lockstep figures only"
        tail -n 5 "$WORK/rd-m/redis.log" >&2
        HAVE_REDIS=0
    fi
fi

# ---------------------------------------------------------------- the four scenarios

# ls_wait_replica PORT TARGET LIMIT: the replica's seq reaches TARGET
ls_wait_replica() { poll_until "$3" ls_caught_up "$1" "${2:-0}"; }

# Scenario 1 and 4 write the same way on both sides: STREAM_BATCH documents a request (lockstep:
# one POST /v1/batch; Redis: a pipeline of SETs) over STREAM_CONNS connections.
ls_stream() { # ls_stream TAG N OUT
    local lim=$LIMIT
    timeout -k 5 "$((lim + 10))" "$LOADGEN" batch --port "$LS_P_HTTP" --docs "$2" --batch "$STREAM_BATCH" \
        --conns "$STREAM_CONNS" --body "$BODY" --tag "$1" --random --time-limit "$lim" >"$3" 2>&1
    WROTE=$(sed -n 's/^RESULT.* docs=\([0-9]*\).*/\1/p' "$3")
    [ -n "$WROTE" ] || { say "  lockstep write FAILED:"; tail -n 3 "$3" >&2; WROTE=0; return 1; }
    [ "$WROTE" = "$2" ] || say "  (lockstep: time limit, $WROTE of $2 written)"
}
rd_stream() { # rd_stream TAG N OUT [CONNS BATCH]
    timeout -k 5 "$((LIMIT + 10))" "$LOADGEN" redis --port "$RD_M_PORT" --docs "$2" \
        --batch "${5:-$STREAM_BATCH}" --conns "${4:-$STREAM_CONNS}" --body "$BODY" --tag "$1" --random \
        --time-limit "$LIMIT" >"$3" 2>&1
    [ "$(sed -n 's/^RESULT.* docs=\([0-9]*\).*/\1/p' "$3")" = "$2" ] ||
        { say "  redis write FAILED:"; tail -n 3 "$3" >&2; return 1; }
}

# Redis driven by its own tool, next to what the harness gets from it (scenario 1's "acknowledged"
# figure): the harness must not be the slower of the two. redis-benchmark's SET writes one key
# over and over unless -r is given; both are printed (-r 100000000: ~unique keys, as the harness).
if [ $HAVE_REDIS = 1 ] && command -v redis-benchmark >/dev/null; then
    rd_start RD_R "$RD_R_PORT" "$WORK/rd-r1" --replicaof 127.0.0.1 "$RD_M_PORT"
    poll_until 20 rd_synced "$RD_R_PORT" "$RD_M_PORT"
    for how in "" "-r 100000000"; do
        # shellcheck disable=SC2086
        out=$(timeout -k 5 "$LIMIT" redis-benchmark -p "$RD_M_PORT" -P 64 -t set -d 1024 -n 200000 $how -q 2>&1 | tr '\r' '\n' | grep -E '^SET: [0-9.]+ requests' | tail -n 1)
        R[rd.bench${how:+_r}]=$(sed -n 's/^SET: \([0-9]*\).*/\1/p' <<<"$out")
        say "   redis-benchmark -P 64 -t set -d 1024 -n 200000 $how (to the master, with its replica): $out"
        rcli "$RD_M_PORT" flushall >/dev/null
        poll_until 30 rd_synced "$RD_R_PORT" "$RD_M_PORT"
    done
elif [ $HAVE_REDIS = 1 ]; then
    say "   redis-benchmark is missing: no figure of Redis driven by its own tool"
    rd_start RD_R "$RD_R_PORT" "$WORK/rd-r1" --replicaof 127.0.0.1 "$RD_M_PORT"
fi

ls_start LS_R ls-r1 "$WORK/ls-r1" "$LS_R_HTTP" "$LS_R_PEER" "$WORK/ls-r1.log" --role replica \
    --upstream "127.0.0.1:$LS_P_PEER" $LS_R_FLAGS
if ! poll_until 60 ls_caught_up "$LS_R_HTTP" 0 live; then
    say "  lockstep replica does not come up:"; tail -n 5 "$WORK/ls-r1.log" >&2
    exit 0
fi

# --- 1. streamed writes until applied on one replica
if want 1; then
say ""
say "-- 1. streamed writes: $DOCS docs, batches of $STREAM_BATCH over $STREAM_CONNS connections, until applied on the replica"
c_p=$(proc_cpu "$LS_P"); c_r=$(proc_cpu "$LS_R")
T0=$(now_us)
if ls_stream s1 "$DOCS" "$WORK/ls-s1.out"; then
    T1=$(now_us)
    target=$(ls_seq "$LS_P_HTTP")
    if ls_wait_replica "$LS_R_HTTP" "$target" "$LIMIT"; then
        T2=$(now_us)
        R[ls.s1]=$(rate "$WROTE" "$T0" "$T2"); R[ls.s1_prim]=$(rate "$WROTE" "$T0" "$T1")
        R[ls.s1_tail]=$(secs "$T1" "$T2")
        R[ls.s1_cpu_p]=$(us_per "$c_p" "$(proc_cpu "$LS_P")" "$WROTE")
        R[ls.s1_cpu_r]=$(us_per "$c_r" "$(proc_cpu "$LS_R")" "$WROTE")
        say "  lockstep: primary done after $(secs "$T0" "$T1") s, replica (seq $target) after $(secs "$T0" "$T2") s: ${R[ls.s1]} docs/s; CPU/doc primary ${R[ls.s1_cpu_p]} us, replica ${R[ls.s1_cpu_r]} us"
    else
        say "  lockstep replica did not catch up (seq $(ls_seq "$LS_R_HTTP") of $target)"
    fi
fi
if [ $HAVE_REDIS = 1 ]; then
    c_p=$(proc_cpu "$RD_M"); c_r=$(proc_cpu "$RD_R")
    T0=$(now_us)
    if rd_stream s1 "$DOCS" "$WORK/rd-s1.out"; then
        T1=$(now_us)
        target=$(rd_moff "$RD_M_PORT")
        if poll_until "$LIMIT" rd_caught_up "$RD_R_PORT" "${target:-0}"; then
            T2=$(now_us)
            R[rd.s1]=$(rate "$DOCS" "$T0" "$T2"); R[rd.s1_prim]=$(rate "$DOCS" "$T0" "$T1")
            R[rd.s1_tail]=$(secs "$T1" "$T2")
            R[rd.s1_cpu_p]=$(us_per "$c_p" "$(proc_cpu "$RD_M")" "$DOCS")
            R[rd.s1_cpu_r]=$(us_per "$c_r" "$(proc_cpu "$RD_R")" "$DOCS")
            say "  redis:    master done after $(secs "$T0" "$T1") s ($(sed -n 's/^redis: .*s, \([0-9]* docs\/s\).*/\1/p' "$WORK/rd-s1.out") by the loader), replica (offset $target, $(rcli "$RD_R_PORT" dbsize) keys) after $(secs "$T0" "$T2") s: ${R[rd.s1]} docs/s; CPU/doc master ${R[rd.s1_cpu_p]} us, replica ${R[rd.s1_cpu_r]} us"
        else
            say "  redis replica did not catch up"
        fi
    fi
fi
fi

# --- 4. one primary feeding 4 replicas: its CPU per document, against scenario 1's
if [ "$FANOUT" -gt 1 ] && want 4; then
    say ""
    say "-- 4. one primary feeding $FANOUT replicas: $DOCS more docs as in 1"
    extra_ls=() extra_rd=() extra_rd_ports=()
    for ((k = 2; k <= FANOUT; k++)); do
        pick_port && hp=$PORT && pick_port && pp=$PORT
        ls_start NEWPID "ls-r$k" "$WORK/ls-r$k" "$hp" "$pp" "$WORK/ls-r$k.log" --role replica \
            --upstream "127.0.0.1:$LS_P_PEER" $LS_R_FLAGS
        extra_ls+=("$NEWPID:$hp")
        if [ $HAVE_REDIS = 1 ]; then
            pick_port && rp=$PORT
            rd_start NEWPID "$rp" "$WORK/rd-r$k" --replicaof 127.0.0.1 "$RD_M_PORT"
            extra_rd+=("$NEWPID"); extra_rd_ports+=("$rp")
        fi
    done
    target=$(ls_seq "$LS_P_HTTP")
    for e in "${extra_ls[@]}"; do poll_until "$BIG_LIMIT" ls_caught_up "${e#*:}" "$target" live ||
        say "  a lockstep replica is not live"; done
    for rp in "${extra_rd_ports[@]}"; do poll_until "$BIG_LIMIT" rd_synced "$rp" "$RD_M_PORT" ||
        say "  a Redis replica did not sync"; done
    c_p=$(proc_cpu "$LS_P")
    T0=$(now_us)
    if ls_stream s4 "$DOCS" "$WORK/ls-s4.out"; then
        target=$(ls_seq "$LS_P_HTTP")
        ok=1
        ls_wait_replica "$LS_R_HTTP" "$target" "$LIMIT" || ok=0
        for e in "${extra_ls[@]}"; do ls_wait_replica "${e#*:}" "$target" "$LIMIT" || ok=0; done
        T2=$(now_us)
        if [ $ok = 1 ]; then
            R[ls.s4]=$(rate "$WROTE" "$T0" "$T2")
            R[ls.s4_cpu_p]=$(us_per "$c_p" "$(proc_cpu "$LS_P")" "$WROTE")
            say "  lockstep: applied on all $FANOUT after $(secs "$T0" "$T2") s: ${R[ls.s4]} docs/s; CPU/doc primary ${R[ls.s4_cpu_p]} us (with one replica: ${R[ls.s1_cpu_p]:-?} us)"
        else
            say "  lockstep: not every replica caught up"
        fi
    fi
    if [ $HAVE_REDIS = 1 ]; then
        c_p=$(proc_cpu "$RD_M")
        T0=$(now_us)
        if rd_stream s4 "$DOCS" "$WORK/rd-s4.out"; then
            target=$(rd_moff "$RD_M_PORT")
            ok=1
            for rp in "$RD_R_PORT" "${extra_rd_ports[@]}"; do poll_until "$LIMIT" rd_caught_up "$rp" "${target:-0}" || ok=0; done
            T2=$(now_us)
            if [ $ok = 1 ]; then
                R[rd.s4]=$(rate "$DOCS" "$T0" "$T2")
                R[rd.s4_cpu_p]=$(us_per "$c_p" "$(proc_cpu "$RD_M")" "$DOCS")
                say "  redis:    applied on all $FANOUT after $(secs "$T0" "$T2") s: ${R[rd.s4]} docs/s; CPU/doc master ${R[rd.s4_cpu_p]} us (with one replica: ${R[rd.s1_cpu_p]:-?} us)"
            else
                say "  redis: not every replica caught up"
            fi
        fi
    fi
    for e in "${extra_ls[@]}"; do stop_pid "${e%%:*}"; done
    for p in "${extra_rd[@]}"; do stop_pid "$p"; done
    for ((k = 2; k <= FANOUT; k++)); do rm -rf "$WORK/ls-r$k" "$WORK/rd-r$k"; done
fi

# --- 2. one `lockstep import` of IMPORT docs until applied on the replica; Redis: the same keys, pipelined
# (The four scenarios always run, each bounded by BENCH_STEP_LIMIT; the budget is for the extra phases.)
if want 2; then
    say ""
    say "-- 2. one lockstep import of $IMPORT incompressible 1 KiB docs (CLI), until applied on the replica"
    if "$LOADGEN" gen --out "$WORK/import.ndjson" --docs "$IMPORT" --body "$BODY" --tag s2 --random >/dev/null 2>&1; then
        c_p=$(proc_cpu "$LS_P"); c_r=$(proc_cpu "$LS_R")
        T0=$(now_us)
        if timeout -k 5 "$LIMIT" "$LOCKSTEP" import "$WORK/import.ndjson" --server "http://127.0.0.1:$LS_P_HTTP" >"$WORK/ls-s2.out" 2>&1; then
            T1=$(now_us)
            target=$(ls_seq "$LS_P_HTTP")
            if ls_wait_replica "$LS_R_HTTP" "$target" "$LIMIT"; then
                T2=$(now_us)
                R[ls.s2]=$(rate "$IMPORT" "$T0" "$T2"); R[ls.s2_prim]=$(rate "$IMPORT" "$T0" "$T1")
                R[ls.s2_tail]=$(secs "$T1" "$T2")
                R[ls.s2_cpu_p]=$(us_per "$c_p" "$(proc_cpu "$LS_P")" "$IMPORT")
                R[ls.s2_cpu_r]=$(us_per "$c_r" "$(proc_cpu "$LS_R")" "$IMPORT")
                say "  lockstep: $(head -n 1 "$WORK/ls-s2.out"); the command took $(secs "$T0" "$T1") s, the replica had it after $(secs "$T0" "$T2") s: ${R[ls.s2]} docs/s; CPU/doc primary ${R[ls.s2_cpu_p]} us, replica ${R[ls.s2_cpu_r]} us"
            else
                say "  lockstep replica did not catch up after the import"
            fi
        else
            say "  lockstep import FAILED:"; tail -n 3 "$WORK/ls-s2.out" >&2
        fi
        rm -f "$WORK/import.ndjson"
    fi
    if [ $HAVE_REDIS = 1 ]; then
        c_p=$(proc_cpu "$RD_M"); c_r=$(proc_cpu "$RD_R")
        T0=$(now_us)
        if rd_stream s2 "$IMPORT" "$WORK/rd-s2.out"; then
            T1=$(now_us)
            target=$(rd_moff "$RD_M_PORT")
            if poll_until "$LIMIT" rd_caught_up "$RD_R_PORT" "${target:-0}"; then
                T2=$(now_us)
                R[rd.s2]=$(rate "$IMPORT" "$T0" "$T2"); R[rd.s2_prim]=$(rate "$IMPORT" "$T0" "$T1")
                R[rd.s2_tail]=$(secs "$T1" "$T2")
                R[rd.s2_cpu_p]=$(us_per "$c_p" "$(proc_cpu "$RD_M")" "$IMPORT")
                R[rd.s2_cpu_r]=$(us_per "$c_r" "$(proc_cpu "$RD_R")" "$IMPORT")
                say "  redis:    the same keys pipelined ($STREAM_BATCH a pipeline, $STREAM_CONNS connections): master done after $(secs "$T0" "$T1") s, replica after $(secs "$T0" "$T2") s: ${R[rd.s2]} docs/s; CPU/doc master ${R[rd.s2_cpu_p]} us, replica ${R[rd.s2_cpu_r]} us"
            else
                say "  redis replica did not catch up"
            fi
        fi
    fi
fi

# --- 3. catch-up of CATCHUP changes after a replica restart
if want 3; then
    say ""
    say "-- 3. catch-up: the replica stopped, $CATCHUP docs written, the replica restarted"
    stop_pid "$LS_R"; LS_R=
    ls_stream s3 "$CATCHUP" "$WORK/ls-s3.out"
    target=$(ls_seq "$LS_P_HTTP")
    LS_FIRST_UP=
    T0=$(now_us)
    ls_start LS_R ls-r1 "$WORK/ls-r1" "$LS_R_HTTP" "$LS_R_PEER" "$WORK/ls-r1.log" --role replica \
        --upstream "127.0.0.1:$LS_P_PEER" $LS_R_FLAGS
    if ls_wait_replica "$LS_R_HTTP" "$target" "$LIMIT"; then
        T1=$(now_us)
        R[ls.s3]=$(secs "$T0" "$T1")
        R[ls.s3_up]=$(secs "$T0" "${LS_FIRST_UP:-$T0}")
        R[ls.s3_how]=$(jget last_sync "$(ls_status "$LS_R_HTTP")")
        R[ls.s3_cpu_r]=$(us_per 0 "$(proc_cpu "$LS_R")" "$WROTE")
        say "  lockstep: caught up (seq $target) in ${R[ls.s3]} s (answering HTTP after ${R[ls.s3_up]} s); last_sync \"${R[ls.s3_how]}\"; replica CPU/doc ${R[ls.s3_cpu_r]} us"
        [ "${R[ls.s3_how]}" = continue ] || say "  WARNING: last_sync is not \"continue\""
    else
        say "  lockstep replica did not catch up after the restart"; tail -n 5 "$WORK/ls-r1.log" >&2
    fi
    if [ $HAVE_REDIS = 1 ]; then
        nps=$(grep -c 'Successful partial resynchronization' "$WORK/rd-r1/redis.log")
        nfull=$(grep -c 'Full resync from master' "$WORK/rd-r1/redis.log")
        rcli "$RD_R_PORT" shutdown >/dev/null
        stop_pid "$RD_R"
        if rd_stream s3 "$CATCHUP" "$WORK/rd-s3.out"; then
            target=$(rd_moff "$RD_M_PORT")
            T0=$(now_us)
            rd_start RD_R "$RD_R_PORT" "$WORK/rd-r1" --replicaof 127.0.0.1 "$RD_M_PORT"
            if poll_until "$LIMIT" rd_caught_up "$RD_R_PORT" "${target:-0}"; then
                T1=$(now_us)
                R[rd.s3]=$(secs "$T0" "$T1")
                if [ "$(grep -c 'Successful partial resynchronization' "$WORK/rd-r1/redis.log")" -gt "$nps" ]; then
                    R[rd.s3_how]=partial
                elif [ "$(grep -c 'Full resync from master' "$WORK/rd-r1/redis.log")" -gt "$nfull" ]; then
                    R[rd.s3_how]="FULL resync"
                else
                    R[rd.s3_how]="?"
                fi
                say "  redis:    restarted replica caught up in ${R[rd.s3]} s: ${R[rd.s3_how]} ($(rcli "$RD_R_PORT" dbsize) keys)"
                grep -E 'Loading RDB|MASTER <-> REPLICA sync: (Flushing|Finished)|Partial resynchronization not possible|Successful partial' "$WORK/rd-r1/redis.log" |
                    tail -n 3 | sed 's/^[0-9]*:S /    redis replica log: /' >&2
            else
                say "  redis replica did not catch up"
            fi
        fi
    fi
fi

# The scenarios' replicas are done with; their memory and directories go now.
stop_pid "$LS_R"; LS_R=
rm -rf "$WORK/ls-r1"
if [ $HAVE_REDIS = 1 ]; then
    stop_pid "$RD_R"; RD_R=
    rm -rf "$WORK/rd-r1"
fi

# ---------------------------------------------------------------- snapshot

SNAP_DOCS=
if [ "$EXTRA" != 1 ]; then
    : # the snapshot and stalled-replica phases run with BENCH_REPL_EXTRA=1
elif over_budget; then
    say "   (skipping the snapshot and stalled-replica phases: past BENCH_REPL_BUDGET=$BUDGET s)"
else
    say ""
    have=$(ls_seq "$LS_P_HTTP")
    fill=$((SNAP - ${have:-0}))
    say "-- snapshot: primaries filled to $SNAP docs (+$((fill > 0 ? fill : 0)) with no replica), then a fresh replica"
    if [ "$fill" -gt 0 ]; then
        T0=$(now_us)
        ls_write fill "$fill" "$WORK/ls-fill.out"
        T1=$(now_us)
        say "  lockstep: $WROTE docs, primary alone: $(rate "$WROTE" "$T0" "$T1") docs/s"
        if [ $HAVE_REDIS = 1 ]; then
            rd_write fill "$fill" &&
                say "  redis:    $fill docs, master alone: $(rate "$fill" "$T0" "$T1") docs/s"
        fi
    fi
    SNAP_DOCS=$(ls_seq "$LS_P_HTTP")

    # --- lockstep
    pick_port && LS_R_HTTP=$PORT && pick_port && LS_R_PEER=$PORT
    target=$(ls_seq "$LS_P_HTTP")
    reset_hwm "$LS_P" && hwm_note="reset before" || hwm_note="since start"
    cpu_p0=$(proc_cpu "$LS_P")
    T0=$(now_us)
    ls_start LS_R ls-r2 "$WORK/ls-r2" "$LS_R_HTTP" "$LS_R_PEER" "$WORK/ls-r2.log" --role replica \
        --upstream "127.0.0.1:$LS_P_PEER"
    if poll_until "$BIG_LIMIT" ls_caught_up "$LS_R_HTTP" "${target:-0}" live; then
        T1=$(now_us)
        R[ls.snap]=$(secs "$T0" "$T1")
        R[ls.snap_hwm_p]=$(mb "$(kb "$LS_P" VmHWM)")
        R[ls.snap_hwm_r]=$(mb "$(kb "$LS_R" VmHWM)")
        R[ls.snap_cpu_p]=$(us_per "$cpu_p0" "$(proc_cpu "$LS_P")" "$target")
        R[ls.snap_cpu_r]=$(us_per 0 "$(proc_cpu "$LS_R")" "$target")
        say "  lockstep: fresh replica live at seq $target after ${R[ls.snap]} s ($(rate "$target" "$T0" "$T1") docs/s); peak RSS primary ${R[ls.snap_hwm_p]} MB ($hwm_note), replica ${R[ls.snap_hwm_r]} MB; store $(du -sm "$WORK/ls-r2" | cut -f1) MB"
        grep -E 'snapshot' "$WORK/ls-r2.log" | head -n 2 | sed 's/^/    replica log: /' >&2
    else
        say "  lockstep: the fresh replica is not live after $BIG_LIMIT s"; tail -n 5 "$WORK/ls-r2.log" >&2
    fi

    # --- Redis
    if [ $HAVE_REDIS = 1 ]; then
        pick_port && RD_R_PORT=$PORT
        reset_hwm "$RD_M"
        cpu_p0=$(proc_cpu "$RD_M")
        T0=$(now_us)
        if rd_start RD_R "$RD_R_PORT" "$WORK/rd-r2" --replicaof 127.0.0.1 "$RD_M_PORT" &&
            poll_until "$BIG_LIMIT" rd_synced "$RD_R_PORT" "$RD_M_PORT"; then
            T1=$(now_us)
            n=$(rcli "$RD_R_PORT" dbsize)
            R[rd.snap]=$(secs "$T0" "$T1")
            R[rd.snap_hwm_p]=$(mb "$(kb "$RD_M" VmHWM)")
            R[rd.snap_hwm_r]=$(mb "$(kb "$RD_R" VmHWM)")
            R[rd.snap_cow]=$(awk -v b="$(rget rdb_last_cow_size "$(rcli "$RD_M_PORT" info persistence)")" 'BEGIN { printf "%.0f", b / 1048576 }')
            R[rd.snap_cpu_p]=$(us_per "$cpu_p0" "$(proc_cpu "$RD_M")" "$n")
            R[rd.snap_cpu_r]=$(us_per 0 "$(proc_cpu "$RD_R")" "$n")
            say "  redis:    fresh replica synced ($n keys) after ${R[rd.snap]} s ($(rate "$n" "$T0" "$T1") docs/s); peak RSS master ${R[rd.snap_hwm_p]} MB (+ its fork child's copy-on-write ${R[rd.snap_cow]} MB), replica ${R[rd.snap_hwm_r]} MB"
        else
            say "  redis: the fresh replica did not sync"; tail -n 5 "$WORK/rd-r2/redis.log" >&2
        fi
    fi
fi

# ---------------------------------------------------------------- stalled replica

# sampler PID OUT [REDISPORT]: every second "VmRSS RssAnon RssFile RssShmem [mem_clients_slaves
# connected_slaves]" (kB, bytes) until PID is gone or BIG_LIMIT s; sets SAMPLER
sampler() {
    (
        for ((i = 0; i < BIG_LIMIT + 30; i++)); do
            kill -0 "$1" 2>/dev/null || break
            line="$(kb "$1" VmRSS) $(kb "$1" RssAnon) $(kb "$1" RssFile) $(kb "$1" RssShmem)"
            if [ -n "${3:-}" ]; then
                m=$(rcli "$3" info memory)
                r=$(rcli "$3" info replication)
                line+=" $(rget mem_clients_slaves "$m") $(rget connected_slaves "$r")"
            fi
            echo "$line"
            sleep 1
        done
    ) >"$2" &
    SAMPLER=$!
    PIDS+=("$SAMPLER")
}
col_max() { awk -v c="$1" '$c > m { m = $c } END { printf "%.0f", m / (c <= 4 ? 1024 : 1048576) }' "$2"; }

if [ -n "$SNAP_DOCS" ] && ! over_budget; then
    say ""
    say "-- stalled replica: SIGSTOP, then $STALL docs to the primary"
    if [ -n "$LS_R" ] && kill -0 "$LS_R" 2>/dev/null; then
        kill -STOP "$LS_R"
        sleep 1
        before=$(kb "$LS_P" VmRSS); before_anon=$(kb "$LS_P" RssAnon)
        sampler "$LS_P" "$WORK/ls-stall.rss"
        T0=$(now_us)
        ls_write stall "$STALL" "$WORK/ls-stall.out"
        T1=$(now_us)
        sleep 1
        kill "$SAMPLER" 2>/dev/null; wait "$SAMPLER" 2>/dev/null; forget_pid "$SAMPLER"
        nodes=$(curl -s --max-time 3 "http://127.0.0.1:$LS_P_HTTP/v1/nodes" 2>/dev/null | sed -n 's/.*"name":"ls-r2"\([^}]*\)}.*/\1/p')
        R[ls.stall_docs]=$WROTE
        R[ls.stall_rate]=$(rate "$WROTE" "$T0" "$T1")
        R[ls.stall_before]=$(mb "$before")
        R[ls.stall_after]=$(mb "$(kb "$LS_P" VmRSS)")
        R[ls.stall_max]=$(col_max 1 "$WORK/ls-stall.rss")
        R[ls.stall_anon_before]=$(mb "$before_anon")
        R[ls.stall_anon_max]=$(col_max 2 "$WORK/ls-stall.rss")
        R[ls.stall_file_max]=$(col_max 3 "$WORK/ls-stall.rss")
        R[ls.stall_shm_max]=$(col_max 4 "$WORK/ls-stall.rss")
        R[ls.stall_state]="$(jget state "$nodes"), lag $(jget lag_changes "$nodes") changes"
        say "  lockstep: $WROTE docs at ${R[ls.stall_rate]} docs/s; primary RSS ${R[ls.stall_before]} -> ${R[ls.stall_after]} MB (max ${R[ls.stall_max]}; anonymous ${R[ls.stall_anon_before]} -> max ${R[ls.stall_anon_max]}, file max ${R[ls.stall_file_max]}, shmem max ${R[ls.stall_shm_max]}); the replica on /v1/nodes: ${R[ls.stall_state]}"
        say "    primary VmRSS every second (MB): $(awk '{ printf "%.0f ", $1 / 1024 }' "$WORK/ls-stall.rss")"
    fi
    # lockstep is done: its memory and stores go before Redis' stalled phase
    stop_pid "$LS_R"; stop_pid "$LS_P"; LS_R= LS_P=
    rm -rf "$WORK/ls-p" "$WORK/ls-r1" "$WORK/ls-r2"

    if [ $HAVE_REDIS = 1 ] && [ -n "$RD_R" ] && kill -0 "$RD_R" 2>/dev/null; then
        gen_resp "$WORK/resp.stall" stall "$STALL"
        kill -STOP "$RD_R"
        sleep 1
        before=$(kb "$RD_M" VmRSS)
        used0=$(rget used_memory "$(rcli "$RD_M_PORT" info memory)")
        drops0=$(grep -c 'output buffer limits' "$WORK/rd-m/redis.log")
        sampler "$RD_M" "$WORK/rd-stall.rss" "$RD_M_PORT"
        T0=$(now_us)
        rd_pipe "$WORK/resp.stall" "$STALL" "$WORK/redis-pipe.stall.out"
        T1=$(now_us)
        rm -f "$WORK/resp.stall"
        sleep 1
        kill "$SAMPLER" 2>/dev/null; wait "$SAMPLER" 2>/dev/null; forget_pid "$SAMPLER"
        used1=$(rget used_memory "$(rcli "$RD_M_PORT" info memory)")
        R[rd.stall_rate]=$(rate "$STALL" "$T0" "$T1")
        R[rd.stall_before]=$(mb "$before")
        R[rd.stall_after]=$(mb "$(kb "$RD_M" VmRSS)")
        R[rd.stall_max]=$(col_max 1 "$WORK/rd-stall.rss")
        R[rd.stall_buf_max]=$(col_max 5 "$WORK/rd-stall.rss")
        R[rd.stall_data]=$(awk -v a="$used0" -v b="$used1" 'BEGIN { printf "%.0f", (b - a) / 1048576 }')
        drops=$(($(grep -c 'output buffer limits' "$WORK/rd-m/redis.log") - drops0))
        R[rd.stall_state]="connected_slaves $(rget connected_slaves "$(rcli "$RD_M_PORT" info replication)")"
        [ "$drops" -gt 0 ] && R[rd.stall_state]+=", dropped at the output buffer limit"
        say "  redis:    $STALL docs at ${R[rd.stall_rate]} docs/s; master RSS ${R[rd.stall_before]} -> ${R[rd.stall_after]} MB (max ${R[rd.stall_max]}; used_memory +${R[rd.stall_data]} MB; replica output buffer max ${R[rd.stall_buf_max]} MB); ${R[rd.stall_state]}"
        say "    client-output-buffer-limit: $(rcli "$RD_M_PORT" config get client-output-buffer-limit | tail -n 1)"
        grep -E 'output buffer limits|Connection with replica' "$WORK/rd-m/redis.log" | tail -n 2 |
            sed 's/^[0-9]*:M [^*#]*[*#] /    redis master log: /' >&2
        say "    master VmRSS every second (MB): $(awk '{ printf "%.0f ", $1 / 1024 }' "$WORK/rd-stall.rss")"
        say "    its replica output buffer (MB): $(awk '{ printf "%.0f ", $5 / 1048576 }' "$WORK/rd-stall.rss")"
    fi
fi

# ---------------------------------------------------------------- the table

v() { local x=${R[$1]:-}; [ -n "$x" ] && printf '%s' "$x" || printf 'n/a'; }
# ratio A B: A/B as x.xx
ratio() {
    local a=${R[$1]:-} b=${R[$2]:-}
    [ -n "$a" ] && [ -n "$b" ] && awk -v a="$a" -v b="$b" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else printf "n/a" }' || printf 'n/a'
}
# goal A B OP: ok / MISS / n/a for A/B OP 1
goal() {
    local a=${R[$1]:-} b=${R[$2]:-}
    [ -n "$a" ] && [ -n "$b" ] || { printf 'n/a'; return; }
    awk -v a="$a" -v b="$b" -v op="$3" 'BEGIN { r = b > 0 ? a / b : 0; ok = op == ">=" ? r >= 1 : r <= 1; printf ok ? "ok" : "MISS" }'
}
row() { printf '%-50s %14s %14s %10s   %s\n' "$@"; }

echo
echo "replication, lockstep vs Redis ($(nproc) CPUs, $BASE ($FSTYPE); 1 KiB docs; lockstep/Redis ratios)"
row "figure" "lockstep" "Redis" "ratio" "goal"
row "--------------------------------------------------" "--------------" "--------------" "----------" "----"
row "redis-benchmark -P 64 -t set -d 1024 (SET/s)" "" "$(v rd.bench)" "" ""
row "  the same with -r 100000000 (unique keys)" "" "$(v rd.bench_r)" "" ""
row "1. streamed, $DOCS docs, $STREAM_BATCH x $STREAM_CONNS conns (docs/s)" "$(v ls.s1)" "$(v rd.s1)" \
    "$(ratio ls.s1 rd.s1)" ">= 1 ($(goal ls.s1 rd.s1 '>='))"
row "  acknowledged by the primary (docs/s)" "$(v ls.s1_prim)" "$(v rd.s1_prim)" "$(ratio ls.s1_prim rd.s1_prim)" ""
row "  replica behind when the writes ended (s)" "$(v ls.s1_tail)" "$(v rd.s1_tail)" "" ""
row "  CPU/doc primary (us)" "$(v ls.s1_cpu_p)" "$(v rd.s1_cpu_p)" "$(ratio ls.s1_cpu_p rd.s1_cpu_p)" ""
row "  CPU/doc replica (us)" "$(v ls.s1_cpu_r)" "$(v rd.s1_cpu_r)" "$(ratio ls.s1_cpu_r rd.s1_cpu_r)" ""
row "2. one import of $IMPORT docs, until on the replica (docs/s)" "$(v ls.s2)" "$(v rd.s2)" \
    "$(ratio ls.s2 rd.s2)" ">= 1 ($(goal ls.s2 rd.s2 '>='))"
row "  done on the primary (docs/s)" "$(v ls.s2_prim)" "$(v rd.s2_prim)" "$(ratio ls.s2_prim rd.s2_prim)" ""
row "  replica behind when the primary was done (s)" "$(v ls.s2_tail)" "$(v rd.s2_tail)" "" ""
row "  CPU/doc primary (us)" "$(v ls.s2_cpu_p)" "$(v rd.s2_cpu_p)" "$(ratio ls.s2_cpu_p rd.s2_cpu_p)" ""
row "  CPU/doc replica (us)" "$(v ls.s2_cpu_r)" "$(v rd.s2_cpu_r)" "$(ratio ls.s2_cpu_r rd.s2_cpu_r)" ""
R[rd.s3_fifth]=$(awk -v a="${R[rd.s3]:-}" 'BEGIN { if (a != "") printf "%.3f", a / 5 }')
row "3. catch-up of $CATCHUP after a replica restart (s)" "$(v ls.s3)" "$(v rd.s3)" \
    "$(ratio ls.s3 rd.s3)" "<= 0.2 ($(goal ls.s3 rd.s3_fifth '<='))"
row "  how" "$(v ls.s3_how)" "$(v rd.s3_how)" "" ""
row "  of which the restart until HTTP answers (s)" "$(v ls.s3_up)" "" "" ""
R[ls.s1_cpu_p13]=$(awk -v a="${R[ls.s1_cpu_p]:-}" 'BEGIN { if (a != "") printf "%.2f", a * 1.3 }')
row "4. CPU/doc primary, $FANOUT replicas (us)" "$(v ls.s4_cpu_p)" "$(v rd.s4_cpu_p)" "$(ratio ls.s4_cpu_p rd.s4_cpu_p)" ""
row "  against one replica (1.)" "$(ratio ls.s4_cpu_p ls.s1_cpu_p)" "$(ratio rd.s4_cpu_p rd.s1_cpu_p)" "" \
    "<= 1.3 ($(goal ls.s4_cpu_p ls.s1_cpu_p13 '<='))"
row "  applied on all (docs/s)" "$(v ls.s4)" "$(v rd.s4)" "$(ratio ls.s4 rd.s4)" ""
if [ "$EXTRA" = 1 ]; then
row "snapshot of ${SNAP_DOCS:-n/a} docs to a fresh replica (s)" "$(v ls.snap)" "$(v rd.snap)" "$(ratio ls.snap rd.snap)" ""
row "  peak RSS primary during it (MB)" "$(v ls.snap_hwm_p)" "$(v rd.snap_hwm_p)" "$(ratio ls.snap_hwm_p rd.snap_hwm_p)" ""
row "  Redis fork child copy-on-write (MB)" "" "$(v rd.snap_cow)" "" ""
row "  peak RSS replica (MB)" "$(v ls.snap_hwm_r)" "$(v rd.snap_hwm_r)" "$(ratio ls.snap_hwm_r rd.snap_hwm_r)" ""
row "  CPU/doc primary (us)" "$(v ls.snap_cpu_p)" "$(v rd.snap_cpu_p)" "" ""
row "  CPU/doc replica (us)" "$(v ls.snap_cpu_r)" "$(v rd.snap_cpu_r)" "" ""
row "stalled replica, $STALL docs written: primary RSS" "" "" "" ""
row "  before (MB)" "$(v ls.stall_before)" "$(v rd.stall_before)" "" ""
row "  max (MB)" "$(v ls.stall_max)" "$(v rd.stall_max)" "" "flat"
row "  after (MB)" "$(v ls.stall_after)" "$(v rd.stall_after)" "" ""
row "  lockstep anonymous memory before -> max (MB)" "$(v ls.stall_anon_before)->$(v ls.stall_anon_max)" "" "" ""
row "  lockstep mapped store pages, file/shmem max (MB)" "$(v ls.stall_file_max)/$(v ls.stall_shm_max)" "" "" ""
row "  Redis dataset growth / replica buffer max (MB)" "" "$(v rd.stall_data)/$(v rd.stall_buf_max)" "" ""
row "  write rate meanwhile (docs/s)" "$(v ls.stall_rate)" "$(v rd.stall_rate)" "$(ratio ls.stall_rate rd.stall_rate)" ""
echo "  stalled replica at the end: lockstep: $(v ls.stall_state); Redis: $(v rd.stall_state)"
fi
echo "  Redis: appendonly yes, appendfsync everysec on every instance; repl-backlog-size 256mb"
[ -n "$SCALED" ] && echo "  NOTE: $SCALED"
echo "load average: at the start ${R[load0]}, at the end $(cut -d' ' -f1-3 /proc/loadavg); repl bench time: $(elapsed) s"
exit 0
