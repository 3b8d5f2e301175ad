#!/usr/bin/env bash
# --live mirroring jobs (docs/mirror.md): after its run, a store job follows the change log.
#   - --live with a dir: source is refused (400) and creates nothing;
#   - `run --wait` returns once the first pass is done, the job keeps running;
#   - a write, a burst of writes and a deletion (--delete) reach the dir: target within 2 s of
#     their acknowledgement (the latencies are logged), and the checkpoint is recorded;
#   - kill -9: the restarted server follows the log again from the checkpoint;
#   - pause ends the following (a write is not mirrored), resume starts it again (it is).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

out=$SHM/out
now_ms() { echo $(($(date +%s%N) / 1000000)); }
running() { [[ $(lsc m mirror show l --json | jq -r .running) == true ]]; }
# within LIMIT_MS of START_MS, CMD succeeds (polled every 20 ms): prints the delay
within() {
    local start=$1 limit=$2
    shift 2
    while ! "$@" 2>/dev/null; do
        (($(now_ms) - start <= limit)) || return 1
        sleep 0.02
    done
    echo $(($(now_ms) - start))
}
has() { [[ -f "$out$1" && "$(cat "$out$1")" == "$2" ]]; }
gone() { [[ ! -e "$out$1" ]]; }

start_server m
use_server m
assert_exit 1 lsc m mirror create bad --source "dir:$SHM/src" --target "dir:$SHM/x" --live
assert_contains "$ERR" "live takes a store: source"
assert_eq 0 "$(lsc m mirror ls --json | jq '.mirrors | length')" "jobs after a refusal"

for i in $(seq 1 30); do printf 'first %d' "$i" | lsc m put "/l/i$i" >/dev/null; done
printf 'outside' | lsc m put /other/x >/dev/null
assert_exit 0 lsc m mirror create l --source store:/l --target "dir:$out" --live --delete
assert_exit 0 lsc m mirror run l --wait
assert_contains "$OUT" "live"
has /l/i30 "first 30" || fail "the first pass did not mirror /l/i30"
running || fail "a --live job stopped after its first pass"

# one write
printf 'one' | lsc m put /l/new >/dev/null
t0=$(now_ms)
ms=$(within "$t0" 2000 has /l/new one) || fail "a write was not mirrored within 2 s"
log "a write mirrored in $ms ms"
# a burst
for i in $(seq 1 20); do
    printf '{"op":"put","path":"/l/burst/b%d","body":"burst %d"}\n' "$i" "$i"
done >"$T/burst.ndjson"
lsc m import "$T/burst.ndjson" >/dev/null
t0=$(now_ms)
ms=$(within "$t0" 2000 has /l/burst/b20 "burst 20") || fail "a burst was not mirrored within 2 s"
log "a burst of 20 mirrored in $ms ms"
for i in $(seq 1 20); do has "/l/burst/b$i" "burst $i" || fail "/l/burst/b$i is missing"; done
# a change and a deletion
printf 'changed' | lsc m put /l/i1 >/dev/null
lsc m rm /l/i2 >/dev/null
t0=$(now_ms)
ms=$(within "$t0" 2000 gone /l/i2) || fail "a deletion was not mirrored within 2 s"
log "a deletion mirrored in $ms ms"
has /l/i1 changed || fail "the change of /l/i1 is missing"
[[ ! -e "$out/other" ]] || fail "an item outside the prefix was mirrored"
seq_now=$(seq_of m)
cp_ok() {
    lsc m mirror history l --json | jq -e '.runs[0].state == "running" and .runs[0].items >= 52'
}
wait_until 5 cp_ok || fail "the live run's record: $(lsc m mirror history l --json | jq -c '.runs[0]')"

# kill -9: the restarted server follows from the checkpoint
kill9_server m
start_server m
wait_until 30 running || fail "the live job did not follow the log after a restart"
printf 'after the crash' | lsc m put /l/crash >/dev/null
t0=$(now_ms)
ms=$(within "$t0" 5000 has /l/crash "after the crash") ||
    fail "a write after the restart was not mirrored"
log "a write after the restart mirrored in $ms ms"
assert_eq interrupted "$(lsc m mirror history l --json | jq -r '.runs[1].note')" "the killed run"
((seq_now > 0)) || fail "no seq"

# pause and resume
assert_exit 0 lsc m mirror pause l
idle() { ! running; }
wait_until 10 idle || fail "pause did not end the live run"
assert_eq ok "$(lsc m mirror history l --json | jq -r '.runs[0].state')" "a paused live run's end"
printf 'while paused' | lsc m put /l/paused >/dev/null
sleep 1.5
gone /l/paused || fail "a write was mirrored while the job was paused"
assert_exit 0 lsc m mirror resume l
t0=$(now_ms)
ms=$(within "$t0" 5000 has /l/paused "while paused") || fail "resume did not follow the log again"
running || fail "the resumed job does not follow the log"
printf 'resumed' | lsc m put /l/resumed >/dev/null
t0=$(now_ms)
ms=$(within "$t0" 2000 has /l/resumed resumed) || fail "a write after resume was not mirrored"
diff <(cd "$out/l" && find . -type f | sort) <(lsc m ls /l --json | jq -r .path |
    sed 's|^/l/|./|' | sort) >"$T/diff" || fail "the target differs from the store: $(head "$T/diff")"

stop_server m
log "ok"
