#!/usr/bin/env bash
# The handshake's identity checks: a replica pointed at itself, two replicas pointed at each
# other, and an exact replica pointed at a staging server are each refused with a clear error
# (status state "refused" and last_error, and the log), never shown "live". A replica of a
# replica (a cascade) is still accepted. (A foreign store: test_repl_foreign_store.sh.)
set -euo pipefail
source "$(dirname "$0")/lib_repl.sh"

_refused_with() { # NAME TEXT
    local st
    st=$(lsc "$1" status --json) || return 1
    [[ "$(jq -r .state <<<"$st")" == refused && "$(jq -r .last_error <<<"$st")" == *"$2"* ]]
}

# --- itself
port=$(free_port)
start_node SELF --role replica --listen "127.0.0.1:$port" --upstream "127.0.0.1:$port"
wait_until 10 _refused_with SELF "itself" ||
    fail "SELF was not refused: $(lsc SELF status --json | jq -c '{state,last_error}')"
grep -q 'refused' "$(node_log SELF)" || fail "SELF did not log the refusal"

# --- two replicas pointed at each other
yport=$(free_port)
start_node X --role replica --upstream "127.0.0.1:$yport"
start_node Y --role replica --listen "127.0.0.1:$yport" --upstream "$PEER_X"
wait_until 15 _refused_with X "cycle" ||
    fail "X was not refused: $(lsc X status --json | jq -c '{state,last_error}')"
wait_until 15 _refused_with Y "cycle" ||
    fail "Y was not refused: $(lsc Y status --json | jq -c '{state,last_error}')"
grep -q 'replication cycle' "$(node_log X)" || fail "X did not log the cycle"
grep -q 'replication cycle' "$(node_log Y)" || fail "Y did not log the cycle"
sleep 2 # and it stays so (re-checked at every PING)
assert_eq refused "$(status_field X state)" "X's state later"
assert_eq refused "$(status_field Y state)" "Y's state later"

# --- an exact replica pointed at a staging server; a cascade of exact replicas is fine
start_node P
printf 'draft' | lsc P put /draft >/dev/null
printf 'pub' | lsc P put /pub --publish >/dev/null
start_node S --role staging --upstream "$PEER_P"
wait_caught_up S P 15
start_node R --role replica --upstream "$PEER_S"
wait_until 10 _refused_with R "filtered" ||
    fail "R was not refused: $(lsc R status --json | jq -c '{state,last_error}')"
assert_exit 3 "$LOCKSTEP" get /pub --server "$URL_R"
start_node R1 --role replica --upstream "$PEER_P"
start_node R2 --role replica --upstream "$PEER_R1"
wait_caught_up R1 P 15
wait_caught_up R2 P 15
assert_same_digest P R2
grep -q 'refused' "$(node_log R2)" && fail "R2 (a cascade) was refused: $(grep refused "$(node_log R2)")"

# --- after a promotion the old chain is not above the new primary: the old primary follows it
stop_server S
stop_server P
assert_exit 0 "$LOCKSTEP" promote --server "$URL_R1"
start_node P --role replica --upstream "$PEER_R1"
wait_caught_up P R1 20
assert_same_digest R1 P
wait_caught_up R2 R1 20
true
