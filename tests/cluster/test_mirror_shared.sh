#!/usr/bin/env bash
# Shared duty (docs/mirror.md, "Shared duty"): two mirror servers hold the same job for the same
# export; the exporting server holds the job's lease.
#   - the lease API: one holder at a time (409 names the holder), a new holder gets a higher
#     fence, an export read with a stale or expired fence is refused, and a restarted server never
#     hands out a lower fence;
#   - m1 runs the job; m2's run meanwhile is skipped (the lease is m1's); m1 is killed -9
#     mid-run; once the lease has expired m2 takes over and the shared target equals the source;
#     the restarted m1 resumes its interrupted run after m2 gave the lease back;
#   - a holder that stalls (SIGSTOP) past its lease while the other takes over stops when it
#     wakes up: its lease was lost, and the export refuses its fence.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

run_field() { lsc "$1" mirror history "$2" --json | jq -r ".runs[${4:-0}].$3"; }
job_idle() { [[ $(lsc "$1" mirror show "$2" --json | jq -r .running) == false ]]; }
acked() { (($(lsc "$1" mirror show "$2" --json | jq '.progress.items_done // 0') >= $3)); }
TTL=3000
export LOCKSTEP_MIRROR_LEASE_TTL_MS=$TTL

ksrc=$SHM/ksrc
for d in $(seq 1 20); do
    mkdir -p "$ksrc/d$d"
    for f in $(seq 1 20); do printf 'shared duty %d %d\n' "$d" "$f" >"$ksrc/d$d/f$f"; done
done
mkdir -p "$T/S"
assert_exit 0 "$LOCKSTEP" token create --data "$T/S" --role admin --name adm
export LOCKSTEP_TOKEN=$OUT
assert_exit 0 "$LOCKSTEP" token create --data "$T/S" --role read --name reader
READER=$OUT
printf '%s\n' "$READER" >"$T/read.token"
start_server S --export "k=$ksrc"
S=$(url_of S)

# ---------------------------------------------------------------- the lease API
lease() { # lease HOLDER TTL [JOB]: the status; the body in $T/body
    curl -s -o "$T/body" -w '%{http_code}' -H "Authorization: Bearer $READER" \
        -d "{\"job\":\"${3:-probe}\",\"holder\":\"$1\",\"ttl_ms\":$2}" "$S/v1/exports/k/lease"
}
list_with() { # list_with FENCE: the status of a listing read under lease probe
    curl -s -o "$T/body" -w '%{http_code}' -H "Authorization: Bearer $READER" \
        -H 'X-Lockstep-Lease: probe' -H "X-Lockstep-Fence: $1" "$S/v1/exports/k/list?limit=1"
}
assert_eq 200 "$(lease x 1000)" "a first lease"
assert_eq 1 "$(jq .fence "$T/body")" "the first fence"
assert_eq 200 "$(lease x 20000)" "a renewal"
assert_eq 1 "$(jq .fence "$T/body")" "a renewal keeps the fence"
assert_eq 409 "$(lease y 1000)" "a lease held by another"
assert_eq x "$(jq -r .holder "$T/body")" "the holder named"
assert_eq 200 "$(list_with 1)" "a read with the current fence"
assert_eq 200 "$(lease x 1)" "a renewal for 1 ms"
sleep 0.1
assert_eq 409 "$(list_with 1)" "a read under an expired lease"
assert_contains "$(cat "$T/body")" "expired"
assert_eq 200 "$(lease y 20000)" "an expired lease taken over"
assert_eq 2 "$(jq .fence "$T/body")" "a new holder's fence"
assert_eq 409 "$(list_with 1)" "a read with a stale fence"
assert_contains "$(cat "$T/body")" "stale"
assert_eq 200 "$(list_with 2)" "a read with the new fence"
assert_eq 400 "$(lease 'bad holder' 1000)" "a bad holder"
assert_eq 400 "$(lease y -1)" "a negative ttl"
assert_eq 401 "$(curl -s -o /dev/null -w '%{http_code}' -d '{}' "$S/v1/exports/k/lease")" "no token"
assert_eq 404 "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $READER" \
    -d '{"job":"probe","holder":"x","ttl_ms":1}' "$S/v1/exports/nope/lease")" "an unknown export"
