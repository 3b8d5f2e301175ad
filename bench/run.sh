#!/usr/bin/env bash
# bench/run.sh - lockstep's write-path figures next to the physical limit (bench/README.md).
#
# For each medium - /dev/shm (the CPU cost: fsync is free) and a directory on disk (/tmp by
# default: what fsync really costs) - it measures, each on a fresh store:
#   import   POST /v1/batch, BENCH_DOCS docs of 1 KiB in batches of BENCH_BATCH, BENCH_CONNS conns
#   put      BENCH_PUTS sequential PUTs of 1 KiB on one connection: p50/p99/max, req/s, run
#            BENCH_PUT_RUNS (3) times (the median run is reported); then BENCH_PUTS_CONC PUTs
#            over 4 connections (throughput with group commit); and, as the floor, as many
#            one-row transactions in bare SQLite
#   cli      `lockstep import` of a BENCH_IMPORT_DOCS-line NDJSON file (upload + one transaction)
#   bare     the same rows in one bare SQLite table (WAL, synchronous=FULL), same batch size,
#            and in one transaction for the cli figure
#   engine   store_apply() called directly, no HTTP (diagnostic: splits the gap in two)
# and prints a table with import/bare (goal >= 50%) and put p99 (goal < 2 ms).
#
# Environment: BENCH_DOCS (200000) BENCH_BATCH (1000) BENCH_CONNS (2) BENCH_PUTS (5000)
#   BENCH_PUT_RUNS (3) BENCH_PUTS_CONC (4000) BENCH_IMPORT_DOCS (100000) BENCH_MEDIA ("shm disk")
#   BENCH_DISK_DIR (/tmp) BENCH_STEP_LIMIT (seconds per step, 120) BENCH_PERF (1: perf profile
#   of the server during the shm import, when perf works) LOCKSTEP (the binary)
#   BENCH_REPL (1; 0 skips the replication figures of bench/repl.sh), BENCH_NOTIFY (1; 0 skips
#   the messenger's figures of bench/notify.sh), BENCH_MIRROR (1; 0 skips the mirroring figures
#   of bench/mirror.sh, which runs last)
#
# It stops every process it started (by PID) and removes its directories, whatever happens.
# It never fails a CI run: it exits 0 unless it cannot run at all (nothing built).
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BENCH_BUILD_DIR:-$ROOT/build/release}
LOCKSTEP=${LOCKSTEP:-$ROOT/build/lockstep}
LOADGEN=$BUILD/bench_loadgen
BARE=$BUILD/bench_bare_sqlite
DIRECT=$BUILD/bench_store_direct

DOCS=${BENCH_DOCS:-200000}
BATCH=${BENCH_BATCH:-1000}
CONNS=${BENCH_CONNS:-2}
PUTS=${BENCH_PUTS:-5000}
PUTS_CONC=${BENCH_PUTS_CONC:-4000}
IMPORT_DOCS=${BENCH_IMPORT_DOCS:-100000}
PUT_RUNS=${BENCH_PUT_RUNS:-3}
MEDIA=${BENCH_MEDIA:-shm disk}
DISK_DIR=${BENCH_DISK_DIR:-/tmp}
LIMIT=${BENCH_STEP_LIMIT:-120}
BODY=1024

SERVER_PID=
PORT=
BENCH_NAME=bench
source "$ROOT/bench/lib.sh"

# run_step LOGFILE CMD...: runs CMD bounded by $LIMIT seconds, output to LOGFILE; returns its status.
run_step() {
    local log=$1 pid rc
    shift
    timeout -k 5 "$LIMIT" "$@" >"$log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait "$pid"
    rc=$?
    forget_pid "$pid"
    [ $rc -eq 124 ] && say "  (stopped after ${LIMIT}s: BENCH_STEP_LIMIT)"
    return $rc
}

# field KEY FILE: the value of KEY=... on the RESULT line of FILE
field() { sed -n "s/^RESULT.* $1=\([^ ]*\).*/\1/p" "$2" | tail -n 1; }

