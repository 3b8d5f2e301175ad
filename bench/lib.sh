# shellcheck shell=bash
# bench/lib.sh - sourced by run.sh, repl.sh and notify.sh: what every benchmark script needs to start
# processes and leave nothing behind. PIDS holds every process a script started (stopped by
# PID at exit), DIRS every directory to remove; BENCH_NAME prefixes its messages.

PIDS=() # everything running that we started
DIRS=() # everything to remove

say() { printf '%s\n' "$*" >&2; }

cleanup() {
    local pid i d
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null
        kill -CONT "$pid" 2>/dev/null # a stopped process handles nothing
    done
    for pid in "${PIDS[@]}"; do
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    PIDS=()
    for d in "${DIRS[@]}"; do
        [ -n "$d" ] && rm -rf -- "$d"
    done
    DIRS=()
}
trap cleanup EXIT
trap 'say "${BENCH_NAME:-bench}: interrupted"; exit 130' INT TERM HUP

forget_pid() {
    local p keep=()
    for p in "${PIDS[@]}"; do [ "$p" != "$1" ] && keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# Ports are picked below the ephemeral range, which outgoing connections take theirs from.
EPHEMERAL_LOW=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
[ "${EPHEMERAL_LOW:-0}" -gt 21000 ] 2>/dev/null || EPHEMERAL_LOW=32768
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
USED_PORTS=" "
pick_port() { # sets PORT to a free port not handed out before
    local try
    for ((try = 0; try < 50; try++)); do
        PORT=$((20000 + (RANDOM * 32768 + RANDOM) % (EPHEMERAL_LOW - 20000)))
        [[ $USED_PORTS == *" $PORT "* ]] && continue
        port_free "$PORT" || continue
        USED_PORTS+="$PORT "
        return 0
    done
    return 1
}

# stop_pid PID [SIGNAL]: SIGNAL (TERM; and SIGCONT), up to 15 s, then SIGKILL
stop_pid() {
    local pid=$1 i
    [ -n "$pid" ] || return 0
    kill -"${2:-TERM}" "$pid" 2>/dev/null
    kill -CONT "$pid" 2>/dev/null
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    forget_pid "$pid"
}

now_us() { echo "${EPOCHREALTIME/./}"; }

# poll_until SECONDS CMD...: CMD every 50 ms until it succeeds (0), or 1 after SECONDS
poll_until() {
    local limit=$1 end i
    shift
    end=$(($(now_us) + limit * 1000000))
    for ((i = 0; i < limit * 20 + 1; i++)); do
        "$@" && return 0
        [ "$(now_us)" -gt "$end" ] && return 1
        sleep 0.05
    done
    return 1
}

jget() { sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\).*/\1/p" <<<"$2" | head -n 1; } # jget KEY JSON: a scalar of flat JSON
