#!/usr/bin/env bash
# The change log from outside: changes --since, changes --follow, long polls on /v1/changes, and
# reads that wait for a seq (min_seq) or time out with 504.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

start_server ch
U=$URL_ch
ms() { echo $(($(date +%s%N) / 1000000)); }

for i in 1 2 3 4 5; do printf '%d' "$i" | "$LOCKSTEP" put "/c/$i" >/dev/null; done
"$LOCKSTEP" publish /c/1 >/dev/null
"$LOCKSTEP" mv /c/2 /c/two >/dev/null
"$LOCKSTEP" rm /c/3 >/dev/null
printf 'p' | "$LOCKSTEP" put /c/4 --publish >/dev/null
assert_eq 9 "$(seq_of ch)" "seq"

# --- changes: everything, in order, one line per change
assert_exit 0 "$LOCKSTEP" changes --json
printf '%s\n' "$OUT" >"$T/all"
assert_eq "1 2 3 4 5 6 7 8 9" "$(jq -r .seq "$T/all" | tr '\n' ' ' | sed 's/ $//')" "seqs"
assert_eq "put put put put put publish move delete put" "$(jq -r .op "$T/all" | tr '\n' ' ' | sed 's/ $//')" "ops"
assert_eq '{"op":"move","path":"/c/2","to":"/c/two","version":1}' \
    "$(sed -n 7p "$T/all" | jq -cS '{op, path, to, version}')" "the move entry"
assert_eq true "$(sed -n 9p "$T/all" | jq -r .published)" "a put --publish entry"
assert_eq 2 "$(sed -n 9p "$T/all" | jq -r .version)" "the version of a put entry"
jq -e '.ts | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z$")' "$T/all" >/dev/null || fail "change timestamps"
assert_exit 0 "$LOCKSTEP" changes
assert_eq 9 "$(printf '%s\n' "$OUT" | wc -l)" "plain changes lines"
assert_contains "$(printf '%s\n' "$OUT" | sed -n 7p)" "move      /c/2 -> /c/two" "plain move line"
assert_contains "$(printf '%s\n' "$OUT" | sed -n 9p)" "v2 (published)" "plain put --publish line"

# --- --since N: only what came after N
for n in 0 4 8 9 100; do
    assert_exit 0 "$LOCKSTEP" changes --since "$n" --json
    want=$(seq $((n + 1)) 9 | tr '\n' ' ' | sed 's/ $//')
    assert_eq "$want" "$(printf '%s' "$OUT" | jq -r .seq | tr '\n' ' ' | sed 's/ $//')" "changes --since $n"
done
# the reply of /v1/changes: next, seq, log_first_seq, limit
CODE=$(curl -s -o "$T/r" -w '%{http_code}' "$U/v1/changes?since=2&limit=3")
assert_eq 200 "$CODE" "GET /v1/changes"
assert_eq "3 4 5" "$(jq -r '[.changes[].seq] | map(tostring) | join(" ")' "$T/r")" "limit=3"
assert_eq 5 "$(jq -r .next "$T/r")" "next"
assert_eq 9 "$(jq -r .seq "$T/r")" "seq"
assert_eq 1 "$(jq -r .log_first_seq "$T/r")" "log_first_seq"
# more than one page (the CLI pages by 10000)
awk 'BEGIN { for (i = 1; i <= 12000; i++) printf "{\"op\":\"put\",\"path\":\"/many/%d\"}\n", i }' >"$T/many.ndjson"
"$LOCKSTEP" import "$T/many.ndjson" >/dev/null
"$LOCKSTEP" changes --json | jq -r .seq >"$T/seqs"
seq 1 12009 | cmp -s - "$T/seqs" || fail "changes over more than one page"
"$LOCKSTEP" changes --since 11000 --json | jq -r .seq >"$T/seqs"
seq 11001 12009 | cmp -s - "$T/seqs" || fail "changes --since 11000"
S=$(seq_of ch)

