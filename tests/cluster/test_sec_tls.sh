#!/usr/bin/env bash
# TLS on the HTTP port and the peer port, with a test PKI made at run time (lib_tls.sh).
#
# 1. --tls-cert/--tls-key: the CLI works over https:// with --cacert (flag or $LOCKSTEP_CACERT),
#    curl too; a client that checks the server against the wrong CA (or the system's) fails;
#    plain HTTP to the TLS port gets nothing; TLS below 1.2 is refused; malformed chunked bodies
#    get the JSON 400 over TLS too, and good ones are stored.
# 2. --tls-ca (mutual TLS): no client certificate, one from another CA, and an expired one all
#    fail (curl and the CLI); a valid one works (curl --cert/--key, CLI --cert/--key). The server
#    stays healthy after the refusals.
# 3. Replication over mutual TLS: primary and replica both with --tls-cert/--tls-key/--tls-ca;
#    the replica gets everything (digests equal), live. The peer port presents the server's
#    certificate.
# 4. Refused replicas, one at a time, each never getting any data: a certificate from another
#    CA (the primary logs a TLS error), an expired certificate (likewise), no TLS at all, and a
#    replica that does not trust the primary's CA (its own log says why).
set -euo pipefail
source "$(dirname "$0")/lib_tls.sh"

D=$T/pki
make_test_pki "$D"
unset LOCKSTEP_TOKEN LOCKSTEP_CACERT LOCKSTEP_CERT LOCKSTEP_KEY

