#!/usr/bin/env bash
# Webhooks (docs/messenger.md "Webhooks"), against a test endpoint (webhook_sink.py) that fails
# its first requests with 500, then records every body it accepts:
#  1. bad --webhook values: serve refuses to start, with one line
#  2. the endpoint fails 4 times: the consumer shows failing (logged once), backs off 0.5, 1,
#     2, 2 s (capped for the test), then everything arrives in order, no gap, no loss, only
#     the webhook's channels; then it shows ok (logged once)
#  3. batches: at most 100 notifications and 1 MiB each
#  4. the endpoint down for a while (connection refused): failing, then delivery resumes
#  5. lockstep restarted (SIGTERM, then kill -9 after the ack was saved): it continues from the
#     durable position, nothing delivered twice; kill -9 right after a delivery: at most that
#     batch again
#  6. a rewind of the consumer is delivered again at once
#  7. retention removes what was pending: the next batch carries the reset first, once
set -euo pipefail
source "$(dirname "$0")/lib_repl.sh"

SINK_PORT=$(free_port)
SINK_PID=""
SINK_RUNS=0
touch "$T/bodies" "$T/attempts"

start_sink() { # [--fail N]
    SINK_RUNS=$((SINK_RUNS + 1))
    python3 "$CLUSTER_DIR/webhook_sink.py" --port "$SINK_PORT" --out "$T/bodies" \
        --log "$T/attempts" "$@" >"$T/sink.$SINK_RUNS.log" 2>&1 &
    SINK_PID=$!
    bg_track "$SINK_PID"
    wait_until 10 grep -q listening "$T/sink.$SINK_RUNS.log" ||
        fail "the test endpoint did not start: $(cat "$T/sink.$SINK_RUNS.log")"
}
stop_sink() {
    _signal TERM "$SINK_PID"
    wait "$SINK_PID" 2>/dev/null || true
}

hook() { curl -sf "$URL_P/v1/consumers/hook"; }
hook_field() { hook | jq -c "$1"; }
_hook_is() { [[ "$(hook_field .webhook.state)" == "\"$1\"" ]]; }
# every id the endpoint accepted, in the order it accepted them
delivered_ids() { jq -sc '[.[].notifications[].id]' "$T/bodies"; }
# every id on the webhook's channels, from P's log
expected_ids() {
    curl -sf "$URL_P/v1/notifications?after=0&channel=c&channel=c2&limit=1000" |
        jq -c '[.notifications[].id]'
}
_all_delivered() { [[ "$(delivered_ids)" == "$(expected_ids)" ]]; }
wait_delivered() { # SECONDS WHAT
    wait_until "$1" _all_delivered ||
        fail "$2: delivered $(delivered_ids | jq -c '[length, .[-3:]]'), expected $(expected_ids | jq -c '[length, .[-3:]]')"
}

# ---------------------------------------------------------------- 1. bad syntax
log "1: bad --webhook values"
for bad in "hook" "=http://127.0.0.1:9/" "bad name=http://127.0.0.1:9/" "hook=ftp://127.0.0.1/" \
    "hook=https://127.0.0.1/" "hook=http://" "hook=http://u:p@127.0.0.1:9/" \
    "hook=http://127.0.0.1:9/,chanel=c" "hook=http://127.0.0.1:9/,channel=bad name" \
    "hook=http://127.0.0.1:9/a,b"; do
    assert_exit 2 "$LOCKSTEP" serve --data "$T/bad" --webhook "$bad"
    assert_eq "$(wc -l <"$T/err")" 1 "lines of error for --webhook '$bad'"
    assert_contains "$ERR" "--webhook $bad: " "the error for --webhook '$bad'"
done
assert_exit 2 "$LOCKSTEP" serve --data "$T/bad" --webhook a=http://127.0.0.1:9/ \
    --webhook a=http://127.0.0.1:10/
assert_contains "$ERR" "a second webhook named a" "two webhooks of one name"
[[ ! -e "$T/bad" ]] || fail "a refused serve created its data dir"

# ---------------------------------------------------------------- 2. failures, then delivery
log "2: the endpoint fails 4 times, then accepts"
export LOCKSTEP_WEBHOOK_BACKOFF_MAX_MS=2000 LOCKSTEP_RECKON_MS=200
start_sink --fail 4
HOOK="hook=http://127.0.0.1:$SINK_PORT/in,channel=c,channel=c2"
start_node P --webhook "$HOOK"
for b in 0 1 2; do
    seq $((b * 10 + 1)) $((b * 10 + 10)) | lsc P notify c - >/dev/null
    lsc P notify other "\"not for the hook $b\"" >/dev/null
