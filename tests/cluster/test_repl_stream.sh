#!/usr/bin/env bash
# Streaming a unit before the primary commits it (docs/streaming.md, step 2: feature `stream`):
#   1. a 60,000-document import: P sends R part of it before P's commit (P's log counts the
#      entries), R's readings are before or after it, never between, and R ends equal to P;
#   2. an import whose line 50,000 is invalid: P refuses it whole and sends ABORT; R drops what
#      it held and shows none of it; the next import reuses the seqs and applies normally. Raw
#      peers: one with `stream` got the ABORT, one with `txn` only (as lockstep before this)
#      got no ABORT and no record of the refused unit;
#   3. the link cut while P is still writing a unit: R rolls back, reconnects, ends equal;
#   4. R killed (-9) while it holds a streamed unit: it restarts at the seq before the unit
#      (continue, no snapshot) and ends with the whole unit;
#   5. P killed (-9) while it writes the unit: R rolls back; P restarts without it, R follows.
set -euo pipefail
source "$(dirname "$0")/lib_repl.sh"

N=60000
BAD=50000
start_node P
start_proxy X "$PEER_P"
start_node R --role replica --upstream "$PROXY_X" --heartbeat-timeout 2s --compress none
printf x | lsc P put /before >/dev/null
wait_caught_up R P 20

# gen TAG [COUNT [BAD_LINE]]: an import of COUNT (N) documents under /TAG/; line BAD_LINE is not JSON
gen() {
    awk -v n="${2:-$N}" -v t="$1" -v bad="${3:-0}" 'BEGIN { for (i = 1; i <= n; i++)
        if (i == bad) print "{\"op\":\"put\",\"path\":"; else
        printf "{\"op\":\"put\",\"path\":\"/%s/%05d\",\"body\":\"document %d of import %s, with some text to fill the frames\"}\n", t, i, i, t }' >"$T/$1.ndjson"
}
# readings_ok NAME FILE BASE END: every "SEQ BITS" reading is before or after the unit
readings_ok() {
    local bad
    bad=$(awk -v b="$3" -v e="$4" '($1 != b && $1 < e) || $2 ~ /10/ || ($1 >= e && $2 != "111")' "$2" | head -n 5)
    log "$1: $(wc -l <"$2") readings, seqs seen: $(awk '{print $1}' "$2" | uniq | tr '\n' ' ')"
    [[ -z "$bad" ]] || fail "$1 showed part of a unit (SEQ BITS): $bad"
}
poll() { # poll NAME BASE END PATH...: unit_poll.py in the background, into $T/poll.NAME
    local name=$1
    shift
    python3 "$(dirname "$0")/unit_poll.py" "$(url_of "$name")" "$@" >"$T/poll.$name" &
    POLL=$!
    bg_track $POLL
}
now() { date +%s.%N; }
# holding NAME: NAME has received records of a unit it has not committed (status unit_received)
holding() { (($(lsc "$1" status --json | jq -r '.unit_received // 0') > 0)); }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# ---------------------------------------------------------------- 1. streamed before the commit
log "1. an import streamed to R while P writes it"
gen a
base=$(seq_of P)
end=$((base + N))
poll R "$base" "$end" /a/00001 /a/30000 /a/60000
t0=$(now)
lsc P import "$T/a.ndjson" >/dev/null
t1=$(now)
bg_wait $POLL 150 || fail "the poller failed"
t2=$(now)
readings_ok R "$T/poll.R" "$base" "$end"
line=$(grep -o "downstream R: [0-9]* entries of the unit after seq $base were sent before the commit" "$(node_log P)" | head -n 1) ||
    fail "P sent R nothing of the import before its commit (no stream)"
early=$(awk '{print $3}' <<<"$line")
((early > 0)) || fail "P's log: $line"
log "   P sent R $early of $N entries before its commit; import done on P after $(secs "$t0" "$t1") s, on R after $(secs "$t0" "$t2") s"
wait_caught_up R P 60
assert_same_digest P R

# ---------------------------------------------------------------- 2. P rolls the unit back
log "2. an import refused at line $BAD: ABORT"
gen b "$N" "$BAD"
gen c 100
base=$(seq_of P)
end=$((base + 100))
store_id=$(lsc P status --json | jq -r .store_id)
for mode in stream txn; do
    python3 "$(dirname "$0")/stream_peer.py" "${PEER_P##*:}" "$store_id" "$base" "$end" "$mode" "$T/ready.$mode" >"$T/peer.$mode" &
    bg_track $!
    eval "peer_$mode=$!"
done
wait_until 20 test -e "$T/ready.stream" -a -e "$T/ready.txn" || fail "the raw peers did not start"
poll R "$base" "$end" /c/00001 /c/00050 /c/00100
if out=$(lsc P import "$T/b.ndjson" 2>&1); then fail "P accepted an import with a bad line: $out"; fi
assert_contains "$out" "line $BAD"
assert_eq "$base" "$(seq_of P)" "P's seq after the refused import"
grep -q "downstream R: the unit after seq $base was rolled back; ABORT sent" "$(node_log P)" ||
    fail "P sent R no ABORT (was anything streamed?)"
