#!/usr/bin/env bash
# Secure defaults and the slowdown of failed authentication.
#
# 1. `serve --http 0.0.0.0:PORT` without TLS and tokens exits non-zero at once, naming --tls-cert,
#    --tls-key, a token and --insecure; with TLS only it still refuses (naming the token), with
#    a token only too (naming --tls-cert); with --insecure it starts; with TLS and a token it
#    starts (and answers over https with the token). The same for --listen 0.0.0.0:PORT.
#    (The servers bind 0.0.0.0, but the test only talks to 127.0.0.1.)
# 2. Failed authentication is logged with the address and slowed down: 6 consecutive wrong-token
#    requests from one address take longer and longer (0, 100, 200, 400, 800, 1600 ms in
#    docs/api.md; the 5th and later at least 400 ms), a correct token from that address right
#    after answers fast, and so does a wrong one from another address (its first failure). The
#    server is not blocked meanwhile. A client that gives up before its late 401, and a server
#    stopped while 401s are pending, leave no trace (no sanitizer report, exit 0).
set -euo pipefail
CLI_LEAK_CHECK=1 # every CLI command it runs is leak-checked too (lib.sh)
source "$(dirname "$0")/lib_tls.sh"
unset LOCKSTEP_TOKEN LOCKSTEP_CACERT LOCKSTEP_CERT LOCKSTEP_KEY LOCKSTEP_UPSTREAM_TOKEN

D=$T/pki
make_test_pki "$D"
TLS=(--tls-cert "$D/server.pem" --tls-key "$D/server.key")

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# refuses_to_start WHAT DATA SERVE-ARGS...: exits non-zero within 10 s; the message in $MSG
refuses_to_start() {
    local what=$1 data=$2 t0 rc=0 ms
    shift 2
    t0=$(now_ms)
    timeout 30 "$LOCKSTEP" serve --data "$data" "$@" >"$T/refused.out" 2>&1 || rc=$?
    ms=$(($(now_ms) - t0))
    MSG=$(cat "$T/refused.out")
    [[ "$rc" != 0 && "$rc" != 124 ]] || fail "$what: serve exited $rc (expected a refusal): $MSG"
    ((ms < 10000)) || fail "$what: took $ms ms to refuse"
    cat "$T/refused.out" >>"$T/refusals.log"
}

# addr_args WHICH HTTPPORT PEERPORT: ADDR (the flags) and EXPOSED (the 0.0.0.0 address)
addr_args() {
    if [[ "$1" == http ]]; then
        ADDR=(--http "0.0.0.0:$2" --listen "127.0.0.1:$3")
        EXPOSED="0.0.0.0:$2"
    else
        ADDR=(--http "127.0.0.1:$2" --listen "0.0.0.0:$3")
        EXPOSED="0.0.0.0:$3"
    fi
}

# bound_any PORT: something listens on 0.0.0.0:PORT
bound_any() { grep -qE "^ *[0-9]+: 00000000:$(printf '%04X' "$1") 00000000:0000 0A " /proc/net/tcp; }

# start_exposed NAME WHICH READY DATA [serve flags...]: on new ports (again when they were taken
# meanwhile); HTTP_PORT is the HTTP port
start_exposed() {
    local name=$1 which=$2 ready=$3 data=$4 tries
    shift 4
    for ((tries = 0; tries < 4; tries++)); do
        HTTP_PORT=$(free_port)
        addr_args "$which" "$HTTP_PORT" "$(free_port)"
        if start_server_ready "$name" "$HTTP_PORT" "$ready" --data "$data" "${ADDR[@]}" \
            --name "$name" "$@"; then
            bound_any "${EXPOSED##*:}" || fail "$name does not listen on $EXPOSED"
            return 0
        fi
        grep -qE 'Address already in use|cannot listen' "$T/$name.log" || break
    done
    fail "$name did not start: $(grep -v '^===' "$T/$name.log" | tail -3)"
}

