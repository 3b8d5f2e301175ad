#!/usr/bin/env bash
# A mirroring job's progress as Server-Sent Events (GET /v1/mirrors/NAME/events, docs/mirror.md):
#   - with no run going, an "idle" event; an unknown job is 404;
#   - while a run goes, "progress" events about once a second (items and bytes to do and done,
#     rate, ETA, errors, state), a percentage that never goes backwards, and an "end" event with
#     the run's state when it ends;
#   - kill -9 of the server mid-run: the first progress event of the resumed run (after the
#     restart) is at least the last one seen before the kill;
#   - removing the job ends the stream with a "removed" event.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

job_idle() { [[ $(lsc m mirror show "$1" --json | jq -r .running) == false ]]; }
# the data of the events named $2 in the SSE capture $1, one JSON a line
events() { awk -v want="$2" '/^event: /{ev=$2} /^data: /{if (ev==want) print substr($0,7)}' "$1"; }
has_event() { [[ -n "$(events "$1" "$2")" ]]; }
# the percentages of the progress events in $1 never decrease
monotonic() {
    local a b
    a=$(events "$1" progress | jq -r .percent | tr '\n' ' ')
    b=$(events "$1" progress | jq -r .percent | sort -g | tr '\n' ' ')
    [[ "$a" == "$b" ]] || fail "the percentage went backwards in $1: $a"
}

src=$SHM/src
for d in $(seq 1 30); do
    mkdir -p "$src/d$d"
    for f in $(seq 1 20); do head -c $((1000 + d * f)) /dev/urandom >"$src/d$d/f$f"; done
done

LOCKSTEP_MIRROR_PACKAGE_DELAY_MS=150 start_server m
use_server m
code=$(curl -s -o /dev/null -w '%{http_code}' "$(url_of m)/v1/mirrors/nope/events")
assert_eq 404 "$code" "events of an unknown job"
assert_exit 0 lsc m mirror create e --source "dir:$src" --target "dir:$SHM/out" --package-items 20

# ---------------------------------------------------------------- a whole run, watched
curl -sN "$(url_of m)/v1/mirrors/e/events" >"$T/ev1" &
c1=$!
bg_track $c1
wait_until 10 has_event "$T/ev1" idle || fail "no idle event: $(head -5 "$T/ev1")"
assert_exit 0 lsc m mirror run e
wait_until 120 has_event "$T/ev1" end || fail "no end event"
kill "$c1" 2>/dev/null || true
wait "$c1" 2>/dev/null || true
n=$(events "$T/ev1" progress | wc -l)
((n >= 3)) || fail "only $n progress events during the run"
events "$T/ev1" progress | tail -1 >"$T/p"
for k in run state phase items_total bytes_total items_done bytes_done errors percent \
    rate_bytes_per_s; do
    [[ $(jq "has(\"$k\")" "$T/p") == true ]] || fail "a progress event without $k: $(cat "$T/p")"
done
assert_eq 600 "$(jq .items_total "$T/p")" "items to do, from the scan"
events "$T/ev1" progress | jq -e 'select(.phase == "transferring") | .eta_s' >/dev/null ||
    fail "no ETA in the progress events"
monotonic "$T/ev1"
events "$T/ev1" end >"$T/end"
assert_eq ok "$(jq -r .state "$T/end")" "state in the end event"
assert_eq 600 "$(jq .items_done "$T/end")" "items done in the end event"
assert_eq 100 "$(jq .percent "$T/end")" "percent at the end"

# ---------------------------------------------------------------- kill -9, resume
rm -rf "$SHM/out"
lsc m mirror rm e >/dev/null
assert_exit 0 lsc m mirror create e --source "dir:$src" --target "dir:$SHM/out" --package-items 20
curl -sN "$(url_of m)/v1/mirrors/e/events" >"$T/ev2" &
c2=$!
bg_track $c2
assert_exit 0 lsc m mirror run e
past() { (($(events "$T/ev2" progress | tail -1 | jq '.percent * 100 | floor') >= 3000)); }
wait_until 120 past || fail "the run did not get to 30%"
kill9_server m
kill "$c2" 2>/dev/null || true # the kill closed its connection
wait "$c2" 2>/dev/null || true
before=$(events "$T/ev2" progress | tail -1 | jq .percent)
monotonic "$T/ev2"
LOCKSTEP_MIRROR_PACKAGE_DELAY_MS=150 start_server m # the interrupted run goes on at once
curl -sN "$(url_of m)/v1/mirrors/e/events" >"$T/ev3" &
c3=$!
bg_track $c3
wait_until 120 has_event "$T/ev3" end || fail "no end event after the restart"
events "$T/ev3" progress | head -1 >"$T/first"
[[ -s "$T/first" ]] || fail "no progress event from the resumed run"
after=$(jq .percent "$T/first")
log "percent before the kill $before, first after the restart $after"
jq -e --argjson b "$before" '.percent >= $b' "$T/first" >/dev/null ||
    fail "the percentage went back from $before to $after after the restart"
jq -e '.resumed.items > 0' "$T/first" >/dev/null || fail "the resumed run says nothing resumed"
monotonic "$T/ev3"
assert_eq ok "$(events "$T/ev3" end | jq -r .state)" "the resumed run"
assert_eq 100 "$(events "$T/ev3" end | jq .percent)" "percent at the end of the resumed run"
diff -r "$src" "$SHM/out" >/dev/null || fail "the resumed mirror differs"

# ---------------------------------------------------------------- removal ends the stream
lsc m mirror rm e >/dev/null
wait_until 10 has_event "$T/ev3" removed || fail "no removed event"
bg_wait "$c3" 10 || true

stop_server m
log "ok"
