# shellcheck shell=bash disable=SC2034
# tests/cluster/lib.sh - sourced by every tests/cluster/test_*.sh.
#
# Real processes only: each test starts its own `lockstep serve` processes on free 127.0.0.1
# ports, with their data in a private temp dir, and drives them with the CLI (and curl).
#
#   T                 the test's temp dir under /tmp (removed on exit)
#   SHM               a temp dir under /dev/shm for big files (removed on exit)
#   free_port         prints a free 127.0.0.1 port
#   start_server NAME [serve flags...]
#                     starts `lockstep serve --data $T/NAME --http 127.0.0.1:PORT
#                     --listen 127.0.0.1:PEERPORT --name NAME ...` (the same ports again when NAME
#                     ran before; a --listen among the flags wins), log in $T/NAME.log; waits until
#                     `lockstep status` answers; sets URL_<NAME>, PORT_<NAME>, PID_<NAME>, DATA_<NAME>
#                     and exports LOCKSTEP_SERVER=URL (the last server started)
#   start_server_args NAME PORT [serve args...]   the same, with the whole command line given
#   stop_server NAME  SIGTERM, wait (bounded); fails the test unless it exits 0
#   kill9_server NAME SIGKILL and reap
#   use_server NAME   LOCKSTEP_SERVER=its URL
#   lsc NAME ARGS...  runs `lockstep ARGS` against server NAME
#   bg_track PID      kill this background process (by PID) when the test ends
#   bg_wait PID [S]   wait at most S seconds for it; returns its exit status
#   restart_server NAME [flags...]   the same data dir and port again (start_server does this
#                     too for a NAME that ran before)
#   status_field NAME FIELD, seq_of NAME, digest_of NAME [args]   read the server's state
#   assert_eq, assert_ne, assert_exit, assert_contains, assert_not_contains, assert_same_file,
#   wait_until, lines_at_least, fail, log  (see below)
#
# On exit every process the test started is killed by PID; when the test failed, or a server log
# holds a sanitizer report, the server logs are printed.
set -euo pipefail

if [[ -z "${LOCKSTEP:-}" || ! -x "${LOCKSTEP}" ]]; then
    echo "lib.sh: set LOCKSTEP to the lockstep binary (got '${LOCKSTEP:-}')" >&2
    exit 1
fi
# LOCKSTEP_SERVE is the binary under test (the sanitized one in make test): every server runs it.
# The CLI commands a test runs (thousands in some) run LS_CLIENT instead when it is set (make test
# sets the release build), unless the test sets CLI_LEAK_CHECK=1 before sourcing this file: a
# sanitized process costs ~50 ms of CPU to start and end, a release one ~15 ms. The tests that
# set it (docs/testing.md) run every command at least once sanitized, with the leak check; the
# other sanitized CLI commands skip it. A server started by hand in a test is
# ASAN_OPTIONS="$ASAN_OPTIONS:$SERVER_LEAKS" "$LOCKSTEP_SERVE" serve ...
LOCKSTEP_SERVE=$LOCKSTEP
if [[ -n "${LS_CLIENT:-}" && "${CLI_LEAK_CHECK:-0}" != 1 ]]; then
    [[ -x "$LS_CLIENT" ]] || { echo "lib.sh: LS_CLIENT is not a program: $LS_CLIENT" >&2; exit 1; }
    LOCKSTEP=$LS_CLIENT
fi
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
SERVER_LEAKS=detect_leaks=1
[[ ":$ASAN_OPTIONS" != *:detect_leaks=0* ]] || SERVER_LEAKS=detect_leaks=0
[[ "${CLI_LEAK_CHECK:-0}" == 1 ]] || ASAN_OPTIONS="$ASAN_OPTIONS:detect_leaks=0"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}"
# a ThreadSanitizer build (make tsan): the first race ends the server, and the test fails
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1:suppressions=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tsan.supp}"
unset LOCKSTEP_SERVER # never talk to a server this test did not start
export CLUSTER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)" # socks.py and friends

TEST_NAME=$(basename "$0" .sh)
T=$(mktemp -d "/tmp/lockstep-$TEST_NAME.XXXXXX")
SHM=$(mktemp -d "/dev/shm/lockstep-$TEST_NAME.XXXXXX")
declare -A _PID=() _PORT=() _URL=() _DATA=() _LISTEN=()
_BG_PIDS=()
_FAILED_MSG=""

