#!/usr/bin/env bash
# Cascading: P -> R1 -> R2 (R2's upstream is R1's peer port), and a staging server S under R1.
# Writes on P reach R2 with the same seqs (R2's change log is P's), all digests are equal, S
# holds P's published versions; `nodes` on P lists R1 only and on R1 lists R2 and S, all live;
# R2 knows the primary at the top of the chain (writes on it name P). R1 restarting (clean, then
# kill -9) leaves R2 continuing without a snapshot; R1 coming back empty (a snapshot from P)
# leaves R2 and S converging.
set -euo pipefail
source "$(dirname "$0")/lib_repl.sh"

start_node P
start_node R1 --role replica --upstream "$PEER_P"
start_node R2 --role replica --upstream "$PEER_R1"
start_node S --role staging --upstream "$PEER_R1"

pids=()
writer_loop P /w 80 "$T/ack.w" &
pids+=($!)
bg_track $!
writer_loop P /p 60 "$T/ack.p" --publish &
pids+=($!)
bg_track $!
cat >"$T/batch" <<'EOF'
{"op":"put","path":"/b/1","body":"one","status":"published"}
{"op":"put","path":"/b/2","body":"two"}
{"op":"put","path":"/b/1","body":"one, draft"}
{"op":"move","path":"/b/2","to":"/b/two"}
{"op":"put","path":"/b/3","body":"three","status":"published"}
{"op":"unpublish","path":"/b/3"}
{"op":"put","path":"/b/4","body":"four"}
{"op":"delete","path":"/b/4"}
{"op":"put","path":"/b/5","body":"five"}
{"op":"purge","path":"/b/5"}
EOF
lsc P import "$T/batch" >/dev/null
head -c 150000 /dev/urandom >"$SHM/blob"
lsc P put /blob "$SHM/blob" --publish >/dev/null
wait_pids 60 "${pids[@]}"

wait_caught_up R1 P 20
wait_caught_up R2 P 20
wait_caught_up S P 20
p_seq=$(seq_of P)
log "P at seq $p_seq"
for n in R1 R2; do assert_same_digest P "$n"; done
assert_eq "$(lsc P digest --published-only --json | jq -c '{seq,items,digest}')" \
    "$(lsc S digest --json | jq -c '{seq,items,digest}')" "staging under R1 against P's published digest"
lsc P changes --json | jq -c '{seq,op,path,to,version,published}' >"$T/chg.P"
lsc R2 changes --json | jq -c '{seq,op,path,to,version,published}' >"$T/chg.R2"
assert_same_file "$T/chg.P" "$T/chg.R2" "R2's change log (the same seqs as P's)"
assert_eq "$p_seq" "$(tail -n 1 "$T/chg.R2" | jq -r .seq)" "R2's last seq"
lsc R2 get /blob | cmp -s - "$SHM/blob" || fail "the blob differs on R2"
assert_eq "one, draft" "$(lsc R2 get /b/1)" "R2: /b/1"
assert_eq "one" "$(lsc S get /b/1)" "S: the published /b/1"
assert_exit 3 "$LOCKSTEP" get /b/3 --server "$URL_S"
check_bodies R2 "$T/ack.w"

# --- the registry: each server lists its own downstreams
lsc P nodes --json >"$T/nodes.P"
lsc R1 nodes --json >"$T/nodes.R1"
assert_eq "R1" "$(jq -r '[.nodes[].name] | sort | join(" ")' "$T/nodes.P")" "downstreams of P"
assert_eq "R2 S" "$(jq -r '[.nodes[].name] | sort | join(" ")' "$T/nodes.R1")" "downstreams of R1"
assert_eq "live" "$(jq -r '.nodes[].state' "$T/nodes.P")" "state of R1 on P"
assert_eq "live live" "$(jq -r '[.nodes[].state] | join(" ")' "$T/nodes.R1")" "states on R1"
assert_eq "$p_seq" "$(jq -r '.nodes[] | select(.name == "R1") | .applied_seq' "$T/nodes.P")" "R1's applied_seq on P"
assert_eq "$p_seq" "$(jq -r '.nodes[] | select(.name == "R2") | .applied_seq' "$T/nodes.R1")" "R2's applied_seq on R1"
assert_eq "staging" "$(jq -r '.nodes[] | select(.name == "S") | .role' "$T/nodes.R1")" "S's role on R1"
assert_exit 0 "$LOCKSTEP" nodes --server "$URL_R1"
assert_contains "$OUT" "R2" "nodes on R1 (text)"
assert_eq "[]" "$(lsc R2 nodes --json | jq -c .nodes)" "downstreams of R2"

