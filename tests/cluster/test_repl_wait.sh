#!/usr/bin/env bash
# Waiting for replicas and for seqs, with the replica behind a 400 ms delay (faultproxy) so that
# it really lags: put --wait-replicas 1 answers only once the replica applied the write (a get on
# the replica right after shows it); --wait-replicas 2 with one replica fails (exit 1, timeout
# message; HTTP 504 "timeout" with wait_ms) though the write is committed; reads with
# --min-seq wait for the seq; a seq far in the future gives HTTP 504 after wait_ms.
set -euo pipefail
source "$(dirname "$0")/lib_repl.sh"

start_node P
start_proxy X "$PEER_P"
start_node R --role replica --upstream "$PROXY_X"
printf 'v0' | lsc P put /k >/dev/null
wait_caught_up R P 15
proxy_set X "delay 400"

# --- wait_replicas=1: the replica has it when the put returns
lagging=0
for i in 1 2 3 4 5 6; do
    # without waiting, the replica lags behind the delay
    printf 'nowait %d' "$i" | lsc P put /k >/dev/null
    [[ "$(curl -s "$URL_R/v1/items/k")" != "nowait $i" ]] && lagging=$((lagging + 1))
    assert_exit 0 "$LOCKSTEP" put /k - --wait-replicas 1 --server "$URL_P" < <(printf 'v%d' "$i")
    seq=${OUT##* }
    assert_eq "v$i" "$(lsc R get /k)" "get on the replica right after put --wait-replicas 1 (#$i)"
    (($(seq_of R) >= seq)) || fail "the replica is at seq $(seq_of R), below the acknowledged $seq"
done
log "without waiting, the replica lagged $lagging of 6 times"
((lagging > 0)) || fail "the 400 ms delay did not make the replica lag: the test proves nothing"
# the reply counts the replicas
out=$(curl -sf -X PUT --data-binary 'json' "$URL_P/v1/items/k?wait_replicas=1&wait_ms=5000")
assert_eq 1 "$(jq -r .replicas <<<"$out")" "replicas in the reply"
assert_eq json "$(lsc R get /k)" "the replica after an HTTP put with wait_replicas=1"
# other writes take it too
assert_exit 0 "$LOCKSTEP" mv /k /k2 --wait-replicas 1 --server "$URL_P"
assert_exit 3 "$LOCKSTEP" get /k --server "$URL_R"
assert_exit 0 "$LOCKSTEP" publish /k2 --wait-replicas 1 --server "$URL_P"
assert_eq published "$(lsc R stat /k2 --json | jq -r .status)" "status on the replica after publish --wait-replicas 1"
assert_exit 0 "$LOCKSTEP" rm /k2 --wait-replicas 1 --server "$URL_P"
assert_exit 3 "$LOCKSTEP" get /k2 --server "$URL_R"
# a body above 8 MiB goes through an upload session: the commit waits too
head -c $((8 * 1048576 + 100)) /dev/urandom >"$SHM/big"
assert_exit 0 "$LOCKSTEP" put /big "$SHM/big" --wait-replicas 1 --server "$URL_P"
lsc R get /big | cmp -s - "$SHM/big" || fail "the replica right after an uploaded put with --wait-replicas 1"
rm -f "$SHM/big"

# --- wait_replicas=2 with one replica: a timeout, but the write is committed
t0=$(date +%s%N)
assert_exit 1 "$LOCKSTEP" put /two - --wait-replicas 2 --server "$URL_P" < <(printf 'two')
assert_contains "$ERR" "only 1 of 2 replicas" "put --wait-replicas 2"
assert_contains "$ERR" "5000 ms" "put --wait-replicas 2 (the default wait)"
elapsed=$((($(date +%s%N) - t0) / 1000000))
((elapsed >= 4500 && elapsed < 9000)) || fail "put --wait-replicas 2 took $elapsed ms, expected about 5000"
assert_eq two "$(lsc P get /two)" "the write is on the primary anyway"
t0=$(date +%s%N)
code=$(curl -s -o "$T/body" -w '%{http_code}' -X PUT --data-binary 'three' \
    "$URL_P/v1/items/three?wait_replicas=2&wait_ms=300")
elapsed=$((($(date +%s%N) - t0) / 1000000))
assert_eq 504 "$code" "HTTP status of wait_replicas=2"
assert_eq timeout "$(jq -r .error.code "$T/body")" "error code of wait_replicas=2"
((elapsed < 3000)) || fail "wait_replicas=2&wait_ms=300 took $elapsed ms"
wait_caught_up R P 15
assert_eq three "$(lsc R get /three)" "the write reaches the replica anyway"

# --- min_seq: read your writes on the replica
for i in 1 2 3; do
    out=$(printf 'fresh %d' "$i" | lsc P put /fresh)
    seq=${out##* }
    assert_exit 0 "$LOCKSTEP" get /fresh --min-seq "$seq" --server "$URL_R"
    assert_eq "fresh $i" "$OUT" "get --min-seq $seq on the replica"
done
out=$(printf 'stat me' | lsc P put /statme --kind page)
seq=${out##* }
assert_exit 0 "$LOCKSTEP" stat /statme --json --min-seq "$seq" --server "$URL_R"
assert_eq page "$(jq -r .kind <<<"$OUT")" "stat --min-seq on the replica"
# a seq already reached answers at once
assert_exit 0 "$LOCKSTEP" get /fresh --min-seq 1 --server "$URL_R"
# a seq far in the future: 504 after wait_ms
t0=$(date +%s%N)
code=$(curl -s -o "$T/body" -w '%{http_code}' "$URL_R/v1/items/fresh?min_seq=999999999&wait_ms=300")
elapsed=$((($(date +%s%N) - t0) / 1000000))
assert_eq 504 "$code" "HTTP status of a read with a future min_seq"
assert_eq timeout "$(jq -r .error.code "$T/body")" "error code of a read with a future min_seq"
assert_contains "$(jq -r .error.message "$T/body")" "999999999" "message of a read with a future min_seq"
((elapsed >= 250 && elapsed < 3000)) || fail "min_seq with wait_ms=300 took $elapsed ms"
code=$(curl -s -o "$T/body" -w '%{http_code}' "$URL_R/v1/stat/fresh?min_seq=999999999&wait_ms=300")
assert_eq 504 "$code" "HTTP status of a stat with a future min_seq"
# the server still answers normally afterwards
assert_eq "fresh 3" "$(lsc R get /fresh)" "a plain get after the timeouts"

# --- batches take wait_replicas: from an upload session, and inline
printf '{"op":"put","path":"/ubatch/1","body":"u1"}\n{"op":"put","path":"/ubatch/2","body":"u2"}\n' >"$T/ubatch"
id=$(curl -sf -X POST "$URL_P/v1/uploads" | jq -r .id)
curl -sf -X PUT --data-binary @"$T/ubatch" "$URL_P/v1/uploads/$id?offset=0" >/dev/null
out=$(curl -s -X POST "$URL_P/v1/batch?upload=$id&wait_replicas=1")
assert_eq 1 "$(jq -r .replicas <<<"$out")" "replicas in the reply of an uploaded batch ($out)"
assert_eq u2 "$(lsc R get /ubatch/2)" "the replica right after an uploaded batch with wait_replicas=1"
printf '{"op":"put","path":"/batch/1","body":"b1"}\n{"op":"put","path":"/batch/2","body":"b2"}\n' >"$T/batch"
out=$(curl -s -X POST --data-binary @"$T/batch" "$URL_P/v1/batch?wait_replicas=1")
assert_eq 1 "$(jq -r .replicas <<<"$out")" "replicas in the reply of an inline batch ($out)"
assert_eq b2 "$(lsc R get /batch/2)" "the replica right after an inline batch with wait_replicas=1"

# --- with the replica gone, --wait-replicas 1 times out too
kill9_server R
code=$(curl -s -o "$T/body" -w '%{http_code}' -X PUT --data-binary 'alone' \
    "$URL_P/v1/items/alone?wait_replicas=1&wait_ms=300")
assert_eq 504 "$code" "wait_replicas=1 with the replica down"
assert_eq alone "$(lsc P get /alone)" "the write is on the primary"

stop_server P
stop_proxy X
