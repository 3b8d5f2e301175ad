#!/usr/bin/env bash
# liblockstep (include/lockstep.h) against a real server, through examples/watch.c
# (lockstep-example-watch, linked with liblockstep.so) and a small program built here against
# the installed library:
#  1. A named subscriber gets 200 notifications in order, across a kill -9 of itself (restarted:
#     no gap, repeats only of the one unacknowledged batch) and a 2 s stop of the server (the
#     same process reconnects by itself).
#  2. SIGTERM (lockstep_stop() from another thread) ends it at once, in a long poll and while
#     the server is away.
#  3. A callback that stops with lockstep_stop() keeps its notification acknowledged: the next
#     run starts right after it.
#  4. A consumer behind the retained notifications gets one reset first, then what is kept; once
#     acknowledged, the reset does not come again.
#  5. `cmake --install` gives a header, liblockstep.so.0, liblockstep.a and lockstep.pc from which
#     a program outside the tree builds (shared and static) and runs: publish, a callback's
#     non-zero return (acknowledged up to the one before), lockstep_stop() from a thread, errors.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

BIN=$(dirname "$LOCKSTEP_SERVE")
WATCH=$BIN/examples/lockstep-example-watch
[[ -x "$WATCH" ]] || fail "the example is not built ($WATCH)"

export LOCKSTEP_RETENTION_INTERVAL_MS=100 LOCKSTEP_RECKON_MS=100 # for 4: prune fast
start_server P

# the payloads printed (third field), one per line
payloads() { awk '{ print $3 }' "$@"; }
# file's payloads strictly increase (nothing repeated or reordered within one run)
increasing() { awk '$3 <= last { bad = 1 } { last = $3 } END { exit bad }' "$1"; }
seen() { cat "$@" 2>/dev/null | awk -v n="$N" '$3 == n { f = 1 } END { exit !f }'; }
position_of() { curl -sf "$URL_P/v1/consumers/$1" | jq .position; }

# publishes FROM..TO on channel jobs, ten per request
publish() {
    local b
    for ((b = $1; b <= $2; b += 10)); do
        seq "$b" $((b + 9 > $2 ? $2 : b + 9)) | lsc P notify jobs - >/dev/null || return 1
        sleep 0.05
    done
}

# ---------------------------------------------------------------- 1. kill -9, server stop
log "1: a named subscriber, killed with -9 and restarted"
"$WATCH" --server "$URL_P" --consumer w1 jobs >"$T/w.a" 2>"$T/watch.log" &
wpid=$!
bg_track $wpid
wait_until 10 curl -sf "$URL_P/v1/consumers/w1" || fail "the example did not subscribe: $(cat "$T/watch.log")"
publish 1 100 &
ppid=$!
bg_track $ppid
wait_until 20 lines_at_least "$T/w.a" 30 || fail "the example printed nothing: $(cat "$T/watch.log")"
kill -9 $wpid
wait $wpid 2>/dev/null || true
lines_at_least "$T/w.a" 100 && fail "the publisher was done before the kill: nothing tested"
"$WATCH" --server "$URL_P" --consumer w1 jobs >"$T/w.b" 2>>"$T/watch.log" &
wpid=$!
bg_track $wpid
bg_wait $ppid 60 || fail "publishing 1..100 failed"
N=100 wait_until 20 seen "$T/w.b" || fail "the restarted example did not reach 100: $(tail -2 "$T/w.b")"

log "1: the server stopped for 2 s under the running subscriber"
stop_server P
sleep 2
restart_server P
publish 101 200
N=200 wait_until 30 seen "$T/w.b" || fail "the example did not reach 200: $(tail -2 "$T/w.b"; cat "$T/watch.log")"
_alive $wpid || fail "the example exited: $(cat "$T/watch.log")"
assert_contains "$(cat "$T/watch.log")" "connected again" "the example's log"

