#!/usr/bin/env bash
# The site registry (`lockstep nodes --all`, GET /v1/nodes?all=1): with no list of servers
# configured anywhere, a primary P, two replicas R1 and R2 of P and a cascaded replica C of R1
# each list all four (name, node_id, role, http and peer addresses, version, seq, upstream,
# state, last_heartbeat), on the primary as on the cascaded replica. A replica killed with
# kill -9 shows down on every other server within a few heartbeats and active again once
# restarted; one that stops answering (SIGSTOP) shows stale before --heartbeat-timeout; when
# the middle replica R1 dies, P shows it down and C, no longer reported, stale.
set -euo pipefail
CLI_LEAK_CHECK=1 # every CLI command it runs is leak-checked too (lib.sh)
source "$(dirname "$0")/lib_repl.sh"

HB=10s # --heartbeat-timeout: "down" for a silent link; "stale" comes after 2 s of silence
start_node P --heartbeat-timeout $HB
start_node R1 --role replica --upstream "$PEER_P" --heartbeat-timeout $HB
start_node R2 --role replica --upstream "$PEER_P" --heartbeat-timeout $HB
start_node C --role replica --upstream "$PEER_R1" --heartbeat-timeout $HB
for i in 1 2 3 4 5; do printf 'item %d' "$i" | lsc P put "/s/$i" --publish >/dev/null; done
wait_caught_up R1 P 20
wait_caught_up R2 P 20
wait_caught_up C P 20
ALL="C P R1 R2"

# site_of ON: ON's site list (JSON); site_field ON WHO FIELD
site_of() { lsc "$1" nodes --all --json; }
site_field() { site_of "$1" | jq -r --arg n "$2" ".nodes[] | select(.name == \$n) | .$3"; }
# every server listed on ON, active, at seq SEQ, its addresses known (a downstream's first
# PING brings them: until then its upstream knows only what HELLO said)
_all_active_at() {
    local got
    got=$(site_of "$1" | jq -r '[.nodes[] | "\(.name):\(.state):\(.seq)\(if .http == "" or .peer == "" then ":no-address" else "" end)"] | sort | join(" ")')
    [[ "$got" == "C:active:$2 P:active:$2 R1:active:$2 R2:active:$2" ]]
}
_state_is() { [[ "$(site_field "$1" "$2" state)" == "$3" ]]; }
# wait_state SECONDS ON WHO STATE...: WHO shows one of the STATEs on ON within SECONDS
wait_state() {
    local limit=$1 on=$2 who=$3 t0=$SECONDS
    shift 3
    _state_in() { local s; s=$(site_field "$on" "$who" state); for w in "$@"; do [[ "$s" != "$w" ]] || return 0; done; return 1; }
    wait_until "$limit" _state_in "$@" ||
        fail "[$(_at)] $who is $(site_field "$on" "$who" state) on $on after ${limit}s, not $*: $(site_of "$on" | jq -c '[.nodes[] | {name,state,last_heartbeat}]')"
    log "$who is $(site_field "$on" "$who" state) on $on after about $((SECONDS - t0))s"
}

# --- everyone everywhere, with the same records
p_seq=$(seq_of P)
for on in P R1 R2 C; do
    wait_until 15 _all_active_at "$on" "$p_seq" ||
        fail "the site on $on is not all four active at seq $p_seq: $(site_of "$on" | jq -c '[.nodes[] | {name,state,seq}]')"
done
t_read=$(date +%s)
site_of C >"$T/site-C"
site_of P >"$T/site-P"
assert_eq C "$(jq -r .name "$T/site-C")" "the answering server's name"
assert_eq true "$(jq -r .all "$T/site-C")" "all"
assert_eq "$ALL" "$(jq -r '[.nodes[].name] | sort | join(" ")' "$T/site-C")" "the site on C"
assert_eq "$ALL" "$(jq -r '[.nodes[].name] | sort | join(" ")' "$T/site-P")" "the site on P"
version=$("$LOCKSTEP" --version | cut -d' ' -f2)
for who in P R1 R2 C; do
    declare -n url="URL_$who" peer="PEER_$who"
    for f in P C; do
        r=$(jq -c --arg n "$who" '.nodes[] | select(.name == $n)' "$T/site-$f")
        for k in name node_id role http peer version seq upstream state last_heartbeat; do
            jq -e --arg k "$k" 'has($k)' <<<"$r" >/dev/null || fail "site on $f: $who lacks $k: $r"
        done
        assert_eq "${url#http://}" "$(jq -r .http <<<"$r")" "$who's http address on $f"
        assert_eq "$peer" "$(jq -r .peer <<<"$r")" "$who's peer address on $f"
        assert_eq "$version" "$(jq -r .version <<<"$r")" "$who's version on $f"
        [[ "$(jq -r .node_id <<<"$r")" =~ ^[0-9a-f]{32}$ ]] || fail "$who's node_id on $f: $r"
        hb=$(jq -r .last_heartbeat <<<"$r")
        hb_s=$(date -d "$hb" +%s) || fail "$who's last_heartbeat on $f is not a time: $hb"
        ((t_read - hb_s <= 3)) || fail "$who's last_heartbeat on $f is old: $hb (read at $(date -u -d "@$t_read" +%T))"
    done
    unset -n url peer
    # one server, one node_id, whoever reports it
    assert_eq "$(jq -r --arg n "$who" '.nodes[] | select(.name == $n) | .node_id' "$T/site-P")" \
        "$(jq -r --arg n "$who" '.nodes[] | select(.name == $n) | .node_id' "$T/site-C")" "$who's node_id on P and C"