# ---------------------------------------------------------------- building

build() {
    local need=0 f targets
    for f in "$LOCKSTEP" "$LOADGEN" "$BARE" "$DIRECT" "$BUILD/bench_notify"; do [ -x "$f" ] || need=1; done
    for f in "$ROOT"/bench/*.c "$ROOT"/bench/*.h; do
        [ "$f" -nt "$LOADGEN" ] || [ "$f" -nt "$BARE" ] || [ "$f" -nt "$DIRECT" ] && need=1
    done
    [ $need -eq 0 ] && return 0
    say "bench: building the benchmark programs"
    if ! command -v cmake >/dev/null; then
        say "bench: cmake is missing (make deps)"
        return 0
    fi
    # Configure again: CMakeLists.txt globs bench/*.c at configure time. Cached flags stay.
    if [ -f "$BUILD/CMakeCache.txt" ]; then
        cmake -S "$ROOT" -B "$BUILD" >/dev/null
    else
        cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLS_BIN_DIR="$ROOT/build" >/dev/null
    fi
    # lockstep itself only when it is missing: `make bench` has just built it (make all), and a
    # relink that fails would delete a binary that works.
    targets=(bench_loadgen bench_bare_sqlite bench_store_direct bench_notify)
    [ -x "$LOCKSTEP" ] || targets+=(lockstep)
    cmake --build "$BUILD" -j "$(nproc)" --target "${targets[@]}" >"$BUILD/bench-build.log" 2>&1 ||
        { say "bench: the build failed (see $BUILD/bench-build.log); using what is there"; tail -n 20 "$BUILD/bench-build.log" >&2; }
}

build
for f in "$LOCKSTEP" "$LOADGEN" "$BARE"; do
    if [ ! -x "$f" ]; then
        say "bench: $f is missing: cannot run"
        exit 1
    fi
done
command -v timeout >/dev/null || { say "bench: timeout(1) is missing: cannot run"; exit 1; }

# ---------------------------------------------------------------- the server

# start_server DATA LOG: starts lockstep on a free port; sets SERVER_PID and PORT.
start_server() {
    local data=$1 log=$2 try
    for ((try = 0; try < 8; try++)); do
        pick_port || continue
        "$LOCKSTEP" serve --data "$data" --http "127.0.0.1:$PORT" --name bench --log-level warn \
            >>"$log" 2>&1 &
        SERVER_PID=$!
        PIDS+=("$SERVER_PID")
        if "$LOADGEN" status --port "$PORT" --time-limit 15 >/dev/null 2>>"$log" &&
            kill -0 "$SERVER_PID" 2>/dev/null; then
            return 0
        fi
        stop_server
    done
    say "  cannot start lockstep; its log:"
    tail -n 20 "$log" >&2
    return 1
}

stop_server() {
    stop_pid "$SERVER_PID"
    SERVER_PID=
}

# CPU seconds (user+sys) of each thread of a process: "tid seconds" lines.
thread_cpu() {
    local tck t
    tck=$(getconf CLK_TCK)
    for t in /proc/"$1"/task/*; do
        [ -r "$t/stat" ] || continue
        # fields after the ")" of comm: utime is the 12th, stime the 13th
        sed 's/^.*) //' "$t/stat" | awk -v tid="${t##*/}" -v tck="$tck" '{ printf "%s %.2f\n", tid, ($12 + $13) / tck }'
    done
}

# cpu_delta BEFORE AFTER PID: "LOOP OTHER": CPU seconds of the main (event loop) thread and of
# all other threads (the writer) between two thread_cpu snapshots
cpu_delta() {
    awk -v main="$3" 'NR == FNR { b[$1] = $2; next }
        { d = $2 - b[$1]; if ($1 == main) loop += d; else other += d }
        END { printf "%.2f %.2f\n", loop, other }' "$1" "$2"
}

