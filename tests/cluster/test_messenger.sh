#!/usr/bin/env bash
# The cluster messenger across real servers (docs/messenger.md): P (primary), R (replica),
# C (a replica of R) and S (staging under P, --include /pub).
#  1. Notifications published on P, R and C (concurrently) reach every server, S included, in
#     one order (the same ids everywhere), with no gap; store changes appear on `content`.
#  2. A named watcher killed with -9 and restarted continues: every notification printed, in
#     order, none missing (duplicates only of the last unacknowledged batch).
#  3. R down while P publishes: R's consumer gets everything once R is back.
#  4. P down while C accepts notifications: 202 with queue ids, delivered once P is back.
#  5. SSE: resume with Last-Event-ID; an unknown id gets an error event, not a hang.
#  6. Bad input is refused and publishes nothing.
set -euo pipefail
CLI_LEAK_CHECK=1 # every CLI command it runs is leak-checked too (lib.sh)
source "$(dirname "$0")/lib_repl.sh"

start_node P
start_node R --role replica --upstream "$PEER_P"
start_node C --role replica --upstream "$PEER_R"
start_node S --role staging --upstream "$PEER_P" --include /pub
wait_caught_up C P 20
wait_caught_up S P 20

# the ids on CHANNEL(s) as one line, read from the start on server NAME
ids_on() {
    local name=$1
    shift
    local q="" c
    for c in "$@"; do q+="&channel=$c"; done
    curl -sf "$(url_of "$name")/v1/notifications?from=start&limit=1000$q" | jq -c '[.notifications[].id]'
}
payloads_on() {
    curl -sf "$(url_of "$1")/v1/notifications?from=start&limit=1000&channel=$2" |
        jq -c '[.notifications[].payload]'
}

