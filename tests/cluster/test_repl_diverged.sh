#!/usr/bin/env bash
# An exact replica that lacks an item (removed from its data directly while it was stopped)
# must not skip the primary's changes to it silently, as a filtered replica does: it reports
# the divergence (log and status) and resynchronizes with a snapshot, ending with the
# primary's digest. A filtered replica (--include) still skips what it does not hold.
set -euo pipefail
CLI_LEAK_CHECK=1 # every CLI command it runs is leak-checked too (lib.sh)
source "$(dirname "$0")/lib_repl.sh"

start_node P
start_node R --role replica --upstream "$PEER_P"
start_node S --role replica --upstream "$PEER_P" --include /keep
for p in /a /b /c /keep/1; do printf '%s' "$p" | lsc P put "$p" >/dev/null; done
wait_caught_up R P 15
wait_caught_up S P 15

stop_server R
sqlite3 "$DATA_R/store.db" "DELETE FROM versions WHERE item IN (SELECT id FROM items WHERE path IN ('/a','/b','/c'));
DELETE FROM items WHERE path IN ('/a','/b','/c')"
start_node R --role replica --upstream "$PEER_P"
wait_caught_up R P 15
lsc P mv /a /a2 >/dev/null
lsc P publish /b >/dev/null
lsc P rm /c >/dev/null
printf 'after' | lsc P put /keep/2 >/dev/null

_same() { [[ "$(digest_of R)" == "$(digest_of P)" ]] && _caught_up R P; }
wait_until 20 _same || fail "R did not converge: R $(digest_of R) P $(digest_of P); $(lsc R status --json | jq -c .)"
assert_same_digest P R
grep -q 'diverged from its upstream' "$(node_log R)" || fail "R did not log the divergence"
assert_contains "$(status_field R last_error)" "diverged" "R's last_error"
assert_eq snapshot "$(status_field R last_sync)" "R resynchronized with a snapshot"
assert_eq /a "$(lsc R get /a2)" "the moved item on R"

wait_caught_up S P 15
assert_same_digest P S /keep
if grep -q 'diverged from its upstream' "$(node_log S)"; then fail "the filtered replica reported a divergence"; fi