for which in http listen; do
    addr_args "$which" "$(free_port)" "$(free_port)"
    data=$T/d-$which

    # neither TLS nor tokens
    refuses_to_start "--$which 0.0.0.0, nothing" "$data" "${ADDR[@]}" --name "N_$which"
    for word in --tls-cert --tls-key token --insecure "$EXPOSED"; do
        assert_contains "$MSG" "$word" "refusal (--$which 0.0.0.0 without TLS and tokens)"
    done
    # TLS, no token
    refuses_to_start "--$which 0.0.0.0, TLS only" "$data" "${ADDR[@]}" "${TLS[@]}" --name "N_$which"
    assert_contains "$MSG" token "refusal (--$which 0.0.0.0 with TLS, no token)"
    assert_contains "$MSG" --insecure "refusal (--$which 0.0.0.0 with TLS, no token)"
    # a token, no TLS
    assert_exit 0 "$LOCKSTEP" token create --data "$data" --role admin --name first
    ADMIN=$OUT
    refuses_to_start "--$which 0.0.0.0, token only" "$data" "${ADDR[@]}" --name "N_$which"
    assert_contains "$MSG" --tls-cert "refusal (--$which 0.0.0.0 with a token, no TLS)"
    assert_contains "$MSG" --tls-key "refusal (--$which 0.0.0.0 with a token, no TLS)"
    assert_contains "$MSG" --insecure "refusal (--$which 0.0.0.0 with a token, no TLS)"

    # insecure = no in a config file is no --insecure; a value that is not a yes or a no fails
    printf 'insecure = no\n' >"$T/no.ini"
    refuses_to_start "--$which 0.0.0.0, insecure = no" "$data" "${ADDR[@]}" --name "N_$which" --config "$T/no.ini"
    assert_contains "$MSG" --insecure "refusal (--$which 0.0.0.0 with insecure = no)"
    printf 'insecure = maybe\n' >"$T/maybe.ini"
    assert_exit 2 "$LOCKSTEP" serve --data "$data" "${ADDR[@]}" --config "$T/maybe.ini"
    assert_contains "$ERR" "bad value for 'insecure': maybe" "insecure = maybe"

    # --insecure: starts, with neither TLS nor tokens (a data dir of its own)
    name=I_$which
    start_exposed "$name" "$which" status_ok "$T/open-$which" --insecure
    assert_eq 200 "$(http_code "http://127.0.0.1:$HTTP_PORT/v1/status")" "$name status"
    grep -q "serving" "$T/$name.log" || fail "$name does not log that it serves"
    stop_server "$name"

    # TLS and a token: starts
    name=S_$which
    LOCKSTEP_TOKEN=$ADMIN LOCKSTEP_CACERT=$D/ca.pem start_exposed "$name" "$which" status_ok \
        "$data" "${TLS[@]}"
    assert_eq 200 "$(http_code --cacert "$D/ca.pem" -H "Authorization: Bearer $ADMIN" "https://127.0.0.1:$HTTP_PORT/v1/status")" "$name status"
    assert_eq 401 "$(http_code --cacert "$D/ca.pem" --interface 127.0.4.1 "https://127.0.0.1:$HTTP_PORT/v1/status")" "$name status without a token"
    stop_server "$name"
done
# loopback needs none of it
launch_node L
await_node L status_ok
stop_server L
# the refusals never named a token
! grep -qE 'lst_[0-9a-f]{8}' "$T/refusals.log" || fail "a refusal message holds a token"

# ---------------------------------------------------------------- 2. failed authentication
mkdir -p "$T/F"
assert_exit 0 "$LOCKSTEP" token create --data "$T/F" --role read --name good
GOOD=$OUT
export LOCKSTEP_TOKEN=$GOOD
launch_node F
await_node F status_ok
WRONG="lst_$(openssl rand -hex 32)"
SRC=127.0.5.1

# timed CURL-ARGS...: prints "CODE SECONDS"
timed() { curl -s -o /dev/null -w '%{http_code} %{time_total}\n' --max-time 20 "$@" || true; }

times=()
for i in 1 2 3 4 5 6; do
    read -r code secs < <(timed --interface "$SRC" -H "Authorization: Bearer $WRONG" "$URL_F/v1/status")
    assert_eq 401 "$code" "wrong token, attempt $i"
    times+=("$secs")
