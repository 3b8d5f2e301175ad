#!/usr/bin/env bash
# The messenger's shared-database mode on one host (docs/messenger.md, "Shared database"):
# three lockstep servers A, B and C, each with its own data dir, started with
# --messenger sqlite:$T/messenger.db. No server talks to another.
#  1. Publishers on A, B and C at once; a watcher (lockstep watch) on A, a long-polling reader
#     (curl, acknowledging) on B and an event stream (SSE) on C: each gets every acknowledged
#     notification once, in one order (the same ids), each publisher's order kept.
#  2. Wake-ups across processes: a long poll on B answers well within the fallback look (5 s)
#     after a publish on A (the watch of the file, PRAGMA data_version).
#  3. A consumer's position survives its server's kill -9 and is continued on another server:
#     nothing replayed from the start, nothing skipped.
#  4. A server killed -9 while it publishes: every publish it acknowledged is in the database,
#     the file is intact, the server starts again on it.
#  5. Retention (a server D with --notify-retention 1s): a consumer left behind gets exactly one
#     reset event in its stream, then what is new; counted once.
#  6. The site registry (nodes --all), /v1/status's mode; lockstep notify and consumers
#     rewind, reset and rm on one server, seen from another.
#  7. Bad paths: relative, in a missing directory, a directory, a file that is not SQLite, a
#     SQLite file of something else, a schema from a newer lockstep: serve refuses with the
#     reason, and leaves the file as it was.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/lib_msg.sh"
command -v sqlite3 >/dev/null || { echo "SKIP: no sqlite3 (apt-get install sqlite3)" >&2; exit 77; }

DB="$T/messenger.db"
export LOCKSTEP_RECKON_MS=300
start_server A --messenger "sqlite:$DB"
start_server B --messenger "sqlite:$DB"
start_server C --messenger "sqlite:$DB"
assert_eq 1 "$(sqlite3 "$DB" "SELECT value FROM lockstep_meta WHERE key = 'schema_version'")" \
    "the schema version in the file"
assert_eq wal "$(sqlite3 "$DB" "PRAGMA journal_mode")" "the file's journal mode"

wait_pids_ok() { local p; for p in "$@"; do bg_wait "$p" 90 || fail "a publisher failed"; done; }

# ---------------------------------------------------------------- 1. order and completeness
log "1: publishers on A, B and C at once; watch on A, long poll on B, SSE on C"
"$LOCKSTEP" watch --server "$URL_A" --consumer wa --channel mix --from-start --json \
    >"$T/wa" 2>>"$T/watch.err" &
wa=$!
bg_track $wa
# a long-polling reader that acknowledges each page, as the C library does
(
    for ((k = 0; k < 400; k++)); do
        out=$(curl -sf -m 10 "$URL_B/v1/notifications?consumer=lb&channel=mix&from=start&wait_ms=2000") || { sleep 0.2; continue; }
        jq -c '.notifications[]' <<<"$out" >>"$T/lb"
        next=$(jq .next <<<"$out")
        curl -sf -m 5 -X POST "$URL_B/v1/consumers/lb/ack" -d "{\"id\":$next}" >/dev/null || true
        [[ -f "$T/lb.stop" ]] && break
    done
) &
lb=$!
bg_track $lb
curl -sN -m 120 "$URL_C/v1/events?consumer=sc&channel=mix&from=start" >"$T/sc.sse" 2>/dev/null &
sc=$!
bg_track $sc
wait_until 10 curl -sf "$URL_A/v1/consumers/wa" || fail "watcher wa did not register"
wait_until 10 curl -sf "$URL_A/v1/consumers/lb" || fail "reader lb did not register"
wait_until 10 curl -sf "$URL_A/v1/consumers/sc" || fail "stream sc did not register"
pids=()
for who in A B C; do
    pub_loop "$who" "${who,,}" 40 mix & pids+=($!); bg_track $!
