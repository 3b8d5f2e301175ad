#!/usr/bin/env bash
# A store subtree on another server as a target (docs/mirror.md, target lockstep://HOST:PORT/PREFIX):
#   - store:/s -> lockstep://T/copy: every item is on T under /copy, published, equal to the
#     source's; the changes show on T's `content` channel; a re-run sends nothing; a change and a
#     deletion (--delete) send exactly those;
#   - a package is one transaction on T (its changes have consecutive seqs);
#   - T refuses one item (its path too long under the prefix): that item fails, the others are
#     applied; the run is partial and names it;
#   - no token, or a read token: the target fails (401, 403), nothing is written;
#   - a directory as the source;
#   - kill -9 of T mid-run: the run fails; after T's restart the next run sends the rest only,
#     and T then has every item;
#   - the other way, T's store as a source (lockstep://T/PREFIX -> dir): equal to T's items, a
#     re-run sends nothing, a change and a deletion on T send exactly those (read from T's log),
#     --published-only; kill -9 of T mid-pull and the rest pulled after its restart.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

run_field() { lsc m mirror history "$1" --json | jq -r ".runs[${2:-0}].$3"; }
job_idle() { [[ $(lsc m mirror show "$1" --json | jq -r .running) == false ]]; }
acked() { (($(lsc m mirror show "$1" --json | jq '.progress.items_done // 0') >= $2)); }

mkdir -p "$T/T"
assert_exit 0 "$LOCKSTEP" token create --data "$T/T" --role admin --name adm
ADMIN=$OUT
assert_exit 0 "$LOCKSTEP" token create --data "$T/T" --role write --name writer
printf '%s\n' "$OUT" >"$T/write.token"
assert_exit 0 "$LOCKSTEP" token create --data "$T/T" --role read --name reader
printf '%s\n' "$OUT" >"$T/read.token"
export LOCKSTEP_TOKEN=$ADMIN
start_server T
start_server m

for i in $(seq 1 30); do
    printf '{"op":"put","path":"/s/d%d/i%d","body":"item %d","kind":"page","meta":{"n":%d}}\n' $((i % 3)) "$i" "$i" "$i"
done >"$T/ops.ndjson"
lsc m import "$T/ops.ndjson" >/dev/null
head -c 200000 /dev/urandom >"$T/bin"
lsc m put /s/bin "$T/bin" >/dev/null
TGT="lockstep://127.0.0.1:$PORT_T/copy"

# refusals first: nothing may be written
assert_exit 0 lsc m mirror create noauth --source store:/s --target "$TGT"
assert_exit 1 lsc m mirror run noauth --wait
assert_contains "$(lsc m mirror history noauth --json | jq -r '.runs[0].targets[0].reason')" "401"
assert_exit 0 lsc m mirror create ro --source store:/s --target "$TGT" --token-file "$T/read.token"
assert_exit 1 lsc m mirror run ro --wait
assert_contains "$(lsc m mirror history ro --json | jq -r '.runs[0].targets[0].reason')" "403"
assert_eq 0 "$(lsc T ls /copy --json | wc -l)" "items written without the right token"
assert_exit 1 lsc m mirror create bad --source store:/s --target "lockstep://127.0.0.1:$PORT_T/export/x"
assert_contains "$ERR" "read-only"
assert_exit 1 lsc m mirror create bad --source store:/s --target "lockstep://127.0.0.1:$PORT_T/a//b"
assert_contains "$ERR" "prefix"

# ---------------------------------------------------------------- store -> remote store
seq0=$(seq_of T)
assert_exit 0 lsc m mirror create push --source store:/s --target "$TGT" --delete \
    --token-file "$T/write.token" --package-items 10
assert_exit 0 lsc m mirror run push --wait
assert_eq ok "$(run_field push 0 state)"
assert_eq 31 "$(run_field push 0 items)" "items pushed"
for p in /s/d1/i1 /s/d0/i30 /s/bin; do
    lsc m get "$p" -o "$T/a"
    lsc T get "/copy$p" -o "$T/b"
    assert_same_file "$T/a" "$T/b" "$p on the target"
