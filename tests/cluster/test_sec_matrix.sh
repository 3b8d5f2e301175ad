#!/usr/bin/env bash
# Tokens and roles, end to end with real requests.
#
# 1. `lockstep token create --data DIR --role R` prints exactly one line, the token, for every
#    role; the server (started afterwards) honours them.
# 2. Every HTTP endpoint x every principal (the six roles, no token, a wrong token): no/wrong token
#    401 (with WWW-Authenticate: Bearer, and the log names the client's address), a role outside
#    the route 403, an allowed role neither 401 nor 403. The expected table is ROUTES below
#    (docs/api.md section 7). Denied requests leave no trace: the items, uploads and tokens they
#    aimed at are untouched. Malformed Authorization headers are 401 too.
# 3. `token ls` shows names and roles, never a token; a revoked token is refused (401) within
#    about a second; a token made offline while the server runs works within about a second.
# 4. The peer handshake x role: replicas sending --upstream-token of each role (and none, and a
#    wrong one): only replicate and admin replicate (live, same digest); the others are refused,
#    get no data, and the primary's log says why.
# 5. No log (primary's or replicas') ever contains a token.
#
# Every 401 request comes from its own source address (127.0.1.N, curl --interface) so that the
# failure slowdown (test_sec_defaults.sh) does not make this test slow.
set -euo pipefail
source "$(dirname "$0")/lib_tls.sh"

ROLES=(admin write read replicate notify report)
PRINCIPALS=("${ROLES[@]}" none wrong)
declare -A TOK=()

# ---------------------------------------------------------------- 1. tokens made offline
mkdir -p "$T/P"
for role in "${ROLES[@]}"; do
    assert_exit 0 "$LOCKSTEP" token create --data "$T/P" --role "$role" --name "tok-$role"
    assert_eq 1 "$(wc -l <"$T/out")" "lines printed by token create --role $role"
    [[ "$OUT" =~ ^lst_[0-9a-f]{64}$ ]] || fail "token create --role $role printed '$OUT'"
    assert_eq "" "$ERR" "stderr of token create --role $role"
    TOK[$role]=$OUT
done
# victims: one token per principal, which the principal then tries to revoke
for who in "${PRINCIPALS[@]}"; do
    assert_exit 0 "$LOCKSTEP" token create --data "$T/P" --role read --name "victim-$who"
    TOK[victim-$who]=$OUT
done
# without --name: still one line, and the default name
assert_exit 0 "$LOCKSTEP" token create --data "$T/P" --role report
assert_eq 1 "$(wc -l <"$T/out")" "lines printed by token create without --name"
[[ "$OUT" =~ ^lst_[0-9a-f]{64}$ ]] || fail "token create printed '$OUT'"
TOK[unnamed]=$OUT
# a bad role is a usage error and makes nothing
assert_exit 2 "$LOCKSTEP" token create --data "$T/P" --role root
assert_eq "" "$OUT" "stdout of token create --role root"
WRONG="lst_$(openssl rand -hex 32)"
TOK[wrong]=$WRONG
sorted=$(printf '%s\n' "${TOK[@]}" | sort -u | wc -l)
assert_eq "${#TOK[@]}" "$sorted" "distinct tokens"

export LOCKSTEP_TOKEN=${TOK[admin]} # lib.sh's readiness probe and lsc use it
unset LOCKSTEP_UPSTREAM_TOKEN
start_node P
U=$URL_P

# every 401-bound request from its own address
NEXT_ADDR=0
SRC_ADDRS=()
next_src() {
    NEXT_ADDR=$((NEXT_ADDR + 1))
    SRC="127.0.$((1 + NEXT_ADDR / 250)).$((1 + NEXT_ADDR % 250))"
    SRC_ADDRS+=("$SRC")
}

# req WHO METHOD URL [curl args...]: sets CODE to the HTTP status (000: no answer); not in a
# subshell (next_src counts)
CODE=""
req() {
    local who=$1 method=$2 url=$3 code
    shift 3
    local a=(-s -o "$T/body" -D "$T/headers" -w '%{http_code}' --max-time 20)
    case "$who" in
    none) next_src; a+=(--interface "$SRC") ;;
    wrong) next_src; a+=(--interface "$SRC" -H "Authorization: Bearer $WRONG") ;;
    *) a+=(-H "Authorization: Bearer ${TOK[$who]}") ;;
    esac
    if [[ "$method" == HEAD ]]; then a+=(-I); else a+=(-X "$method"); fi
    code=$(curl "${a[@]}" "$@" "$U$url") || true
    CODE=${code:-000}
}