# per_doc SECONDS COUNT: microseconds per item
per_doc() { awk -v s="$1" -v n="$2" 'BEGIN { if (n > 0) printf "%.1f", s * 1e6 / n }'; }

# ---------------------------------------------------------------- one medium

declare -A R # R[medium.key] = value

bench_medium() {
    local medium=$1 base tmp fstype out
    if [ "$medium" = shm ]; then
        base=/dev/shm
    else
        base=$DISK_DIR
    fi
    if ! tmp=$(mktemp -d "$base/lockstep-bench.XXXXXX"); then
        say "bench: cannot create a directory in $base: skipping $medium"
        return
    fi
    DIRS+=("$tmp")
    fstype=$(stat -f -c %T "$tmp" 2>/dev/null || echo '?')
    R[$medium.where]="$base ($fstype)"
    [ "$medium" = disk ] && case $fstype in tmpfs | ramfs) say "bench: WARNING: $base is $fstype, not a disk (set BENCH_DISK_DIR)" ;; esac
    say ""
    say "== $medium: $base ($fstype)"

    # --- server: batch import, then puts on the same (now full) store
    if start_server "$tmp/data" "$tmp/server.log"; then
        local before=$tmp/cpu0 after=$tmp/cpu1 perf_pid=
        thread_cpu "$SERVER_PID" >"$before"
        if [ "${BENCH_PERF:-0}" = 1 ] && [ "$medium" = shm ] && command -v perf >/dev/null; then
            perf record -q -o "$tmp/perf.data" -p "$SERVER_PID" >/dev/null 2>&1 &
            perf_pid=$!
            PIDS+=("$perf_pid")
            sleep 0.3
        fi
        out=$tmp/import.out
        if run_step "$out" "$LOADGEN" batch --port "$PORT" --docs "$DOCS" --batch "$BATCH" \
            --conns "$CONNS" --body "$BODY" --tag import --time-limit "$((LIMIT - 10))"; then
            R[$medium.import]=$(field docs_per_s "$out")
            R[$medium.import_p99]=$(field batch_p99_ms "$out")
        else
            say "  import FAILED:"; tail -n 5 "$out" >&2
        fi
        head -n 1 "$out" | sed 's/^/  /' >&2
        thread_cpu "$SERVER_PID" >"$after"
        local loop other ndone
        read -r loop other < <(cpu_delta "$before" "$after" "$SERVER_PID")
        ndone=$(field docs "$out")
        if [ -n "$ndone" ]; then
            R[$medium.loop_us]=$(per_doc "$loop" "$ndone")
            R[$medium.writer_us]=$(per_doc "$other" "$ndone")
        fi
        say "  server CPU during the import: event loop thread ${loop} s, other threads (writer) ${other} s, wall $(field secs "$out") s"
        if [ -n "$perf_pid" ]; then
            kill -INT "$perf_pid" 2>/dev/null
            wait "$perf_pid" 2>/dev/null
            forget_pid "$perf_pid"
            say "  perf, server during the import (by thread and library):"
            perf report -i "$tmp/perf.data" --no-children -s pid,dso --stdio 2>/dev/null |
                grep '%' | head -n 12 | sed 's/^/    /' >&2
        fi

        # Sequential puts, BENCH_PUT_RUNS times: a tail figure moves with whatever else the
        # machine does, so the table gives the median run and the range of p99.
        local run p99s=() runs_ok=()
        for ((run = 1; run <= PUT_RUNS; run++)); do
            out=$tmp/put$run.out
            if run_step "$out" "$LOADGEN" put --port "$PORT" --count "$PUTS" --conns 1 --body "$BODY" \
                --tag "put1r$run" --time-limit "$((LIMIT - 10))"; then
                runs_ok+=("$(field p99_ms "$out") $out")
            else
                say "  put FAILED:"; tail -n 5 "$out" >&2
            fi
            head -n 1 "$out" | sed 's/^/  /' >&2
        done
        if [ ${#runs_ok[@]} -gt 0 ]; then
            local sorted median
            sorted=$(printf '%s\n' "${runs_ok[@]}" | sort -g)
            median=$(sed -n "$(((${#runs_ok[@]} + 1) / 2))p" <<<"$sorted" | cut -d' ' -f2)
            R[$medium.p50]=$(field p50_ms "$median")
            R[$medium.p99]=$(field p99_ms "$median")
            R[$medium.max]=$(field max_ms "$median")
            R[$medium.put_rps]=$(field req_per_s "$median")
            R[$medium.p99_range]="$(head -n 1 <<<"$sorted" | cut -d' ' -f1)-$(tail -n 1 <<<"$sorted" | cut -d' ' -f1)"
        fi

        out=$tmp/put4.out
        if run_step "$out" "$LOADGEN" put --port "$PORT" --count "$PUTS_CONC" --conns 4 --body "$BODY" \
            --tag put4 --time-limit "$((LIMIT - 10))"; then
            R[$medium.put4_rps]=$(field req_per_s "$out")
            R[$medium.put4_p99]=$(field p99_ms "$out")
        else
            say "  put x4 FAILED:"; tail -n 5 "$out" >&2
        fi
        head -n 1 "$out" | sed 's/^/  /' >&2
        stop_server
        grep -iE 'error|warn' "$tmp/server.log" | grep -v 'cannot listen' | head -n 5 | sed 's/^/  server: /' >&2
    fi
    rm -rf "$tmp/data"

    # --- the floor under the put latency: one-row transactions in bare SQLite, same disk
    out=$tmp/bare_commit.out
    if run_step "$out" "$BARE" --dir "$tmp" --rows "$PUTS" --batch 1 --body "$BODY"; then
        R[$medium.bare_p50]=$(field txn_p50_ms "$out")
        R[$medium.bare_p99]=$(field txn_p99_ms "$out")
    fi
    head -n 1 "$out" | sed 's/^/  /' >&2

    # --- lockstep import (CLI): upload session + one transaction, on a fresh store
    out=$tmp/cli.out
    if run_step "$tmp/gen.out" "$LOADGEN" gen --out "$tmp/import.ndjson" --docs "$IMPORT_DOCS" \
        --body "$BODY" --tag cli && start_server "$tmp/data2" "$tmp/server2.log"; then
        local t0 t1 n
        t0=$EPOCHREALTIME
        if run_step "$out" "$LOCKSTEP" import "$tmp/import.ndjson" --server "http://127.0.0.1:$PORT"; then
            t1=$EPOCHREALTIME
            n=$(sed -n 's/^imported \([0-9]*\) operations.*/\1/p' "$out")
            if [ "$n" = "$IMPORT_DOCS" ]; then
                R[$medium.cli]=$(awk -v n="$n" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", n / (b - a) }')
                say "  lockstep import: $(head -n 1 "$out") -> ${R[$medium.cli]} docs/s"
            else
                say "  lockstep import applied '${n}' of $IMPORT_DOCS:"; tail -n 5 "$out" >&2
            fi
        else
            say "  lockstep import FAILED:"; tail -n 5 "$out" >&2
        fi
        stop_server
    fi
    rm -rf "$tmp/data2" "$tmp/import.ndjson"

    # --- the physical limit, then the engine alone (no server running now)
    out=$tmp/bare.out
    if run_step "$out" "$BARE" --dir "$tmp" --rows "$DOCS" --batch "$BATCH" --body "$BODY"; then
        R[$medium.bare]=$(field rows_per_s "$out")
        R[$medium.bare_us]=$(per_doc "$(field cpu_s "$out")" "$DOCS")
    else
        say "  bare sqlite FAILED:"; tail -n 5 "$out" >&2
    fi
    head -n 1 "$out" | sed 's/^/  /' >&2
    out=$tmp/bare1.out
    if run_step "$out" "$BARE" --dir "$tmp" --rows "$IMPORT_DOCS" --batch "$IMPORT_DOCS" --body "$BODY"; then
        R[$medium.bare1]=$(field rows_per_s "$out")
    fi
    head -n 1 "$out" | sed 's/^/  /' >&2
    if [ -x "$DIRECT" ]; then
        out=$tmp/direct.out
        if run_step "$out" "$DIRECT" --dir "$tmp/direct" --docs "$DOCS" --batch "$BATCH" --body "$BODY"; then
            R[$medium.direct]=$(field docs_per_s "$out")
            R[$medium.direct_us]=$(per_doc "$(field cpu_s "$out")" "$DOCS")
        fi
        head -n 1 "$out" | sed 's/^/  /' >&2
        rm -rf "$tmp/direct"
        out=$tmp/direct2.out
        if run_step "$out" "$DIRECT" --dir "$tmp/direct" --docs "$DOCS" --batch "$BATCH" --body "$BODY" --parse; then
            R[$medium.direct_parse]=$(field docs_per_s "$out")
            R[$medium.parse_us]=$(per_doc "$(field parse_s "$out")" "$DOCS")
        fi
        head -n 1 "$out" | sed 's/^/  /' >&2
    fi
    rm -rf -- "$tmp"
}

say "lockstep benchmarks: $(nproc) CPU(s), $(uname -r), $("$LOCKSTEP" --version 2>/dev/null)"
say "docs: $DOCS x ${BODY} B in batches of $BATCH over $CONNS connection(s); $PUTS puts; cli import of $IMPORT_DOCS"
T0=$EPOCHREALTIME
for m in $MEDIA; do
    case $m in shm | disk) bench_medium "$m" ;; *) say "bench: unknown medium $m (shm, disk)" ;; esac