for f in "$T/w.a" "$T/w.b"; do increasing "$f" || fail "$(basename "$f"): out of order or repeated"; done
payloads "$T/w.a" "$T/w.b" >"$T/w.all"
# every payload 1..200, in order, once the repeats of the unacknowledged batch are dropped
assert_eq "$(awk '$1 > max { print; max = $1 }' "$T/w.all" | tr '\n' ' ')" "$(seq -s ' ' 1 200) " \
    "the subscriber's lines across kill -9 and the server's stop"
dups=$(($(wc -l <"$T/w.all") - 200))
((dups <= 100)) || fail "$dups lines printed twice (more than one batch of 100)"
# the repeats are only those after the last acknowledgement before the kill
first_b=$(head -1 "$T/w.b" | awk '{ print $3 }')
last_a=$(tail -1 "$T/w.a" | awk '{ print $3 }')
((first_b <= last_a + 1)) || fail "a gap across the kill: ${last_a} then ${first_b}"
assert_eq "$(awk '{ print $3 }' "$T/w.b" | tail -1)" 200 "the last line"
assert_eq "$(position_of w1)" "$(tail -1 "$T/w.b" | awk '{ print $1 }')" "w1's acknowledged position"
log "200 notifications across kill -9 and a server stop; $dups printed again"

# ---------------------------------------------------------------- 2. SIGTERM
log "2: SIGTERM in a long poll"
kill -TERM $wpid
bg_wait $wpid 10 || fail "the example exited $? after SIGTERM"
"$WATCH" --server "$URL_P" quiet >"$T/watch-quiet.out" 2>"$T/watch-quiet.log" &
qpid=$!
bg_track $qpid
# 1 s into its long poll: without lockstep_stop()'s wakeup, nothing would end that wait before
# curl's next timer (its 5 s connect timeout)
sleep 1
t0=$(date +%s%N)
kill -TERM $qpid
bg_wait $qpid 10 || fail "the example exited $? after SIGTERM"
ms=$((($(date +%s%N) - t0) / 1000000))
((ms < 2000)) || fail "the example took $ms ms to stop"

log "2: SIGTERM while the server is away"
dead=$(free_port)
"$WATCH" --server "http://127.0.0.1:$dead" --consumer w9 >"$T/d.out" 2>"$T/watch-away.log" &
dpid=$!
bg_track $dpid
_away() { grep -q 'trying again' "$T/watch-away.log"; }
wait_until 10 _away || fail "no word of the server being away: $(cat "$T/watch-away.log")"
sleep 1 # into the pauses between tries
t0=$(date +%s%N)
kill -TERM $dpid
bg_wait $dpid 5 || fail "the example exited $? after SIGTERM"
ms=$((($(date +%s%N) - t0) / 1000000))
((ms < 2000)) || fail "the example took $ms ms to stop while the server was away"

# ---------------------------------------------------------------- 3. stop from the callback
log "3: --count stops from the callback, its last line acknowledged"
assert_exit 0 timeout 20 "$WATCH" --server "$URL_P" --consumer c2 --from-start --count 25 jobs
assert_eq "$(awk '{ print $3 }' "$T/out" | tr '\n' ' ')" "$(seq -s ' ' 1 25) " "c2's first run"
assert_eq "$(position_of c2)" "$(tail -1 "$T/out" | awk '{ print $1 }')" "c2's position"
assert_exit 0 timeout 20 "$WATCH" --server "$URL_P" --consumer c2 --count 5 jobs
assert_eq "$(awk '{ print $3 }' "$T/out" | tr '\n' ' ')" "26 27 28 29 30 " "c2's second run"