# ---------------------------------------------------------------- 2. the matrix
# what the requests work on: per principal W, items to delete, publish, unpublish, purge, move,
# and an upload session
{
    for who in "${PRINCIPALS[@]}"; do
        for k in del pub unpub purge move; do
            st=draft
            [[ "$k" != unpub ]] || st=published
            printf '{"op":"put","path":"/m/%s-%s","body":"%s","status":"%s"}\n' "$k" "$who" "$k" "$st"
        done
    done
    printf '{"op":"put","path":"/m/a","body":"hello","status":"published"}\n'
} >"$T/seed.ndjson"
assert_exit 0 lsc P import "$T/seed.ndjson"
declare -A UPL=()
for who in "${PRINCIPALS[@]}"; do
    UPL[$who]=$(curl -sf -X POST -H "Authorization: Bearer ${TOK[admin]}" "$U/v1/uploads" | jq -r .id)
    [[ "${UPL[$who]}" =~ ^[A-Za-z0-9]+$ ]] || fail "upload session for $who: '${UPL[$who]}'"
    printf '{"op":"put","path":"/m/batch-%s","body":"b"}\n' "$who" >"$T/batch-$who.ndjson"
done
SEQ_BEFORE=$(seq_of P)

# The expected table: METHOD URL BODY ALLOWED-ROLES... ({W}: the principal, {U}: its upload
# session; BODY -, data (a few bytes) or batch (one put)). Every role not listed gets 403; no
# token and a wrong token get 401.
ROUTES=(
    "GET    /v1/items/m/a                        -     admin write read"
    "HEAD   /v1/items/m/a                        -     admin write read"
    "GET    /v1/items/m/a?version=1              -     admin write read"
    "PUT    /v1/items/m/put-{W}                  data  admin write"
    "DELETE /v1/items/m/del-{W}                  -     admin write"
    "GET    /v1/stat/m/a                         -     admin write read"
    "HEAD   /v1/stat/m/a                         -     admin write read"
    "GET    /v1/history/m/a                      -     admin write read"
    "POST   /v1/publish/m/pub-{W}                -     admin write"
    "POST   /v1/unpublish/m/unpub-{W}            -     admin write"
    "POST   /v1/purge/m/purge-{W}                -     admin write"
    "POST   /v1/move/m/move-{W}?to=/m/moved-{W}  -     admin write"
    "GET    /v1/list                             -     admin write read"
    "GET    /v1/list?prefix=/m                   -     admin write read"
    "GET    /v1/changes                          -     admin write read"
    "GET    /v1/changes?since=0&limit=5          -     admin write read"
    "POST   /v1/batch                            batch admin write"
    "POST   /v1/uploads                          -     admin write"
    "GET    /v1/uploads/{U}                      -     admin write"
    "PUT    /v1/uploads/{U}?offset=0             data  admin write"
    "POST   /v1/uploads/{U}/commit?path=/m/upl-{W} - admin write"
    "DELETE /v1/uploads/{U}                      -     admin write"
    "GET    /v1/status                           -     admin write read report"
    "HEAD   /v1/status                           -     admin write read report"
    "GET    /v1/digest                           -     admin write read"
    "GET    /v1/nodes                            -     admin write read report"
    "GET    /metrics                             -     admin write read report"
    "POST   /v1/promote                          -     admin"
    "POST   /v1/resync?from_seq=1                -     admin"
    "GET    /v1/tokens                           -     admin"
    "POST   /v1/tokens?role=admin&name=made-by-{W} - admin"
    "DELETE /v1/tokens/victim-{W}                -     admin"
    "GET    /v1/mirrors                          -     admin write read report"
    "GET    /v1/mirrors/none-{W}                 -     admin write read report"
    "GET    /v1/mirrors/none-{W}/history         -     admin write read report"
    "POST   /v1/mirrors                          data  admin"
    "POST   /v1/mirrors/none-{W}/run             -     admin"
    "POST   /v1/mirrors/none-{W}/pause           -     admin"
    "POST   /v1/mirrors/none-{W}/resume          -     admin"
    "DELETE /v1/mirrors/none-{W}                 -     admin"
)

