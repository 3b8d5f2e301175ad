#!/usr/bin/env bash
# A server with its own history restarted as a replica of another site's upstream (another
# store) must not be replaced by a snapshot silently: it refuses (status, log), keeps its
# items, and its own staging server keeps its content. With --replace-store (here the config
# key) it exports its history first, then takes the snapshot; the export imports back to the
# same content. A new, empty store still takes a snapshot without the flag.
set -euo pipefail
source "$(dirname "$0")/lib_repl.sh"

start_node A
printf 'site a' | lsc A put /a/index --publish >/dev/null
start_node B
start_node BS --role staging --upstream "$PEER_B"
printf 'site b' | lsc B put /b/index --publish >/dev/null
printf 'b draft' | lsc B put /b/index >/dev/null
printf 'b gone' | lsc B put /b/gone >/dev/null
lsc B rm /b/gone >/dev/null
wait_caught_up BS B 15
b_digest=$(digest_of B)
bs_digest=$(digest_of BS --published-only)
stop_server B

start_node B --role replica --upstream "$PEER_A"
_refused() { [[ "$(status_field B state)" == refused ]]; }
wait_until 10 _refused || fail "B did not refuse: $(lsc B status --json | jq -c .)"
assert_contains "$(status_field B last_error)" "another store" "B's last_error"
assert_contains "$(status_field B last_error)" "--replace-store" "B's last_error names the flag"
grep -q 'refused: the upstream holds another store' "$(node_log B)" || fail "B did not log the refusal"
sleep 2
assert_eq "$b_digest" "$(digest_of B)" "B's content while refusing"
assert_eq "site b" "$(lsc B get /b/index --version 1)" "B's item while refusing"
assert_eq "$bs_digest" "$(digest_of BS --published-only)" "B's staging server's content"
n=$(grep -c 'refused: the upstream' "$(node_log B)")
((n <= 6)) || fail "B retried $n times in about 3 s: no back-off"
ls "$DATA_B"/forked-*.ndjson 2>/dev/null && fail "B exported without --replace-store"
stop_server B

printf 'replace-store = yes\n' >"$T/b.ini"
start_node B --role replica --upstream "$PEER_A" --config "$T/b.ini"
wait_caught_up B A 20
assert_same_digest A B
export=$(ls "$DATA_B"/forked-store-*.ndjson)
grep -q "$export" "$(node_log B)" || fail "B's log does not name $export"
start_node F
assert_exit 0 "$LOCKSTEP" import "$export" --server "$URL_F"
assert_eq "$(cut -d' ' -f1,2 <<<"$b_digest")" "$(digest_of F)" "B's old content imported into F"

# a new, empty store takes the snapshot without the flag
start_node N --role replica --upstream "$PEER_A"
wait_caught_up N A 20
assert_same_digest A N
