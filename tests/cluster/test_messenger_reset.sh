#!/usr/bin/env bash
# Consumers over time (docs/messenger.md): notification retention and the one reset it causes,
# at_risk before it, stalled consumers, rewind by id and by time, reset, rm, and the CLI's view.
set -euo pipefail
CLI_LEAK_CHECK=1 # every CLI command it runs is leak-checked too (lib.sh)
source "$(dirname "$0")/lib_repl.sh"

export LOCKSTEP_RETENTION_INTERVAL_MS=100 LOCKSTEP_RECKON_MS=100
start_node P --notify-retention 6s --consumer-stall 1s
H=$URL_P

page() { curl -sf "$H/v1/notifications?$1"; }
state_of() { curl -sf "$H/v1/consumers/$1" | jq -r .state; }
ack() { curl -sf -X POST "$H/v1/consumers/$1/ack" -d "{\"id\":$2}" >/dev/null; }

# ---------------------------------------------------------------- stalled, then live again
log "stalled"
page "consumer=slow&channel=c" >/dev/null # created at the head
page "consumer=old&channel=c" >/dev/null
printf "1\n2\n3\n" | lsc P notify c - >/dev/null # one request: one time, pruned together
_state_is() { [[ "$(state_of "$1")" == "$2" ]]; }
wait_until 5 _state_is slow stalled || fail "slow is $(state_of slow), expected stalled"
grep -q "consumer slow: live -> stalled" "$(node_log P)" || fail "the change to stalled is not logged"
next=$(page "consumer=slow" | jq .next)
ack slow "$next"
wait_until 5 _state_is slow live || fail "slow is $(state_of slow) after its ack"
lsc P consumers >"$T/list"
assert_contains "$(cat "$T/list")" "slow" "lockstep consumers"
assert_eq "$(lsc P consumers --json | jq -r '.consumers[] | select(.name=="old") | .pending')" 3 \
    "old's pending count"

# ---------------------------------------------------------------- at risk, then one reset
log "at risk, then reset"
_at_risk() { curl -sf "$H/v1/status" | jq -e '.messenger.at_risk | index("old")' >/dev/null; }
wait_until 10 _at_risk || fail "old never showed at risk: $(curl -sf "$H/v1/status" | jq -c .messenger)"
grep -q "consumer old: reset" "$(node_log P)" && fail "old was reset before it showed at risk"
_pruned() { grep -q "notification retention removed" "$(node_log P)"; }
wait_until 10 _pruned || fail "notification retention did not run"
for i in 4 5; do lsc P notify c "$i" >/dev/null; done
r1=$(page "consumer=old")
assert_eq "$(jq -r .reset.type <<<"$r1")" reset "old's next page starts with a reset"
assert_eq "$(jq -c '[.notifications[].payload]' <<<"$r1")" "[4,5]" "then continues from the oldest retained"
# delivered again until acknowledged, but counted once
r2=$(page "consumer=old")
assert_eq "$(jq -r .reset.type <<<"$r2")" reset "the reset again before its ack"
assert_eq "$(curl -sf "$H/v1/consumers/old" | jq .resets)" 1 "resets counted"
assert_eq "$(state_of old)" reset "old's state"
ack old "$(jq .next <<<"$r2")"
r3=$(page "consumer=old")
assert_eq "$(jq -r '.reset // "none"' <<<"$r3")" none "no reset after the ack"
assert_eq "$(curl -sf "$H/v1/consumers/old" | jq .resets)" 1 "exactly one reset"
# a watcher prints it as one JSON line of type reset
page "consumer=w&channel=c&from=start" >/dev/null
ack w 0
curl -sf -X POST "$H/v1/consumers/w/rewind?to=0" >/dev/null
timeout 3 "$LOCKSTEP" watch --server "$H" --consumer w --channel c --json >"$T/w.out" || true
assert_eq "$(grep -c '"type":"reset"' "$T/w.out")" 1 "the watcher's reset line"
assert_eq "$(grep -v '"type":"reset"' "$T/w.out" | jq -c .payload | tr '\n' ' ')" "4 5 " \
    "the watcher's lines after the reset"
# SSE: an old Last-Event-ID gets the reset event first
timeout 3 curl -sN -H "Last-Event-ID: 1" "$H/v1/events?channel=c" >"$T/sse" &
spid=$!
sleep 1
lsc P notify c '"later"' >/dev/null # a second page of the same stream
wait $spid || true
assert_eq "$(grep '^event:' "$T/sse" | head -1)" "event: reset" "the first SSE event"
assert_eq "$(grep -c '^event: reset' "$T/sse")" 1 "resets in one SSE stream over two pages"
assert_contains "$(cat "$T/sse")" '"later"' "the second page"

# ---------------------------------------------------------------- rewind, reset, rm
log "rewind, reset, rm"
# (fresh ones: 4 and 5 may be gone by now on a slow machine, retention is 6 s)
first=$(curl -sf -X POST "$H/v1/notify" -d '[{"channel":"c","payload":41},{"channel":"c","payload":51}]' | jq '.ids[0]')
lsc P consumers reset old >/dev/null
lsc P consumers rewind old --to "$first" >/dev/null
assert_eq "$(page "consumer=old" | jq -c '[.notifications[].payload]')" "[51]" "after a rewind to 41's id"
mid=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
sleep 0.05
lsc P notify c 6 >/dev/null
lsc P consumers rewind old --to "$mid" >/dev/null
assert_eq "$(page "consumer=old" | jq -c '[.notifications[].payload]')" "[6]" "after a rewind to a time"
lsc P consumers reset old >/dev/null
assert_eq "$(page "consumer=old" | jq '.notifications | length')" 0 "after a reset to the head"
# a running watcher follows a rewind (its long poll in flight is read again from there)
"$LOCKSTEP" watch --server "$H" --consumer live --channel rw --json >"$T/live.out" 2>&1 &
wpid=$!
bg_track $wpid
wait_until 10 curl -sf "$H/v1/consumers/live" || fail "watcher live did not register"
ids=$(curl -sf -X POST "$H/v1/notify" -d '[{"channel":"rw","payload":1},{"channel":"rw","payload":2}]')
wait_until 10 lines_at_least "$T/live.out" 2 || fail "the watcher printed: $(cat "$T/live.out")"
lsc P consumers rewind live --to "$(($(jq '.ids[0]' <<<"$ids") - 1))" >/dev/null
lsc P notify rw 3 >/dev/null
wait_until 10 lines_at_least "$T/live.out" 5 || fail "after the rewind the watcher printed: $(cat "$T/live.out")"
kill $wpid
assert_eq "$(jq -c .payload "$T/live.out" | tr '\n' ' ')" "1 2 1 2 3 " "the watcher's lines around the rewind"
assert_exit 0 lsc P consumers rm old
assert_exit 3 lsc P consumers rm old
assert_exit 2 lsc P consumers rewind slow
# removed and made again at once (within one save): it is the new one that is kept
curl -sf -X DELETE "$H/v1/consumers/slow" >/dev/null
curl -sf "$H/v1/notifications?consumer=slow&channel=again" >/dev/null
stop_server P
start_node P --notify-retention 6s --consumer-stall 1s
assert_eq "$(curl -sf "$H/v1/consumers/slow" | jq -c .channels)" '["again"]' "slow after rm, a new use and a restart"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$H/v1/consumers/slow/ack" -d '{"id":99999}')
assert_eq "$code" 400 "an ack beyond the head"
log "ok"
