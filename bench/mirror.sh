#!/usr/bin/env bash
# bench/mirror.sh - a lockstep mirroring job (dir: -> dir:) next to rsync (client -> daemon on
# 127.0.0.1), on the same generated tree, in the same run, on the same machine (bench/README.md,
# "Mirroring"). run.sh calls it; it also runs alone.
#
# The tree: BENCH_MIRROR_FILES (100000) files of 1 to 64 KiB (sizes skewed small: 1 + 63*r^3 KiB,
# about 1.6 GB at 100k) in directories of 1000, random bytes. Source and both targets, lockstep's
# data dir and rsync's module are in BENCH_MIRROR_DIR (/dev/shm). For each of BENCH_MIRROR_ROUNDS
# (3) rounds, fresh targets; each phase runs lockstep, then rsync, then the next phase:
#   full      the first mirror into an empty target
#   nochange  again, nothing changed
#   change1   after rewriting 1% of the files (same size, new bytes and mtime) and adding 100
# lockstep: `lockstep mirror run JOB --wait` (a job created per round, so its index starts
# empty), timed by the CLI's wall clock. rsync: `rsync -a --delete SRC/ rsync://.../mod/`.
# Each result is checked (`diff -rq`) after the round's last phase. Peak RSS (VmHWM) of every
# process: the lockstep server (its peak reset through /proc/PID/clear_refs before each phase)
# and the CLI; the rsync client, and the daemon's per-connection processes (sampled every 50 ms,
# each process's peak, summed).
#
# Then, when BENCH_MIRROR_MEMORY_FILES is set (e.g. 1000000), one more lockstep-only round of a
# tree that many files of 1 to 2 KiB (the memory figure: 1M files of 1-64 KiB would not fit in
# /dev/shm next to their copies), full and no-change, with the lockstep server's peak RSS.
#
# Environment: BENCH_MIRROR_FILES BENCH_MIRROR_ROUNDS BENCH_MIRROR_DIR BENCH_MIRROR_MEMORY_FILES
#   LOCKSTEP BENCH_STEP_LIMIT (seconds per step, 600)
# It stops every process it started (by PID), removes its directories, and exits 0 unless it
# cannot run at all.
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOCKSTEP=${LOCKSTEP:-$ROOT/build/lockstep}
FILES=${BENCH_MIRROR_FILES:-100000}
ROUNDS=${BENCH_MIRROR_ROUNDS:-3}
BASE=${BENCH_MIRROR_DIR:-/dev/shm}
MEMFILES=${BENCH_MIRROR_MEMORY_FILES:-}
LIMIT=${BENCH_STEP_LIMIT:-600}
BENCH_NAME=bench-mirror
source "$ROOT/bench/lib.sh"

[ -x "$LOCKSTEP" ] || { say "bench-mirror: $LOCKSTEP is not built (make)"; exit 1; }
command -v rsync >/dev/null || { say "bench-mirror: rsync is missing (scripts/deps.sh bench)"; exit 1; }

W=$(mktemp -d "$BASE/lsbench-mirror.XXXXXX") || exit 1
DIRS+=("$W")
SRC=$W/src

