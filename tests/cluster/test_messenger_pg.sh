#!/usr/bin/env bash
# The messenger's shared-database mode (docs/messenger.md, "Shared database"): a real PostgreSQL
# (Debian's, initdb in a temp dir under /dev/shm, on a free 127.0.0.1 port) and two lockstep
# servers A and B started with --messenger on it. No server talks to the other.
#  1. Notifications published on A and B at once: watchers on A and on B get every one, in one
#     order (the same ids), each publisher's order kept; the CLI's consumers commands work. An
#     event stream on B (fed from the rows the wake-ups carry, not from reads) gets the same
#     events, to the byte, as the watchers (whose long polls read the database).
#  2. Out-of-order commits: a transaction holds a lower id while a later publish commits; the
#     watcher gets both, the held one first (a naive `id > last` read skips it: run with
#     LOCKSTEP_PG_NAIVE=1 and this step fails). A rolled-back id does not hold anything up. An
#     event stream follows the same rule.
#  3. PostgreSQL restarted mid-run (pg_ctl restart): every acknowledged publish is received,
#     the watchers resume by themselves.
#  4. The servers' connections killed (pg_terminate_backend): the next publish succeeds, the
#     listener reconnects, watchers go on.
#  5. Retention (a server with --notify-retention 1s prunes, alone): a consumer left behind gets
#     one reset event, again until it acknowledges.
#  6. The site registry in the database: each server lists the others (no link between them), a
#     stopped one goes stale.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/lib_msg.sh"

PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [[ -z "$PGBIN" || ! -x "$PGBIN/initdb" ]]; then
    echo "SKIP: no PostgreSQL server (apt-get install postgresql)" >&2
    exit 77
fi
command -v psql >/dev/null || { echo "SKIP: no psql" >&2; exit 77; }

# ---------------------------------------------------------------- PostgreSQL

# initdb refuses to run as root: the cluster belongs to an ordinary user then.
PGUSER_OS=""
if [[ $(id -u) == 0 ]]; then
    PGUSER_OS=postgres
    getent passwd postgres >/dev/null || PGUSER_OS=nobody