# ---------------------------------------------------------------- 4. reset
log "4: a consumer behind the retained notifications"
start_server Q --notify-retention 2s
curl -sf "$URL_Q/v1/notifications?consumer=old&channel=r" >/dev/null # created at the head
printf '1\n2\n3\n' | lsc Q notify r - >/dev/null
_pruned() { grep -q "notification retention removed" "$T/Q.log"; }
wait_until 15 _pruned || fail "notification retention did not run on Q"
printf '4\n5\n' | lsc Q notify r - >/dev/null
assert_exit 0 timeout 20 "$WATCH" --server "$URL_Q" --consumer old --count 3 r
assert_eq "$(sed -n 1p "$T/out" | cut -c1-6)" "RESET " "the first line"
assert_eq "$(sed -n 1p "$T/out" | cut -c7- | jq -r .type)" reset "the reset's JSON"
assert_eq "$(sed -n '2,$p' "$T/out" | awk '{ print $3 }' | tr '\n' ' ')" "4 5 " "after the reset"
lsc Q notify r 6 >/dev/null
assert_exit 0 timeout 20 "$WATCH" --server "$URL_Q" --consumer old --count 1 r
assert_eq "$(awk '{ print $3 }' "$T/out")" 6 "the next run: no reset again"
assert_eq "$(curl -sf "$URL_Q/v1/consumers/old" | jq .resets)" 1 "old's resets"

# ---------------------------------------------------------------- 5. installed, outside the tree
log "5: a program built against the installed library"
build_dir=${LS_TOOLS:-}
[[ -f "$build_dir/cmake_install.cmake" ]] || build_dir=$BIN/release
[[ -f "$build_dir/cmake_install.cmake" ]] || fail "no CMake build dir to install from; set LS_TOOLS"
cmake --install "$build_dir" --prefix "$T/prefix" >"$T/install.log" || fail "cmake --install: $(cat "$T/install.log")"
pcdir=$(dirname "$(find "$T/prefix" -name lockstep.pc | head -1)")
libdir=$(dirname "$pcdir")
[[ -f "$T/prefix/include/lockstep.h" && -f "$libdir/liblockstep.a" ]] || fail "not installed: $(find "$T/prefix")"
[[ -L "$libdir/liblockstep.so" && -f "$libdir/liblockstep.so.0" ]] || fail "no liblockstep.so.0 in $libdir"
assert_eq "$(nm -D --defined-only "$libdir/liblockstep.so" | awk '{ print $3 }' | grep -v '^lockstep_' || true)" "" \
    "symbols of liblockstep.so outside lockstep_"
san=""
# a sanitizer build's library needs the same runtime in the program
nm -D "$libdir/liblockstep.so" | grep -q __asan_init && san="-fsanitize=address,undefined"
nm -D "$libdir/liblockstep.so" | grep -q __tsan_init && san="-fsanitize=thread"

mkdir -p "$T/app"
cat >"$T/app/app.c" <<'EOF'
/* Uses only the installed <lockstep.h>: publish, subscribe, stop, errors. */
#define _POSIX_C_SOURCE 200809L
#include <lockstep.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static int64_t ids[3];

static int
stop_at_third(const lockstep_notification *n, void *arg)
{
    int *k = arg;
    if (n->is_reset) return 9;
    if (n->id < ids[0]) return 0; /* an earlier run's */
    if (n->time_ms < (int64_t)time(NULL) * 1000 - 60000 || n->time_ms > (int64_t)time(NULL) * 1000 + 60000)
        return 10;
    if (n->id != ids[*k] || strcmp(n->channel, "tiny") != 0) return 8;
    printf("got %lld %s %s\n", (long long)n->id, n->channel, n->payload_json);
    return ++*k == 3 ? 7 : 0; /* the third: stop, not acknowledged */
}

static int
never(const lockstep_notification *n, void *arg)
{
    (void)n, (void)arg;
    return 5;
}

static void *
stopper(void *c)
{
    struct timespec pause = {0, 300000000};
    nanosleep(&pause, NULL);
    lockstep_stop(c);
    return NULL;
}