done
# and batches: one request, consecutive ids in its order
(for i in 1 2 3 4 5; do
    out=$(curl -sf -X POST "$URL_B/v1/notify" -d "[{\"channel\":\"mix\",\"payload\":\"batch-$i-x\"},{\"channel\":\"other\",\"payload\":0},{\"channel\":\"mix\",\"payload\":\"batch-$i-y\"}]") || exit 1
    jq -r --arg i "$i" '"\(.ids[0]) \"batch-\($i)-x\"\n\(.ids[2]) \"batch-\($i)-y\""' <<<"$out" >>"$T/acked.batch"
    [[ $(jq -c '[.ids[1] - .ids[0], .ids[2] - .ids[1]]' <<<"$out") == "[1,1]" ]] || exit 2
done) & pids+=($!); bg_track $!
wait_pids_ok "${pids[@]}"
sort -n "$T/acked.a" "$T/acked.b" "$T/acked.c" "$T/acked.batch" >"$T/acked1"
total=$(wc -l <"$T/acked1")
assert_eq 130 "$total" "acknowledged publishes"
sse_notes() { grep '^data: ' "$1" | sed 's/^data: //' | jq -c 'select(.channel)'; }
_sc_done() { (($(sse_notes "$T/sc.sse" | wc -l) >= total)); }
wait_until 30 lines_at_least "$T/wa" "$total" || fail "watcher on A: $(wc -l <"$T/wa") of $total"
wait_until 30 lines_at_least "$T/lb" "$total" || fail "long poll on B: $(wc -l <"$T/lb" 2>/dev/null) of $total"
wait_until 30 _sc_done || fail "stream on C: $(sse_notes "$T/sc.sse" | wc -l) of $total"
sse_notes "$T/sc.sse" >"$T/sc"
assert_eq "$(cat "$T/acked1")" "$(received "$T/wa")" "what A's watcher got (ids and payloads)"
assert_eq "$(cat "$T/acked1")" "$(received "$T/lb")" "what B's long poll got"
assert_eq "$(cat "$T/acked1")" "$(received "$T/sc")" "what C's stream got"
assert_eq "$(grep '^id: ' "$T/sc.sse" | sed 's/^id: //' | tr '\n' ' ')" \
    "$(jq -r .id "$T/sc" | tr '\n' ' ')" "the SSE ids"
for who in a b c; do
    got=$(received "$T/wa" | awk '{print $2}' | grep "\"$who-" | tr -d '"' | tr '\n' ' ')
    assert_eq "$(seq -s ' ' -f "$who-%g" 1 40) " "$got" "the order of $who's notifications"
done
touch "$T/lb.stop"
kill "$sc" 2>/dev/null || true
assert_eq '["lb","sc","wa"]' "$(lsc B consumers --json | jq -c '[.consumers[].name]')" "consumers seen from B"
_wa_acked() { [[ "$(curl -sf "$URL_C/v1/consumers/wa" | jq .position)" == "$(tail -1 "$T/acked1" | cut -d' ' -f1)" ]]; }
wait_until 10 _wa_acked || fail "wa's position, seen from C: $(curl -sf "$URL_C/v1/consumers/wa")"
kill "$wa" 2>/dev/null || true
log "1: $total notifications from 3 publishers, the same $total in one order on A, B and C"

# ---------------------------------------------------------------- 2. wake-ups across processes
log "2: a long poll on B woken by a publish on A"
curl -sf "$URL_B/v1/notifications?consumer=wake&channel=wake" >/dev/null
slowest=0
for i in 1 2 3 4 5; do
    curl -sf -m 20 -o "$T/wake.$i" "$URL_B/v1/notifications?consumer=wake&channel=wake&wait_ms=10000" &
    poll=$!
    bg_track $poll
    sleep 0.4
    t0=$(($(date +%s%N) / 1000000))
    id=$(pub A wake "\"w$i\"")
    bg_wait $poll 20 || fail "the long poll $i failed"
    took=$(($(date +%s%N) / 1000000 - t0))
    assert_eq "[\"w$i\"]" "$(jq -c '[.notifications[].payload]' "$T/wake.$i")" "long poll $i"
    curl -sf -X POST "$URL_B/v1/consumers/wake/ack" -d "{\"id\":$id}" >/dev/null
    ((took > slowest)) && slowest=$took
done
((slowest < 1500)) || fail "a long poll on B answered $slowest ms after A's publish (the fallback look is 5 s)"
log "2: the slowest of 5 wake-ups across processes: $slowest ms"

# ---------------------------------------------------------------- 3. a position survives kill -9
log "3: consumer wk on A, A killed -9, wk continued on B"
"$LOCKSTEP" watch --server "$URL_A" --consumer wk --channel pos --from-start --json \
    >"$T/wk1" 2>>"$T/watch.err" &
