#!/usr/bin/env bash
# Log retention and snapshots: a replica that was stopped while the primary wrote past its
# --log-retention (2K, trimmed every 200 ms) cannot continue from the log; restarted, it takes a
# snapshot (status last_sync "snapshot"), goes live (later writes reach it) and ends equal to the
# primary. With --sync-max-versions 2 on the primary, the snapshot carries only the 2 latest
# versions of an item that has 5. A replica that was stopped only briefly (the log still covers
# it) continues without a snapshot.
set -euo pipefail
source "$(dirname "$0")/lib_repl.sh"

LOCKSTEP_RETENTION_INTERVAL_MS=200 start_node P --log-retention 2K --sync-max-versions 2
start_node R --role replica --upstream "$PEER_P"
for i in 1 2 3; do printf 'first %d' "$i" | lsc P put "/first/$i" >/dev/null; done
wait_caught_up R P 15
assert_same_digest P R

# --- a short absence within the retained log: continue
stop_server R
printf 'short' | lsc P put /short >/dev/null
start_node R --role replica --upstream "$PEER_P"
wait_caught_up R P 15
assert_eq continue "$(status_field R last_sync)" "last_sync after a short absence"
assert_eq short "$(lsc R get /short)" "the write made while the replica was stopped"

# --- a long absence: the primary writes well past 2K of log and trims it
stop_server R
r_seq=$(seq_of P)
log "replica stopped at seq $r_seq"
for v in 1 2 3 4 5; do printf 'hist version %d' "$v" | lsc P put /hist >/dev/null; done
body=$(head -c 300 /dev/zero | tr '\0' x)
: >"$T/import.ndjson"
for ((i = 1; i <= 60; i++)); do
    printf '{"op":"put","path":"/long/%d","body":"%s-%d"}\n' "$i" "$body" "$i" >>"$T/import.ndjson"
done
lsc P import "$T/import.ndjson" >/dev/null
for ((i = 1; i <= 30; i++)); do printf '%s-%d' "$body" "$i" | lsc P put "/long/put$i" >/dev/null; done
_trimmed_past() { (($(status_field P log_first_seq) > $1 + 1)); }
wait_until 20 _trimmed_past "$r_seq" ||
    fail "the primary's log was not trimmed past seq $r_seq: log_first_seq $(status_field P log_first_seq)"
first=$(status_field P log_first_seq)
log "the primary's log now starts at seq $first (the replica is at $r_seq, the primary at $(seq_of P))"
grep -q 'log retention removed' "$(node_log P)" || fail "the primary did not log the trimming"

start_node R --role replica --upstream "$PEER_P"
_synced_by_snapshot() { [[ "$(status_field R last_sync)" == snapshot && "$(status_field R state)" =~ ^(snapshot|catching-up|live)$ ]]; }
wait_until 20 _synced_by_snapshot || fail "the replica did not take a snapshot: $(lsc R status --json | jq -c .)"
wait_caught_up R P 30
assert_eq snapshot "$(status_field R last_sync)" "last_sync after falling behind the retained log"
grep -qE "sending R a snapshot at seq [0-9]+ \(it is older than the retained log\)" "$(node_log P)" ||
    fail "the primary did not say why it sent a snapshot"
assert_same_digest P R

# --- live afterwards: new writes arrive
for ((i = 1; i <= 10; i++)); do printf 'live %d' "$i" | lsc P put "/live/$i" >/dev/null; done
lsc P rm /long/1 >/dev/null
lsc P mv /long/2 /moved/2 >/dev/null
wait_caught_up R P 15
assert_eq "live 10" "$(lsc R get /live/10)" "a write after the snapshot"
assert_exit 3 "$LOCKSTEP" get /long/1 --server "$URL_R"
assert_eq "$body-2" "$(lsc R get /moved/2)" "a move after the snapshot"
assert_same_digest P R
assert_eq live "$(status_field R state)" "the replica's state"

# --- --sync-max-versions 2: the snapshot carried 2 of /hist's 5 versions
assert_eq "1 2 3 4 5" "$(lsc P history /hist --json | jq -r '[.versions[].version] | sort | map(tostring) | join(" ")')" \
    "versions of /hist on the primary"
assert_eq "4 5" "$(lsc R history /hist --json | jq -r '[.versions[].version] | sort | map(tostring) | join(" ")')" \
    "versions of /hist on the replica after a snapshot with --sync-max-versions 2"
assert_eq "hist version 5" "$(lsc R get /hist)" "the latest version of /hist on the replica"
assert_eq "hist version 4" "$(lsc R get /hist --version 4)" "version 4 of /hist on the replica"
assert_exit 3 "$LOCKSTEP" get /hist --version 3 --server "$URL_R"
# a new version after the snapshot is added to what the replica has
printf 'hist version 6' | lsc P put /hist >/dev/null
wait_caught_up R P 15
assert_eq "4 5 6" "$(lsc R history /hist --json | jq -r '[.versions[].version] | sort | map(tostring) | join(" ")')" \
    "versions of /hist on the replica after one more put"

stop_server R
stop_server P
