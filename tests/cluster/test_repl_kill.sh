#!/usr/bin/env bash
# kill -9 at the worst moments, then convergence:
#  1. a replica killed while it receives a snapshot (200k items): restarted, it takes a new
#     snapshot ("its last snapshot did not finish") and ends equal to the primary;
#  2. a replica killed while a write stream (puts and a big batch) reaches it: restarted, it
#     continues (no snapshot) and ends equal, its change log the primary's without gap or
#     duplicate;
#  3. the primary killed while writers get acknowledgements: restarted, no acknowledged write is
#     lost, and the replica continues from where it was (last_sync "continue", no snapshot).
set -euo pipefail
source "$(dirname "$0")/lib_repl.sh"

ITEMS=${ITEMS:-200000}

DATA_ROOT=$SHM start_node P
t_import=$SECONDS
python3 -c "
for i in range($ITEMS):
    print('{\"op\":\"put\",\"path\":\"/bulk/%d/%d\",\"body\":\"item %d\"}' % (i // 1000, i, i))
" >"$SHM/bulk.ndjson"
assert_exit 0 "$LOCKSTEP" import "$SHM/bulk.ndjson" --server "$URL_P"
rm -f "$SHM/bulk.ndjson"
assert_eq "$ITEMS" "$(seq_of P)" "seq after the import"

# ---------------------------------------------------------------- 1. mid-snapshot
_receiving() {
    [[ "$(status_field R state)" == snapshot ]] &&
        (($(curl -sf "$URL_R/v1/list?limit=1" | jq '.items | length') > 0))
}
DATA_ROOT=$SHM start_node R --role replica --upstream "$PEER_P"
wait_until 30 _receiving || fail "the replica did not start receiving the snapshot"
kill9_server R
log "replica killed mid-snapshot (import took $((SECONDS - t_import))s)"
partial=$(find "$DATA_R" -type f | wc -l) # (for the message: it left files behind)
DATA_ROOT=$SHM start_node R --role replica --upstream "$PEER_P"
wait_caught_up R P 60
assert_same_digest P R
grep -q 'its last snapshot did not finish' "$(node_log P)" ||
    fail "the restarted replica did not get a new snapshot for the unfinished one"
assert_eq snapshot "$(status_field R last_sync)" "last_sync after the interrupted snapshot"
log "converged after the interrupted snapshot (the killed replica left $partial files)"

# ---------------------------------------------------------------- 2. mid-stream
snaps_before=$(grep -c 'sending R a snapshot' "$(node_log P)" || true)
writer_loop P /stream 150 "$T/ack.stream" &
wpid=$!
bg_track $wpid
python3 -c "
for i in range(20000):
    print('{\"op\":\"put\",\"path\":\"/burst/%d\",\"body\":\"burst %d\"}' % (i, i))
" >"$SHM/burst.ndjson"
wait_until 20 lines_at_least "$T/ack.stream" 20 || fail "the writer did not get going"
base=$(seq_of P)
lsc P import "$SHM/burst.ndjson" >/dev/null &
ipid=$!
bg_track $ipid
# kill the replica while it is in the middle of the burst (its seq strictly between)
_mid_burst() {
    local s
    s=$(seq_of R)
    ((s > base + 100 && s < base + 19000))
}
if wait_until 30 _mid_burst; then
    log "replica killed in the middle of a 20000-change burst (at seq $(seq_of R 2>/dev/null || echo ?))"
else
    log "did not catch the replica mid-burst; killing it during the put stream"
fi
kill9_server R
wait_pids 60 $ipid
log "burst imported"
wait_until 20 lines_at_least "$T/ack.stream" 100 || true
DATA_ROOT=$SHM start_node R --role replica --upstream "$PEER_P"
wait_pids 150 $wpid # 150 puts, each a CLI process: slow on a loaded machine, which is no failure
log "put stream done"
[[ ! -s "$T/ack.stream.err" ]] || fail "puts failed: $(head -3 "$T/ack.stream.err")"
wait_caught_up R P 60
assert_same_digest P R
assert_eq continue "$(status_field R last_sync)" "last_sync after a kill mid-stream"
assert_eq "$snaps_before" "$(grep -c 'sending R a snapshot' "$(node_log P)" || true)" \
    "snapshots sent to R (a kill mid-stream needs none)"
# the change log after the snapshot: the primary's, without gap or duplicate
snap_seq=$ITEMS
lsc P changes --since "$snap_seq" --json | jq -c '{seq,op,path,version}' >"$T/chg.P"
lsc R changes --since "$snap_seq" --json | jq -c '{seq,op,path,version}' >"$T/chg.R"
assert_same_file "$T/chg.P" "$T/chg.R" "the replica's change log after a kill mid-stream"
log "change logs compared"
jq -r .seq "$T/chg.R" | awk -v s="$snap_seq" '$1 != s + NR { print "gap or duplicate at line " NR ": " $1; exit 1 }' ||
    fail "the replica's seqs are not contiguous"
check_bodies R "$T/ack.stream"
assert_eq "burst 19999" "$(lsc R get /burst/19999)" "the last item of the burst on the replica"

# ---------------------------------------------------------------- 3. the primary killed
follows_before=$(grep -c 'following P from seq' "$(node_log R)" || true)
snaps_before=$(grep -c 'receiving a snapshot' "$(node_log R)" || true)
pids=()
for w in 1 2 3; do
    writer_loop P "/acked$w" 200 "$T/ack.$w" &
    pids+=($!)
    bg_track $!
done
wait_until 30 lines_at_least "$T/ack.1" 30 || fail "the writers did not get going"
kill9_server P
log "primary killed with $(cat "$T"/ack.[123] | wc -l) writes acknowledged"
touch "$T"/ack.{1,2,3}.stop
wait_pids 60 "${pids[@]}" # the rest fail: nobody listens
cat "$T"/ack.[123] >"$T/acked"
acked=$(wc -l <"$T/acked")
max_acked_seq=$(awk '{print $3}' "$T/acked" | sort -n | tail -1)
DATA_ROOT=$SHM start_node P
p_seq=$(seq_of P)
((p_seq >= max_acked_seq)) || fail "the restarted primary is at seq $p_seq, below an acknowledged seq $max_acked_seq"
check_bodies P "$T/acked" "acknowledged writes after kill -9 of the primary"
log "all $acked acknowledged writes survived (primary at seq $p_seq)"
wait_caught_up R P 30
assert_same_digest P R
assert_eq continue "$(status_field R last_sync)" "the replica's last_sync after the primary restarted"
(($(grep -c 'following P from seq' "$(node_log R)" || true) > follows_before)) ||
    fail "the replica did not reconnect to the restarted primary"
assert_eq "$snaps_before" "$(grep -c 'receiving a snapshot' "$(node_log R)" || true)" \
    "snapshots the replica received after the primary restarted"
check_bodies R "$T/acked"
# and both keep working
printf 'after' | lsc P put /after >/dev/null
wait_caught_up R P 15
assert_eq after "$(lsc R get /after)" "a write after the restart reaches the replica"

stop_server R
stop_server P