kill9_server S
start_server S --export "k=$ksrc"
assert_eq 409 "$(lease z 1000)" "y's lease survives a kill -9 of the exporting server"
assert_eq 409 "$(lease z 0)" "a release by one who does not hold it"
assert_eq y "$(jq -r .holder "$T/body")"
assert_eq 409 "$(lease z 1000)" "y's lease is still y's"
assert_eq 200 "$(lease y 0)" "y gives its lease back"
assert_eq 200 "$(lease z 1000)" "taken after a restart"
assert_eq 3 "$(jq .fence "$T/body")" "the fence after a restart is higher, never lower"
assert_eq 200 "$(lease z 0)" "a release"
assert_eq 200 "$(lease w 1000)" "a released lease is free at once"
assert_eq 4 "$(jq .fence "$T/body")"

# ---------------------------------------------------------------- one of two mirror servers killed
LOCKSTEP_MIRROR_PACKAGE_DELAY_MS=100 start_server m1
LOCKSTEP_MIRROR_PACKAGE_DELAY_MS=100 start_server m2
SRC="lockstep://127.0.0.1:$PORT_S/export/k"
for m in m1 m2; do
    for job in share stall; do
        assert_exit 0 lsc "$m" mirror create "$job" --source "$SRC" --target "dir:$SHM/${job}_out" \
            --package-items 20 --token-file "$T/read.token"
    done
done
assert_exit 0 lsc m1 mirror run share
wait_until 60 acked m1 share 60 || fail "m1's run did not get far enough"
assert_exit 0 lsc m2 mirror run share --wait
assert_eq skipped "$(run_field m2 share state)" "m2's run while m1 holds the lease"
assert_contains "$(run_field m2 share note)" "held by m1/"
assert_eq 0 "$(run_field m2 share items)" "items of the skipped run"
kill9_server m1
killed=$(($(date +%s%N) / 1000000))
for ((i = 0; i < 40; i++)); do # m1's lease expires within TTL; m2 then takes over
    assert_exit 0 lsc m2 mirror run share --wait
    [[ $(run_field m2 share state) == skipped ]] || break
    sleep 0.25
done
assert_eq ok "$(run_field m2 share state)" "m2's run once m1's lease expired"
took=$(($(date -d "$(run_field m2 share started)" +%s%3N) - killed))
((took <= TTL + 5000)) || fail "m2 took over $took ms after m1 was killed (the lease lasts $TTL ms)"
log "m2 took over $took ms after m1 was killed (lease $TTL ms)"
diff -r "$ksrc" "$SHM/share_out" >"$T/diff" || fail "the shared target differs: $(head -5 "$T/diff")"
start_server m1 # its interrupted run resumes, the lease being free again
wait_until 60 job_idle m1 share || fail "m1's resumed run did not end"
lsc m1 mirror history share --json >"$T/hist"
assert_eq ok "$(jq -r '.runs[0].state' "$T/hist")" "m1's resumed run"
assert_eq interrupted "$(jq -r '.runs[1].note' "$T/hist")"
first=$(jq '.runs[1].items' "$T/hist")
assert_eq 400 "$((first + $(jq '.runs[0].items' "$T/hist")))" "m1's two runs sent every item once"
diff -r "$ksrc" "$SHM/share_out" >/dev/null || fail "the shared target differs after m1's run"

# ---------------------------------------------------------------- a stalled holder
stop_server m1
LOCKSTEP_MIRROR_PACKAGE_DELAY_MS=100 start_server m1
assert_exit 0 lsc m1 mirror run stall
wait_until 60 acked m1 stall 40 || fail "m1's stall run did not get far enough"
kill -STOP "$(pid_of m1)"
sleep $((TTL / 1000 + 1))
assert_exit 0 lsc m2 mirror run stall --wait
assert_eq ok "$(run_field m2 stall state)" "m2 took over from the stalled m1"
kill -CONT "$(pid_of m1)"
wait_until 30 job_idle m1 stall || fail "the stalled run did not stop"
assert_eq failed "$(run_field m1 stall state)" "the stalled holder's run"
assert_contains "$(run_field m1 stall note)" "lease"
diff -r "$ksrc" "$SHM/stall_out" >"$T/diff" || fail "the stall target differs: $(head -5 "$T/diff")"
for s in m1 m2 S; do stop_server "$s"; done
echo ok