# ---------------------------------------------------------------- messages and assertions

log() { printf '[%s %s] %s\n' "$TEST_NAME" "$(date +%T)" "$*" >&2; }

_where() {
    local i=1
    # the first frame outside lib.sh
    while [[ ${BASH_SOURCE[$i]:-} == *lib.sh ]]; do i=$((i + 1)); done
    printf '%s:%s' "$(basename "${BASH_SOURCE[$i]:-?}")" "${BASH_LINENO[$((i - 1))]:-?}"
}

fail() {
    _FAILED_MSG="$*"
    printf 'FAIL (%s): %s\n' "$(_where)" "$*" >&2
    exit 1
}

# assert_eq EXPECTED ACTUAL [WHAT]
# assert_eq A B [WHAT]: the tests pass the value and the one wanted in either order, so the
# message names neither "expected"
assert_eq() {
    [[ "$1" == "$2" ]] || fail "${3:-value}: '$1' and '$2' differ"
}

assert_ne() {
    [[ "$1" != "$2" ]] || fail "${3:-value}: expected something other than '$1'"
}

# assert_contains HAYSTACK NEEDLE [WHAT]
assert_contains() {
    [[ "$1" == *"$2"* ]] || fail "${3:-text}: expected to contain '$2', got '$1'"
}

assert_not_contains() {
    [[ "$1" != *"$2"* ]] || fail "${3:-text}: expected not to contain '$2', got '$1'"
}

# assert_same_file EXPECTED ACTUAL [WHAT]: byte for byte
assert_same_file() {
    cmp -s "$1" "$2" || fail "${3:-file}: $2 differs from $1 ($(cmp "$1" "$2" 2>&1 | head -1))"
}

# assert_exit CODE CMD [ARGS...]: runs CMD, its stdout in $OUT (and $T/out), stderr in $ERR (and
# $T/err), and checks the exit code. Redirect stdin on the call when the command reads it.
OUT=""
ERR=""
assert_exit() {
    local want=$1 rc=0
    shift
    "$@" >"$T/out" 2>"$T/err" || rc=$?
    OUT=$(cat "$T/out")
    ERR=$(cat "$T/err")
    if [[ "$rc" != "$want" ]]; then
        fail "'$*' exited $rc, expected $want; stdout: $(head -c 400 "$T/out"); stderr: $(head -c 600 "$T/err")"
    fi
}

