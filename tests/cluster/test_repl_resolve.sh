#!/usr/bin/env bash
# The upstream's name is resolved without blocking the event loop (evdns): while a DNS server
# takes seconds to answer, or never answers, the replica's HTTP API answers at once; a name that
# does not resolve shows in last_error and the log ("cannot resolve"), and the replica retries
# with back-off until DNS comes back; "localhost" and numeric addresses need no DNS server.
# LOCKSTEP_RESOLV_CONF points the replicas at tests/cluster/slowdns.py.
set -euo pipefail
source "$(dirname "$0")/lib_repl.sh"

DELAY=2
python3 "$CLUSTER_DIR/slowdns.py" "$T/dns.port" "$T/dns.queries" "$DELAY" 2>"$T/dns.err" &
bg_track $!
wait_until 10 test -s "$T/dns.port" || fail "slowdns.py did not start: $(cat "$T/dns.err")"
printf 'nameserver 127.0.0.1:%s\noptions timeout:3 attempts:1\n' "$(cat "$T/dns.port")" >"$T/resolv.conf"
export LOCKSTEP_RESOLV_CONF=$T/resolv.conf

start_node P
for i in 1 2 3; do echo "v$i" | lsc P put "/d/$i" - >/dev/null; done
PEERPORT=${PEER_P##*:}

# status_max NAME N: the slowest of N `lockstep status` calls, in ms
status_max() {
    local max=0 t0 dt i
    for ((i = 0; i < $2; i++)); do
        t0=$(date +%s%N)
        lsc "$1" status --json >/dev/null || fail "status of $1 failed"
        dt=$((($(date +%s%N) - t0) / 1000000))
        ((dt > max)) && max=$dt
        sleep 0.1
    done
    echo "$max"
}

# --- a name nobody answers for: the API stays fast, last_error says why, retries go on
start_node DEAD --role replica --upstream "dead.lockstep.test:$PEERPORT"
max=$(status_max DEAD 25)
((max < 700)) || fail "status took $max ms while the upstream's name was being resolved"
wait_until 10 grep -q '^dead.lockstep.test ' "$T/dns.queries" ||
    fail "the replica did not ask the DNS server of LOCKSTEP_RESOLV_CONF: $(cat "$T/dns.queries" 2>/dev/null)"
wait_until 10 bash -c "[[ \$('$LOCKSTEP' status --server '$URL_DEAD' --json | jq -r .last_error) == *'cannot resolve'* ]]" ||
    fail "no clear last_error: $(lsc DEAD status --json | jq -c '{state,last_error}')"
st=$(lsc DEAD status --json)
assert_contains "$(jq -r .last_error <<<"$st")" "dead.lockstep.test:$PEERPORT" "last_error names the upstream"
[[ "$(jq -r .state <<<"$st")" == @(down|connecting) ]] || fail "state of DEAD: $(jq -r .state <<<"$st")"
grep -q "cannot resolve the upstream dead.lockstep.test:$PEERPORT" "$T/DEAD.log" ||
    fail "the log does not say the upstream's name does not resolve"
# back-off: it asks again, but the log says it once
wait_until 15 bash -c "(( \$(grep -c '^dead.lockstep.test 1' '$T/dns.queries') >= 2 ))" ||
    fail "no retries: $(grep -c '^dead.lockstep.test' "$T/dns.queries") queries"
assert_eq 1 "$(grep -c 'cannot resolve the upstream' "$T/DEAD.log")" "log lines about the name"
stop_server DEAD

# --- a slow answer: the API stays fast during the lookup, and the replica then follows
start_node SLOW --role replica --upstream "slow.lockstep.test:$PEERPORT"
max=$(status_max SLOW 15)
((max < 700)) || fail "status took $max ms while a slow DNS server was answering"
wait_caught_up SLOW P 20
assert_same_digest P SLOW
grep -q '^slow.lockstep.test 1' "$T/dns.queries" || fail "SLOW did not ask the DNS server"

# --- localhost and numeric addresses need no DNS server (this one answers nothing in time)
start_node LOCAL --role replica --upstream "localhost:$PEERPORT" --log-level debug
start_node NUM --role replica --upstream "127.0.0.1:$PEERPORT"
wait_caught_up LOCAL P 5
wait_caught_up NUM P 5
! grep -q '^localhost ' "$T/dns.queries" || fail "localhost was asked of the DNS server"

# every state change of the downstream is logged, in order (set_state)
changes=$(grep -o "upstream localhost:$PEERPORT: [a-z]* -> [a-z]*" "$T/LOCAL.log" | sed 's/.*: //' |
    awk '!seen[$0]++' | paste -sd, -)
case "$changes" in
"idle -> resolving,resolving -> connecting,"*"connecting -> hello,hello -> sync,sync -> "*"-> stream"*) ;;
*) fail "LOCAL's state changes: $changes" ;;
esac
echo ok
