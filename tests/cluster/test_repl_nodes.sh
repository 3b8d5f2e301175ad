#!/usr/bin/env bash
# The registry of downstreams (`lockstep nodes`, GET /v1/nodes) on the primary: name, role,
# address, version, state live, applied_seq equal to the primary's seq and no lag once caught up;
# a replica that stops answering (SIGSTOP) shows its lag and turns "down" within
# --heartbeat-timeout (2 s) + slack, then live again when it resumes; a replica killed with
# kill -9 turns "down" (and stays listed, with its last error) within the same bound, and live
# again when restarted.
set -euo pipefail
source "$(dirname "$0")/lib_repl.sh"

HB_S=2
start_node P --heartbeat-timeout "${HB_S}s"
start_node R --role replica --upstream "$PEER_P" --heartbeat-timeout "${HB_S}s"
start_node S --role staging --upstream "$PEER_P" --heartbeat-timeout "${HB_S}s"
for i in 1 2 3 4 5; do printf 'item %d' "$i" | lsc P put "/n/$i" --publish >/dev/null; done
printf 'draft' | lsc P put /n/draft >/dev/null
wait_caught_up R P 15
wait_caught_up S P 15

# node_field NAME FIELD: from P's registry
node_field() { lsc P nodes --json | jq -r --arg n "$1" ".nodes[] | select(.name == \$n) | .$2"; }
_node_is() { [[ "$(node_field "$1" state)" == "$2" ]]; }
_node_applied() { [[ "$(node_field "$1" applied_seq)" == "$(seq_of P)" ]]; }

# acknowledgements trail the apply a little
wait_until 10 _node_applied R || fail "R's applied_seq did not reach P's seq"
wait_until 10 _node_applied S || fail "S's applied_seq did not reach P's seq"
p_seq=$(seq_of P)
asked_s=$(date +%s) # the heartbeat below is judged against this, not against later (a loaded machine)
lsc P nodes --json >"$T/nodes"
assert_eq P "$(jq -r .name "$T/nodes")" "the registry's own name"
assert_eq primary "$(jq -r .role "$T/nodes")" "the registry's own role"
assert_eq "$p_seq" "$(jq -r .seq "$T/nodes")" "the registry's own seq"
assert_eq "R S" "$(jq -r '[.nodes[].name] | sort | join(" ")' "$T/nodes")" "the downstreams"
r=$(jq -c '.nodes[] | select(.name == "R")' "$T/nodes")
for f in name role address version state applied_seq lag_changes lag_bytes lag_seconds last_heartbeat; do
    jq -e --arg f "$f" 'has($f)' <<<"$r" >/dev/null || fail "nodes: R lacks $f: $r"
done
assert_eq replica "$(jq -r .role <<<"$r")" "R's role"
assert_eq staging "$(node_field S role)" "S's role"
assert_eq live "$(jq -r .state <<<"$r")" "R's state"
assert_eq live "$(node_field S state)" "S's state"
assert_eq "$p_seq" "$(jq -r .applied_seq <<<"$r")" "R's applied_seq"
assert_eq "0 0 0" "$(jq -r '"\(.lag_changes) \(.lag_bytes) \(.lag_seconds)"' <<<"$r")" "R's lag"
assert_eq "$("$LOCKSTEP" --version | cut -d' ' -f2)" "$(jq -r .version <<<"$r")" "R's version"
[[ "$(jq -r .address <<<"$r")" =~ ^127\.0\.0\.1:[0-9]+$ ]] || fail "R's address: $(jq -r .address <<<"$r")"
hb=$(jq -r .last_heartbeat <<<"$r")
hb_s=$(date -d "$hb" +%s) || fail "last_heartbeat is not a time: $hb"
((asked_s - hb_s <= HB_S + 1)) || fail "R's last_heartbeat $hb is old (asked at $asked_s)"
assert_exit 0 "$LOCKSTEP" nodes --server "$URL_P"
assert_contains "$OUT" "NAME" "nodes (text): header"
assert_contains "$(grep '^R ' <<<"$OUT")" "live" "nodes (text): R's line"
assert_eq 2 "$(status_field P downstreams)" "status: downstreams"

# --- a replica that stops answering: lag shows, then down within the heartbeat timeout
_signal STOP "$PID_R"
printf 'while stopped 1' | lsc P put /stopped/1 >/dev/null
assert_eq 1 "$(node_field R lag_changes)" "R's lag_changes, one change behind"
(($(node_field R lag_bytes) > 0)) || fail "R's lag_bytes, one change behind: $(node_field R lag_bytes)"
for i in 2 3; do printf 'while stopped %d' "$i" | lsc P put "/stopped/$i" >/dev/null; done
sleep 1.1
assert_eq 3 "$(node_field R lag_changes)" "R's lag_changes while stopped"
(($(node_field R lag_bytes) > 0)) || fail "R's lag_bytes while stopped: $(node_field R lag_bytes)"
(($(node_field R lag_seconds) >= 1)) || fail "R's lag_seconds while stopped: $(node_field R lag_seconds)"
t0=$SECONDS
wait_until $((HB_S + 3)) _node_is R down || fail "a stopped replica is still $(node_field R state) after $((SECONDS - t0 + 1))s"
log "stopped replica down after about $((SECONDS - t0 + 1))s"
assert_eq live "$(node_field S state)" "S meanwhile"
_signal CONT "$PID_R"
wait_until 15 _node_is R live || fail "R did not come back live after SIGCONT: $(node_field R state)"
wait_caught_up R P 15

# --- kill -9: down within the heartbeat timeout, still listed
wait_until 10 _node_applied R || fail "R's applied_seq did not reach P's seq after SIGCONT"
kill9_server R
t0=$(date +%s%N)
wait_until $((HB_S + 3)) _node_is R down || fail "a killed replica is still $(node_field R state)"
log "killed replica down after $((($(date +%s%N) - t0) / 1000000)) ms"
assert_eq "R S" "$(lsc P nodes --json | jq -r '[.nodes[].name] | sort | join(" ")')" "the registry keeps a down replica"
[[ -n "$(node_field R last_error)" && "$(node_field R last_error)" != null ]] ||
    fail "a down replica has no last_error: $(lsc P nodes --json | jq -c '.nodes[] | select(.name == "R")')"
printf 'while down' | lsc P put /down >/dev/null
assert_eq 1 "$(node_field R lag_changes)" "R's lag while down"
assert_eq live "$(node_field S state)" "S meanwhile"
# back
start_node R --role replica --upstream "$PEER_P" --heartbeat-timeout "${HB_S}s"
wait_caught_up R P 15
wait_until 10 _node_is R live || fail "R is not live after its restart: $(node_field R state)"
wait_until 10 _node_applied R || fail "R's applied_seq did not reach P's seq after its restart"
assert_eq 0 "$(node_field R lag_changes)" "R's lag after its restart"
assert_eq null "$(node_field R last_error)" "R's last_error after its restart"
assert_eq 2 "$(lsc P nodes --json | jq '.nodes | length')" "one entry per name"

stop_server S
stop_server R
stop_server P
