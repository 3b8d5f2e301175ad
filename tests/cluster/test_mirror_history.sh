#!/usr/bin/env bash
# A store source's checkpoint is a seq of its log; when that log is replaced by another
# history (here a fork: a promoted replica re-attached to another promoted one, its log cut
# back to where they part and refilled from the other), the same seqs name other changes
# (docs/mirror.md, "Store sources"). The next run must see the history changed and compare
# the target with the store again: with --delete the target ends equal to the store, though
# the store's seq is the same as at the checkpoint.
set -euo pipefail
source "$(dirname "$0")/lib_repl.sh"

# file name and content of everything in a directory, sorted
tree_of() { (cd "$1" && find . -type f -printf '%P ' -exec cat {} \; -printf '\n' | sort); }
# what the store of node $1 holds, as tree_of would show a mirror of it
store_tree() {
    local p
    for p in $(lsc "$1" ls / --json | jq -r .path | sort); do
        printf '%s %s\n' "${p#/}" "$(lsc "$1" get "$p")"
    done | sort
}
run_field() { lsc R2 mirror history "$1" --json | jq -r ".runs[${2:-0}].$3"; }

start_node P
start_node R1 --role replica --upstream "$PEER_P"
start_node R2 --role replica --upstream "$PEER_P"
for i in 1 2 3; do printf 'base %d' "$i" | lsc P put "/base/$i" --publish >/dev/null; done
wait_caught_up R1 P 15
wait_caught_up R2 P 15
stop_server P

assert_exit 0 "$LOCKSTEP" promote --server "$URL_R1"
assert_exit 0 "$LOCKSTEP" promote --server "$URL_R2"
printf 'only on r1' | lsc R1 put /r1 >/dev/null
lsc R1 rm /base/2 >/dev/null # as many changes on each side: the seqs alone show no fork
printf 'only on r2' | lsc R2 put /r2 >/dev/null
lsc R2 rm /base/1 >/dev/null

# R2 mirrors its store while it has its own history
assert_exit 0 lsc R2 mirror create h --source store:/ --target "dir:$SHM/h" --delete
assert_exit 0 lsc R2 mirror run h --wait
[[ "$(tree_of "$SHM/h")" == "$(store_tree R2)" ]] ||
    fail "the first mirror differs from R2's store: $(diff <(tree_of "$SHM/h") <(store_tree R2))"
seq_before=$(seq_of R2)
stop_server R2

# re-attached to R1: the fork is found, R2's log is cut back and R1's history replaces it
start_node R2 --role replica --upstream "$PEER_R1"
_forked_saved() { grep -q 'forked-.*\.ndjson' "$(node_log R2)"; }
wait_until 20 _forked_saved || fail "R2 did not detect the fork"
wait_caught_up R2 R1 30
assert_eq "$seq_before" "$(seq_of R2)" "R2's seq (as at its checkpoint, in another history)"
assert_eq "only on r1" "$(lsc R2 get /r1)" "R1's write on R2"

assert_exit 0 lsc R2 mirror run h --wait
assert_eq ok "$(run_field h 0 state)" "the run after the fork"
[[ "$(tree_of "$SHM/h")" == "$(store_tree R2)" ]] ||
    fail "after the fork the mirror differs from R2's store: $(diff <(tree_of "$SHM/h") <(store_tree R2))"
grep -q "history changed since its checkpoint" "$(node_log R2)" || fail "no full pass was logged"

# and from there on, incremental again: a change sends one item
assert_exit 0 lsc R2 mirror run h --wait
assert_eq 0 "$(run_field h 0 items)" "items of a re-run after the full pass"
printf 'later' | lsc R1 put /later >/dev/null
wait_caught_up R2 R1 15
assert_exit 0 lsc R2 mirror run h --wait
assert_eq 1 "$(run_field h 0 items)" "items of an incremental run after the full pass"
[[ "$(tree_of "$SHM/h")" == "$(store_tree R2)" ]] || fail "the mirror differs after a later change"
log "ok"
