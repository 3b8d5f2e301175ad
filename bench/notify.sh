#!/usr/bin/env bash
# bench/notify.sh - the cluster messenger (docs/messenger.md) next to Redis pub/sub and PostgreSQL
# LISTEN/NOTIFY: the same workload, the same run, the same machine (bench/README.md, "Messenger").
# run.sh calls it last; it also runs alone. Every figure comes from build/release/bench_notify,
# which publishes and receives in one process, one thread (bench/notify.c).
#
#   latency   BENCH_NOTIFY_COUNT (2000) notifications at BENCH_NOTIFY_RATE (500) a second, each
#             delivered to one consumer on each of 8 servers: p50, p99, max of publish call ->
#             receipt, over the 8 x 2000 deliveries.
#             lockstep: 1 primary + 7 replicas, the publisher POSTs /v1/notify to the primary, a
#               named consumer on every server reads GET /v1/events (SSE) and, in a second run,
#               GET /v1/notifications?wait_ms= + ack (BENCH_NOTIFY_READ, "sse poll")
#             Redis: 1 master + 7 replicas, a subscriber on each, PUBLISH to the master (pub/sub
#               travels the replication link): the same topology and the same hop as lockstep;
#               and, for reference, the 8 subscribers on the master alone
#             PostgreSQL: 8 LISTEN connections to one server, NOTIFY from another (pooled)
#             lockstep --messenger postgres (docs/messenger.md, "Shared database"): 8 primaries,
#               each its own store, all on that same PostgreSQL (a database and user of their
#               own); the publisher POSTs to server 0, a named consumer on each reads SSE
#               (consumers are site-wide there: each has its own name, as bench_notify gives)
#             lockstep --messenger sqlite: the same 8 primaries on one SQLite file in
#               BENCH_NOTIFY_DIR (docs/messenger.md, "On one host")
#   dropped   the same run with consumer 3 (on a replica) disconnected for BENCH_NOTIFY_DROP_FOR
#             (2) seconds mid-run: the notifications it never received. lockstep reconnects with
#             the same consumer name (SSE: with Last-Event-ID, as EventSource does).
#   throughput  1 lockstep primary + 8 replicas, BENCH_NOTIFY_TPUT_CONSUMERS (100) SSE consumers
#             spread over the 9 servers; BENCH_NOTIFY_TPUT_CONNS (8) publisher connections
#             POSTing as fast as the primary answers, BENCH_NOTIFY_TPUT_BATCH ("1 100", a run
#             each) notifications a request, for BENCH_NOTIFY_TPUT_SECONDS (10): notifications/s
#             published and delivered to every consumer, and CPU per notification of the
#             primary and of a replica (utime + stime of /proc/PID/stat around the run).
#   BENCH_NOTIFY_SYSTEMS ("lockstep redis pg lockstep-pg lockstep-sqlite") picks the systems (lockstep-pg
#             starts the PostgreSQL server too).
#
# Every server listens on 127.0.0.1 (free ports), keeps its data in BENCH_NOTIFY_DIR (/dev/shm),
# is stopped by PID at the end; every step is bounded by BENCH_STEP_LIMIT (120 s). Redis: Debian's
# redis-server, no persistence (pub/sub keeps nothing). PostgreSQL: Debian's, initdb in a temp dir
# (run as user postgres when this runs as root), default settings. A system missing from the
# machine is left out of the table, not an error; the script exits 0 unless it cannot run at all.
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BENCH_BUILD_DIR:-$ROOT/build/release}
LOCKSTEP=${LOCKSTEP:-$ROOT/build/lockstep}
NB=$BUILD/bench_notify
LOADGEN=$BUILD/bench_loadgen