done
lsc T stat /copy/s/d2/i5 --json >"$T/stat"
assert_eq page "$(jq -r .kind "$T/stat")" "the kind"
assert_eq 5 "$(jq -r .meta.n "$T/stat")" "the meta"
assert_eq 1 "$(jq -r .published_version "$T/stat")" "published"
assert_eq 31 "$(($(seq_of T) - seq0))" "changes on the target"
# a package of 10 is one transaction: the changes of each batch are consecutive and together
curl -s -H "Authorization: Bearer $ADMIN" "$(url_of T)/v1/notifications?channel=content&after=$seq0&limit=100" >"$T/notes"
assert_eq 31 "$(jq '.notifications | length' "$T/notes")" "content notifications"
assert_eq "/copy/s/d1/i1" "$(jq -r '[.notifications[].payload.path] | map(select(. == "/copy/s/d1/i1")) | .[0]' "$T/notes")"

assert_exit 0 lsc m mirror run push --wait
assert_eq 0 "$(run_field push 0 items)" "a no-change re-run"
printf 'changed' | lsc m put /s/d1/i4 >/dev/null
lsc m rm /s/d2/i2 >/dev/null
assert_exit 0 lsc m mirror run push --wait
assert_eq 2 "$(run_field push 0 items)" "a change and a deletion"
assert_eq changed "$(lsc T get /copy/s/d1/i4)"
assert_exit 3 lsc T get /copy/s/d2/i2

# one item refused by the target, the others applied
long="/s/$(printf 'x%.0s' $(seq 1 1019))"
printf 'long' | lsc m put "$long" >/dev/null
printf 'short' | lsc m put /s/short >/dev/null
assert_exit 1 lsc m mirror run push --wait
assert_eq partial "$(run_field push 0 state)"
assert_eq short "$(lsc T get /copy/s/short)" "the item beside the refused one"
lsc m mirror history push --json >"$T/hist"
assert_contains "$(jq -r '.runs[0].failed_items[0].path' "$T/hist")" "/s/xxx"
assert_contains "$(jq -r '.runs[0].failed_items[0].reason' "$T/hist")" "refused"
lsc m purge "$long" >/dev/null

# ---------------------------------------------------------------- dir -> remote store
mkdir -p "$SHM/src/a"
printf 'one' >"$SHM/src/a/one"
ln -s one "$SHM/src/a/link"
assert_exit 0 lsc m mirror create dpush --source "dir:$SHM/src" \
    --target "lockstep://127.0.0.1:$PORT_T/fromdir" --token-file "$T/write.token"
assert_exit 0 lsc m mirror run dpush --wait
assert_eq one "$(lsc T get /fromdir/a/one)"
assert_eq one "$(lsc T get /fromdir/a/link)" "a symlink, as its target's text"
assert_eq symlink "$(lsc T stat /fromdir/a/link --json | jq -r .kind)"
assert_exit 0 lsc m mirror run dpush --wait
assert_eq 0 "$(run_field dpush 0 items)" "a no-change re-run (directory source)"

# ---------------------------------------------------------------- kill -9 of the target's server
for i in $(seq 1 400); do
    printf '{"op":"put","path":"/k/%03d/i%d","body":"kill %d"}\n' $((i % 17)) "$i" "$i"
done >"$T/k.ndjson"
lsc m import "$T/k.ndjson" >/dev/null
stop_server m
LOCKSTEP_MIRROR_PACKAGE_DELAY_MS=100 start_server m
assert_exit 0 lsc m mirror create kpush --source store:/k --target "lockstep://127.0.0.1:$PORT_T/kc" \
    --token-file "$T/write.token" --package-items 20