# gen DIR N MINKIB MAXKIB: N files, sizes MIN + (MAX-MIN)*r^3 KiB, 1000 a directory
gen() {
    python3 - "$@" <<'EOF'
import os, random, sys
root, n, lo, hi = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rnd = random.Random(42)
pool = os.urandom(1 << 20)
total = 0
for i in range(n):
    d = os.path.join(root, "d%04d" % (i // 1000))
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    size = int((lo + (hi - lo) * rnd.random() ** 3) * 1024)
    off = rnd.randrange(0, len(pool) - size)
    with open(os.path.join(d, "f%06d" % i), "wb") as f:
        f.write(pool[off:off + size] if size else b"")
        f.write(i.to_bytes(8, "little"))  # no two files alike
    total += size + 8
print(total)
EOF
}

# change1 DIR N: rewrites 1% of N files (same size, other bytes) and adds 100
change1() {
    python3 - "$@" <<'EOF'
import os, random, sys, time
root, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(time.time())
for i in rnd.sample(range(n), max(1, n // 100)):
    p = os.path.join(root, "d%04d" % (i // 1000), "f%06d" % i)
    size = os.path.getsize(p)
    with open(p, "r+b") as f:
        f.write(os.urandom(min(size, 4096)))
d = os.path.join(root, "new")
os.makedirs(d, exist_ok=True)
for k in range(100):
    with open(os.path.join(d, "n%d-%d" % (int(time.time()), k)), "wb") as f:
        f.write(os.urandom(rnd.randrange(1024, 65536)))
EOF
}

hwm_kib() { sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$1/status" 2>/dev/null; }

# descendants PID: the pids below PID
descendants() {
    local c
    for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
        echo "$c"
        descendants "$c"
    done
}

# ---------------------------------------------------------------- the two servers

start_lockstep() {
    pick_port || return 1
    LS_PORT=$PORT
    pick_port || return 1
    "$LOCKSTEP" serve --data "$W/ls-data" --http "127.0.0.1:$LS_PORT" --listen "127.0.0.1:$PORT" \
        --name bench-mirror >"$W/ls.log" 2>&1 &
    LS_PID=$!
    PIDS+=("$LS_PID")
    LS_URL=http://127.0.0.1:$LS_PORT
    poll_until 20 "$LOCKSTEP" status --server "$LS_URL" >/dev/null 2>&1
}

start_rsyncd() {
    pick_port || return 1
    RS_PORT=$PORT
    mkdir -p "$W/rs"
    cat >"$W/rsyncd.conf" <<EOF
pid file = $W/rsyncd.pid
use chroot = no
[bench]
    path = $W/rs
    read only = no
    uid = $(id -u)
    gid = $(id -g)
EOF
    rsync --daemon --no-detach --address=127.0.0.1 --port="$RS_PORT" --config="$W/rsyncd.conf" \
        --log-file="$W/rsyncd.log" &
    RS_PID=$!
    PIDS+=("$RS_PID")
    poll_until 10 port_busy "$RS_PORT"
}
port_busy() { ! port_free "$1"; }

# ---------------------------------------------------------------- one phase of each

# ls_phase JOB: runs it, sets T (seconds) and RSS (server KiB) and CLI_RSS (KiB)
ls_phase() {
    local t0 t1
    echo 5 >"/proc/$LS_PID/clear_refs" 2>/dev/null # the peak from here
    t0=$(now_us)
    timeout "$LIMIT" /usr/bin/time -f '%M' -o "$W/cli.rss" \
        "$LOCKSTEP" mirror run "$1" --wait --server "$LS_URL" >"$W/run.out" 2>&1 ||
        say "  lockstep run: $(tail -n 2 "$W/run.out")"
    t1=$(now_us)
    T=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", (b - a) / 1e6 }')
    RSS=$(hwm_kib "$LS_PID")
    CLI_RSS=$(tail -n 1 "$W/cli.rss")
}

# rs_phase: rsync to the daemon, sets T, RSS (client KiB) and DRSS (daemon side, KiB)
rs_phase() {
    local t0 t1 pid p h
    declare -A peak=()
    t0=$(now_us)
    timeout "$LIMIT" /usr/bin/time -f '%M' -o "$W/rs.rss" \
        rsync -a --delete "$SRC/" "rsync://127.0.0.1:$RS_PORT/bench/" >"$W/rs.out" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    while kill -0 "$pid" 2>/dev/null; do
        for p in $(descendants "$RS_PID"); do
            h=$(hwm_kib "$p")
            [ -n "$h" ] && [ "$h" -gt "${peak[$p]:-0}" ] && peak[$p]=$h
        done
        sleep 0.05
    done
    wait "$pid" || say "  rsync: $(tail -n 2 "$W/rs.out")"
    forget_pid "$pid"
    t1=$(now_us)
    T=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", (b - a) / 1e6 }')
    RSS=$(tail -n 1 "$W/rs.rss")
    DRSS=0
    for p in "${!peak[@]}"; do DRSS=$((DRSS + peak[$p])); done
}

# ---------------------------------------------------------------- the rounds

say "bench-mirror: generating $FILES files in $SRC"
BYTES=$(gen "$SRC" "$FILES" 1 64) || exit 1
say "bench-mirror: $(awk -v b="$BYTES" 'BEGIN { printf "%.2f GB", b / 1e9 }')"
start_lockstep || { say "bench-mirror: lockstep did not start: $(tail -n 5 "$W/ls.log")"; exit 1; }
start_rsyncd || { say "bench-mirror: rsyncd did not start"; exit 1; }

declare -A times=() rss=()
for ((r = 1; r <= ROUNDS; r++)); do
    rm -rf "$W/ls-out" "$W/rs" && mkdir -p "$W/rs"
    job=r$r
    "$LOCKSTEP" mirror rm "r$((r - 1))" --server "$LS_URL" >/dev/null 2>&1
    "$LOCKSTEP" mirror create "$job" --source "dir:$SRC" --target "dir:$W/ls-out" --delete \
        --server "$LS_URL" >/dev/null || exit 1
    for phase in full nochange change1; do
        [ "$phase" = change1 ] && change1 "$SRC" "$FILES"
        ls_phase "$job"
        times[ls,$phase]+="$T "
        rss[ls,$phase]+="$RSS+$CLI_RSS "
        line=$(printf 'round %d %-8s lockstep %7ss (server %s KiB, cli %s KiB)' "$r" "$phase" \
            "$T" "$RSS" "$CLI_RSS")
        rs_phase
        times[rs,$phase]+="$T "
        rss[rs,$phase]+="$RSS+$DRSS "
        say "  $line  rsync $(printf '%7s' "$T")s (client $RSS KiB, daemon side $DRSS KiB)"
    done
    diff -rq "$SRC" "$W/ls-out" >/dev/null || say "  round $r: the lockstep target DIFFERS from the source"
    diff -rq "$SRC" "$W/rs" >/dev/null || say "  round $r: the rsync target DIFFERS from the source"
done

# median of a list of numbers
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : "-")}'; }
# the largest "a" (FIELD 1) or "b" (FIELD 2) of a list of "a+b"
maxof() { tr ' ' '\n' | grep -v '^$' | awk -F+ -v f="$1" '{if ($f>m) m=$f} END {printf "%.1f", m/1024}'; }

echo
echo "Mirroring: $FILES files ($(awk -v b="$BYTES" 'BEGIN { printf "%.2f GB", b / 1e9 }')) in $BASE, median time of $ROUNDS rounds, peak RSS (MiB) the largest"
printf '%-9s %10s %10s %9s | %9s %9s | %9s %9s\n' phase "lockstep s" "rsync s" "rsync/ls" \
    "ls server" "ls cli" "rs client" "rs daemon"
for phase in full nochange change1; do
    a=$(echo "${times[ls,$phase]}" | median)
    b=$(echo "${times[rs,$phase]}" | median)
    printf '%-9s %10s %10s %9s | %9s %9s | %9s %9s\n' "$phase" "$a" "$b" \
        "$(awk -v a="$a" -v b="$b" 'BEGIN { if (a > 0) printf "%.2fx", b / a; else print "-" }')" \
        "$(echo "${rss[ls,$phase]}" | maxof 1)" "$(echo "${rss[ls,$phase]}" | maxof 2)" \
        "$(echo "${rss[rs,$phase]}" | maxof 1)" "$(echo "${rss[rs,$phase]}" | maxof 2)"
done
echo "(rs daemon: the daemon's per-connection processes, summed. Goals: full <= rsync; nochange and"
echo " change1 at least 3x faster; ls server <= rs client + rs daemon, flat from 100k to 1M files)"

if [ -n "$MEMFILES" ]; then
    rm -rf "$SRC" "$W/ls-out" "$W/rs"
    say "bench-mirror: memory: generating $MEMFILES files of 1-2 KiB"
    gen "$SRC" "$MEMFILES" 1 2 >/dev/null
    "$LOCKSTEP" mirror create mem --source "dir:$SRC" --target "dir:$W/ls-out" --server "$LS_URL" >/dev/null
    ls_phase mem
    echo "memory: $MEMFILES files: full mirror ${T}s, lockstep server peak RSS $((RSS / 1024)) MiB"
    ls_phase mem
    echo "memory: $MEMFILES files: no-change ${T}s, lockstep server peak RSS $((RSS / 1024)) MiB"
fi
exit 0