done
assert_eq "primary replica replica replica" "$(jq -r '[.nodes[].role] | sort | join(" ")' "$T/site-C")" "the roles on C"
assert_eq "primary replica replica replica" "$(jq -r '[.nodes[].role] | sort | join(" ")' "$T/site-P")" "the roles on P"
assert_eq primary "$(site_field C P role)" "P's role on C"
assert_eq replica "$(site_field C C role)" "C's role on C"
assert_eq "null P P R1" "$(for w in P R1 R2 C; do site_field C "$w" upstream; done | paste -sd' ')" "who follows whom, on C"
assert_eq "null P P R1" "$(for w in P R1 R2 C; do site_field P "$w" upstream; done | paste -sd' ')" "who follows whom, on P"
# the plain downstream list is unchanged: direct downstreams only
assert_eq "R1 R2" "$(lsc P nodes --json | jq -r '[.nodes[].name] | sort | join(" ")')" "nodes without --all on P"
assert_exit 0 "$LOCKSTEP" nodes --all --server "$URL_C"
assert_contains "$OUT" "LAST_HEARTBEAT" "nodes --all (text): header"
for who in P R1 R2 C; do
    line=$(grep "^$who " <<<"$OUT") || fail "nodes --all (text) on C has no line for $who: $OUT"
    assert_contains "$line" "active" "nodes --all (text): $who's line"
    assert_contains "$line" " $p_seq " "nodes --all (text): $who's seq"
done

# --- kill -9 of R2: down on P at once (its link closed), and on R1 and C through P
old_hb=$(site_field P R2 last_heartbeat)
kill9_server R2
wait_state 5 P R2 down
wait_state 8 R1 R2 down
wait_state 8 C R2 down
printf 'while R2 is down' | lsc P put /s/down >/dev/null
wait_caught_up C P 15
sleep 1.5
hb=$(site_field C R2 last_heartbeat)
(($(date -d "$hb" +%s) <= $(date -d "$old_hb" +%s) + 2)) ||
    fail "a dead server's last_heartbeat moves on: $hb (it was $old_hb before the kill)"
for who in P R1 C; do _state_is C "$who" active || fail "$who is $(site_field C "$who" state) on C while R2 is down"; done
assert_eq "$ALL" "$(site_of C | jq -r '[.nodes[].name] | sort | join(" ")')" "a down server stays listed"
start_node R2 --role replica --upstream "$PEER_P" --heartbeat-timeout $HB
wait_caught_up R2 P 20
p_seq=$(seq_of P)
for on in P R1 R2 C; do
    wait_until 15 _all_active_at "$on" "$p_seq" ||
        fail "after R2's restart, the site on $on is not all active at $p_seq: $(site_of "$on" | jq -c '[.nodes[] | {name,state,seq}]')"
done

# --- a replica that stops answering: stale (2 heartbeats), before --heartbeat-timeout makes it down
_signal STOP "$PID_R2"
wait_state 5 P R2 stale
wait_state 8 C R2 stale
_signal CONT "$PID_R2"
wait_state 10 P R2 active
wait_state 10 C R2 active

# --- kill -9 of the middle replica R1: down on P; C, no longer reported, stale there; C sees R1 down
kill9_server R1
wait_state 5 P R1 down
wait_state 8 P C stale
wait_state 5 C R1 down
_state_is P R2 active || fail "R2 is $(site_field P R2 state) on P while R1 is down"
start_node R1 --role replica --upstream "$PEER_P" --heartbeat-timeout $HB
wait_caught_up C P 20
p_seq=$(seq_of P)
for on in P R1 R2 C; do
    wait_until 15 _all_active_at "$on" "$p_seq" ||
        fail "after R1's restart, the site on $on is not all active at $p_seq: $(site_of "$on" | jq -c '[.nodes[] | {name,state,seq}]')"
done
assert_eq 4 "$(site_of P | jq '.nodes | length')" "one record per server after the restarts"

stop_server C
stop_server R2
stop_server R1
stop_server P