assert_exit 0 lsc m mirror run kpush
wait_until 60 acked kpush 100 || fail "the run did not get far enough"
kill9_server T
wait_until 30 job_idle kpush || fail "the run did not end when its target went away"
assert_eq failed "$(run_field kpush 0 state)" "the run whose target was killed"
first=$(run_field kpush 0 items)
((first >= 100 && first < 400)) || fail "the cut run acknowledged $first items"
start_server T
assert_exit 0 lsc m mirror run kpush --wait
second=$(run_field kpush 0 items)
assert_eq 400 "$((first + second))" "items of both runs (target killed)"
assert_eq 400 "$(lsc T ls /kc --json | wc -l)" "items on the target"
for p in /k/000/i17 /k/016/i400 /k/005/i5; do
    assert_eq "$(lsc m get "$p")" "$(lsc T get "/kc$p")" "$p"
done

# ---------------------------------------------------------------- T's store as a source
stop_server m
start_server m
assert_exit 0 lsc m mirror create pull --source "lockstep://127.0.0.1:$PORT_T/copy" \
    --target "dir:$SHM/pulled" --delete --token-file "$T/read.token"
assert_exit 0 lsc m mirror run pull --wait
nT=$(lsc T ls /copy --json | wc -l)
assert_eq "$nT" "$(run_field pull 0 items)" "items pulled from T"
assert_eq "$nT" "$(find "$SHM/pulled" -type f | wc -l)" "files pulled"
for p in /copy/s/d1/i1 /copy/s/bin /copy/s/d1/i4; do
    lsc T get "$p" -o "$T/a"
    assert_same_file "$T/a" "$SHM/pulled$p" "$p pulled"
done
assert_exit 0 lsc m mirror run pull --wait
assert_eq 0 "$(run_field pull 0 items)" "a no-change re-pull"
printf 'changed on T' | lsc T put /copy/s/d0/i3 >/dev/null
lsc T rm /copy/s/d0/i6 >/dev/null
assert_exit 0 lsc m mirror run pull --wait
assert_eq 2 "$(run_field pull 0 items)" "a change and a deletion on T"
assert_eq "changed on T" "$(cat "$SHM/pulled/copy/s/d0/i3")"
[[ ! -e "$SHM/pulled/copy/s/d0/i6" ]] || fail "the deletion on T was not pulled"
printf 'draft' | lsc T put /copy/s/draft >/dev/null
assert_exit 0 lsc m mirror create pubonly --source "lockstep://127.0.0.1:$PORT_T/copy/s" \
    --target "dir:$SHM/pubonly" --published-only --token-file "$T/read.token"
assert_exit 0 lsc m mirror run pubonly --wait
[[ -f "$SHM/pubonly/copy/s/d1/i1" && ! -e "$SHM/pubonly/copy/s/draft" ]] || fail "--published-only"

stop_server m
LOCKSTEP_MIRROR_PACKAGE_DELAY_MS=100 start_server m
assert_exit 0 lsc m mirror create kpull --source "lockstep://127.0.0.1:$PORT_T/kc" \
    --target "dir:$SHM/kpulled" --token-file "$T/read.token" --package-items 20
assert_exit 0 lsc m mirror run kpull
wait_until 60 acked kpull 100 || fail "the pull did not get far enough"
kill9_server T
wait_until 30 job_idle kpull || fail "the pull did not end when its source went away"
assert_eq failed "$(run_field kpull 0 state)" "the pull whose source was killed"
first=$(run_field kpull 0 items)
((first >= 100 && first < 400)) || fail "the cut pull acknowledged $first items"
start_server T
assert_exit 0 lsc m mirror run kpull --wait
assert_eq 400 "$((first + $(run_field kpull 0 items)))" "items of both pulls (source killed)"
for p in /kc/k/000/i17 /kc/k/016/i400; do
    assert_eq "$(lsc T get "$p")" "$(cat "$SHM/kpulled$p")" "$p pulled"
done
assert_eq 400 "$(find "$SHM/kpulled" -type f | wc -l)" "files of the killed pull"
stop_server m
stop_server T
echo ok