int
main(int argc, char **argv)
{
    char err[200], payload[32];
    const char *tiny[] = {"tiny"}, *quiet[] = {"quiet"};
    lockstep_client *c;
    pthread_t t;
    struct timespec a, b;
    int k = 0, rc;
    if (argc != 3) return 2;
    if (strcmp(lockstep_version(), LOCKSTEP_VERSION) != 0) return 3;
    if (lockstep_open("ftp://x", NULL, err, sizeof err) || !*err) return 4;
    if (!(c = lockstep_open(argv[1], NULL, err, sizeof err))) return 5;
    for (int i = 0; i < 3; i++) {
        snprintf(payload, sizeof payload, "{\"n\": %d}", i);
        if ((rc = lockstep_notify(c, "tiny", payload, &ids[i])) != 0) {
            printf("notify: %d %s\n", rc, lockstep_errmsg(c));
            return 6;
        }
    }
    printf("ids %s\n", ids[0] < ids[1] && ids[1] < ids[2] ? "increase" : "do not increase");
    printf("bad payload %d\n", lockstep_notify(c, "tiny", "{nope", NULL));
    rc = lockstep_notify(c, "a b", "1", NULL);
    printf("bad channel %d %s\n", rc, strstr(lockstep_errmsg(c), "channel") ? "named" : lockstep_errmsg(c));
    rc = lockstep_subscribe(c, argv[2], tiny, 1, LOCKSTEP_FROM_START, stop_at_third, &k);
    printf("callback stop %d after %d\n", rc, k);
    printf("expect position %lld\n", (long long)ids[1]);

    clock_gettime(CLOCK_MONOTONIC, &a);
    pthread_create(&t, NULL, stopper, c);
    rc = lockstep_subscribe(c, NULL, quiet, 1, 0, never, NULL);
    pthread_join(t, NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("stopped %d in %s\n", rc, b.tv_sec - a.tv_sec < 2 ? "time" : "too long");
    rc = lockstep_subscribe(c, "bad name", NULL, 0, 0, never, NULL);
    printf("bad consumer %d\n", rc);
    lockstep_close(c);
    return 0;
}
EOF
export PKG_CONFIG_PATH=$pcdir
# shellcheck disable=SC2046,SC2086
cc -std=c99 -Wall -Wextra -pedantic -Werror $san -o "$T/app/app-shared" "$T/app/app.c" \
    $(pkg-config --cflags --libs lockstep) -pthread 2>"$T/cc.err" || fail "cc (shared): $(cat "$T/cc.err")"
# shellcheck disable=SC2046,SC2086
cc -std=c99 -Wall -Wextra -pedantic -Werror $san -o "$T/app/app-static" "$T/app/app.c" \
    $(pkg-config --cflags lockstep) "$libdir/liblockstep.a" $(pkg-config --libs libcurl jansson) \
    -pthread 2>"$T/cc.err" || fail "cc (static): $(cat "$T/cc.err")"
assert_contains "$(readelf -d "$T/app/app-shared")" "[liblockstep.so.0]" "app-shared's NEEDED"
assert_not_contains "$(readelf -d "$T/app/app-static")" "liblockstep" "app-static's NEEDED"

for kind in shared static; do
    assert_exit 0 env LD_LIBRARY_PATH="$libdir" "$T/app/app-$kind" "$URL_P" "tiny-$kind"
    assert_contains "$OUT" "ids increase" "$kind: notify"
    assert_contains "$OUT" "bad payload -1" "$kind: a payload that is not JSON (LOCKSTEP_EINVAL)"
    assert_contains "$OUT" "bad channel -4 named" "$kind: a bad channel (LOCKSTEP_EREFUSED)"
    assert_contains "$OUT" "callback stop 7 after 3" "$kind: the callback's value"
    assert_eq 3 "$(grep -c '^got ' <<<"$OUT")" "$kind: notifications to the callback"
    assert_contains "$OUT" "stopped 0 in time" "$kind: lockstep_stop from another thread"
    assert_contains "$OUT" "bad consumer -4" "$kind: a bad consumer name"
    want=$(sed -n 's/^expect position //p' <<<"$OUT")
    # the third was refused by the callback: acknowledged up to the second
    assert_eq "$want" "$(position_of "tiny-$kind")" "$kind: the consumer's position"
done