done
lsc P notify c2 '"a"' >/dev/null
wait_until 10 _hook_is failing || fail "the webhook never showed failing: $(hook)"
h=$(hook)
assert_eq "$(jq .position <<<"$h")" 0 "the position while failing"
assert_eq "$(jq .webhook.last_status <<<"$h")" 500 "last_status while failing"
assert_contains "$(jq -r .webhook.last_error <<<"$h")" "HTTP 500" "last_error while failing"
assert_ne "$(jq .webhook.next_attempt <<<"$h")" null "next_attempt while failing"
(($(jq .webhook.failures <<<"$h") >= 3)) || fail "consecutive failures: $(jq .webhook <<<"$h")"
assert_eq "$(curl -sf "$URL_P/v1/status" | jq -c .messenger.webhooks_failing)" '["hook"]' \
    "the failing webhooks in /v1/status"
wait_delivered 20 "after the failures"
assert_eq "$(jq -sc '[.[].notifications[].payload]' "$T/bodies")" \
    "$(jq -cn '[range(1; 31)] + ["a"]')" "the payloads delivered"
wait_until 5 _hook_is ok || fail "the webhook did not show ok again: $(hook)"
h=$(hook)
assert_eq "$(jq .webhook.failures <<<"$h")" 0 "failures after a delivery"
assert_eq "$(jq .webhook.next_attempt <<<"$h")" null "next_attempt after a delivery"
assert_eq "$(jq .webhook.last_status <<<"$h")" 200 "last_status after a delivery"
assert_eq "$(jq .position <<<"$h")" "$(seq_of P)" "the position after a delivery"
assert_ne "$(jq .last_ack <<<"$h")" null "last_ack after a delivery"
assert_eq "$(grep -c 'webhook hook: ok -> failing' "$(node_log P)")" 1 "logs of the change to failing"
assert_eq "$(grep -c 'webhook hook: failing -> ok' "$(node_log P)")" 1 "logs of the change to ok"
# the attempts: 4 failures 0.5, 1, 2 and 2 s apart (doubling, capped at 2 s here), then 200
assert_eq "$(jq -sc '[.[].status]' "$T/attempts" | jq -c '.[:5]')" "[500,500,500,500,200]" \
    "the endpoint's answers"
gaps=$(jq -sc '[.[:5][].t] | [range(1; 5) as $i | (.[$i] - .[$i - 1]) * 100 | floor / 100]' "$T/attempts")
jq -e '.[0] >= 0.4 and .[0] < 1.5 and .[1] >= 0.9 and .[1] < 2 and .[2] >= 1.9 and .[2] < 3 and .[3] >= 1.9 and .[3] < 3' \
    <<<"$gaps" >/dev/null || fail "the backoff between attempts: $gaps s"
assert_eq "$(jq -r .content_type "$T/attempts" | sort -u)" "application/json" "Content-Type"
assert_eq "$(jq -r .path "$T/attempts" | sort -u)" "/in" "the path POSTed to"
assert_eq "$(jq -sc '[.[].consumer] | unique' "$T/bodies")" '["hook"]' "the bodies' consumer"
jq -se 'all(.[]; .next >= (.notifications[-1].id // 0))' "$T/bodies" >/dev/null ||
    fail "a body's next is before its last notification"

# ---------------------------------------------------------------- 3. batch bounds
log "3: batches of at most 100 notifications and 1 MiB"
seq 1 250 | lsc P notify c - >/dev/null
python3 -c 'import json; print(json.dumps([{"channel": "c2", "payload": "x" * 60000} for _ in range(30)]))' \
    >"$T/big.json"
curl -sf -X POST "$URL_P/v1/notify" --data-binary @"$T/big.json" >/dev/null
wait_delivered 30 "the big batches"
assert_eq "$(jq -s 'map(.n) | max' "$T/attempts")" 100 "the largest batch (notifications)"
(($(jq -s 'map(.bytes) | max' "$T/attempts") <= 1048576)) ||
    fail "a batch over 1 MiB: $(jq -s 'map(.bytes) | max' "$T/attempts") bytes"
(($(jq -s '[.[] | select(.bytes > 500000)] | length' "$T/attempts") >= 2)) ||
    fail "the 1.8 MB of big notifications did not go in several large batches"

# ---------------------------------------------------------------- 4. endpoint down
log "4: the endpoint down for a while"
stop_sink
for i in 1 2 3; do lsc P notify c "\"down $i\"" >/dev/null; done
wait_until 10 _hook_is failing || fail "the webhook never showed failing with the endpoint down: $(hook)"
assert_contains "$(hook_field .webhook.last_error)" "cannot connect to 127.0.0.1:$SINK_PORT" \
    "last_error with the endpoint down"
assert_eq "$(hook_field .webhook.last_status)" null "last_status without a reply"
sleep 3
start_sink
wait_delivered 10 "after the endpoint came back"
wait_until 5 _hook_is ok || fail "the webhook did not show ok after the endpoint came back"
assert_eq "$(grep -c 'webhook hook: ok -> failing' "$(node_log P)")" 2 "logs of the changes to failing"