wk=$!
bg_track $wk
wait_until 10 curl -sf "$URL_A/v1/consumers/wk" || fail "watcher wk did not register"
pub_loop C p 20 pos
wait_until 20 lines_at_least "$T/wk1" 20 || fail "wk on A: $(wc -l <"$T/wk1") of 20"
last1=$(tail -1 "$T/wk1" | jq .id)
_wk_acked() { [[ "$(curl -sf "$URL_B/v1/consumers/wk" | jq .position)" == "$last1" ]]; }
wait_until 10 _wk_acked || fail "wk's position before the kill: $(curl -sf "$URL_B/v1/consumers/wk")"
kill9_server A
kill "$wk" 2>/dev/null || true
assert_eq "$last1" "$(curl -sf "$URL_C/v1/consumers/wk" | jq .position)" "wk's position after A's kill -9"
rm -f "$T/acked.p"
pub_loop B p 10 pos
"$LOCKSTEP" watch --server "$URL_B" --consumer wk --json >"$T/wk2" 2>>"$T/watch.err" &
wk=$!
bg_track $wk
wait_until 20 lines_at_least "$T/wk2" 10 || fail "wk on B: $(wc -l <"$T/wk2") of 10"
sleep 0.3
assert_eq "$(cat "$T/acked.p")" "$(received "$T/wk2")" "wk continued on B: the 10 after its position, no more"
kill "$wk" 2>/dev/null || true
start_server A --messenger "sqlite:$DB"
log "3: wk's position $last1 survived A's kill -9; B continued with $(head -1 "$T/wk2" | jq .id)"

# ---------------------------------------------------------------- 4. kill -9 mid-publish
log "4: C killed -9 while it publishes"
rm -f "$T/acked.k"
(for ((i = 1; i <= 2000; i++)); do
    out=$(curl -sf -m 5 -X POST "$URL_C/v1/notify?channel=k9" -d "\"k-$i\"") || exit 0
    echo "$(jq .ids[0] <<<"$out") \"k-$i\"" >>"$T/acked.k"
done) &
kp=$!
bg_track $kp
wait_until 20 lines_at_least "$T/acked.k" 30 || fail "C published too little before the kill"
kill9_server C
bg_wait $kp 20 || true
n=$(wc -l <"$T/acked.k")
curl -sf "$URL_B/v1/notifications?channel=k9&from=start&limit=1000" | jq -c '.notifications[]' >"$T/k9"
missing=$(comm -23 <(sort "$T/acked.k") <(received "$T/k9" | sort))
assert_eq "" "$missing" "publishes C acknowledged before its kill -9, missing from the database"
assert_eq ok "$(sqlite3 "$DB" "PRAGMA integrity_check")" "the file after the kill"
start_server C --messenger "sqlite:$DB"
id=$(pub C k9 '"after"')
(( id > $(tail -1 "$T/acked.k" | cut -d' ' -f1) )) || fail "C's next id $id after the kill"
log "4: $n acknowledged before the kill -9, all in the database ($(wc -l <"$T/k9") there)"

# ---------------------------------------------------------------- 5. retention and the reset
log "5: retention, and one reset event"
curl -sf "$URL_A/v1/notifications?consumer=stale&channel=old" >/dev/null # created at the head
stale_pos=$(curl -sf "$URL_A/v1/consumers/stale" | jq .position)
for i in 1 2 3; do pub B old "\"old-$i\"" >/dev/null; done
sleep 1.2
LOCKSTEP_RETENTION_INTERVAL_MS=200 start_server D --messenger "sqlite:$DB" --notify-retention 1s
wait_until 10 grep -q "notification retention removed" "$T/D.log" || fail "D did not prune"
stop_server D
floor=$(sqlite3 "$DB" "SELECT value FROM lockstep_meta WHERE key = 'floor'")
((floor > stale_pos)) || fail "the floor $floor is not above stale's position $stale_pos"
curl -sN -m 4 "$URL_B/v1/events?consumer=stale" >"$T/stale.sse" 2>/dev/null &
st=$!
bg_track $st
sleep 0.5
pub A old '"new-1"' >/dev/null
pub C old '"new-2"' >/dev/null
bg_wait $st 10 || true
assert_eq 1 "$(grep -c '^event: reset' "$T/stale.sse")" "reset events in stale's stream"
assert_eq '"reset"' "$(grep '^data: ' "$T/stale.sse" | head -1 | sed 's/^data: //' | jq -c .type)" "the first event"
assert_eq "$stale_pos $((floor + 1))" "$(grep '^data: ' "$T/stale.sse" | head -1 | sed 's/^data: //' | jq -r '"\(.position) \(.oldest)"')" "the reset's position and oldest"
assert_eq '["new-1","new-2"]' "$(sse_notes "$T/stale.sse" | jq -s -c '[.[].payload]')" "after the reset"
assert_eq 1 "$(curl -sf "$URL_C/v1/consumers/stale" | jq .resets)" "resets counted once"
log "5: floor $floor; stale (at $stale_pos) got one reset, then the 2 new notifications"