COUNT=${BENCH_NOTIFY_COUNT:-2000}
RATE=${BENCH_NOTIFY_RATE:-500}
DROP_FOR=${BENCH_NOTIFY_DROP_FOR:-2}
READS=${BENCH_NOTIFY_READ:-sse poll}
TPUT_SECS=${BENCH_NOTIFY_TPUT_SECONDS:-10}
TPUT_CONSUMERS=${BENCH_NOTIFY_TPUT_CONSUMERS:-100}
TPUT_CONNS=${BENCH_NOTIFY_TPUT_CONNS:-8}
TPUT_BATCHES=${BENCH_NOTIFY_TPUT_BATCH:-1 100}
SYSTEMS=${BENCH_NOTIFY_SYSTEMS:-lockstep redis pg lockstep-pg lockstep-sqlite}
BASE=${BENCH_NOTIFY_DIR:-/dev/shm}
LIMIT=${BENCH_STEP_LIMIT:-120}
SERVERS=8     # the latency runs: a consumer on each of 8 servers
DROP=3        # the consumer disconnected in the dropped runs (on a replica)
TPUT_REPLICAS=8

declare -A R # figures: R[run.key] = value
BENCH_NAME="notify bench"
source "$ROOT/bench/lib.sh"

[ -x "$NB" ] || { say "notify bench: $NB is missing (make bench): cannot run"; exit 1; }
command -v timeout >/dev/null || { say "notify bench: timeout(1) is missing: cannot run"; exit 1; }
if ! WORK=$(mktemp -d "$BASE/lockstep-notify.XXXXXX"); then
    say "notify bench: cannot create a directory in $BASE: cannot run"
    exit 1
fi
DIRS+=("$WORK")
chmod 755 "$WORK" # PostgreSQL's directory is in it, run by another user

