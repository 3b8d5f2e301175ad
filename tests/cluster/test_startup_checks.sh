#!/usr/bin/env bash
# Misconfigurations are refused at start, with one clear line on stderr and exit 2, before the
# data directory is touched: an address without a port (or with a bad one), an empty or too
# long --name (HELLO takes 1 to 63 bytes), a replica without --upstream. A server with
# --tls-cert logs its https:// address.
set -euo pipefail
source "$(dirname "$0")/lib_tls.sh"

# refused EXPECTED-STDERR SERVE-FLAGS...: exit 2, that one line, no data directory, no server
refused() {
    local want=$1 p
    shift
    p=$(free_port)
    assert_exit 2 timeout 20 "$LOCKSTEP" serve --data "$T/never" --http "127.0.0.1:$p" \
        --listen "127.0.0.1:$(free_port)" "$@"
    assert_eq "$want" "$ERR" "stderr of serve $*"
    [[ ! -e "$T/never" ]] || fail "serve $* created the data directory"
    assert_exit 1 "$LOCKSTEP" status --server "http://127.0.0.1:$p"
}

U="expected HOST:PORT (or [IPV6]:PORT), with a port from 1 to 65535"
refused "lockstep serve: --upstream 127.0.0.1: $U" --role replica --upstream 127.0.0.1
refused "lockstep serve: --upstream 127.0.0.1:: $U" --role replica --upstream 127.0.0.1:
refused "lockstep serve: --upstream :7071: $U" --role replica --upstream :7071
refused "lockstep serve: --upstream db:0: $U" --role replica --upstream db:0
refused "lockstep serve: --upstream db:70000: $U" --role staging --upstream db:70000
refused "lockstep serve: --upstream ::1:7071: $U" --role replica --upstream ::1:7071
refused "lockstep serve: --upstream [::1:7071: $U" --role replica --upstream "[::1:7071"
refused "lockstep serve: a replica needs --upstream HOST:PORT (the server it follows)" --role replica
refused "lockstep serve: a replica needs --upstream HOST:PORT (the server it follows)" --role replica --upstream ""
refused "lockstep serve: --http 127.0.0.1: expected HOST:PORT (or [IPV6]:PORT)" --http 127.0.0.1
refused "lockstep serve: --listen localhost:x: expected HOST:PORT (or [IPV6]:PORT)" --listen localhost:x
refused "lockstep serve: --name must be 1 to 63 bytes (got 0)" --name ""
long=$(printf 'n%.0s' {1..64})
refused "lockstep serve: --name must be 1 to 63 bytes (got 64)" --name "$long"

# 63 bytes is fine, and a replica with it is accepted by its upstream
start_node P
start_node R --role replica --upstream "$PEER_P" --name "${long:1}"
echo x | lsc P put /x - >/dev/null
wait_caught_up R P 15
assert_eq "${long:1}" "$(status_field R name)" "R's 63-byte name"

# --tls-cert: the log gives the https:// address
D=$T/pki
make_test_pki "$D"
LOCKSTEP_CACERT=$D/ca.pem start_node_sec S status_ok --tls-cert "$D/server.pem" --tls-key "$D/server.key"
grep -q "serving $T/S on https://127.0.0.1:" "$T/S.log" ||
    fail "the log does not give the https address: $(grep serving "$T/S.log")"
grep -q "serving $T/P on http://127.0.0.1:" "$T/P.log" || fail "P's log: $(grep serving "$T/P.log")"
echo ok