# ---------------------------------------------------------------- 6. registry, status
log "6: the site registry and the status"
_listed() { [[ "$(lsc A nodes --all --json | jq -c '[.nodes[] | select(.state == "active") | .name] | sort')" == '["A","B","C"]' ]]; }
wait_until 10 _listed || fail "nodes --all on A: $(lsc A nodes --all --json | jq -c '[.nodes[] | [.name, .state]]')"
assert_eq sqlite "$(curl -sf "$URL_B/v1/status" | jq -r .messenger.mode)" "/v1/status's messenger mode"
# the CLI's messenger commands, on one server and seen from another
lsc C notify cli '{"from":"cli"}' >/dev/null || fail "lockstep notify on C"
assert_eq '[{"from":"cli"}]' "$(curl -sf "$URL_A/v1/notifications?channel=cli&from=start" | jq -c '[.notifications[].payload]')" \
    "lockstep notify on C, read on A"
lsc A consumers rewind wk --to 5 >/dev/null || fail "consumers rewind on A"
assert_eq 5 "$(curl -sf "$URL_B/v1/consumers/wk" | jq .position)" "wk rewound on A, seen from B"
lsc B consumers reset wk >/dev/null || fail "consumers reset on B"
assert_eq "$(curl -sf "$URL_C/v1/notifications?limit=1" | jq .head)" "$(curl -sf "$URL_C/v1/consumers/wk" | jq .position)" \
    "wk reset on B (at the head), seen from C"
lsc B consumers rm wk >/dev/null || fail "consumers rm on B"
assert_eq 404 "$(curl -s -o /dev/null -w '%{http_code}' "$URL_A/v1/consumers/wk")" "wk removed on B, seen from A"

# ---------------------------------------------------------------- 7. bad paths
log "7: bad paths"
bad() { # WANT_MESSAGE PATH: serve refuses to start with it
    local rc=0
    timeout 20 "$LOCKSTEP" serve --data "$T/bad" --http "127.0.0.1:$(free_port)" \
        --listen "127.0.0.1:$(free_port)" --messenger "sqlite:$2" >"$T/bad.out" 2>&1 || rc=$?
    ((rc != 0 && rc != 124)) || fail "serve with sqlite:$2 exited $rc: $(tail -2 "$T/bad.out")"
    assert_contains "$(cat "$T/bad.out")" "$1" "serve with sqlite:$2"
    [[ ! -e "$T/bad" ]] || fail "serve with sqlite:$2 created its data dir"
}
bad "needs an absolute path" "relative/m.db"
bad "cannot open the messenger database $T/missing/m.db" "$T/missing/m.db"
mkdir "$T/adir"
bad "cannot open the messenger database $T/adir" "$T/adir"
head -c 8192 /dev/urandom >"$T/junk"
cp "$T/junk" "$T/junk.orig"
bad "$T/junk is not a lockstep messenger database" "$T/junk"
cmp -s "$T/junk" "$T/junk.orig" || fail "the junk file was changed"
sqlite3 "$T/other.db" "CREATE TABLE pages (id INTEGER PRIMARY KEY)"
bad "$T/other.db is not a lockstep messenger database (it holds other tables)" "$T/other.db"
assert_eq pages "$(sqlite3 "$T/other.db" "SELECT group_concat(name) FROM sqlite_master")" "the other database's tables"
sqlite3 "$DB" ".backup '$T/newer.db'"
sqlite3 "$T/newer.db" "UPDATE lockstep_meta SET value = 2 WHERE key = 'schema_version'"
bad "schema version 2, from a newer lockstep" "$T/newer.db"
assert_eq 2 "$(sqlite3 "$T/newer.db" "SELECT value FROM lockstep_meta WHERE key = 'schema_version'")" "the newer file's version"

for s in A B C; do stop_server "$s"; done
log "ok"