n=0
for who in "${PRINCIPALS[@]}"; do
    for row in "${ROUTES[@]}"; do
        read -r method url body allowed <<<"$row"
        url=${url//\{W\}/$who}
        url=${url//\{U\}/${UPL[$who]}}
        args=()
        case "$body" in
        data) args=(--data-binary "abc" -H 'Content-Type: application/octet-stream') ;;
        batch) args=(--data-binary "@$T/batch-$who.ndjson") ;;
        esac
        req "$who" "$method" "$url" "${args[@]}"
        code=$CODE
        n=$((n + 1))
        case "$who" in
        none | wrong)
            [[ "$code" == 401 ]] || fail "$method $url with $who token: expected 401, got $code: $(head -c 300 "$T/body")"
            grep -qi '^WWW-Authenticate: Bearer' "$T/headers" ||
                fail "$method $url with $who token: 401 without WWW-Authenticate: Bearer"
            ;;
        *)
            if [[ " $allowed " == *" $who "* ]]; then
                [[ "$code" != 401 && "$code" != 403 && "$code" != 000 ]] ||
                    fail "$method $url with a $who token: expected to pass the access check, got $code: $(head -c 300 "$T/body")"
            else
                [[ "$code" == 403 ]] || fail "$method $url with a $who token: expected 403, got $code: $(head -c 300 "$T/body")"
                if [[ "$method" != HEAD ]]; then
                    assert_eq forbidden "$(jq -r .error.code "$T/body" 2>/dev/null)" "error code of $method $url ($who)"
                fi
            fi
            ;;
        esac
    done
done
log "matrix: $n requests as expected"

# A follow stream starts only for roles that may read the change log; the others get 403 at once.
for who in "${PRINCIPALS[@]}"; do
    req "$who" GET "/v1/changes?follow=1" --max-time 1
    code=$CODE
    case "$who" in
    admin | write | read) assert_eq 200 "$code" "GET /v1/changes?follow=1 ($who)" ;;
    none | wrong) assert_eq 401 "$code" "GET /v1/changes?follow=1 ($who)" ;;
    *) assert_eq 403 "$code" "GET /v1/changes?follow=1 ($who)" ;;
    esac
done

# ---- denied requests changed nothing; allowed ones did what they asked
admin_get() { curl -s -H "Authorization: Bearer ${TOK[admin]}" "$U$1"; }
stat_of() { admin_get "/v1/stat$1" | jq -r 'if .error then .error.code elif .deleted then "deleted" else .status end'; }
for who in "${PRINCIPALS[@]}"; do
    if [[ "$who" == admin || "$who" == write ]]; then
        assert_eq draft "$(stat_of "/m/put-$who")" "/m/put-$who ($who may PUT)"
        assert_eq not_found "$(stat_of "/m/del-$who")" "/m/del-$who ($who may DELETE)"
        assert_eq published "$(stat_of "/m/pub-$who")" "/m/pub-$who ($who may publish)"
        assert_eq draft "$(stat_of "/m/unpub-$who")" "/m/unpub-$who ($who may unpublish)"
        assert_eq not_found "$(stat_of "/m/purge-$who")" "/m/purge-$who ($who may purge)"
        assert_eq not_found "$(stat_of "/m/move-$who")" "/m/move-$who ($who may move)"
        assert_eq draft "$(stat_of "/m/moved-$who")" "/m/moved-$who ($who may move)"
        assert_eq draft "$(stat_of "/m/batch-$who")" "/m/batch-$who ($who may batch)"
        assert_eq draft "$(stat_of "/m/upl-$who")" "/m/upl-$who ($who may commit an upload)"
    else
        assert_eq not_found "$(stat_of "/m/put-$who")" "/m/put-$who (denied PUT by $who)"
        assert_eq draft "$(stat_of "/m/del-$who")" "/m/del-$who (denied DELETE by $who)"
        assert_eq draft "$(stat_of "/m/pub-$who")" "/m/pub-$who (denied publish by $who)"
        assert_eq published "$(stat_of "/m/unpub-$who")" "/m/unpub-$who (denied unpublish by $who)"
        assert_eq draft "$(stat_of "/m/purge-$who")" "/m/purge-$who (denied purge by $who)"
        assert_eq draft "$(stat_of "/m/move-$who")" "/m/move-$who (denied move by $who)"
        assert_eq not_found "$(stat_of "/m/moved-$who")" "/m/moved-$who (denied move by $who)"
        assert_eq not_found "$(stat_of "/m/batch-$who")" "/m/batch-$who (denied batch by $who)"
        assert_eq not_found "$(stat_of "/m/upl-$who")" "/m/upl-$who (denied commit by $who)"
        # the session is still there, empty: no PUT, no commit, no DELETE went through
        assert_eq 0 "$(admin_get "/v1/uploads/${UPL[$who]}" | jq -r '.size // .error.code')" \
            "upload session of $who (denied)"
    fi
