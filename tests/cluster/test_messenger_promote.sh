#!/usr/bin/env bash
# Notifications a replica queued while the primary was away are not lost when that replica is
# promoted instead: they go into its own log (forward.c, forward_became_primary), in order, and
# its consumers receive them; a replica restarted as the primary does the same at start.
set -euo pipefail
source "$(dirname "$0")/lib_repl.sh"

start_node P
start_node R --role replica --upstream "$PEER_P"
wait_caught_up R P 20
lsc P notify q '"before"' >/dev/null
wait_caught_up R P 20
stop_server P
for i in 1 2 3; do
    out=$(curl -s -w ' %{http_code}' -X POST "$URL_R/v1/notify?wait_ms=200" -d "{\"channel\":\"q\",\"payload\":$i}")
    assert_contains "$out" ' 202' "notification $i while the primary is down"
done
lsc R promote >/dev/null
_on_r() { [[ "$(curl -sf "$URL_R/v1/notifications?from=start&channel=q" | jq -c '[.notifications[].payload]')" == '["before",1,2,3]' ]]; }
wait_until 10 _on_r || fail "R's log after the promotion: $(curl -sf "$URL_R/v1/notifications?from=start&channel=q")"
grep -q "published 3 notifications queued while this server was a replica" "$(node_log R)" ||
    fail "the drain is not logged"

# a replica restarted with --role primary
start_node Q --role replica --upstream "$PEER_R"
wait_caught_up Q R 20
stop_server R
curl -s -o /dev/null -X POST "$URL_Q/v1/notify?wait_ms=200" -d '{"channel":"q","payload":4}'
stop_server Q
start_node Q --role primary
# (Q began with a snapshot: the notifications before it are not in its log)
_on_q() { [[ "$(curl -sf "$URL_Q/v1/notifications?from=start&channel=q" | jq -c '[.notifications[].payload]')" == '[4]' ]]; }
wait_until 10 _on_q || fail "Q's log after its restart as the primary: $(curl -sf "$URL_Q/v1/notifications?from=start&channel=q")"
log "ok"