# --- --follow: prints the backlog after --since, then changes as they happen
timeout 60 "$LOCKSTEP" changes --follow --json --since $((S - 2)) >"$T/follow" 2>"$T/follow.err" &
FPID=$!
bg_track "$FPID"
wait_until 10 lines_at_least "$T/follow" 2 || fail "changes --follow printed no backlog: $(cat "$T/follow.err")"
assert_eq "$((S - 1)) $S" "$(jq -r .seq "$T/follow" | tr '\n' ' ' | sed 's/ $//')" "the backlog of --follow"
printf 'f1' | "$LOCKSTEP" put /f/1 >/dev/null
"$LOCKSTEP" rm /f/1 >/dev/null
printf '{"op":"put","path":"/f/2"}\n{"op":"put","path":"/f/3"}\n' | "$LOCKSTEP" import - >/dev/null
wait_until 10 lines_at_least "$T/follow" 6 || fail "changes --follow did not print new changes: $(cat "$T/follow")"
assert_eq "$((S - 1)) $S $((S + 1)) $((S + 2)) $((S + 3)) $((S + 4))" \
    "$(jq -r .seq "$T/follow" | tr '\n' ' ' | sed 's/ $//')" "seqs printed by --follow"
assert_eq "put /f/1,delete /f/1,put /f/2,put /f/3" \
    "$(tail -n 4 "$T/follow" | jq -r '"\(.op) \(.path)"' | paste -sd,)" "changes printed by --follow"
# a second follower from the start sees the same log as changes
timeout 60 "$LOCKSTEP" changes --follow --json >"$T/follow2" 2>&1 &
F2=$!
bg_track "$F2"
wait_until 20 lines_at_least "$T/follow2" $((S + 4)) || fail "a follower from 0 did not catch up"
"$LOCKSTEP" changes --json >"$T/all"
cmp -s "$T/all" "$T/follow2" || fail "changes --follow from 0 differs from changes"
# stopping the followers: they end, the server does not mind
_signal TERM "$FPID"
_signal TERM "$F2"
bg_wait "$FPID" 10 || true
bg_wait "$F2" 10 || true
_alive "$PID_ch" || fail "the server died when followers went away"
# a follower ends cleanly when the server stops, and is not stuck
timeout 60 "$LOCKSTEP" changes --follow --since "$(seq_of ch)" >/dev/null 2>&1 &
F3=$!
bg_track "$F3"
sleep 0.5

# --- long poll: returns as soon as a change arrives ...
S=$(seq_of ch)
t0=$(ms)
curl -s -o "$T/poll" "$U/v1/changes?since=$S&wait_ms=5000" &
CP=$!
bg_track "$CP"
sleep 0.7
printf 'lp' | "$LOCKSTEP" put /lp/1 >/dev/null
bg_wait "$CP" 10 || fail "the long poll failed"
elapsed=$(($(ms) - t0))
((elapsed >= 600 && elapsed < 4000)) || fail "the long poll returned after $elapsed ms (a write came at 700 ms)"
assert_eq "$((S + 1)) put /lp/1" "$(jq -r '.changes[] | "\(.seq) \(.op) \(.path)"' "$T/poll")" "the long poll's change"
# ... or after wait_ms with nothing
S=$(seq_of ch)
t0=$(ms)
CODE=$(curl -s -o "$T/poll" -w '%{http_code}' "$U/v1/changes?since=$S&wait_ms=800")
elapsed=$(($(ms) - t0))
assert_eq 200 "$CODE" "an idle long poll"
assert_eq 0 "$(jq '.changes | length' "$T/poll")" "changes of an idle long poll"
assert_eq "$S" "$(jq -r .next "$T/poll")" "next of an idle long poll"
((elapsed >= 700 && elapsed < 3000)) || fail "an idle long poll with wait_ms=800 returned after $elapsed ms"
# ... and at once when there is something already
t0=$(ms)
CODE=$(curl -s -o "$T/poll" -w '%{http_code}' "$U/v1/changes?since=$((S - 1))&wait_ms=5000")
elapsed=$(($(ms) - t0))
assert_eq 1 "$(jq '.changes | length' "$T/poll")" "a long poll with a change already there"
((elapsed < 1000)) || fail "a long poll with a change waiting took $elapsed ms"
# many long polls at once all wake up on one write
S=$(seq_of ch)
polls=()
for i in $(seq 1 20); do
    curl -s -o "$T/poll.$i" "$U/v1/changes?since=$S&wait_ms=10000" &
    polls+=($!)
    bg_track $!
