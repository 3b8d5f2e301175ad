#!/usr/bin/env bash
# Failover: primary P with replicas R1 and R2. R2 stops first (behind), R1 next, then P takes
# one more write that no replica has and dies (kill -9). R1 is promoted and takes writes; R2,
# pointed at R1, continues without a snapshot (its history is a prefix of R1's). The old primary
# comes back as a replica of R1: it detects that its history forked, saves the divergent change
# in DATA/forked-*.ndjson (named in its log), takes a snapshot and ends equal to R1.
set -euo pipefail
CLI_LEAK_CHECK=1 # every CLI command it runs is leak-checked too (lib.sh)
source "$(dirname "$0")/lib_repl.sh"

start_node P
start_node R1 --role replica --upstream "$PEER_P"
start_node R2 --role replica --upstream "$PEER_P"
for i in 1 2 3 4 5; do printf 'base %d' "$i" | lsc P put "/base/$i" --publish >/dev/null; done
wait_caught_up R1 P 15
wait_caught_up R2 P 15

kill9_server R2
r2_seq=$(seq_of P)
for i in 1 2 3; do printf 'r1 only %d' "$i" | lsc P put "/r1/$i" >/dev/null; done
lsc P mv /base/5 /base/five >/dev/null
wait_caught_up R1 P 15
kill9_server R1
common=$(seq_of P)
printf 'divergent on the old primary' | lsc P put /divergent >/dev/null
lsc P rm /base/1 >/dev/null
p_seq=$(seq_of P)
assert_eq $((common + 2)) "$p_seq" "the old primary's seq"
kill9_server P
log "R2 at $r2_seq, R1 at $common, the old primary at $p_seq"

# --- promote R1 (its upstream is gone)
start_node R1 --role replica --upstream "$PEER_P"
assert_eq "$common" "$(seq_of R1)" "R1's seq before the promotion"
assert_exit 0 "$LOCKSTEP" promote --server "$URL_R1"
assert_contains "$OUT" "begins at seq $common" "promote output"
assert_eq primary "$(status_field R1 role)" "R1's role after the promotion"
epoch=$(status_field R1 epoch)
assert_eq 2 "$epoch" "R1's epoch after the promotion"
assert_exit 1 "$LOCKSTEP" promote --server "$URL_R1"

# writes on R1 work
printf 'after promotion' | lsc R1 put /after/1 --publish >/dev/null
assert_exit 0 "$LOCKSTEP" rm /base/2 --server "$URL_R1"
assert_eq "after promotion" "$(lsc R1 get /after/1)" "a write on the promoted R1"

# --- R2 follows R1 and continues (no snapshot)
start_node R2 --role replica --upstream "$PEER_R1"
wait_caught_up R2 R1 20
assert_eq continue "$(status_field R2 last_sync)" "R2's last_sync after moving to R1"
grep -q "R2 continues from seq $r2_seq" "$(node_log R1)" || fail "R1 did not continue R2 from seq $r2_seq"
if grep -q 'sending R2 a snapshot' "$(node_log R1)"; then fail "R1 sent R2 a snapshot"; fi
assert_same_digest R1 R2
assert_eq "r1 only 3" "$(lsc R2 get /r1/3)" "R2 has what only R1 had"
assert_eq "after promotion" "$(lsc R2 get /after/1)" "R2 has the write made on R1"
assert_exit 3 "$LOCKSTEP" get /divergent --server "$URL_R2"
# writes on R2 name the new primary
printf 'x' >"$T/x"
assert_exit 1 "$LOCKSTEP" put /nope "$T/x" --server "$URL_R2"
assert_contains "$ERR" "127.0.0.1:$PORT_R1" "a write on R2 names the new primary"

# --- the old primary rejoins as a replica of R1: fork detected, divergent change saved
start_node P --role replica --upstream "$PEER_R1"
_forked_saved() { grep -q 'forked-.*\.ndjson' "$(node_log P)"; }
wait_until 20 _forked_saved || fail "the old primary did not report its forked history"
wait_caught_up P R1 30
forked=$(grep -o "$DATA_P/forked-[^ ]*\.ndjson" "$(node_log P)" | head -1)
[[ -n "$forked" ]] || fail "the log does not name the forked file with its path: $(grep forked "$(node_log P)")"
[[ -f "$forked" ]] || fail "$forked (named in the log) does not exist"
log "fork saved in $(basename "$forked"): $(wc -l <"$forked") change(s)"
assert_eq 1 "$(ls "$DATA_P"/forked-*.ndjson | wc -l)" "forked files"
jq -se 'any(.[]; .op == "put" and .path == "/divergent")' "$forked" >/dev/null ||
    fail "the forked file lacks the divergent put: $(cat "$forked")"
assert_eq "divergent on the old primary" \
    "$(jq -r 'select(.op == "put" and .path == "/divergent") | .body_base64' "$forked" | base64 -d)" \
    "the divergent body in the forked file"
jq -se 'any(.[]; .op == "delete" and .path == "/base/1")' "$forked" >/dev/null ||
    fail "the forked file lacks the divergent delete: $(cat "$forked")"
assert_eq 2 "$(grep -c . "$forked")" "changes in the forked file (only those after the fork)"
grep -q 'its history forked' "$(node_log R1)" || fail "R1 did not log the fork"
assert_eq snapshot "$(status_field P last_sync)" "the old primary's last_sync"
assert_same_digest R1 P
assert_exit 3 "$LOCKSTEP" get /divergent --server "$URL_P"
assert_eq "base 1" "$(lsc P get /base/1)" "the delete that only the old primary had is undone"
assert_eq "after promotion" "$(lsc P get /after/1)" "the old primary has the new primary's writes"

# --- everyone follows the new primary from here on; the saved changes import as the log says
assert_exit 0 "$LOCKSTEP" import "$forked" --server "$URL_R1"
printf 'last' | lsc R1 put /last >/dev/null
wait_caught_up P R1 15
wait_caught_up R2 R1 15
assert_same_digest R1 P
assert_same_digest R1 R2
assert_eq "divergent on the old primary" "$(lsc P get /divergent)" "the imported divergent change"
assert_exit 3 "$LOCKSTEP" get /base/1 --server "$URL_R2"
lsc R1 nodes --json >"$T/nodes"
assert_eq "P R2" "$(jq -r '[.nodes[] | select(.state == "live") | .name] | sort | join(" ")' "$T/nodes")" \
    "live downstreams of R1"
assert_exit 1 "$LOCKSTEP" put /nope "$T/x" --server "$URL_P"
assert_contains "$ERR" "127.0.0.1:$PORT_R1" "a write on the old primary names the new one"

stop_server P
stop_server R2
stop_server R1