# ---------------------------------------------------------------- 1. order across servers
log "1: publishing from P, R and C at once"
pub_loop() { # NAME PREFIX COUNT: one notification per call, each acknowledged with an id
    local i
    for ((i = 1; i <= $3; i++)); do
        curl -sf -X POST "$(url_of "$1")/v1/notify" \
            -d "{\"channel\":\"cache\",\"payload\":\"$2-$i\"}" >/dev/null || return 1
    done
}
pids=()
pub_loop P p 40 & pids+=($!); bg_track $!
pub_loop R r 30 & pids+=($!); bg_track $!
pub_loop C c 30 & pids+=($!); bg_track $!
echo published | lsc P put /pub/a - --publish >/dev/null
echo draft | lsc P put /draft/b - >/dev/null
wait_pids 60 "${pids[@]}"
wait_caught_up R P 20
wait_caught_up C P 20
wait_caught_up S P 20
ref=$(payloads_on P cache)
assert_eq "$(jq length <<<"$ref")" 100 "notifications on P"
for who in p r c; do # each publisher's own order is kept
    got=$(jq -c "[.[] | select(startswith(\"$who-\"))]" <<<"$ref")
    want=$(jq -cn "[range(1; $(jq "[.[] | select(startswith(\"$who-\"))] | length" <<<"$ref") + 1)] | map(\"$who-\(.)\")")
    assert_eq "$got" "$want" "the order of $who's notifications on P"
done
for n in R C S; do
    assert_eq "$(payloads_on "$n" cache)" "$ref" "notifications on $n, in P's order"
    assert_eq "$(ids_on "$n" cache)" "$(ids_on P cache)" "the ids on $n"
done
content=$(curl -sf "$URL_P/v1/notifications?from=start&limit=1000&channel=content" | jq -c '[.notifications[].payload.path]')
assert_eq "$content" '["/pub/a","/draft/b"]' "the content channel on P"
content_s=$(curl -sf "$URL_S/v1/notifications?from=start&limit=1000&channel=content" | jq -c '[.notifications[].payload.path]')
assert_eq "$content_s" '["/pub/a"]' "the content channel on S (staging: only what it holds)"

# ---------------------------------------------------------------- 2. watcher kill -9
log "2: a named watcher on R killed with -9 mid-stream"
"$LOCKSTEP" watch --server "$URL_R" --consumer w1 --channel jobs --json >"$T/w1.a" 2>"$T/w1.err" &
wpid=$!
bg_track $wpid
wait_until 10 curl -sf "$URL_R/v1/consumers/w1" >/dev/null || fail "watcher w1 did not register"
(for b in $(seq 0 29); do
    seq $((b * 10 + 1)) $((b * 10 + 10)) | lsc P notify jobs - >/dev/null
    sleep 0.05
done) &
ppid=$!
bg_track $ppid
wait_until 20 lines_at_least "$T/w1.a" 50 || fail "watcher printed nothing: $(cat "$T/w1.err")"
kill -9 $wpid
wait $wpid 2>/dev/null || true
sleep 0.3 # published meanwhile, for nobody
lines_at_least "$T/w1.a" 300 && fail "the publisher was done before the kill: nothing tested"
"$LOCKSTEP" watch --server "$URL_R" --consumer w1 --channel jobs --json >"$T/w1.b" 2>>"$T/w1.err" &
wpid=$!
bg_track $wpid
_seen_300() { cat "$T/w1.a" "$T/w1.b" | grep -q '"payload":300'; }
wait_until 60 _seen_300 || fail "the restarted watcher did not reach 300: $(tail -2 "$T/w1.b")"
wait_pids 30 $ppid
kill $wpid
cat "$T/w1.a" "$T/w1.b" | jq -r .payload >"$T/w1.all"
# every payload 1..300 is there, in order, after dropping the repeats of an unacknowledged batch
assert_eq "$(awk '$1 > max {print; max = $1}' "$T/w1.all" | tr '\n' ' ')" "$(seq -s ' ' 1 300) " \
    "the watcher's lines across the kill"
dups=$(($(wc -l <"$T/w1.all") - 300))
((dups <= 100)) || fail "$dups lines printed twice (more than one batch)"
log "watcher: 300 notifications across kill -9, $dups printed again"

# ---------------------------------------------------------------- 3. replica down
log "3: R down while P publishes"
curl -sf "$URL_R/v1/notifications?consumer=r1&channel=news" >/dev/null # created at the head
stop_server R
for i in $(seq 1 20); do lsc P notify news "$i" >/dev/null; done
start_node R --role replica --upstream "$PEER_P"
wait_caught_up R P 20
got=$(curl -sf "$URL_R/v1/notifications?consumer=r1&limit=1000" | jq -c '[.notifications[].payload]')
assert_eq "$got" "$(jq -cn '[range(1; 21)]')" "what r1 finds after R's downtime"

# ---------------------------------------------------------------- 4. primary down
log "4: P down while C accepts notifications"
stop_server P
out=$(curl -s -w ' %{http_code}' -X POST "$URL_C/v1/notify?wait_ms=300" -d '[{"channel":"late","payload":1},{"channel":"late","payload":2}]')
assert_contains "$out" '"queued"' "a notification accepted while the primary is down"
assert_contains "$out" ' 202' "its status"
kill9_server C # the outbox is on disk: nothing accepted is lost
start_node C --role replica --upstream "$PEER_R"
start_node P
_late_on_p() { [[ "$(payloads_on P late)" == "[1,2]" ]]; }
wait_until 20 _late_on_p || fail "the queued notifications did not reach P: $(payloads_on P late)"
wait_caught_up C P 20
assert_eq "$(payloads_on C late)" "[1,2]" "the queued notifications, back on C"
out=$(curl -sf -X POST "$URL_C/v1/notify" -d '{"channel":"late","payload":3}')
assert_contains "$out" '"ids":[' "a forwarded notification gets the primary's id"

# ---------------------------------------------------------------- 5. SSE
log "5: Server-Sent Events"
first=$(curl -sf "$URL_R/v1/notifications?from=start&channel=news" | jq '.notifications[9].id')
timeout 2 curl -sN -H "Last-Event-ID: $first" "$URL_R/v1/events?channel=news" >"$T/sse" || true
assert_eq "$(grep -c '^event: notification' "$T/sse")" 10 "events after Last-Event-ID (the 10 after the 10th)"
assert_eq "$(grep '^data:' "$T/sse" | head -1 | sed 's/^data: //' | jq .payload)" 11 "the first one resumed"
head=$(seq_of R)
timeout 5 curl -sN -H "Last-Event-ID: $((head + 1000))" "$URL_R/v1/events?channel=news" >"$T/sse.bad"
assert_contains "$(cat "$T/sse.bad")" "event: error" "an unknown Last-Event-ID"
assert_contains "$(cat "$T/sse.bad")" "unknown_id" "its code"

# ---------------------------------------------------------------- 6. bad input
log "6: bad input"
before=$(seq_of P)
for body in '{"channel":"content","payload":1}' '{"channel":"a b","payload":1}' '[]' \
    '[{"channel":"ok","payload":1},{"channel":"","payload":2}]' '{"channel":"ok"}' 'not json'; do
    code=$(curl -s -o "$T/bad.out" -w '%{http_code}' -X POST "$URL_P/v1/notify" -d "$body")
    assert_eq "$code" 400 "POST /v1/notify $body"
done
big=$(head -c 70000 /dev/zero | tr '\0' a)
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$URL_P/v1/notify?channel=x" -d "\"$big\"")
assert_eq "$code" 413 "a payload over 64 KiB"
assert_eq "$(seq_of P)" "$before" "nothing was published by bad requests"
assert_exit 2 lsc P notify "bad channel!" 1
log "ok"
