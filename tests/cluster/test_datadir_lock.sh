#!/usr/bin/env bash
# One server per data directory: a second `serve` on the same --data (other ports) exits
# non-zero at once with one line naming the first server's pid, and changes nothing in the
# directory; the first goes on accepting writes; `token create --data` still works beside it.
# After a kill -9 of the first (its lock file stays behind), the second starts and has every
# acknowledged write.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

start_server a
for i in 1 2 3; do
    printf 'before %d' "$i" >"$T/body"
    assert_exit 0 "$LOCKSTEP" put "/before/$i" "$T/body"
done

# state FILE: every file of the data directory with its size and content hash
state() {
    (cd "$DATA_a" && find . -type f -printf '%p %s\n' | sort && find . -type f -exec md5sum {} + |
        sort -k2) >"$1"
}
state "$T/state.before"

P2=$(free_port)
L2=$(free_port)
ASAN_OPTIONS="$ASAN_OPTIONS:$SERVER_LEAKS" "$LOCKSTEP_SERVE" serve --data "$DATA_a" --http "127.0.0.1:$P2" --listen "127.0.0.1:$L2" --name b \
    >"$T/b.out" 2>"$T/b.err" &
B=$!
bg_track "$B"
rc=0
bg_wait "$B" 10 || rc=$?
assert_ne 0 "$rc" "exit status of a second serve on the same --data"
assert_contains "$(cat "$T/b.err")" "in use by pid $PID_a" "the second server's refusal"
assert_eq 1 "$(wc -l <"$T/b.err")" "lines on the second server's stderr: $(cat "$T/b.err")"
state "$T/state.after"
assert_same_file "$T/state.before" "$T/state.after" "the data directory after the refusal"

# offline token creation still works while the server runs (it picks the token up)
assert_exit 0 "$LOCKSTEP" token create --data "$DATA_a" --role admin --name beside
export LOCKSTEP_TOKEN=$OUT

# the first still accepts writes
for i in 1 2 3; do
    printf 'after %d' "$i" >"$T/body"
    wait_until 10 "$LOCKSTEP" put "/after/$i" "$T/body" || fail "put /after/$i to the first server"
done
assert_eq 6 "$(seq_of a)" "the first server's seq"

# a kill -9 leaves the lock file behind; the kernel dropped the lock: the second now starts
kill9_server a
[[ -f "$DATA_a/lock" ]] || fail "the lock file should still be there after a kill -9"
start_server_args b "$P2" --data "$DATA_a" --http "127.0.0.1:$P2" --listen "127.0.0.1:$L2" \
    --name b || fail "the second server did not start after the first was killed: $(tail -n 3 "$T/b.log")"
assert_eq "$PID_b" "$(tr -d '\n' <"$DATA_a/lock")" "the pid in the lock file"
for w in before after; do
    for i in 1 2 3; do
        assert_exit 0 "$LOCKSTEP" get "/$w/$i"
        assert_eq "$w $i" "$OUT" "/$w/$i on the second server"
    done
done
assert_eq 6 "$(seq_of b)" "the second server's seq"
stop_server b
log "ok"