# ---------------------------------------------------------------- 1. server TLS only
LOCKSTEP_CACERT=$D/ca.pem start_node_sec S status_ok --tls-cert "$D/server.pem" --tls-key "$D/server.key"
[[ "$URL_S" == https://127.0.0.1:* ]] || fail "URL of S: $URL_S"
echo "over tls" >"$T/a.txt"
assert_exit 0 lsc S put --cacert "$D/ca.pem" /t/a "$T/a.txt"
assert_exit 0 lsc S get /t/a --cacert "$D/ca.pem"
assert_eq "over tls" "$OUT" "get /t/a over https"
assert_exit 0 env LOCKSTEP_CACERT="$D/ca.pem" "$LOCKSTEP" status --server "$URL_S" --json
assert_eq primary "$(jq -r .role <<<"$OUT")" "status over https with \$LOCKSTEP_CACERT"
assert_eq 200 "$(http_code --cacert "$D/ca.pem" "$URL_S/v1/items/t/a")" "curl --cacert ca.pem"
# chunked bodies over TLS (tests/cluster/chunked.py): a malformed one gets the JSON 400 and the
# good ones are stored, split across TLS records, keep-alive and pipelined
s_tls=$(LOCKSTEP_CACERT=$D/ca.pem seq_of S)
python3 "$CLUSTER_DIR/chunked.py" "$PORT_S" --tls "$D/ca.pem" || fail "chunked request bodies over TLS"
assert_eq $((s_tls + 7)) "$(LOCKSTEP_CACERT=$D/ca.pem seq_of S)" "seq after the chunked requests over TLS (7 good ones)"
assert_exit 3 lsc S get /chunked/bad/x --cacert "$D/ca.pem"
# the wrong CA, and the system's CAs: the client refuses the server
assert_exit 1 lsc S status --cacert "$D/other-ca.pem"
assert_contains "$ERR" "cannot reach the server" "CLI with the wrong CA"
assert_exit 1 lsc S status
assert_eq 000 "$(http_code --cacert "$D/other-ca.pem" "$URL_S/v1/status")" "curl --cacert other-ca.pem"
assert_eq 000 "$(http_code "$URL_S/v1/status")" "curl with the system CAs"
# the certificate names 127.0.0.1, not localhost: host checking is on
assert_eq 000 "$(http_code --cacert "$D/ca.pem" "https://localhost:$PORT_S/v1/status")" "curl to https://localhost (name mismatch)"
# plain HTTP to the TLS port: no HTTP answer
code=$(http_code --max-time 5 "http://127.0.0.1:$PORT_S/v1/status")
[[ "$code" != 200 ]] || fail "plain HTTP to the TLS port answered 200"
# TLS 1.1 and below: refused
assert_eq 000 "$(http_code --cacert "$D/ca.pem" --tlsv1.0 --tls-max 1.1 "$URL_S/v1/status")" "TLS 1.1"
assert_eq 200 "$(http_code --cacert "$D/ca.pem" --tlsv1.2 --tls-max 1.2 "$URL_S/v1/status")" "TLS 1.2"
stop_server S

# ---------------------------------------------------------------- 2. mutual TLS on HTTP
export LOCKSTEP_CACERT=$D/ca.pem
MT=(--tls-cert "$D/server.pem" --tls-key "$D/server.key" --tls-ca "$D/ca.pem")
LOCKSTEP_CERT=$D/client.pem LOCKSTEP_KEY=$D/client.key start_node_sec P status_ok "${MT[@]}"
C=(--cacert "$D/ca.pem")
assert_eq 200 "$(http_code "${C[@]}" --cert "$D/client.pem" --key "$D/client.key" "$URL_P/v1/status")" "curl with a valid client certificate"
for i in 1 2; do # twice: a refusal leaves nothing behind
    assert_eq 000 "$(http_code "${C[@]}" "$URL_P/v1/status")" "curl without a client certificate"
    assert_eq 000 "$(http_code "${C[@]}" --cert "$D/other.pem" --key "$D/other.key" "$URL_P/v1/status")" "curl with a client certificate from another CA"
    assert_eq 000 "$(http_code "${C[@]}" --cert "$D/expired.pem" --key "$D/expired.key" "$URL_P/v1/status")" "curl with an expired client certificate"
done
# the CLI
assert_exit 1 lsc P status
assert_exit 1 lsc P status --cert "$D/other.pem" --key "$D/other.key"
assert_exit 1 lsc P status --cert "$D/expired.pem" --key "$D/expired.key"
echo mutual >"$T/m.txt"
assert_exit 0 lsc P put /t/m "$T/m.txt" --cert "$D/client.pem" --key "$D/client.key"
assert_exit 0 lsc P get --cert="$D/client.pem" /t/m --key="$D/client.key"
assert_eq mutual "$OUT" "get /t/m with a client certificate"
assert_exit 0 env LOCKSTEP_CERT="$D/client.pem" LOCKSTEP_KEY="$D/client.key" "$LOCKSTEP" stat /t/m --server "$URL_P"
assert_eq 200 "$(http_code "${C[@]}" --cert "$D/client.pem" --key "$D/client.key" "$URL_P/v1/items/t/m")" "the server after the refusals"

# ---------------------------------------------------------------- 3. replication over mutual TLS
export LOCKSTEP_CERT=$D/client.pem LOCKSTEP_KEY=$D/client.key # lsc from here on
head -c 300000 /dev/urandom >"$T/big.bin"                      # a blob, not only small rows
assert_exit 0 lsc P put /t/big "$T/big.bin"
for i in $(seq 1 20); do
    printf '{"op":"put","path":"/r/%d","body":"v%d","status":"published"}\n' "$i" "$i"
done >"$T/r.ndjson"
assert_exit 0 lsc P import "$T/r.ndjson"
start_node_sec R status_ok --role replica --upstream "$PEER_P" \
    --tls-cert "$D/node2.pem" --tls-key "$D/node2.key" --tls-ca "$D/ca.pem"
wait_caught_up R P 20
assert_same_digest P R
lsc R get /t/big >"$T/big.out"
assert_same_file "$T/big.bin" "$T/big.out" "/t/big on the replica"
# live: a new write arrives too
echo later | lsc P put /t/later - >/dev/null
wait_caught_up R P 15
assert_eq later "$(lsc R get /t/later)" "/t/later on the replica"
assert_same_digest P R
grep -q "downstream R (replica) connected from 127.0.0.1:" "$T/P.log" || fail "P's log does not show R"
# the peer port speaks TLS with the server's certificate, and wants a client certificate
s_out=$(openssl s_client -connect "$PEER_P" -CAfile "$D/ca.pem" -verify_return_error \
    -verify_ip 127.0.0.1 -cert "$D/node2.pem" -key "$D/node2.key" -brief </dev/null 2>&1) ||
    fail "openssl s_client to the peer port: $s_out"
assert_contains "$s_out" "Verification: OK" "s_client to the peer port"
PSEQ=$(seq_of P)

# ---------------------------------------------------------------- 4. refused replicas
# tls_refused NAME READY [serve flags]: the replica starts, the primary logs a TLS error for it,
# and it never gets any data (checked with STATUS_CURL, the curl arguments that reach it)
tls_errors() { grep -c ': TLS: ' "$T/P.log" || true; }
tls_refused() {
    local name=$1 ready=$2 before st
    shift 2
    before=$(tls_errors)
    TLS_FROM=$before
    start_node_sec "$name" "$ready" --role replica --upstream "$PEER_P" "$@"
    wait_until 15 _grep_count_gt ': TLS: ' "$T/P.log" "$before" ||
        fail "P logged no TLS error for $name"
    sleep 1 # a few retries
    st=$(curl -s --max-time 10 "${STATUS_CURL[@]}" "${_URL[$name]}/v1/status")
    assert_ne live "$(jq -r .state <<<"$st")" "state of $name"
    assert_eq 0 "$(jq -r .seq <<<"$st")" "seq of $name"
    assert_eq 0 "$(curl -s --max-time 10 "${STATUS_CURL[@]}" "${_URL[$name]}/v1/digest" | jq -r .items)" "items on $name"
    ! grep -q "downstream $name (" "$T/P.log" || fail "P accepted $name"
    log "$name refused: $(grep ': TLS: ' "$T/P.log" | tail -1 | sed 's/.*: TLS: //')"
    stop_server "$name"
}
_grep_count_gt() { (($(grep -c "$1" "$2" || true) > $3)); }
# the TLS errors P logged since the last tls_refused began (the last one may be a handshake its
# stop cut short: "unexpected eof")
new_tls_errors() { grep ': TLS: ' "$T/P.log" | tail -n +$((TLS_FROM + 1)); }

# a certificate from another CA (the replica trusts the primary's CA): its own HTTP port has that
# certificate too, so it is reached with -k and a client certificate of the CA it trusts
STATUS_CURL=(-k --cert "$D/client.pem" --key "$D/client.key")
tls_refused R_otherca "curl -sfk -o /dev/null --cert $D/client.pem --key $D/client.key \$URL/v1/status" \
    --tls-cert "$D/other.pem" --tls-key "$D/other.key" --tls-ca "$D/ca.pem"
new_tls_errors | grep -q 'certificate verify failed' ||
    fail "P's TLS errors for R_otherca: $(new_tls_errors | tail -3)"
# an expired certificate from the right CA
tls_refused R_expired "curl -sfk -o /dev/null --cert $D/client.pem --key $D/client.key \$URL/v1/status" \
    --tls-cert "$D/expired.pem" --tls-key "$D/expired.key" --tls-ca "$D/ca.pem"
new_tls_errors | grep -q 'certificate verify failed' ||
    fail "P's TLS errors for R_expired: $(new_tls_errors | tail -3)"
# no TLS at all: the primary's TLS port reads garbage
STATUS_CURL=()
tls_refused R_plain status_ok
# a replica that does not trust the primary's certificate (its CA is the other one): it refuses
# the primary, says so in its log, and gets nothing
STATUS_CURL=(-k --cert "$D/other.pem" --key "$D/other.key")
tls_refused R_distrust "curl -sfk -o /dev/null --cert $D/other.pem --key $D/other.key \$URL/v1/status" \
    --tls-cert "$D/other.pem" --tls-key "$D/other.key" --tls-ca "$D/other-ca.pem"
grep -q 'certificate verify failed' "$T/R_distrust.log" ||
    fail "R_distrust's log does not say the primary's certificate failed: $(grep -v '^===' "$T/R_distrust.log" | tail -3)"

# the primary and the good replica are unharmed
assert_eq "$PSEQ" "$(seq_of P)" "P's seq"
nodes=$(lsc P nodes --json | jq -r '[.nodes[].name] | join(",")')
assert_eq R "$nodes" "nodes on P"
echo last | lsc P put /t/last - >/dev/null
wait_caught_up R P 15
assert_same_digest P R
stop_server R
stop_server P