done
sleep 0.5
printf 'many' | "$LOCKSTEP" put /lp/many >/dev/null
for i in $(seq 1 20); do
    bg_wait "${polls[$((i - 1))]}" 10 || fail "long poll $i failed"
    assert_eq "$((S + 1))" "$(jq -r '.changes[0].seq' "$T/poll.$i")" "long poll $i"
done

# --- min_seq: a read waits for its seq, or answers 504 timeout
S=$(seq_of ch)
t0=$(ms)
CODE=$(curl -s -o "$T/r" -w '%{http_code}' "$U/v1/items/lp/1?min_seq=$((S + 100))&wait_ms=300")
elapsed=$(($(ms) - t0))
assert_eq 504 "$CODE" "a read with a future min_seq"
assert_eq timeout "$(jq -r .error.code "$T/r")" "error code of a min_seq timeout"
assert_eq "this server has not reached seq $((S + 100)) (it is at $S)" "$(jq -r .error.message "$T/r")" \
    "error message of a min_seq timeout"
((elapsed >= 250 && elapsed < 3000)) || fail "a min_seq read with wait_ms=300 took $elapsed ms"
CODE=$(curl -s -o "$T/r" -w '%{http_code}' "$U/v1/stat/lp/1?min_seq=$((S + 1))&wait_ms=200")
assert_eq 504 "$CODE" "a stat with a future min_seq"
assert_eq timeout "$(jq -r .error.code "$T/r")" "error code"
# a min_seq already reached answers at once
CODE=$(curl -s -o "$T/r" -w '%{http_code}' "$U/v1/items/lp/1?min_seq=$S&wait_ms=5000")
assert_eq 200 "$CODE" "a read with a reached min_seq"
assert_eq lp "$(cat "$T/r")" "its body"
# a waiting read is answered by the write it waits for, with that write's body
t0=$(ms)
curl -s -o "$T/r" -w '%{http_code}' "$U/v1/items/lp/1?min_seq=$((S + 1))&wait_ms=8000" >"$T/code" &
CP=$!
bg_track "$CP"
sleep 0.5
printf 'new body' | "$LOCKSTEP" put /lp/1 >/dev/null
bg_wait "$CP" 10 || fail "the waiting read failed"
elapsed=$(($(ms) - t0))
assert_eq 200 "$(cat "$T/code")" "the waiting read"
assert_eq "new body" "$(cat "$T/r")" "the waiting read's body"
((elapsed < 4000)) || fail "the waiting read took $elapsed ms"
# bad wait_ms values
CODE=$(curl -s -o "$T/r" -w '%{http_code}' "$U/v1/items/lp/1?min_seq=1&wait_ms=999999999")
assert_eq 400 "$CODE" "wait_ms too large"
CODE=$(curl -s -o "$T/r" -w '%{http_code}' "$U/v1/changes?wait_ms=-1")
assert_eq 400 "$CODE" "negative wait_ms"

# --- a clean stop answers waiting requests and ends followers
S=$(seq_of ch)
curl -s -o "$T/poll" -w '%{http_code}' "$U/v1/changes?since=$S&wait_ms=30000" >"$T/code" &
CP=$!
bg_track "$CP"
sleep 0.3
t0=$(ms)
stop_server ch
bg_wait "$CP" 10 || true
bg_wait "$F3" 10 || true
elapsed=$(($(ms) - t0))
((elapsed < 5000)) || fail "stopping with a long poll and a follower open took $elapsed ms"
assert_eq 200 "$(cat "$T/code")" "a long poll answered at shutdown"
