#!/usr/bin/env bash
# A replica's last_error keeps the reason its upstream gave (the ERROR frame's message and code:
# "unknown token", a role that may not replicate), not the close that follows it ("connection
# closed by the peer"), for as long as the upstream keeps refusing it.
set -euo pipefail
source "$(dirname "$0")/lib_repl.sh"

mkdir -p "$T/P"
assert_exit 0 "$LOCKSTEP" token create --data "$T/P" --role admin --name adm
export LOCKSTEP_TOKEN=$OUT # the readiness probe and lsc; the replicas hold no tokens
assert_exit 0 "$LOCKSTEP" token create --data "$T/P" --role read --name reader
READER=$OUT
unset LOCKSTEP_UPSTREAM_TOKEN
start_node P
echo one | lsc P put /a - >/dev/null

_last_error_has() { [[ "$(lsc "$1" status --json | jq -r .last_error)" == *"$2"* ]]; }

# check_reason NAME TEXT CODE: last_error holds TEXT and CODE, and keeps them across retries
check_reason() {
    local i e
    wait_until 15 _last_error_has "$1" "$2" ||
        fail "$1's last_error never said '$2': $(lsc "$1" status --json | jq -c '{state,last_error}')"
    for ((i = 0; i < 12; i++)); do # across several refused handshakes (the back-off starts at 0.2 s)
        e=$(lsc "$1" status --json | jq -r .last_error)
        assert_contains "$e" "$2" "$1's last_error (sample $i)"
        assert_contains "$e" "$3" "$1's last_error names the upstream's code"
        sleep 0.2
    done
    assert_eq 0 "$(seq_of "$1")" "seq of the refused $1"
}

start_node WRONG --role replica --upstream "$PEER_P" --upstream-token "lst_$(openssl rand -hex 32)"
check_reason WRONG "unknown token" unauthorized
start_node READ --role replica --upstream "$PEER_P" --upstream-token "$READER"
check_reason READ "the token's role may not replicate" unauthorized
start_node NONE --role replica --upstream "$PEER_P"
check_reason NONE "this server needs a token with the role replicate" unauthorized
echo ok
