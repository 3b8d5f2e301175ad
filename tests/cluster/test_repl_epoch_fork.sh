#!/usr/bin/env bash
# Two replicas of one primary, both promoted, are at epoch 2 each, with different epoch ids.
# Each takes a write; then one is attached to the other. Their histories part where their
# epochs 2 began: the attached one must see a FORK (its divergent write exported to
# forked-*.ndjson), resynchronize, and end with the other's digest.
set -euo pipefail
source "$(dirname "$0")/lib_repl.sh"

start_node P
start_node R1 --role replica --upstream "$PEER_P"
start_node R2 --role replica --upstream "$PEER_P"
for i in 1 2 3; do printf 'base %d' "$i" | lsc P put "/base/$i" --publish >/dev/null; done
wait_caught_up R1 P 15
wait_caught_up R2 P 15
stop_server P

assert_exit 0 "$LOCKSTEP" promote --server "$URL_R1"
assert_exit 0 "$LOCKSTEP" promote --server "$URL_R2"
assert_eq 2 "$(status_field R1 epoch)" "R1's epoch"
assert_eq 2 "$(status_field R2 epoch)" "R2's epoch"
printf 'only on r1' | lsc R1 put /r1 >/dev/null
lsc R1 rm /base/2 >/dev/null # as many changes on each side: the seqs alone show no fork
printf 'only on r2' | lsc R2 put /r2 >/dev/null
lsc R2 rm /base/1 >/dev/null
stop_server R2

start_node R2 --role replica --upstream "$PEER_R1"
_forked_saved() { grep -q 'forked-.*\.ndjson' "$(node_log R2)"; }
wait_until 20 _forked_saved || fail "R2 did not detect the fork: $(lsc R2 status --json | jq -c .)"
grep -q 'its history forked' "$(node_log R1)" || fail "R1 did not log the fork"
wait_caught_up R2 R1 30
assert_same_digest R1 R2
assert_eq "only on r1" "$(lsc R2 get /r1)" "R1's write on R2"
assert_exit 3 "$LOCKSTEP" get /r2 --server "$URL_R2"
forked=$(ls "$DATA_R2"/forked-*.ndjson | head -1)
jq -se 'any(.[]; .op == "put" and .path == "/r2")' "$forked" >/dev/null ||
    fail "the forked file lacks R2's write: $(cat "$forked")"
jq -se 'any(.[]; .op == "delete" and .path == "/base/1")' "$forked" >/dev/null ||
    fail "the forked file lacks R2's delete: $(cat "$forked")"