done
# tokens: only admin made one and revoked its victim
admin_get /v1/tokens >"$T/tokens.json"
for who in "${PRINCIPALS[@]}"; do
    made=$(jq -r --arg n "made-by-$who" '[.tokens[] | select(.name == $n) | .role] | join(",")' "$T/tokens.json")
    victim=$(jq -r --arg n "victim-$who" '[.tokens[] | select(.name == $n)] | length' "$T/tokens.json")
    if [[ "$who" == admin ]]; then
        assert_eq admin "$made" "token made by admin"
        assert_eq 0 "$victim" "victim token revoked by admin"
    else
        assert_eq "" "$made" "token made by a $who principal (must be refused)"
        assert_eq 1 "$victim" "victim token of a $who principal (must not be revoked)"
        # the victim still works
        assert_eq 200 "$(http_code -H "Authorization: Bearer ${TOK[victim-$who]}" "$U/v1/status")" \
            "victim-$who token after the denied revoke"
    fi
done
assert_eq 401 "$(http_code -H "Authorization: Bearer ${TOK[victim-admin]}" --interface 127.0.9.1 "$U/v1/status")" \
    "victim-admin token (revoked by admin)"

# ---- malformed or near-miss credentials on a route every role may use: all 401
A=${TOK[admin]}
BAD_AUTH=(
    "Authorization: Basic $(printf 'admin:%s' "$A" | base64 -w0)"
    "Authorization: Bearer"
    "Authorization: Bearer "
    "Authorization: Bearer lst_"
    "Authorization: Bearer ${A:0:67}"
    "Authorization: Bearer ${A}0"
    "Authorization: Bearer ${A^^}"
    "Authorization: Token $A"
    "Authorization: $A"
    "X-Token: $A"
)
for h in "${BAD_AUTH[@]}"; do
    next_src
    code=$(http_code --interface "$SRC" -H "$h" "$U/v1/status")
    assert_eq 401 "$code" "GET /v1/status with header '${h:0:40}...'"
done
# case-insensitive scheme is still the right token
assert_eq 200 "$(http_code -H "Authorization: bearer $A" "$U/v1/status")" "lower-case bearer"

# ---- every 401 was logged with the client's address, never the token
for a in "${SRC_ADDRS[@]}"; do
    grep -qF "authentication failed from $a:" "$T/P.log" ||
        fail "no 'authentication failed from $a:' in the primary's log"
done
log "401s logged for ${#SRC_ADDRS[@]} addresses"

# ---------------------------------------------------------------- 3. token ls / revoke
assert_exit 0 lsc P token ls
LS_OUT=$OUT
for role in "${ROLES[@]}"; do
    grep -qE "^tok-$role +$role " <<<"$LS_OUT" || fail "token ls does not show tok-$role with role $role: $LS_OUT"
done
# the default name is the role and the start of the token's hash: nothing of the token itself
unnamed="report-$(printf '%s' "${TOK[unnamed]}" | sha256sum | cut -c1-8)"
grep -qE "^$unnamed +report " <<<"$LS_OUT" || fail "token ls does not show the default name $unnamed: $LS_OUT"
assert_not_contains "$LS_OUT" "${TOK[unnamed]: -8}" "token ls (the unnamed token's last digits)"
assert_exit 0 lsc P token ls --json
LS_JSON=$OUT
for t in "${TOK[@]}"; do
    assert_not_contains "$LS_OUT" "$t" "token ls"
    assert_not_contains "$LS_JSON" "$t" "token ls --json"
