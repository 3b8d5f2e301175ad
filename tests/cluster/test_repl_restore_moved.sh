#!/usr/bin/env bash
# A replica that pruned an old version (its own --max-versions 1) is down while the primary
# publishes that version and then moves the item. On its return it must get the version (a
# RESTORE found by item id, not at the item's current path) and catch up.
# Then the reconnect back-off: a replica whose every session fails to apply (here a move onto
# an item only the replica has, made with sqlite3 while it is stopped) must back off, not
# reconnect every 200 ms because each WELCOME reset the wait.
set -euo pipefail
source "$(dirname "$0")/lib_repl.sh"

start_node P
start_node R --role replica --upstream "$PEER_P" --max-versions 1
printf 'one' | lsc P put /a >/dev/null
printf 'two' | lsc P put /a >/dev/null
wait_caught_up R P 15
assert_exit 3 "$LOCKSTEP" get /a --version 1 --server "$URL_R"

stop_server R
lsc P publish /a --version 1 >/dev/null
lsc P mv /a /b >/dev/null
start_node R --role replica --upstream "$PEER_P" --max-versions 1
wait_caught_up R P 15
assert_same_digest P R
assert_eq 1 "$(lsc R stat /b --json | jq -r .published_version)" "R's published version of /b"
assert_eq one "$(lsc R get /b --version 1)" "the restored version on R"

# --- the back-off
printf 'x' | lsc P put /x >/dev/null
printf 'y' | lsc P put /y >/dev/null
wait_caught_up R P 15
stop_server R
sqlite3 "$DATA_R/store.db" "UPDATE items SET path='/z' WHERE path='/y'"
lsc P mv /x /z >/dev/null
start_node R --role replica --upstream "$PEER_P" --max-versions 1
from=$(wc -l <"$(node_log R)")
sleep 5
n=$(tail -n +"$from" "$(node_log R)" | grep -c 'reconnecting' || true)
log "R reconnected $n times in 5 s"
((n >= 2)) || fail "R did not fail as set up: $(tail -n 20 "$(node_log R)")"
((n <= 7)) || fail "R reconnected $n times in 5 s: no back-off"