# ---------------------------------------------------------------- 5. lockstep restarted
log "5: lockstep restarted: SIGTERM, then kill -9"
stop_server P
start_node P --webhook "$HOOK"
lsc P notify c '"after restart"' >/dev/null
wait_delivered 10 "after a restart"
lsc P notify c '"before kill"' >/dev/null
wait_delivered 10 "before kill -9"
sleep 0.5 # the ack is saved within 100 ms
kill9_server P
start_node P --webhook "$HOOK"
lsc P notify c '"after kill"' >/dev/null
wait_delivered 10 "after kill -9"
# kill -9 right after a delivery: that batch may come again (at least once), nothing older
n_before=$(jq -s length "$T/bodies")
seq 1 5 | lsc P notify c - >/dev/null
_got_more() { (($(jq -s length "$T/bodies") > n_before)); }
wait_until 10 _got_more || fail "no delivery before the second kill"
kill9_server P
last_batch=$(jq -sc '.[-1].notifications | map(.id)' "$T/bodies")
start_node P --webhook "$HOOK"
lsc P notify c '"after the second kill"' >/dev/null
_all_once() { [[ "$(delivered_ids | jq -c 'reduce .[] as $i ([]; if index([$i]) then . else . + [$i] end)')" == "$(expected_ids)" ]]; }
wait_until 10 _all_once || fail "after the second kill -9: $(delivered_ids | jq -c '.[-12:]')"
again=$(delivered_ids | jq -c 'group_by(.) | map(select(length > 1) | .[0])')
jq -e --argjson last "$last_batch" 'all(.[]; . as $i | $last | index($i))' <<<"$again" >/dev/null ||
    fail "delivered twice: $again, beyond the batch in flight at the kill ($last_batch)"
log "kill -9 right after a delivery: $(jq length <<<"$again") notifications delivered again"

# ---------------------------------------------------------------- 6. rewind
log "6: a rewind is delivered again at once"
n_before=$(jq -s length "$T/bodies")
to=$(delivered_ids | jq '.[-4]')
curl -sf -X POST "$URL_P/v1/consumers/hook/rewind?to=$to" >/dev/null
wait_until 5 _got_more || fail "nothing delivered after a rewind"
assert_eq "$(jq -sc ".[$n_before:] | [.[].notifications[].id]" "$T/bodies")" \
    "$(expected_ids | jq -c '.[-3:]')" "what a rewind delivered again"

# ---------------------------------------------------------------- 7. reset
log "7: retention removes what was pending: a reset first"
stop_server P
stop_sink
LOCKSTEP_RETENTION_INTERVAL_MS=100 start_node P --webhook "$HOOK" --notify-retention 5s
pos=$(hook_field .position)
printf '"lost 1"\n"lost 2"\n"lost 3"\n' | lsc P notify c - >/dev/null # one time: pruned together
_pruned() { [[ "$(curl -sf "$URL_P/v1/notifications?after=0&channel=c" | jq '.notifications | length')" == 0 ]]; }
wait_until 15 _pruned || fail "retention did not remove the pending notifications"
n_before=$(jq -s length "$T/bodies")
start_sink
lsc P notify c '"kept 1"' >/dev/null
lsc P notify c '"kept 2"' >/dev/null
_kept() { jq -se ".[$n_before:] | [.[].notifications[].payload] | index(\"kept 2\")" "$T/bodies" >/dev/null; }
wait_until 10 _kept || fail "not delivered after the reset: $(jq -sc ".[$n_before:]" "$T/bodies")"
first=$(jq -sc ".[$n_before]" "$T/bodies")
assert_eq "$(jq -r .reset.type <<<"$first")" reset "the first batch after retention: a reset"
assert_eq "$(jq .reset.position <<<"$first")" "$pos" "the reset's position"
assert_eq "$(jq -c 'keys_unsorted' <<<"$first")" '["consumer","reset","notifications","next"]' \
    "the fields of a body, the reset first"
assert_eq "$(jq -sc ".[$n_before:] | [.[].notifications[].payload]" "$T/bodies")" \
    '["kept 1","kept 2"]' "the notifications after the reset"
assert_eq "$(jq -sc ".[$n_before + 1:] | map(has(\"reset\")) | any" "$T/bodies")" false \
    "a reset in a later batch"
_reset_done() { [[ "$(hook_field '[.state, .resets]')" == '["live",1]' ]]; }
wait_until 5 _reset_done || fail "after the reset was delivered: $(hook)"
lsc P notify c '"later"' >/dev/null
_later() { jq -se '.[-1].notifications[0].payload == "later" and (.[-1] | has("reset") | not)' "$T/bodies" >/dev/null; }
wait_until 10 _later || fail "the next batch after the reset: $(tail -1 "$T/bodies")"
stop_server P
log "ok"