fi
as_pg() {
    if [[ -n "$PGUSER_OS" ]]; then runuser -u "$PGUSER_OS" -- "$@"; else "$@"; fi
}
PGDIR=$(mktemp -d /dev/shm/lockstep-pg.XXXXXX)
[[ -z "$PGUSER_OS" ]] || chown "$PGUSER_OS" "$PGDIR"
PGPORT=$(free_port)
pg_ctl_() { (cd /tmp && as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" "$@"); }
pg_stop() {
    local pid
    [[ -f "$PGDIR/data/postmaster.pid" ]] || return 0
    pid=$(head -1 "$PGDIR/data/postmaster.pid")
    pg_ctl_ stop -m immediate -w >/dev/null 2>&1 || true
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
}
_pg_cleanup() {
    local rc=$?
    set +e # (under set -e the `(exit $rc)` of a failed run would end this before _cleanup)
    _cleanup_pg_servers
    pg_stop
    rm -rf "$PGDIR"
    (exit $rc)
    _cleanup
}
# lockstep servers and watchers first: they would only reconnect to a stopping database
_cleanup_pg_servers() {
    local name pid
    for pid in "${_BG_PIDS[@]}"; do _signal TERM "$pid"; done
    for name in "${!_PID[@]}"; do _signal KILL "${_PID[$name]}"; done
}
trap _pg_cleanup EXIT

(cd /tmp && as_pg "$PGBIN/initdb" -D "$PGDIR/data" -A trust -U lockstep -E UTF8 --no-sync \
    >"$T/initdb.log" 2>&1) || fail "initdb: $(tail -3 "$T/initdb.log")"
pg_ctl_ start -w -l "$PGDIR/pg.log" -o "-p $PGPORT -k $PGDIR -c listen_addresses=127.0.0.1 \
    -c fsync=off -c max_connections=40" >/dev/null || fail "postgres: $(tail -5 "$PGDIR/pg.log")"
sql() { psql -X -q -At -v ON_ERROR_STOP=1 -h "$PGDIR" -p "$PGPORT" -U lockstep -d lockstep "$@"; }
psql -X -q -h "$PGDIR" -p "$PGPORT" -U lockstep -d postgres -c 'CREATE DATABASE lockstep'
DB="postgres://lockstep@127.0.0.1:$PGPORT/lockstep"
log "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PGPORT"

export LOCKSTEP_RECKON_MS=300
start_server A --messenger "$DB" --poll-interval 300ms
start_server B --messenger "$DB" --poll-interval 300ms

watch_on() { # NAME CONSUMER CHANNEL OUTFILE: a watcher in the background
    "$LOCKSTEP" watch --server "$(url_of "$1")" --consumer "$2" --channel "$3" --from-start \
        --json >"$4" 2>>"$T/watch.err" &
    bg_track $!
    WATCH_PID=$!
}
sse_on() { # NAME CONSUMER CHANNEL OUTFILE: an event stream in the background, from the start
    curl -sN "$(url_of "$1")/v1/events?consumer=$2&channel=$3&from=start" >"$4" 2>>"$T/watch.err" &
    bg_track $!
}
sse_data() { sed -n 's/^data: //p' "$1"; } # the events' JSON, one a line
sse_at_least() { (($(sse_data "$1" | wc -l) >= $2)); }
# whether the ids of a watcher's lines only grow
strictly_increasing() { jq -r .id "$1" | awk 'NR > 1 && $1 <= prev { exit 1 } { prev = $1 }'; }

# ---------------------------------------------------------------- 1. two servers, one order
log "1: publishing on A and B at once, watchers on both"
watch_on A wa cache "$T/wa"
wa=$WATCH_PID
watch_on B wb cache "$T/wb"
wb=$WATCH_PID
sse_on B eb cache "$T/eb"
pids=()
pub_loop A a 40 cache & pids+=($!); bg_track $!
pub_loop B b 40 cache & pids+=($!); bg_track $!
wait_pids_ok() { local p; for p in "$@"; do bg_wait "$p" 60 || fail "a publisher failed"; done; }
wait_pids_ok "${pids[@]}"
wait_until 20 lines_at_least "$T/wa" 80 || fail "watcher on A: $(wc -l <"$T/wa") of 80"
wait_until 20 lines_at_least "$T/wb" 80 || fail "watcher on B: $(wc -l <"$T/wb") of 80"
wait_until 20 sse_at_least "$T/eb" 80 || fail "event stream on B: $(sse_data "$T/eb" | wc -l) of 80"
assert_eq "$(jq -c . "$T/wb")" "$(sse_data "$T/eb" | jq -c .)" "B's event stream, as B's watcher"
sort -n "$T/acked.a" "$T/acked.b" >"$T/acked1"
assert_eq "$(cat "$T/acked1")" "$(received "$T/wa")" "what A's watcher got (ids and payloads)"
assert_eq "$(received "$T/wa")" "$(received "$T/wb")" "B's watcher, in A's order"
for who in a b; do
    got=$(received "$T/wa" | awk '{print $2}' | grep "\"$who-" | tr -d '"' | tr '\n' ' ')
    assert_eq "$(seq -s ' ' -f "$who-%g" 1 40) " "$got" "the order of $who's notifications"
done
out=$(lsc B consumers --json)
assert_eq "$(jq -c '[.consumers[].name]' <<<"$out")" '["eb","wa","wb"]' "consumers seen from B"
wait_until 10 bash -c "[[ \$(curl -sf $URL_A/v1/consumers/wa | jq .position) == $(tail -1 "$T/acked1" | cut -d' ' -f1) ]]" ||
    fail "wa's position is not the last id: $(curl -sf "$URL_A/v1/consumers/wa")"
assert_eq "$(curl -sf "$URL_B/v1/consumers/wa" | jq -r .state)" live "wa's state, seen from B"

# ---------------------------------------------------------------- 2. out-of-order commits
log "2: a transaction holds a lower id while a later one commits"
watch_on B wo ooo "$T/wo"
wo=$WATCH_PID
sse_on B eo ooo "$T/eo"
wait_until 10 curl -sf "$URL_B/v1/consumers/wo" || fail "watcher wo did not register"
wait_until 10 curl -sf "$URL_B/v1/consumers/eo" || fail "event stream eo did not register"
before=$(sql -c "SELECT last_value FROM lockstep_notes_id")
held_id=$((before + 1))
sql -c "BEGIN; INSERT INTO lockstep_notes (channel, payload) VALUES ('ooo', '\"held\"');
        SELECT pg_sleep(3); COMMIT;" >/dev/null &
held=$!
bg_track $held
_allocated() { (($(sql -c "SELECT last_value FROM lockstep_notes_id") > before)); }
wait_until 10 _allocated || fail "the holding transaction took no id"
after_id=$(pub A ooo '"after"')
((after_id > held_id)) || fail "the later publish did not get the higher id ($after_id)"
sleep 1
assert_eq "" "$(cat "$T/wo")" "what wo got while the lower id was held (nothing may pass it)"
assert_eq "" "$(sse_data "$T/eo")" "what the event stream got while the lower id was held"
bg_wait $held 20 || fail "the holding transaction failed"
_got_two() { lines_at_least "$T/wo" 2; }
wait_until 10 _got_two || fail "after the commit, wo got: $(cat "$T/wo")"
assert_eq "$held_id \"held\"
$after_id \"after\"" "$(received "$T/wo")" "wo: the held notification first, none skipped"
wait_until 10 sse_at_least "$T/eo" 2 || fail "after the commit, the event stream got: $(sse_data "$T/eo")"
assert_eq "$(jq -c . "$T/wo")" "$(sse_data "$T/eo" | jq -c .)" "the event stream: the held one first"
# a rolled-back id is a gap that ends with its transaction; a long transaction that publishes
# nothing (it only holds an xid) holds nothing up
sql -c "CREATE TABLE unrelated (x int)"
sql -c "BEGIN; INSERT INTO unrelated VALUES (1); SELECT pg_sleep(10); COMMIT;" >/dev/null &
long=$!
bg_track $long
before=$(sql -c "SELECT last_value FROM lockstep_notes_id")
sql -c "BEGIN; INSERT INTO lockstep_notes (channel, payload) VALUES ('ooo', '\"undone\"');
        SELECT pg_sleep(1); ROLLBACK;" >/dev/null &
undo=$!
bg_track $undo
wait_until 10 _allocated || fail "the rolled-back transaction took no id"
pub B ooo '"after-rollback"' >/dev/null
bg_wait $undo 20 || true
_got_three() { lines_at_least "$T/wo" 3; }
wait_until 5 _got_three || fail "the notification after a rolled-back id: $(cat "$T/wo")"
_alive $long || fail "the long transaction ended first: nothing tested"
assert_eq '"after-rollback"' "$(tail -1 "$T/wo" | jq -c .payload)" "after the rollback"
assert_not_contains "$(cat "$T/wo")" undone "a rolled-back notification"
wait_until 5 sse_at_least "$T/eo" 3 || fail "the event stream after a rolled-back id: $(sse_data "$T/eo")"
assert_eq "$(jq -c . "$T/wo")" "$(sse_data "$T/eo" | jq -c .)" "the event stream after the rollback"
log "held id $held_id delivered before $after_id; the rolled-back id skipped once final"

# ---------------------------------------------------------------- 3. PostgreSQL restart
log "3: PostgreSQL restarted while A and B publish"
rm -f "$T/acked.a" "$T/acked.b"
watch_on A wr restart "$T/wr"
wr=$WATCH_PID
wait_until 10 curl -sf "$URL_A/v1/consumers/wr" || fail "watcher wr did not register"
pids=()
(for i in $(seq 1 60); do pub A restart "\"ra-$i\"" | sed "s/\$/ \"ra-$i\"/" >>"$T/acked.a" || exit 1; sleep 0.03; done) &
pids+=($!); bg_track $!
(for i in $(seq 1 60); do pub B restart "\"rb-$i\"" | sed "s/\$/ \"rb-$i\"/" >>"$T/acked.b" || exit 1; sleep 0.03; done) &
pids+=($!); bg_track $!
wait_until 20 lines_at_least "$T/wr" 10 || fail "nothing received before the restart"
pg_ctl_ restart -m fast -w -l "$PGDIR/pg.log" >/dev/null || fail "pg_ctl restart failed"
log "restarted with $(wc -l <"$T/wr") received"
wait_pids_ok "${pids[@]}"
log "publishers done: $(sort -u "$T/acked.a" "$T/acked.b" | wc -l) acknowledged, $(wc -l <"$T/wr") received"
wait_until 30 lines_at_least "$T/wr" 120 || true
received "$T/wr" | sort -u >"$T/wr.got"
missing=$(sort -u "$T/acked.a" "$T/acked.b" | comm -23 - "$T/wr.got")
assert_eq "" "$missing" "acknowledged notifications the watcher did not get"
strictly_increasing "$T/wr" || fail "the watcher's ids went back: $(jq -c .id "$T/wr" | tr '\n' ' ')"
log "restart: $(sort -u "$T/acked.a" "$T/acked.b" | wc -l) acknowledged, $(wc -l <"$T/wr") received"
grep -q "listening to the shared database again" "$T/A.log" || fail "A's listener did not say it reconnected"

# ---------------------------------------------------------------- 4. connections killed
log "4: pg_terminate_backend on every lockstep connection"
killed=$(sql -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'lockstep'")
((killed >= 4)) || fail "only $killed lockstep connections to terminate"
sleep 0.3
id1=$(curl -sf -X POST "$URL_A/v1/notify?channel=cache" -d '"after-kill-a"' | jq .ids[0]) ||
    fail "the first publish on A after its connections were killed"
id2=$(curl -sf -X POST "$URL_B/v1/notify?channel=cache" -d '"after-kill-b"' | jq .ids[0]) ||
    fail "the first publish on B after its connections were killed"
_both() { grep -q after-kill-b "$1" && grep -q after-kill-a "$1"; }
wait_until 10 _both "$T/wa" || fail "wa after the kill: $(tail -2 "$T/wa")"
wait_until 10 _both "$T/wb" || fail "wb after the kill: $(tail -2 "$T/wb")"
assert_eq "$(received "$T/wa")" "$(received "$T/wb")" "wa and wb after the kill, one order"
# the listener came back: a publish wakes the other server well before a poll would matter
stop_server B
start_server B --messenger "$DB" --poll-interval 60s
curl -sf "$URL_B/v1/notifications?consumer=wl&channel=wake" >/dev/null
sql -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'lockstep'" >/dev/null
wait_until 10 grep -q "listening to the shared database again" "$T/B.log" || fail "B's listener did not reconnect"
(sleep 0.5; pub A wake '"ping"' >/dev/null) &
bg_track $!
start_ms=$(($(date +%s%N) / 1000000))
got=$(curl -sf -m 20 "$URL_B/v1/notifications?consumer=wl&wait_ms=15000" | jq -c '[.notifications[].payload]')
took=$(($(date +%s%N) / 1000000 - start_ms))
assert_eq '["ping"]' "$got" "a long poll on B woken by A's publish"
((took < 5000)) || fail "the long poll took $took ms: B did not hear the NOTIFY"
log "after the kill: a long poll on B woke $took ms after its start (publish at 500 ms, poll 60 s)"

# ---------------------------------------------------------------- 5. retention and reset
log "5: retention on the shared database, and the reset event"
curl -sf "$URL_A/v1/notifications?consumer=stale&channel=cache" >/dev/null # created at the head
stale_pos=$(curl -sf "$URL_A/v1/consumers/stale" | jq .position)
pub A cache '"newer"' >/dev/null
sleep 1.2
LOCKSTEP_RETENTION_INTERVAL_MS=200 start_server C --messenger "$DB" --notify-retention 1s
wait_until 10 grep -q "notification retention removed" "$T/C.log" || fail "C did not prune"
_c_listed() { [[ "$(curl -sf "$URL_A/v1/nodes?all=1" | jq '[.nodes[] | select(.name == "C")] | length')" == 1 ]]; }
wait_until 10 _c_listed || fail "C is not in the registry A reads"
stop_server C
floor=$(sql -c "SELECT value FROM lockstep_meta WHERE key = 'floor'")
((floor > stale_pos)) || fail "the floor $floor is not above stale's position $stale_pos"
out=$(curl -sf "$URL_B/v1/notifications?consumer=stale")
assert_eq reset "$(jq -r .reset.type <<<"$out")" "the reset event (B reading stale)"
assert_eq "$stale_pos" "$(jq .reset.position <<<"$out")" "the reset's position"
assert_eq "$((floor + 1))" "$(jq .reset.oldest <<<"$out")" "the reset's oldest"
out=$(curl -sf "$URL_A/v1/notifications?consumer=stale")
assert_eq reset "$(jq -r .reset.type <<<"$out")" "the reset again, not acknowledged (A)"
assert_eq 1 "$(curl -sf "$URL_A/v1/consumers/stale" | jq .resets)" "resets counted once"
curl -sf -X POST "$URL_A/v1/consumers/stale/ack" -d "{\"id\":$(jq .next <<<"$out")}" >/dev/null
out=$(curl -sf "$URL_A/v1/notifications?consumer=stale")
assert_eq null "$(jq -r .reset <<<"$out")" "no reset once acknowledged"
lsc A consumers rewind stale --to "$floor" >/dev/null
assert_eq "$floor" "$(curl -sf "$URL_B/v1/consumers/stale" | jq .position)" "rewind, seen from B"
lsc B consumers rm stale >/dev/null
assert_eq 404 "$(curl -s -o /dev/null -w '%{http_code}' "$URL_A/v1/consumers/stale")" "rm, seen from A"

# ---------------------------------------------------------------- 6. the site registry
log "6: the site registry in the shared database"
nodes() { curl -sf "$(url_of "$1")/v1/nodes?all=1" | jq -c "[.nodes[] | select(.name == \"$2\") | .state]"; }
_states() { [[ "$(nodes A B)" == '["active"]' && "$(nodes B A)" == '["active"]' && "$(nodes A C)" == '["stale"]' ]]; }
wait_until 10 _states || fail "the site seen from A: $(curl -sf "$URL_A/v1/nodes?all=1" | jq -c '[.nodes[] | [.name, .state]]')"
assert_eq "$URL_B" "http://$(curl -sf "$URL_A/v1/nodes?all=1" | jq -r '.nodes[] | select(.name == "B") | .http')" "B's address, seen from A"
kill "$wa" "$wb" "$wo" "$wr" 2>/dev/null || true