done
! grep -qE 'lst_[0-9a-f]{64}' <<<"$LS_OUT$LS_JSON" || fail "token ls shows a token: $LS_OUT"
# only admin may list
assert_exit 1 env LOCKSTEP_TOKEN="${TOK[read]}" "$LOCKSTEP" token ls --server "$U"

# the CLI's --token (either form) and $LOCKSTEP_TOKEN; the flag wins over the variable
nt=(env -u LOCKSTEP_TOKEN "$LOCKSTEP")
assert_exit 0 "${nt[@]}" status --server "$U" --token "${TOK[report]}"
assert_exit 0 "${nt[@]}" get /m/a --token="${TOK[read]}" --server "$U"
assert_eq hello "$OUT" "get /m/a with --token=READ"
assert_exit 1 "${nt[@]}" put /m/cli - --token "${TOK[read]}" --server "$U" <<<x
assert_contains "$ERR" "may not write" "put with a read token"
assert_exit 1 "${nt[@]}" status --server "$U"
assert_contains "$ERR" "needs a token" "status without a token"
assert_exit 1 "${nt[@]}" status --server "$U" --token "$WRONG"
assert_contains "$ERR" "unknown token" "status with a wrong token"
assert_exit 1 env LOCKSTEP_TOKEN="${TOK[admin]}" "$LOCKSTEP" token ls --server "$U" --token "${TOK[read]}"
assert_exit 0 env LOCKSTEP_TOKEN="${TOK[read]}" "$LOCKSTEP" get /m/a --server "$U"
assert_eq not_found "$(stat_of /m/cli)" "/m/cli after the refused put"

# a token made through the API works at once; revoked, it is refused within about a second
assert_exit 0 lsc P token create --role write --name short-lived
SHORT=$OUT
TOK[short]=$SHORT
[[ "$SHORT" =~ ^lst_[0-9a-f]{64}$ ]] || fail "token create (API) printed '$SHORT'"
assert_eq 200 "$(http_code -H "Authorization: Bearer $SHORT" "$U/v1/status")" "new token"
assert_exit 0 lsc P token revoke short-lived
t0=$(date +%s%N)
refused=0
for ((i = 0; i < 30; i++)); do
    next_src
    code=$(http_code --interface "$SRC" -H "Authorization: Bearer $SHORT" "$U/v1/status")
    if [[ "$code" == 401 ]]; then
        refused=1
        break
    fi
    assert_eq 200 "$code" "status with a token being revoked"
    sleep 0.05
done
ms=$((($(date +%s%N) - t0) / 1000000))
((refused)) || fail "revoked token still accepted after ${ms} ms"
((ms <= 1200)) || fail "revoked token refused only after ${ms} ms"
log "revoked token refused after ${ms} ms"
# revoking again: not found (exit 3), revoking without admin: refused
assert_exit 3 lsc P token revoke short-lived
assert_exit 1 env LOCKSTEP_TOKEN="${TOK[write]}" "$LOCKSTEP" token revoke tok-read --server "$U"
assert_eq 200 "$(http_code -H "Authorization: Bearer ${TOK[read]}" "$U/v1/status")" "tok-read after a write token's revoke"
# a name that needs percent-encoding is revoked by that name
assert_exit 0 lsc P token create --role read --name "ci bot/é"
assert_exit 0 lsc P token revoke "ci bot/é"
assert_exit 0 lsc P token ls
assert_not_contains "$OUT" "ci bot" "token ls after revoking 'ci bot/é'"
# the last admin token stays: revoking it would leave a server nobody can administer (or one
# open to all once no token is left); tok-admin is the last once made-by-admin is gone too
assert_eq made-by-admin,tok-admin "$(lsc P token ls --json | jq -r '[.tokens[] | select(.role == "admin") | .name] | join(",")')" \
    "admin tokens"
assert_exit 0 lsc P token revoke made-by-admin
assert_exit 1 lsc P token revoke tok-admin
assert_contains "$ERR" "tok-admin is the last admin token" "revoking the last admin token"
assert_eq 200 "$(http_code -H "Authorization: Bearer ${TOK[admin]}" "$U/v1/tokens")" "tok-admin after the refused revoke"

# a token made offline while the server runs works within about a second
assert_exit 0 "$LOCKSTEP" token create --data "$DATA_P" --role read --name offline-late
LATE=$OUT
TOK[late]=$LATE
t0=$(date +%s%N)
ok=0
for ((i = 0; i < 40; i++)); do
    next_src
    if [[ "$(http_code --interface "$SRC" -H "Authorization: Bearer $LATE" "$U/v1/status")" == 200 ]]; then
        ok=1
        break
    fi
    sleep 0.05