# --- R2 knows the primary at the top of the chain
assert_eq R1 "$(status_field R2 upstream_name)" "R2's upstream"
assert_eq "127.0.0.1:$PORT_P" "$(status_field R2 primary)" "R2's primary"
printf 'x' >"$T/x"
assert_exit 1 "$LOCKSTEP" put /nope "$T/x" --server "$URL_R2"
assert_contains "$ERR" "127.0.0.1:$PORT_P" "a write on R2 names the primary"

# --- R1 restarts (clean, then kill -9) while P takes writes: R2 continues, no snapshot
for how in stop kill9; do
    if [[ $how == stop ]]; then stop_server R1; else kill9_server R1; fi
    for i in 1 2 3 4 5; do printf '%s %d' "$how" "$i" | lsc P put "/$how/$i" >/dev/null; done
    start_node R1 --role replica --upstream "$PEER_P"
    printf '%s after' "$how" | lsc P put "/$how/after" >/dev/null
    wait_caught_up R1 P 20
    wait_caught_up R2 P 20
    wait_caught_up S P 20
    assert_eq continue "$(status_field R2 last_sync)" "R2's last_sync after R1's $how"
    assert_eq continue "$(status_field R1 last_sync)" "R1's last_sync after its $how"
    assert_eq "$how after" "$(lsc R2 get "/$how/after")" "R2 after R1's $how"
done
if grep -q 'sending R2 a snapshot' "$(node_log R1)"; then
    (($(grep -c 'sending R2 a snapshot' "$(node_log R1)") == 1)) || fail "R1 sent R2 more than its first snapshot"
fi
assert_same_digest P R2
lsc P changes --json | jq -c '{seq,op,path,to,version,published}' >"$T/chg.P"
lsc R2 changes --json | jq -c '{seq,op,path,to,version,published}' >"$T/chg.R2"
assert_same_file "$T/chg.P" "$T/chg.R2" "R2's change log after R1's restarts"

# --- R1 loses its store and comes back empty: it takes a snapshot from P while R2 and S keep
# trying to follow it. R1 refuses them until its snapshot ends, then drops them so that they
# learn where they stand in its new history: both converge (nothing skipped, nothing kept).
stop_server R1
rm -rf "$DATA_R1"
for ((b = 0; b < 4; b++)); do
    for ((i = 0; i < 500; i++)); do
        printf '{"op":"put","path":"/more/%d/%d","body":"%0200d","status":"published"}\n' "$b" "$i" "$i"
    done >"$T/more.ndjson"
    lsc P import "$T/more.ndjson" >/dev/null
done
start_node R1 --role replica --upstream "$PEER_P"
echo "after the snapshot" | lsc P put /after-snapshot - >/dev/null
wait_caught_up R1 P 30
wait_caught_up R2 P 30
wait_caught_up S P 30
assert_eq snapshot "$(status_field R1 last_sync)" "R1's last_sync after losing its store"
assert_same_digest P R1
assert_same_digest P R2
assert_eq "$(lsc P digest --published-only --json | jq -c '{seq,items,digest}')" \
    "$(lsc S digest --json | jq -c '{seq,items,digest}')" "S after R1's snapshot"
assert_eq "after the snapshot" "$(lsc R2 get /after-snapshot)" "R2 after R1's snapshot"

stop_server S
stop_server R2
stop_server R1
stop_server P