# wait_until SECONDS CMD [ARGS...]: polls CMD every 0.1 s until it succeeds; 1 on timeout.
wait_until() {
    local limit=$1 end
    shift
    end=$(($(date +%s%N) / 1000000 + limit * 1000))
    while (($(date +%s%N) / 1000000 < end)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

# lines_at_least FILE N: FILE exists and has at least N lines (for wait_until)
lines_at_least() {
    [[ -f "$1" ]] && (($(wc -l <"$1") >= $2))
}

# ---------------------------------------------------------------- processes

free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

bg_track() {
    _BG_PIDS+=("$1")
}

# bg_wait PID [SECONDS]: waits (at most SECONDS, default 60) for a background child and returns
# its exit status; fails the test when it is still running then.
bg_wait() {
    local pid=$1 limit=${2:-60} i rc=0
    for ((i = 0; i < limit * 10; i++)); do
        _alive "$pid" || break
        sleep 0.1
    done
    if _alive "$pid"; then
        _signal TERM "$pid"
        fail "background process $pid is still running after $limit s"
    fi
    wait "$pid" 2>/dev/null || rc=$?
    return "$rc"
}

# _alive PID: a live (not zombie) process whose parent is this shell. PIDs are reused quickly on a
# busy machine (pid_max may be 32768), so a PID is signalled only after this check: a child that
# exited (and was reaped by bash) may lend its PID to someone else's process.
_alive() {
    local stat
    [[ -n "${1:-}" ]] || return 1
    { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
    stat=${stat##*) }
    [[ "${stat%% *}" != Z ]] || return 1
    stat=${stat#* }
    [[ "${stat%% *}" == "$$" ]]
}

# _signal SIG PID: signal a child of this shell, never anyone else
_signal() {
    _alive "$2" && kill "-$1" "$2" 2>/dev/null
    return 0
}

_server_vars() {
    local name=$1
    printf -v "URL_$name" '%s' "${_URL[$name]}"
    printf -v "PORT_$name" '%s' "${_PORT[$name]}"
    printf -v "PID_$name" '%s' "${_PID[$name]}"
    printf -v "DATA_$name" '%s' "${_DATA[$name]:-}"
    export LOCKSTEP_SERVER="${_URL[$name]}"
}

# _listening PID PORT: process PID has a socket listening on TCP port PORT (so an answer on that
# port is ours, not some other server's that took the port meanwhile)
_listening() {
    local pid=$1 inode
    # one awk pass: bash would read /proc/net/tcp a byte at a time (slow with many sockets)
    for inode in $(awk -v p=":$(printf '%04X' "$2")" \
        '$4 == "0A" && substr($2, length($2) - 4) == p { print $10 }' /proc/net/tcp 2>/dev/null); do
        [[ -n "$(find "/proc/$pid/fd" -lname "socket:\[$inode\]" 2>/dev/null)" ]] && return 0
    done
    return 1
}

# start_server_ready NAME PORT READY SERVE-ARGS...: runs `lockstep serve SERVE-ARGS` (which must
# listen on 127.0.0.1:PORT; https when they have --tls-cert) and waits until it listens there and
# the shell command READY succeeds ($URL is the server's URL in it). Returns 1 (log kept) when
# the server exits before that.
start_server_ready() {
    local name=$1 port=$2 ready=$3 logf i pid scheme=http a
    shift 3
    [[ "$name" =~ ^[A-Za-z0-9_]+$ ]] || fail "server name '$name': use letters, digits and _"
    if [[ -n "${_PID[$name]:-}" ]] && _alive "${_PID[$name]}"; then
        fail "server $name is already running"
    fi
    for a in "$@"; do [[ "$a" != --tls-cert ]] || scheme=https; done
    logf="$T/$name.log"
    echo "=== $(date +%T.%N) lockstep serve $*" >>"$logf"
    ASAN_OPTIONS="$ASAN_OPTIONS:$SERVER_LEAKS" "$LOCKSTEP_SERVE" serve "$@" >>"$logf" 2>&1 &
    pid=$!
    _PID[$name]=$pid
    _PORT[$name]=$port
    _URL[$name]="$scheme://127.0.0.1:$port"
    _server_vars "$name"
    for ((i = 0; i < 200; i++)); do # 200 x 0.05 s = 10 s
        if ! _alive "$pid"; then
            wait "$pid" 2>/dev/null || true
            _PID[$name]=""
            return 1
        fi
        if _listening "$pid" "$port" && URL="${_URL[$name]}" eval "$ready"; then
            return 0
        fi
        sleep 0.05
    done
    fail "server $name did not answer on ${_URL[$name]} within 10 s"
}

# start_server_args NAME PORT ARGS...: start_server_ready, ready once `lockstep status` answers.
start_server_args() {
    local name=$1 port=$2
    shift 2
    start_server_ready "$name" "$port" '"$LOCKSTEP" status --server "$URL" >/dev/null 2>&1' "$@"
}

# start_server NAME [FLAGS...]: see the top of this file. A server that ran before gets its data
# dir and port again (restart_server); a new one tries another port when the one picked was taken
# meanwhile.
start_server() {
    local name=$1 port tries
    shift
    if [[ -n "${_PORT[$name]:-}" ]]; then
        restart_server "$name" "$@"
        return
    fi
    _DATA[$name]="${DATA_ROOT:-$T}/$name"
    for ((tries = 0; tries < 3; tries++)); do
        port=$(free_port)
        _LISTEN[$name]=$(free_port) # the peer port: every server has one, keep it off 7071
        [[ "$port" != "${_LISTEN[$name]}" ]] || continue
        if start_server_args "$name" "$port" --data "${_DATA[$name]}" --http "127.0.0.1:$port" \
            --listen "127.0.0.1:${_LISTEN[$name]}" --name "$name" "$@"; then
            _server_vars "$name"
            return 0
        fi
        grep -q 'Address already in use' "$T/$name.log" || break
    done
    fail "server $name did not start: $(tail -n 5 "$T/$name.log")"
}

# restart_server NAME [FLAGS...]: the same data dir and port as before.
restart_server() {
    local name=$1 tries
    shift
    [[ -n "${_PORT[$name]:-}" ]] || fail "restart_server: $name never ran"
    # A port just released may take a moment to be bindable again.
    for ((tries = 0; tries < 20; tries++)); do
        if start_server_args "$name" "${_PORT[$name]}" --data "${_DATA[$name]}" \
            --http "127.0.0.1:${_PORT[$name]}" ${_LISTEN[$name]:+--listen "127.0.0.1:${_LISTEN[$name]}"} \
            --name "$name" "$@"; then
            _server_vars "$name"
            return 0
        fi
        grep -q 'Address already in use' "$T/$name.log" || break
        sleep 0.1
    done
    fail "server $name did not restart: $(tail -n 5 "$T/$name.log")"
}

use_server() {
    export LOCKSTEP_SERVER="${_URL[$1]}"
}

url_of() { printf '%s' "${_URL[$1]}"; }
pid_of() { printf '%s' "${_PID[$1]}"; }

# lsc NAME ARGS...: the CLI against server NAME
lsc() {
    local name=$1
    shift
    LOCKSTEP_SERVER="${_URL[$name]}" "$LOCKSTEP" "$@"
}

# stop_server NAME: SIGTERM, then wait at most 15 s; the server must exit 0 (a sanitizer report at
# exit, e.g. a leak, makes it exit non-zero).
stop_server() {
    local name=$1 pid i rc=0
    pid=${_PID[$name]:-}
    [[ -n "$pid" ]] || fail "stop_server: $name is not running"
    _alive "$pid" || fail "stop_server: $name (pid $pid) is not running any more"
    _signal TERM "$pid"
    for ((i = 0; i < 150; i++)); do
        _alive "$pid" || break
        sleep 0.1
    done
    if _alive "$pid"; then
        _signal KILL "$pid"
        wait "$pid" 2>/dev/null || true
        _PID[$name]=""
        fail "server $name did not stop within 15 s of SIGTERM"
    fi
    wait "$pid" 2>/dev/null || rc=$?
    _PID[$name]=""
    [[ "$rc" == 0 ]] || fail "server $name exited $rc after SIGTERM (see $name.log)"
}

kill9_server() {
    local name=$1 pid
    pid=${_PID[$name]:-}
    [[ -n "$pid" ]] || fail "kill9_server: $name is not running"
    { _signal KILL "$pid"; wait "$pid"; } 2>/dev/null || true
    _PID[$name]=""
}

# ---------------------------------------------------------------- store helpers

# status_field NAME FIELD
status_field() {
    lsc "$1" status --json | jq -r ".$2"
}

seq_of() { status_field "$1" seq; }

# digest_of NAME [digest args...]: "DIGEST ITEMS"
digest_of() {
    local name=$1
    shift
    lsc "$name" digest --json "$@" | jq -r '"\(.digest) \(.items)"'
}

# ---------------------------------------------------------------- exit

_cleanup() {
    local rc=$? name pid f sanitizer=0
    set +e
    trap - EXIT
    { # (bash reports the killed jobs on stderr: not interesting)
        for pid in "${_BG_PIDS[@]}"; do _signal TERM "$pid"; done
        for name in "${!_PID[@]}"; do _signal KILL "${_PID[$name]}"; done
        sleep 0.1
        for pid in "${_BG_PIDS[@]}"; do _signal KILL "$pid"; done
        for pid in "${_BG_PIDS[@]}" "${_PID[@]}"; do [[ -n "$pid" ]] && wait "$pid"; done
    } 2>/dev/null
    for f in "$T"/*.log; do
        [[ -f "$f" ]] || continue
        if grep -qE 'ERROR: (Address|Leak|Thread)Sanitizer|WARNING: ThreadSanitizer|runtime error:|SUMMARY: .*Sanitizer' "$f"; then
            echo "FAIL: sanitizer report in $(basename "$f")" >&2
            sanitizer=1
        fi
    done
    ((sanitizer)) && rc=1
    if ((rc != 0)); then
        for f in "$T"/*.log; do
            [[ -f "$f" ]] || continue
            echo "----- $(basename "$f") (last 80 lines)" >&2
            tail -n 80 "$f" >&2
        done
        echo "FAILED: $TEST_NAME (${SECONDS}s)" >&2
    else
        echo "PASSED: $TEST_NAME (${SECONDS}s)" >&2
    fi
    if [[ -n "${KEEP_TMP:-}" ]]; then
        echo "kept $T $SHM" >&2
    else
        rm -rf "$T" "$SHM"
    fi
    exit "$rc"
}
trap _cleanup EXIT
trap 'exit 130' INT TERM