done

# ---------------------------------------------------------------- the table

v() { local x=${R[$1]:-}; [ -n "$x" ] && printf '%s' "$x" || printf 'n/a'; }
num() { local x=${R[$1]:-}; [ -n "$x" ] && awk -v x="$x" "BEGIN { printf \"$2\", x }" || printf 'n/a'; }
ratio() {
    local a=${R[$1]:-} b=${R[$2]:-}
    [ -n "$a" ] && [ -n "$b" ] && awk -v a="$a" -v b="$b" 'BEGIN { printf "%.0f%%", 100 * a / b }' || printf 'n/a'
}
check() { # check VALUE-KEY OP LIMIT: ok / MISS / n/a
    local x=${R[$1]:-}
    [ -z "$x" ] && { printf 'n/a'; return; }
    awk -v x="$x" -v l="$3" -v op="$2" 'BEGIN { ok = op == ">=" ? x >= l : x < l; printf ok ? "ok" : "MISS" }'
}

row() { printf '%-44s %18s %18s   %s\n' "$@"; }
echo
echo "lockstep write path ($(nproc) CPUs; 1 KiB bodies; $DOCS docs in batches of $BATCH over $CONNS conns)"
row "figure" "shm" "disk" "goal"
row "--------------------------------------------" "------------------" "------------------" "----"
row "import via POST /v1/batch (docs/s)" "$(num shm.import %.0f)" "$(num disk.import %.0f)" ""
row "bare SQLite, same rows and batch (rows/s)" "$(num shm.bare %.0f)" "$(num disk.bare %.0f)" ""
row "import / bare" "$(ratio shm.import shm.bare)" "$(ratio disk.import disk.bare)" \
    ">= 50% ($(awk -v a="${R[disk.import]:-0}" -v b="${R[disk.bare]:-0}" 'BEGIN { if (b == 0) print "n/a"; else print (a / b >= 0.5 ? "ok" : "MISS") }') on disk)"