# run_nb KEY ARGS...: one bench_notify run bounded by LIMIT; its RESULT fields go to R[KEY.*]
RUNS=0
run_nb() {
    local key=$1 out=$WORK/$1.out pid kv line
    shift
    RUNS=$((RUNS + 1))
    timeout -k 5 "$LIMIT" "$NB" --time-limit "$((LIMIT - 10))" --tag "nb$$r$RUNS" "$@" >"$out" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait "$pid"
    forget_pid "$pid"
    line=$(grep '^RESULT ' "$out" | tail -n 1)
    if [ -z "$line" ]; then
        say "  $key FAILED:"
        tail -n 5 "$out" | sed 's/^/    /' >&2
        return 1
    fi
    for kv in ${line#RESULT }; do R[$key.${kv%%=*}]=${kv#*=}; done
    say "  $(grep -E '^(lockstep|redis|pg)' "$out" | tail -n 1)"
    grep -E 'connection lost|time limit|could not be deleted|ack of .* refused|mean ms by consumer' "$out" | head -n 4 | sed 's/^/    /' >&2
    return 0
}

# ---------------------------------------------------------------- lockstep

LS_PIDS=() LS_HTTP=() LS_PEER=() # index 0: the primary
HAVE_LS=0

# ls_node I: starts server I (0: the primary, others: its replicas) on free ports
ls_node() {
    local i=$1 role=(--role primary)
    pick_port && LS_HTTP[i]=$PORT && pick_port && LS_PEER[i]=$PORT || return 1
    [ "$i" -gt 0 ] && role=(--role replica --upstream "127.0.0.1:${LS_PEER[0]}")
    "$LOCKSTEP" serve --data "$WORK/ls$i" --http "127.0.0.1:${LS_HTTP[i]}" --listen "127.0.0.1:${LS_PEER[i]}" \
        --name "ls$i" --log-level warn "${role[@]}" >>"$WORK/ls$i.log" 2>&1 &
    LS_PIDS[i]=$!
    PIDS+=("${LS_PIDS[i]}")
}

ls_status() { curl -s --max-time 3 "http://127.0.0.1:$1/v1/status"; }
ls_live() { # ls_live PORT: a replica that is live and has its primary's seq
    local s
    s=$(ls_status "$1") && [ "$(jget state "$s")" = live ] &&
        [ "$(jget seq "$s")" -ge "$(jget seq "$(ls_status "${LS_HTTP[0]}")")" ] 2>/dev/null
}

# ls_cluster N: the primary and replicas 1..N, all live
ls_cluster() {
    local i n=$1
    for ((i = ${#LS_PIDS[@]}; i <= n; i++)); do
        ls_node "$i" || { say "  no free ports"; return 1; }
        if [ "$i" = 0 ] && ! "$LOADGEN" status --port "${LS_HTTP[0]}" --time-limit 15 >/dev/null 2>&1; then
            say "  the lockstep primary does not start:"; tail -n 5 "$WORK/ls0.log" >&2
            return 1
        fi
    done
    for ((i = 1; i <= n; i++)); do
        poll_until 30 ls_live "${LS_HTTP[i]}" && continue
        say "  lockstep replica $i is not live after 30 s:"; tail -n 5 "$WORK/ls$i.log" >&2
        return 1
    done
}

ls_ports() { local IFS=,; echo "${LS_HTTP[*]:0:$1}"; } # ls_ports N: the HTTP ports of the first N servers
ls_cpu_args() { local p; for p in "${LS_PIDS[@]}"; do printf -- '--cpu-pid %s ' "$p"; done; }

# ---------------------------------------------------------------- Redis

RD_PIDS=() RD_PORT=()
HAVE_RD=0
rcli() { local p=$1; shift; timeout -k 2 10 redis-cli -p "$p" "$@" 2>/dev/null | tr -d '\r'; }
rd_ping() { [ "$(rcli "$1" ping)" = PONG ]; }
rd_linked() { rcli "$1" info replication | grep -q '^master_link_status:up'; }

rd_cluster() { # 1 master + 7 replicas
    local i
    for ((i = 0; i < SERVERS; i++)); do
        pick_port || return 1
        RD_PORT[i]=$PORT
        mkdir -p "$WORK/rd$i"
        local rep=()
        [ "$i" -gt 0 ] && rep=(--replicaof 127.0.0.1 "${RD_PORT[0]}")
        redis-server --port "$PORT" --bind 127.0.0.1 --dir "$WORK/rd$i" --logfile "$WORK/rd$i/redis.log" \
            --daemonize no --save '' --appendonly no --repl-diskless-sync-delay 0 "${rep[@]}" >/dev/null 2>&1 &
        RD_PIDS[i]=$!
        PIDS+=("${RD_PIDS[i]}")
        poll_until 15 rd_ping "$PORT" || { say "  redis-server does not start:"; tail -n 3 "$WORK/rd$i/redis.log" >&2; return 1; }
    done
    for ((i = 1; i < SERVERS; i++)); do
        poll_until 30 rd_linked "${RD_PORT[i]}" || { say "  redis replica $i is not linked"; return 1; }
    done
}
rd_ports() { local IFS=,; echo "${RD_PORT[*]}"; }
rd_cpu_args() { local p; for p in "${RD_PIDS[@]}"; do printf -- '--cpu-pid %s ' "$p"; done; }

# ---------------------------------------------------------------- PostgreSQL

PG_PID= PG_PORT= PG_BIN=
HAVE_PG=0
# PostgreSQL refuses to run as root: then its programs run as user postgres. A prefix, not a
# function, so that `"${PG_AS[@]}" postgres ... &` leaves the postmaster's own PID in $!.
PG_AS=()
[ "$(id -u)" = 0 ] && PG_AS=(setpriv --reuid=postgres --regid=postgres --init-groups --)
pg_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres; }

pg_server() {
    local d=$WORK/pg
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$PG_BIN" ] && [ -x "$PG_BIN/postgres" ] || { say "  PostgreSQL is not installed (apt-get install postgresql): left out"; return 1; }
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        say "  running as root and there is no user postgres: PostgreSQL left out"; return 1
    fi
    mkdir -p "$d"
    [ "$(id -u)" = 0 ] && chown postgres: "$d"
    "${PG_AS[@]}" "$PG_BIN/initdb" -D "$d/data" -U postgres -A trust -E UTF8 --no-sync >"$WORK/initdb.log" 2>&1 ||
        { say "  initdb failed:"; tail -n 5 "$WORK/initdb.log" >&2; return 1; }
    pick_port || return 1
    PG_PORT=$PORT
    "${PG_AS[@]}" "$PG_BIN/postgres" -D "$d/data" -p "$PG_PORT" -k "$d" -c listen_addresses=127.0.0.1 \
        >"$WORK/pg.log" 2>&1 &
    PG_PID=$!
    PIDS+=("$PG_PID")
    poll_until 20 pg_ready || { say "  PostgreSQL does not start:"; tail -n 5 "$WORK/pg.log" >&2; return 1; }
    if [ "$(head -n 1 "$d/data/postmaster.pid")" != "$PG_PID" ]; then # it would outlive the script
        say "  PostgreSQL runs as PID $(head -n 1 "$d/data/postmaster.pid"), not $PG_PID: stopped, left out"
        kill -INT "$(head -n 1 "$d/data/postmaster.pid")"
        return 1
    fi
    say "   $("$PG_BIN/postgres" --version)"
}

# ---------------------------------------------------------------- lockstep --messenger postgres

LP_PIDS=() LP_HTTP=() LP_DB=
HAVE_LP=0
lp_psql() { "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres "$@"; }

# lp_database: a user and a database of their own for the shared-mode servers (as
# tests/cluster/test_messenger_pg.sh has), in the PostgreSQL server above
lp_database() {
    [ -x "$PG_BIN/psql" ] || { say "  psql is missing: lockstep --messenger postgres left out"; return 1; }
    lp_psql -c "CREATE ROLE lockstep LOGIN" -c "CREATE DATABASE lockstep OWNER lockstep" >"$WORK/lp-db.log" 2>&1 ||
        { say "  cannot create the database lockstep:"; tail -n 3 "$WORK/lp-db.log" >&2; return 1; }
    LP_DB="postgres://lockstep@127.0.0.1:$PG_PORT/lockstep"
}

# lp_cluster URL NAME: SERVERS primaries, each its own store (NAME0, NAME1, ...), all with
# --messenger URL (LP_DB, or the SQLite file of lockstep-sqlite), all answering
lp_cluster() {
    local i peer url=$1 name=$2
    for ((i = 0; i < SERVERS; i++)); do
        pick_port && LP_HTTP[i]=$PORT && pick_port && peer=$PORT || { say "  no free ports"; return 1; }
        "$LOCKSTEP" serve --data "$WORK/$name$i" --http "127.0.0.1:${LP_HTTP[i]}" --listen "127.0.0.1:$peer" \
            --name "$name$i" --log-level warn --role primary --messenger "$url" >>"$WORK/$name$i.log" 2>&1 &
        LP_PIDS[i]=$!
        PIDS+=("${LP_PIDS[i]}")
    done
    for ((i = 0; i < SERVERS; i++)); do
        "$LOADGEN" status --port "${LP_HTTP[i]}" --time-limit 15 >/dev/null 2>&1 && continue
        say "  lockstep --messenger server $i does not start:"; tail -n 5 "$WORK/$name$i.log" >&2
        return 1
    done
}
lp_ports() { local IFS=,; echo "${LP_HTTP[*]}"; }
lp_cpu_args() { local p; for p in "${LP_PIDS[@]}"; do printf -- '--cpu-pid %s ' "$p"; done; }
lp_stop() { local p; for p in "${LP_PIDS[@]}"; do stop_pid "$p"; done; LP_PIDS=(); }

# ---------------------------------------------------------------- servers

say ""
say "== messenger: lockstep vs Redis pub/sub vs PostgreSQL LISTEN/NOTIFY ($(nproc) CPUs, $BASE, load average $(cut -d' ' -f1-3 /proc/loadavg))"
R[load0]=$(cut -d' ' -f1-3 /proc/loadavg)
wanted() { [[ " $SYSTEMS " == *" $1 "* ]]; }
if ! wanted lockstep; then
    :
elif [ -x "$LOCKSTEP" ] && command -v curl >/dev/null && ls_cluster $((SERVERS - 1)); then
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "http://127.0.0.1:${LS_HTTP[0]}/v1/notifications?limit=1")
    if [ "$code" = 200 ]; then
        HAVE_LS=1
        say "   $("$LOCKSTEP" --version 2>/dev/null): primary + $((SERVERS - 1)) replicas live"
    else
        say "   this lockstep has no messenger (GET /v1/notifications: HTTP $code): lockstep left out"
    fi
else
    say "   lockstep cannot run (needs $LOCKSTEP and curl): left out"
fi
if ! wanted redis; then
    :
elif command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
    if rd_cluster; then
        HAVE_RD=1
        say "   $(redis-server --version | cut -d' ' -f1-3): master + $((SERVERS - 1)) replicas linked"
    fi
else
    say "   redis-server is missing (scripts/deps.sh bench): Redis left out"
fi
if ! wanted pg && ! wanted lockstep-pg; then
    :
elif "$NB" --help 2>&1 | grep -q "without libpq"; then
    say "   bench_notify was built without libpq (libpq-dev): PostgreSQL left out"
elif pg_server; then
    wanted pg && HAVE_PG=1
    if ! wanted lockstep-pg; then
        :
    elif [ -x "$LOCKSTEP" ] && command -v curl >/dev/null && lp_database; then
        HAVE_LP=1 # its servers start for their runs, below: nothing of theirs runs during the others'
    else
        say "   lockstep --messenger postgres cannot run (needs $LOCKSTEP, curl, psql): left out"
    fi
fi
HAVE_LQ=0
if ! wanted lockstep-sqlite; then
    :
elif [ -x "$LOCKSTEP" ] && command -v curl >/dev/null; then
    HAVE_LQ=1 # its servers start for their runs, below
else
    say "   lockstep --messenger sqlite cannot run (needs $LOCKSTEP and curl): left out"
fi

# ---------------------------------------------------------------- latency, and a consumer away

LAT=(--count "$COUNT" --rate "$RATE")
DROPPED=(--drop "$DROP" --drop-for "$DROP_FOR")
say ""
say "-- latency: $COUNT notifications at $RATE/s, a consumer on each of $SERVERS servers; then consumer $DROP away for $DROP_FOR s"
if [ $HAVE_LS = 1 ]; then
    for rd in $READS; do
        run_nb "ls.$rd" --system lockstep --read "$rd" --pub "${LS_HTTP[0]}" --sub "$(ls_ports $SERVERS)" \
            "${LAT[@]}" $(ls_cpu_args)
        run_nb "ls.$rd.drop" --system lockstep --read "$rd" --pub "${LS_HTTP[0]}" --sub "$(ls_ports $SERVERS)" \
            "${LAT[@]}" "${DROPPED[@]}"
    done
fi
if [ $HAVE_RD = 1 ]; then
    run_nb rd.repl --system redis --pub "${RD_PORT[0]}" --sub "$(rd_ports)" "${LAT[@]}" $(rd_cpu_args)
    run_nb rd.one --system redis --pub "${RD_PORT[0]}" --sub "${RD_PORT[0]}" --consumers $SERVERS "${LAT[@]}" \
        --cpu-pid "${RD_PIDS[0]}"
    run_nb rd.repl.drop --system redis --pub "${RD_PORT[0]}" --sub "$(rd_ports)" "${LAT[@]}" "${DROPPED[@]}"
fi
if [ $HAVE_PG = 1 ]; then
    run_nb pg --system pg --pub "$PG_PORT" --sub "$PG_PORT" --consumers $SERVERS "${LAT[@]}"
    run_nb pg.drop --system pg --pub "$PG_PORT" --sub "$PG_PORT" --consumers $SERVERS "${LAT[@]}" "${DROPPED[@]}"
fi
# the shared-database servers: PostgreSQL's (lp), then the SQLite file's (lq)
for sys in lp lq; do
    if [ $sys = lp ]; then
        [ $HAVE_LP = 1 ] || continue
        url=$LP_DB
    else
        [ $HAVE_LQ = 1 ] || continue
        url="sqlite:$WORK/messenger.db"
    fi
    if lp_cluster "$url" $sys; then
        say "   lockstep --messenger $url: $SERVERS primaries"
        run_nb $sys.sse --system lockstep --read sse --pub "${LP_HTTP[0]}" --sub "$(lp_ports)" "${LAT[@]}" \
            $(lp_cpu_args)
        run_nb $sys.sse.drop --system lockstep --read sse --pub "${LP_HTTP[0]}" --sub "$(lp_ports)" \
            "${LAT[@]}" "${DROPPED[@]}"
    fi
    lp_stop
done
# the other systems are done: only lockstep runs during its throughput figure
for p in "${RD_PIDS[@]}"; do stop_pid "$p"; done
[ -n "$PG_PID" ] && stop_pid "$PG_PID" INT # a fast shutdown

# ---------------------------------------------------------------- throughput

if [ $HAVE_LS = 1 ]; then
    say ""
    say "-- throughput: lockstep primary + $TPUT_REPLICAS replicas, $TPUT_CONSUMERS SSE consumers, $TPUT_CONNS publisher connections, ${TPUT_SECS}s"
    if ls_cluster "$TPUT_REPLICAS"; then
        for b in $TPUT_BATCHES; do
            run_nb "tput.$b" --system lockstep --read sse --pub "${LS_HTTP[0]}" \
                --sub "$(ls_ports $((TPUT_REPLICAS + 1)))" --consumers "$TPUT_CONSUMERS" --rate 0 \
                --seconds "$TPUT_SECS" --pub-conns "$TPUT_CONNS" --batch "$b" --count 5000000 --drain 60 \
                $(ls_cpu_args)
        done
    fi
fi

# ---------------------------------------------------------------- the tables

v() { local x=${R[$1]:-}; [ -n "$x" ] && printf '%s' "$x" || printf 'n/a'; }
num() { local x=${R[$1]:-}; [ -n "$x" ] && awk -v x="$x" "BEGIN { if (x < 0) printf \"n/a\"; else printf \"$2\", x }" || printf 'n/a'; }

lat_row() { # lat_row KEY LABEL
    printf '%-58s %8s %8s %8s %8s %7s %5s %9s %9s\n' "$2" "$(num "$1.p50_ms" %.3f)" "$(num "$1.p99_ms" %.3f)" \
        "$(num "$1.max_ms" %.3f)" "$(num "$1.pub_p99_ms" %.3f)" "$(v "$1.missing")" "$(v "$1.dups")" \
        "$(num "$1.cpu_primary_us" %.0f)" "$(num "$1.cpu_other_us" %.0f)"
}
drop_row() { # drop_row KEY LABEL
    printf '%-58s %8s %8s %8s %10s\n' "$2" "$(v "$1.lost_dropped")" "$(v "$1.dups_dropped")" \
        "$(v "$1.missing")" "$(num "$1.drop_max_ms" %.0f)"
}

echo
echo "messenger latency: publish call -> receipt by a consumer on each of $SERVERS servers, $COUNT notifications at $RATE/s"
echo "(ms over the $((SERVERS * COUNT)) deliveries; pub p99: the publish request until its reply; CPU: us per"
echo " notification over the run of the primary and of a replica (mean), idle cost included, 10 ms ticks)"
printf '%-58s %8s %8s %8s %8s %7s %5s %9s %9s\n' "system" "p50" "p99" "max" "pub p99" "missing" "dups" "CPU prim" "CPU repl"
for rd in $READS; do
    [ "$rd" = sse ] && lat_row ls.sse "lockstep, GET /v1/events (1 primary + 7 replicas)"
    [ "$rd" = poll ] && lat_row ls.poll "lockstep, GET /v1/notifications?wait_ms= + ack"
done
lat_row rd.repl "Redis pub/sub, master + 7 replicas (the same hop)"
lat_row rd.one "  Redis pub/sub, 8 subscribers on the master"
lat_row pg "PostgreSQL LISTEN/NOTIFY, 8 connections"
lat_row lp.sse "lockstep --messenger postgres, GET /v1/events (8 servers)"
lat_row lq.sse "lockstep --messenger sqlite, GET /v1/events (8 servers)"

echo
echo "one consumer (on a replica) disconnected for $DROP_FOR s mid-run, then back:"
printf '%-58s %8s %8s %8s %10s\n' "system" "lost" "dups" "others'" "its max ms"
for rd in $READS; do
    [ "$rd" = sse ] && drop_row ls.sse.drop "lockstep SSE, named consumer (Last-Event-ID)"
    [ "$rd" = poll ] && drop_row ls.poll.drop "lockstep long poll, named consumer (acks)"
done
drop_row rd.repl.drop "Redis pub/sub (subscriber on a replica)"
drop_row pg.drop "PostgreSQL LISTEN/NOTIFY"
drop_row lp.sse.drop "lockstep --messenger postgres, SSE (8 servers)"
drop_row lq.sse.drop "lockstep --messenger sqlite, SSE (8 servers)"
echo "(lost: notifications it never received; others': what the other consumers missed; its max: the"
echo " longest publish -> receipt among its deliveries, the redelivered ones included)"
refused=0
for k in ls.poll ls.poll.drop; do refused=$((refused + ${R[$k.ack_refused]:-0})); done
[ $refused = 0 ] || echo "NOTE: $refused acks of a page's \"next\" were refused (400, beyond this server's seq) and retried 1 ms later"

if [ $HAVE_LS = 1 ]; then
    echo
    echo "lockstep throughput: 1 primary + $TPUT_REPLICAS replicas, $TPUT_CONSUMERS SSE consumers over the $((TPUT_REPLICAS + 1)) servers, $TPUT_CONNS publisher connections, ${TPUT_SECS} s"
    printf '%-22s %12s %12s %8s %8s %8s %9s %9s %7s %6s\n' "notifications/request" "published/s" "to all/s" "p50 ms" "p99 ms" \
        "max ms" "CPU prim" "CPU repl" "missing" "client"
    for b in $TPUT_BATCHES; do
        printf '%-22s %12s %12s %8s %8s %8s %9s %9s %7s %6s\n' "$b" "$(num "tput.$b.pub_rate" %.0f)" \
            "$(num "tput.$b.e2e_rate" %.0f)" "$(num "tput.$b.p50_ms" %.2f)" "$(num "tput.$b.p99_ms" %.2f)" \
            "$(num "tput.$b.max_ms" %.1f)" "$(num "tput.$b.cpu_primary_us" %.1f)" "$(num "tput.$b.cpu_other_us" %.1f)" \
            "$(v "tput.$b.missing")" "$(awk -v c="${R[tput.$b.self_cpu_s]:-}" -v t="${R[tput.$b.e2e_secs]:-}" \
            'BEGIN { if (c != "" && t > 0) printf "%.0f%%", 100 * c / t; else printf "n/a" }')"
    done
    echo "(to all/s: notifications / time from the first publish until every consumer had all of them;"
    echo " CPU: us per notification of the primary, and the mean of the replicas, over that time; client:"
    echo " bench_notify's own CPU over that time, one thread: near 100% it, not lockstep, is the limit)"
fi
echo
echo "load average at the start: ${R[load0]}, at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
exit 0
