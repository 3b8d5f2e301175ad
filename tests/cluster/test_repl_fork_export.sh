#!/usr/bin/env bash
# The fork export keeps which version was published: the old primary, after the replica's
# promotion, publishes an older version of an item (its latest stays a draft); rejoining as a
# replica it forks and exports its changes. Imported into a fresh primary, the export gives
# the same status and published version as the old primary had.
set -euo pipefail
source "$(dirname "$0")/lib_repl.sh"

start_node P
start_node R --role replica --upstream "$PEER_P"
printf 'base' | lsc P put /base --publish >/dev/null
wait_caught_up R P 15
stop_server P
assert_exit 0 "$LOCKSTEP" promote --server "$URL_R"

start_node P
printf 'one' | lsc P put /f >/dev/null
printf 'two' | lsc P put /f >/dev/null
lsc P publish /f --version 1 >/dev/null
printf 'g1' | lsc P put /g --publish >/dev/null
printf 'g2' | lsc P put /g >/dev/null
printf 'h1' | lsc P put /h >/dev/null
printf 'h2' | lsc P put /h >/dev/null
lsc P publish /h --version 2 >/dev/null
printf 'k1' | lsc P put /k >/dev/null
printf 'k2' | lsc P put /k >/dev/null
lsc P mv /k /k2 >/dev/null
lsc P publish /k2 --version 1 >/dev/null
# an item older than the fork: its numbers cannot replay, its contents and status do
printf 'base 2' | lsc P put /base >/dev/null
lsc P publish /base --version 1 >/dev/null
want=$(for p in /f /g /h /k2; do lsc P stat "$p" --json | jq -c '{path,status,published_version,latest_version}'; done)
stop_server P

start_node P --role replica --upstream "$PEER_R"
_forked_saved() { grep -q 'forked-.*\.ndjson' "$(node_log P)"; }
wait_until 20 _forked_saved || fail "the old primary did not report its forked history"
forked=$(ls "$DATA_P"/forked-*.ndjson | head -1)
log "forked file: $(cat "$forked" | jq -c '{op,path,status,version}' | tr '\n' ' ')"

start_node F
assert_exit 0 "$LOCKSTEP" import "$forked" --server "$URL_F"
got=$(for p in /f /g /h /k2; do lsc F stat "$p" --json | jq -c '{path,status,published_version,latest_version}'; done)
assert_eq "$want" "$got" "status and published version after importing the fork export"
assert_eq one "$(lsc F get /f --version "$(lsc F stat /f --json | jq -r .published_version)")" \
    "the published body of /f"
assert_eq changed "$(lsc F stat /base --json | jq -r .status)" "the status of /base"
assert_eq base "$(lsc F get /base --version "$(lsc F stat /base --json | jq -r .published_version)")" \
    "the published body of /base"
assert_eq "base 2" "$(lsc F get /base)" "the latest body of /base"
wait_caught_up P R 30
assert_same_digest R P