row "  engine alone: store_apply, no HTTP" "$(num shm.direct %.0f)" "$(num disk.direct %.0f)" "diagnostic"
row "  engine alone + JSON parse of each line" "$(num shm.direct_parse %.0f)" "$(num disk.direct_parse %.0f)" "diagnostic"
row "  engine alone / bare" "$(ratio shm.direct shm.bare)" "$(ratio disk.direct disk.bare)" "diagnostic"
row "  CPU/doc: server event loop thread (us)" "$(v shm.loop_us)" "$(v disk.loop_us)" "diagnostic"
row "  CPU/doc: server writer thread (us)" "$(v shm.writer_us)" "$(v disk.writer_us)" "diagnostic"
row "  CPU/doc: engine alone (us)" "$(v shm.direct_us)" "$(v disk.direct_us)" "diagnostic"
row "  time/doc: op_parse_json of one line (us)" "$(v shm.parse_us)" "$(v disk.parse_us)" "diagnostic"
row "  CPU/row: bare SQLite (us)" "$(v shm.bare_us)" "$(v disk.bare_us)" "diagnostic"
row "  batch request p99 (ms)" "$(num shm.import_p99 %.1f)" "$(num disk.import_p99 %.1f)" ""
row "put, 1 connection: p50 (ms, median run)" "$(num shm.p50 %.3f)" "$(num disk.p50 %.3f)" ""
row "put, 1 connection: p99 (ms, median run)" "$(num shm.p99 %.3f)" "$(num disk.p99 %.3f)" "< 2 ms ($(check disk.p99 '<' 2) on disk)"
row "  p99 range over $PUT_RUNS runs (ms)" "$(v shm.p99_range)" "$(v disk.p99_range)" ""
row "  bare SQLite 1-row commit p50 (ms)" "$(num shm.bare_p50 %.3f)" "$(num disk.bare_p50 %.3f)" "floor"
row "  bare SQLite 1-row commit p99 (ms)" "$(num shm.bare_p99 %.3f)" "$(num disk.bare_p99 %.3f)" "floor"
row "put, 1 connection: max (ms)" "$(num shm.max %.3f)" "$(num disk.max %.3f)" ""
row "put, 1 connection (req/s)" "$(num shm.put_rps %.0f)" "$(num disk.put_rps %.0f)" ""
row "put, 4 connections (req/s)" "$(num shm.put4_rps %.0f)" "$(num disk.put4_rps %.0f)" ""
row "put, 4 connections: p99 (ms)" "$(num shm.put4_p99 %.3f)" "$(num disk.put4_p99 %.3f)" ""
row "lockstep import CLI, $IMPORT_DOCS docs (docs/s)" "$(num shm.cli %.0f)" "$(num disk.cli %.0f)" ""
row "bare SQLite, $IMPORT_DOCS rows in 1 txn (rows/s)" "$(num shm.bare1 %.0f)" "$(num disk.bare1 %.0f)" ""
row "lockstep import / bare (1 txn)" "$(ratio shm.cli shm.bare1)" "$(ratio disk.cli disk.bare1)" ""
echo
echo "disk = $(v disk.where); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (other load skews the"
echo "throughput figures; the CPU/doc figures are steadier)"
echo "write-path bench time: $(awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }') s"

# Does anything wait behind a long read (bench/stall.sh), unless BENCH_STALL=0.
if [ "${BENCH_STALL:-1}" != 0 ]; then
    echo
    echo "## GET /v1/status and a live replica's lag while a digest of 1M items runs"
    LOCKSTEP="$LOCKSTEP" "$ROOT/bench/stall.sh"
fi

# Replication next to Redis (bench/repl.sh), unless BENCH_REPL=0.
[ "${BENCH_REPL:-1}" = 0 ] || "$ROOT/bench/repl.sh"

# The messenger next to Redis pub/sub and PostgreSQL LISTEN/NOTIFY (bench/notify.sh), unless BENCH_NOTIFY=0.
[ "${BENCH_NOTIFY:-1}" = 0 ] || "$ROOT/bench/notify.sh"

# Mirroring next to rsync (bench/mirror.sh), unless BENCH_MIRROR=0.
[ "${BENCH_MIRROR:-1}" = 0 ] || "$ROOT/bench/mirror.sh"
exit 0