wait_until 20 grep -q "rolled back: the upstream rolled it back (ABORT)" "$(node_log R)" ||
    fail "R did not roll back the unit on ABORT"
grep -q "the upstream rolled back the unit after seq $base" "$(node_log R)" || fail "R's log has no ABORT"
assert_eq "$base" "$(seq_of R)" "R's seq after the ABORT"
# the next changes take the refused unit's seqs again, on P and on R
lsc P import "$T/c.ndjson" >/dev/null
assert_eq "$end" "$(seq_of P)" "P's seq after the next import"
bg_wait $POLL 150 || fail "the poller failed"
readings_ok R "$T/poll.R" "$base" "$end"
bg_wait "$peer_stream" 60 || fail "the raw stream peer failed"
bg_wait "$peer_txn" 60 || fail "the raw txn peer failed"
s=$(cat "$T/peer.stream")
t=$(cat "$T/peer.txn")
log "   raw peer with stream: $s"
log "   raw peer with txn only: $t"
assert_eq true "$(jq -r .welcome_stream <<<"$s")" "WELCOME's stream"
assert_eq "[$base]" "$(jq -c .aborts <<<"$s")" "stream peer: ABORTs (after)"
(($(jq -r .discarded <<<"$s") > 0)) || fail "stream peer: no record of the refused unit came before its ABORT"
assert_eq 100 "$(jq -r .records <<<"$s")" "stream peer: records kept"
assert_eq "$end" "$(jq -r .upto <<<"$s")" "stream peer: the last upto"
assert_eq "[]" "$(jq -c .aborts <<<"$t")" "txn peer: ABORTs"
assert_eq null "$(jq -r '.types["17"]' <<<"$t")" "txn peer: ABORT frames"
assert_eq 0 "$(jq -r .discarded <<<"$t")" "txn peer: records of the refused unit"
assert_eq 100 "$(jq -r .records <<<"$t")" "txn peer: records"
wait_caught_up R P 60
assert_same_digest P R

# ---------------------------------------------------------------- 3. the link cut mid-unit
log "3. the link cut while P still writes the unit R is receiving"
gen d
base=$(seq_of P)
end=$((base + N))
poll R "$base" "$end" /d/00001 /d/30000 /d/60000
rolled=$(grep -c 'a replicated unit left uncommitted is rolled back' "$(node_log R)" || true)
lsc P import "$T/d.ndjson" >"$T/import.d" 2>&1 &
imp=$!
bg_track $imp
wait_until 60 holding R || fail "R received nothing of the unit"
running=$(kill -0 $imp 2>/dev/null && echo yes || echo no)
proxy_cut X
bg_wait $imp 150 || fail "the import failed: $(cat "$T/import.d")"
log "   P was still importing at the cut: $running"
bg_wait $POLL 150 || fail "the poller failed"
readings_ok R "$T/poll.R" "$base" "$end"
(($(grep -c 'a replicated unit left uncommitted is rolled back' "$(node_log R)" || true) > rolled)) ||
    fail "R did not roll a unit back (was the link cut mid-unit?)"
wait_caught_up R P 60
assert_same_digest P R

# ---------------------------------------------------------------- 4. kill -9 of R mid-unit
log "4. R killed while it holds a streamed unit"
gen e
base=$(seq_of P)
end=$((base + N))
proxy_set X "delay 400"
lsc P import "$T/e.ndjson" >"$T/import.e" 2>&1 &
imp=$!
bg_track $imp
wait_until 60 holding R || fail "R received nothing of the unit"
assert_eq "$base" "$(seq_of R)" "R's seq while it receives the unit"
kill9_server R
proxy_set X "delay 0"
bg_wait $imp 150 || fail "the import failed: $(cat "$T/import.e")"
start_node R --role replica --upstream "$PROXY_X" --heartbeat-timeout 2s --compress none
assert_eq "$base" "$(seq_of R)" "R's seq after its restart (the one before the unit)"
wait_caught_up R P 60
assert_same_digest P R
assert_eq continue "$(lsc R status --json | jq -r .last_sync)" "R's last sync"
assert_eq 1 "$(grep -c 'receiving a snapshot' "$(node_log R)")" "snapshots R received (its first only)"

# ---------------------------------------------------------------- 5. kill -9 of P mid-unit
log "5. P killed while it writes a unit R is receiving"
gen f
base=$(seq_of P)
rolled=$(grep -c 'a replicated unit left uncommitted is rolled back' "$(node_log R)" || true)
lsc P import "$T/f.ndjson" >"$T/import.f" 2>&1 &
imp=$!
bg_track $imp
wait_until 60 holding R || fail "R received nothing of the unit"
kill9_server P
bg_wait $imp 60 && fail "the import succeeded although P was killed: $(cat "$T/import.f")"
wait_until 20 test "$(grep -c 'a replicated unit left uncommitted is rolled back' "$(node_log R)")" -gt "$rolled" ||
    fail "R did not roll the unit back when P went away"
assert_eq "$base" "$(seq_of R)" "R's seq once P is gone"
start_node P
assert_eq "$base" "$(seq_of P)" "P's seq after its restart (the unit never committed)"
printf y | lsc P put /after >/dev/null
wait_caught_up R P 60
assert_same_digest P R
stop_server R
stop_server P
log "ok"