done
ms=$((($(date +%s%N) - t0) / 1000000))
((ok)) || fail "a token made offline while the server runs is not accepted after ${ms} ms"
((ms <= 1500)) || fail "a token made offline was accepted only after ${ms} ms"

# ---------------------------------------------------------------- 4. peer handshake x role
for who in "${PRINCIPALS[@]}"; do # all at once: quicker
    flags=(--role replica --upstream "$PEER_P")
    [[ "$who" == none ]] || flags+=(--upstream-token "${TOK[$who]}")
    launch_node "R_$who" "${flags[@]}"
done
for who in "${PRINCIPALS[@]}"; do
    await_node "R_$who" status_ok
done
for who in admin replicate; do
    wait_caught_up "R_$who" P 20
    assert_same_digest P "R_$who"
    grep -q "downstream R_$who (replica) connected from 127.0.0.1:" "$T/P.log" ||
        fail "P's log does not show R_$who connecting"
done
declare -A WHY=(
    [write]="the token's role may not replicate"
    [read]="the token's role may not replicate"
    [notify]="the token's role may not replicate"
    [report]="the token's role may not replicate"
    [wrong]="unknown token"
    [none]="this server needs a token with the role replicate"
)
for who in write read notify report wrong none; do
    line="R_$who from 127.0.0.1:"
    wait_until 15 grep -qF "$line" "$T/P.log" || fail "P's log does not refuse R_$who"
    grep -F "$line" "$T/P.log" | grep -qF "${WHY[$who]}" ||
        fail "P's log refuses R_$who without '${WHY[$who]}': $(grep -F "$line" "$T/P.log" | head -2)"
    wait_until 10 grep -qF "${WHY[$who]}" "$T/R_$who.log" ||
        fail "R_$who's log does not say why it was refused"
done
# let them retry a while: still nothing
sleep 1.5
for who in write read notify report wrong none; do
    st=$(lsc "R_$who" status --json)
    assert_ne live "$(jq -r .state <<<"$st")" "state of R_$who"
    assert_eq 0 "$(jq -r .seq <<<"$st")" "seq of R_$who (refused)"
    assert_eq 0 "$(lsc "R_$who" digest --json | jq -r .items)" "items on R_$who (refused)"
    ! grep -q "downstream R_$who (" "$T/P.log" || fail "P accepted R_$who"
done
# the registry knows only the accepted ones
nodes=$(curl -s -H "Authorization: Bearer ${TOK[report]}" "$U/v1/nodes" | jq -r '[.nodes[].name] | sort | join(",")')
assert_eq "R_admin,R_replicate" "$nodes" "nodes on P"
# new data reaches the accepted replicas
echo fresh | lsc P put /m/fresh - >/dev/null
wait_caught_up R_replicate P 15
wait_caught_up R_admin P 15
assert_eq fresh "$(lsc R_replicate get /m/fresh)" "/m/fresh on R_replicate"

# ---------------------------------------------------------------- 5. no token in any log
for name in P R_admin R_write R_read R_replicate R_notify R_report R_none R_wrong; do
    stop_server "$name"
done
# What the servers wrote: lib.sh's own "=== lockstep serve ARGS" lines (the command line, with
# --upstream-token) are left out.
mkdir -p "$T/logs"
for f in "$T"/*.log; do
    grep -v '^=== ' "$f" >"$T/logs/$(basename "$f")" || true
done
for k in "${!TOK[@]}"; do
    if grep -qF "${TOK[$k]}" "$T"/logs/*.log; then
        fail "token $k appears in $(grep -lF "${TOK[$k]}" "$T"/logs/*.log | xargs -n1 basename | tr '\n' ' ')"
    fi
    # not even its secret part
    if grep -qF "${TOK[$k]:4:32}" "$T"/logs/*.log; then
        fail "half of token $k appears in a log"
    fi
done
! grep -qE 'lst_[0-9a-f]{16}' "$T"/logs/*.log || fail "a log holds something like a token: $(grep -hE 'lst_[0-9a-f]{16}' "$T"/logs/*.log | head -2)"
