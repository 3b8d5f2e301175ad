#!/usr/bin/env bash
# A unit (one request on P) that a replica received only part of is never shown, and comes
# whole later (docs/streaming.md, step 1):
#   1. the link cut (faultproxy) while R applies a 30,000-document import: R's readings are
#      before or after it, never between; R rolled the part back, reconnected, caught up exactly;
#   2. R killed (-9) while it applies one: it restarts at the seq before the unit (continue, no
#      snapshot) and ends with the whole unit;
#   3. raw downstreams on P's peer port: one without `txn` (as lockstep before it) gets CHANGES
#      only, with no record flagged MORE; one with it gets CHANGES_PART, MORE on all but the
#      last record of the unit.
set -euo pipefail
source "$(dirname "$0")/lib_repl.sh"

N=30000
start_node P
start_proxy X "$PEER_P"
start_node R --role replica --upstream "$PROXY_X" --heartbeat-timeout 2s --compress none
printf x | lsc P put /before >/dev/null
wait_caught_up R P 20

# gen TAG: an import of N documents under /TAG/
gen() {
    awk -v n=$N -v t="$1" 'BEGIN { for (i = 0; i < n; i++)
        printf "{\"op\":\"put\",\"path\":\"/%s/%05d\",\"body\":\"document %d of import %s, with some text to fill the frames\"}\n", t, i, i, t }' >"$T/$1.ndjson"
}
# readings_ok NAME FILE BASE END: every "SEQ BITS" reading is before or after the unit
readings_ok() {
    local bad
    bad=$(awk -v b="$3" -v e="$4" '($1 != b && $1 < e) || $2 ~ /10/ || ($1 >= e && $2 != "111")' "$2" | head -n 5)
    log "$1: $(wc -l <"$2") readings, seqs seen: $(awk '{print $1}' "$2" | uniq | tr '\n' ' ')"
    [[ -z "$bad" ]] || fail "$1 showed part of the import (SEQ BITS): $bad"
}
# holding NAME: NAME has received records of a unit it has not committed (status unit_received)
holding() { (($(lsc "$1" status --json | jq -r '.unit_received // 0') > 0)); }
# import_held TAG NAME: P imports TAG's file in the background (IMP: its pid) until NAME holds
# part of it (P may still be writing it: with `stream`, R receives a unit before P commits)
import_held() {
    lsc P import "$T/$1.ndjson" >"$T/import.$1" 2>&1 &
    IMP=$!
    bg_track $IMP
    wait_until 60 holding "$2" || fail "$2 received nothing of the import"
}
# mid_unit NAME BASE: NAME is still at BASE (has not committed the unit) for 0.5 s more
mid_unit() {
    sleep 0.5
    [[ "$(seq_of "$1")" == "$2" ]] || fail "$1 finished the unit too soon for this test"
}

# ---------------------------------------------------------------- 1. the link cut mid-unit
log "1. the link cut while R applies a unit"
gen a
base=$(seq_of P)
end=$((base + N))
python3 "$(dirname "$0")/unit_poll.py" "$URL_R" "$base" "$end" /a/00000 /a/15000 /a/29999 >"$T/poll.a" &
poll=$!
bg_track $poll
# the unit's ~6 MB cross the proxy at about 1 MB per 400 ms: the cut comes mid-transfer
proxy_set X "delay 400"
import_held a R
mid_unit R "$base"
proxy_cut X
proxy_set X "delay 0"
bg_wait $IMP 150 || fail "the import failed: $(cat "$T/import.a")"
bg_wait $poll 150 || fail "the poller failed"
readings_ok R "$T/poll.a" "$base" "$end"
grep -q 'a replicated unit left uncommitted is rolled back' "$(node_log R)" ||
    fail "R did not roll a unit back (was the link cut mid-unit?)"
wait_caught_up R P 60
assert_same_digest P R

# ---------------------------------------------------------------- 2. kill -9 of R mid-unit
log "2. R killed while it applies a unit"
gen b
base=$(seq_of P)
end=$((base + N))
proxy_set X "delay 400"
import_held b R
mid_unit R "$base"
kill9_server R
proxy_set X "delay 0"
bg_wait $IMP 150 || fail "the import failed: $(cat "$T/import.b")"
start_node R --role replica --upstream "$PROXY_X" --heartbeat-timeout 2s --compress none
assert_eq "$base" "$(seq_of R)" "R's seq after its restart (the one before the unit)"
wait_caught_up R P 60
assert_same_digest P R
assert_eq continue "$(lsc R status --json | jq -r .last_sync)" "R's last sync"
assert_eq 1 "$(grep -c 'receiving a snapshot' "$(node_log R)")" "snapshots R received (its first only)"

# ---------------------------------------------------------------- 3. old and new raw peers
log "3. raw downstreams with and without txn"
store_id=$(lsc P status --json | jq -r .store_id)
peer_port=${PEER_P##*:}
gen c
base=$(seq_of P)
end=$((base + N))
lsc P import "$T/c.ndjson" >/dev/null
for mode in absent false true; do
    out=$(python3 "$(dirname "$0")/txn_peer.py" "$peer_port" "$store_id" "$base" "$end" "$mode")
    log "   txn $mode: $out"
    assert_eq "$end" "$(jq -r .upto <<<"$out")" "txn $mode: the last upto"
    assert_eq "$N" "$(jq -r .records <<<"$out")" "txn $mode: records"
    assert_eq true "$(jq -r .welcome_txn <<<"$out")" "txn $mode: WELCOME says txn"
    if [[ $mode == true ]]; then
        assert_eq $((N - 1)) "$(jq -r .more <<<"$out")" "txn $mode: records flagged MORE"
        [[ $(jq -r '.types["16"] // 0' <<<"$out") -ge 2 ]] || fail "txn $mode: no CHANGES_PART"
        assert_eq 1 "$(jq -r '.types["8"]' <<<"$out")" "txn $mode: CHANGES (the unit's end)"
    else
        assert_eq 0 "$(jq -r .more <<<"$out")" "txn $mode: records flagged MORE"
        assert_eq null "$(jq -r '.types["16"]' <<<"$out")" "txn $mode: CHANGES_PART frames"
        [[ $(jq -r '.types["8"]' <<<"$out") -ge 2 ]] || fail "txn $mode: one CHANGES frame only"
    fi
done
assert_eq live "$(lsc P nodes --json | jq -r '.nodes[] | select(.name == "R") | .state')" "R's state on P"
stop_server R
stop_server P
log "ok"