done
read -r code good_secs < <(timed --interface "$SRC" -H "Authorization: Bearer $GOOD" "$URL_F/v1/status")
assert_eq 200 "$code" "the right token right after"
read -r code other_secs < <(timed --interface 127.0.5.2 -H "Authorization: Bearer $WRONG" "$URL_F/v1/status")
assert_eq 401 "$code" "a wrong token from another address"
log "6 wrong tokens: ${times[*]} s; then the right one: $good_secs s; a wrong one from elsewhere: $other_secs s"

python3 - "$good_secs" "$other_secs" "${times[@]}" <<'PY' || fail "failure slowdown: times ${times[*]}, right token $good_secs, other address $other_secs"
import sys
good, other, *t = map(float, sys.argv[1:])
expected = [0.0, 0.1, 0.2, 0.4, 0.8, 1.6]  # docs/api.md
bad = []
for i in range(1, 6):
    if t[i] <= t[i - 1]:
        bad.append("attempt %d (%.3f s) not slower than attempt %d (%.3f s)" % (i + 1, t[i], i, t[i - 1]))
for i in range(6):
    if t[i] < expected[i] * 0.9:
        bad.append("attempt %d took %.3f s, expected at least %.2f s" % (i + 1, t[i], expected[i]))
for i in (4, 5):
    if t[i] < 0.4:
        bad.append("attempt %d took %.3f s (< 0.4 s)" % (i + 1, t[i]))
if t[0] > 0.3:
    bad.append("the first failure took %.3f s: a mistake should stay cheap" % t[0])
if good > 0.3:
    bad.append("the right token after the failures took %.3f s" % good)
if other > 0.3:
    bad.append("a first failure from another address took %.3f s" % other)
print("\n".join(bad))
sys.exit(1 if bad else 0)
PY
n=$(grep -c "authentication failed from $SRC:[0-9]*: unknown token" "$T/F.log" || true)
assert_eq 6 "$n" "'authentication failed from $SRC' lines"
grep -q "authentication failed from 127.0.5.2:[0-9]*: unknown token" "$T/F.log" ||
    fail "no log line for 127.0.5.2"
curl -s --interface 127.0.5.3 "$URL_F/v1/status" >/dev/null
grep -q "authentication failed from 127.0.5.3:[0-9]*: no token" "$T/F.log" || fail "no log line for a missing token"

# the 7th failure waits 3.2 s, but the server does not: other requests answer meanwhile
t0=$(now_ms)
timed --interface "$SRC" -H "Authorization: Bearer $WRONG" "$URL_F/v1/status" >"$T/seventh" &
seventh=$!
bg_track "$seventh"
sleep 0.2
for i in 1 2 3; do
    read -r code secs < <(timed -H "Authorization: Bearer $GOOD" "$URL_F/v1/status")
    assert_eq 200 "$code" "a good request while a late 401 is pending"
    python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < 0.3 else 1)" "$secs" ||
        fail "a good request took $secs s while a late 401 was pending"
done
bg_wait "$seventh" 15 || true
read -r code secs <"$T/seventh"
assert_eq 401 "$code" "the 7th wrong token"
python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) >= 2.8 else 1)" "$secs" ||
    fail "the 7th failure took only $secs s (expected about 3.2)"

# a client that gives up before its late 401: the server must not touch the request afterwards
for i in 1 2 3; do
    curl -s -o /dev/null --max-time 0.3 --interface "$SRC" -H "Authorization: Bearer $WRONG" "$URL_F/v1/status" || true
done
sleep 5.5 # the late answers (up to 5 s) are due now
assert_eq 200 "$(http_code -H "Authorization: Bearer $GOOD" "$URL_F/v1/status")" "F after clients gave up on their late 401s"
! grep -qE 'ERROR: AddressSanitizer|runtime error:' "$T/F.log" || fail "sanitizer report after abandoned late 401s"

# stopping while late 401s are pending: a clean, prompt exit (exit 0: no leak report)
for i in 1 2; do
    curl -s -o /dev/null --max-time 10 --interface "$SRC" -H "Authorization: Bearer $WRONG" "$URL_F/v1/status" &
    bg_track $!
done
sleep 0.3
t0=$(now_ms)
stop_server F
ms=$(($(now_ms) - t0))
((ms < 4000)) || fail "F took $ms ms to stop with late 401s pending"
