#!/usr/bin/env bash
# Mirroring jobs (docs/mirror.md), with real trees in /dev/shm:
#   - bad input (unknown scheme, relative path, duplicate name, unknown job) is refused and
#     changes nothing;
#   - store -> dir: a full mirror equals `lockstep get` of every item; a re-run with no change
#     sends nothing; a change and a deletion (--delete) send exactly those; --published-only;
#   - dir -> dir: a full mirror is `diff -r` equal, with modes, mtimes and symlinks; a no-change
#     re-run sends nothing; 1% changed sends only those; a deletion; a FIFO (unreadable, even for
#     root) makes the run partial and is named in the history;
#   - two targets, one under a file: the run is partial, that target failed, the other ok;
#   - kill -9 of the server mid-run (small packages, slowed down) with a store and a directory
#     job running: the restarted server runs each again from its checkpoints (its index); the
#     result equals an uninterrupted run (the source), no temporary file is left, and the two
#     runs together sent every item exactly once;
#   - pause and resume, --every.
set -euo pipefail
CLI_LEAK_CHECK=1 # every CLI command it runs is leak-checked too (lib.sh)
source "$(dirname "$0")/lib.sh"

# the field of the newest run (or run N back) of a job: run_field NAME FIELD [INDEX]
run_field() { lsc m mirror history "$1" --json | jq -r ".runs[${3:-0}].$2"; }
job_idle() { [[ $(lsc m mirror show "$1" --json | jq -r .running) == false ]]; }
# file, mode, mtime and symlink target of everything but directories, sorted
tree_attrs() { (cd "$1" && find . -not -type d -printf '%P %m %T@ %l\n' | sort); }

start_server m
use_server m

# ---------------------------------------------------------------- bad input
assert_exit 1 lsc m mirror create bad --source ftp://x/y --target "dir:$SHM/x"
assert_contains "$ERR" "unknown scheme"
assert_exit 1 lsc m mirror create bad --source store:/s --target dir:relative/x
assert_contains "$ERR" "absolute"
assert_exit 1 lsc m mirror create bad --source store:/s --target lockstep://h:1/export/p
assert_contains "$ERR" "read-only"
assert_exit 1 lsc m mirror create bad --source "dir:$SHM/a" --target "dir:$SHM/a/b"
assert_contains "$ERR" "overlaps"
assert_exit 1 lsc m mirror create bad --source store:/s --target "dir:$(cd "$DATA_m" && pwd)/blobs"
assert_contains "$ERR" "data directory"
assert_exit 3 lsc m mirror show nope
assert_exit 3 lsc m mirror run nope
assert_exit 0 lsc m mirror ls --json
assert_eq 0 "$(jq '.mirrors | length' <<<"$OUT")" "jobs after bad input"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$(url_of m)/v1/mirrors" -d '{"name":"x"}')
assert_eq 400 "$code" "a job without a source"
code=$(curl -s -o /dev/null -w '%{http_code}' "$(url_of m)/v1/mirrors/nope")
assert_eq 404 "$code" "an unknown job"

# ---------------------------------------------------------------- store -> dir
for i in $(seq 1 40); do
    printf '{"op":"put","path":"/s/d%d/item%d","body":"body of %d","status":"published"}\n' \
        $((i % 4)) "$i" "$i"
done >"$T/ops.ndjson"
echo '{"op":"put","path":"/s/draft","body":"not published"}' >>"$T/ops.ndjson"
echo '{"op":"put","path":"/other/x","body":"outside the prefix"}' >>"$T/ops.ndjson"
lsc m import "$T/ops.ndjson" >/dev/null
head -c 300000 /dev/urandom >"$T/big"
lsc m put /s/big "$T/big" --publish >/dev/null

assert_exit 0 lsc m mirror create s --source store:/s --target "dir:$SHM/s_out" --delete
assert_exit 1 lsc m mirror create s --source store:/s --target "dir:$SHM/elsewhere"
assert_contains "$ERR" "exists already"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$(url_of m)/v1/mirrors" \
    -d "{\"name\":\"s\",\"source\":\"store:/s\",\"targets\":[\"dir:$SHM/e\"]}")
assert_eq 409 "$code" "a duplicate name"
assert_exit 0 lsc m mirror run s --wait
assert_contains "$OUT" "ok, 42 items"
assert_exit 0 lsc m mirror ls --json
assert_eq 1 "$(jq '.mirrors | length' <<<"$OUT")" "jobs (the duplicate changed nothing)"
for p in /s/d1/item1 /s/d0/item40 /s/draft /s/big; do
    lsc m get "$p" -o "$T/got"
    assert_same_file "$T/got" "$SHM/s_out$p"
done
assert_eq 42 "$(find "$SHM/s_out" -type f | wc -l)" "files mirrored"
[[ ! -e "$SHM/s_out/other" ]] || fail "an item outside the prefix was mirrored"

assert_exit 0 lsc m mirror run s --wait
assert_eq 0 "$(run_field s items)" "items of a no-change re-run (store)"
assert_eq ok "$(run_field s state)" "state of the no-change run"

printf 'first change' | lsc m put /s/d1/item5 >/dev/null
printf 'changed' | lsc m put /s/d1/item5 >/dev/null # two changes of one item: sent once
lsc m rm /s/d2/item6 >/dev/null
assert_exit 0 lsc m mirror run s --wait
assert_eq 2 "$(run_field s items)" "items after one change and one deletion"
assert_eq changed "$(cat "$SHM/s_out/s/d1/item5")" "the changed item"
[[ ! -e "$SHM/s_out/s/d2/item6" ]] || fail "the deleted item is still in the target"

assert_exit 0 lsc m mirror create pub --source store:/s --target "dir:$SHM/pub_out" --published-only
assert_exit 0 lsc m mirror run pub --wait
[[ ! -e "$SHM/pub_out/s/draft" ]] || fail "--published-only mirrored a draft"
assert_eq "body of 3" "$(cat "$SHM/pub_out/s/d3/item3")" "a published item"

# ---------------------------------------------------------------- dir -> dir
src=$SHM/src
for d in $(seq 1 10); do
    mkdir -p "$src/dir$d/sub"
    for f in $(seq 1 20); do printf 'file %d %d\n' "$d" "$f" >"$src/dir$d/sub/f$f"; done
done
head -c 500000 /dev/urandom >"$src/dir1/large"
chmod 600 "$src/dir2/sub/f1"
chmod 755 "$src/dir3/sub/f2"
touch -d '2021-02-03 04:05:06' "$src/dir4/sub/f3"
ln -s dir1/sub/f1 "$src/link"
ln -s /nonexistent/dangling "$src/dir5/dangling"
mkdir -p "$src/empty"
nfiles=$(find "$src" -not -type d | wc -l)

assert_exit 0 lsc m mirror create d --source "dir:$src" --target "dir:$SHM/dst" --delete \
    --package-items 25
assert_exit 0 lsc m mirror run d --wait
assert_eq "$nfiles" "$(run_field d items)" "items of the full dir mirror"
diff -r --no-dereference "$src" "$SHM/dst" >"$T/diff" || fail "dir mirror differs: $(head -5 "$T/diff")"
[[ "$(tree_attrs "$src")" == "$(tree_attrs "$SHM/dst")" ]] ||
    fail "modes, mtimes or symlinks differ: $(diff <(tree_attrs "$src") <(tree_attrs "$SHM/dst") | head -5)"
[[ -L "$SHM/dst/link" && -d "$SHM/dst/empty" ]] || fail "a symlink or an empty dir is missing"

assert_exit 0 lsc m mirror run d --wait
assert_eq 0 "$(run_field d items)" "items of a no-change re-run (dir)"
assert_eq 0 "$(run_field d bytes)" "bytes of a no-change re-run (dir)"

sleep 0.01
printf 'changed\n' >"$src/dir6/sub/f7"
printf 'changed too\n' >"$src/dir7/sub/f8"
rm "$src/dir8/sub/f9"
assert_exit 0 lsc m mirror run d --wait
assert_eq 3 "$(run_field d items)" "items after 1% changed and a deletion"
diff -r --no-dereference "$src" "$SHM/dst" >"$T/diff" || fail "dir mirror differs after changes: $(head -5 "$T/diff")"

# an unreadable thing: a FIFO (root reads any file; nobody reads a FIFO through a mirror)
mkfifo "$src/dir9/pipe"
if [[ $(id -u) != 0 ]]; then
    printf 'secret' >"$src/dir9/locked"
    chmod 000 "$src/dir9/locked"
fi
assert_exit 1 lsc m mirror run d --wait
assert_eq partial "$(run_field d state)" "a run with an unreadable file"
lsc m mirror history d --json >"$T/hist"
assert_contains "$(jq -r '.runs[0].failed_items[].path' "$T/hist")" "/dir9/pipe"
[[ $(id -u) == 0 ]] || assert_contains "$(jq -r '.runs[0].failed_items[].path' "$T/hist")" "/dir9/locked"
# --max-errors 0: the first failed item ends the run, failed
assert_exit 0 lsc m mirror create strict --source "dir:$src" --target "dir:$SHM/strict" --max-errors 0
assert_exit 1 lsc m mirror run strict --wait
assert_eq failed "$(run_field strict state)" "a run past --max-errors"
assert_contains "$(run_field strict note)" "more than 0 errors"
rm -f "$src/dir9/pipe" "$src/dir9/locked"

# --include and --exclude: fnmatch patterns on the item path
assert_exit 0 lsc m mirror create sel --source "dir:$src" --target "dir:$SHM/sel" \
    --include '/dir1/*' --include '/dir2/*' --exclude '*/f1*'
assert_exit 0 lsc m mirror run sel --wait
got=$(cd "$SHM/sel" && find . -type f | sort | tr '\n' ' ')
want=$(cd "$src" && find ./dir1 ./dir2 -type f ! -name 'f1*' | sort | tr '\n' ' ')
assert_eq "$want" "$got" "files selected by --include and --exclude"
assert_eq 19 "$(echo "$got" | wc -w)" "selected file count"

# ---------------------------------------------------------------- two targets, one unwritable
printf 'a file' >"$SHM/afile"
assert_exit 0 lsc m mirror create two --source "dir:$src" --target "dir:$SHM/ok_out" \
    --target "dir:$SHM/afile/sub"
assert_exit 1 lsc m mirror run two --wait
assert_eq partial "$(run_field two state)" "two targets, one unwritable"
lsc m mirror history two --json >"$T/hist"
assert_eq ok "$(jq -r ".runs[0].targets[] | select(.target==\"dir:$SHM/ok_out\") | .state" "$T/hist")" "the writable target"
assert_eq failed "$(jq -r ".runs[0].targets[] | select(.target==\"dir:$SHM/afile/sub\") | .state" "$T/hist")" "the target under a file"
diff -r --no-dereference "$src" "$SHM/ok_out" >"$T/diff" || fail "the writable target differs: $(head -5 "$T/diff")"

assert_exit 0 lsc m mirror rm two
assert_exit 3 lsc m mirror show two

# ---------------------------------------------------------------- kill -9 mid-run
nk=600
for i in $(seq 1 $nk); do
    printf '{"op":"put","path":"/k/%03d/item%d","body":"kill test %d"}\n' $((i % 37)) "$i" "$i"
done >"$T/k.ndjson"
lsc m import "$T/k.ndjson" >/dev/null
ksrc=$SHM/ksrc # and a directory source beside it, resumed through its index
for d in $(seq 1 20); do
    mkdir -p "$ksrc/d$d"
    for f in $(seq 1 20); do printf 'dir kill test %d %d\n' "$d" "$f" >"$ksrc/d$d/f$f"; done
done
stop_server m
LOCKSTEP_MIRROR_PACKAGE_DELAY_MS=300 start_server m # slow enough for six readings under load
assert_exit 0 lsc m mirror create k --source store:/k --target "dir:$SHM/k_out" --package-items 20
assert_exit 0 lsc m mirror create kd --source "dir:$ksrc" --target "dir:$SHM/kd_out" \
    --package-items 20
assert_exit 0 lsc m mirror run k
assert_exit 0 lsc m mirror run kd
# read with curl: the CLI (an ASan build) takes a second on a loaded machine, and the runs must
# still be going when the server is killed
job_json() { curl -s "$(url_of m)/v1/mirrors/$1"; }
acked() { (($(job_json "$1" | jq '.progress.items_done // 0') >= $2)); }
# the percentage, read while the run goes on, never goes backwards
pcts=()
for _ in 1 2 3 4 5 6; do
    pcts+=("$(job_json k | jq '.progress.percent // 0')")
    sleep 0.15
done
[[ "$(printf '%s\n' "${pcts[@]}" | sort -g | tr '\n' ' ')" == "$(printf '%s\n' "${pcts[@]}" | tr '\n' ' ')" ]] ||
    fail "the percentage went backwards: ${pcts[*]}"
[[ "${pcts[0]}" != "${pcts[5]}" ]] || fail "the percentage did not move: ${pcts[*]}"
wait_until 60 acked k 200 || fail "the run did not get far enough"
wait_until 60 acked kd 100 || fail "the dir run did not get far enough"
kill9_server m
# what a write cut short leaves: a temporary name beside the file (the next run removes it)
mkdir -p "$SHM/kd_out/d1"
printf 'half a fi' >"$SHM/kd_out/d1/.lsmirror-0123456789ab"
start_server m # without the delay; it runs k and kd again from their checkpoints
wait_until 60 job_idle k || fail "the resumed run did not end"
wait_until 60 job_idle kd || fail "the resumed dir run did not end"
lsc m mirror history kd --json >"$T/hist"
assert_eq ok "$(jq -r '.runs[0].state' "$T/hist")" "the resumed dir run"
assert_eq interrupted "$(jq -r '.runs[1].note' "$T/hist")" "the interrupted dir run's note"
first=$(jq '.runs[1].items' "$T/hist")
((first >= 100 && first < 400)) || fail "the interrupted dir run acknowledged $first items"
assert_eq 400 "$((first + $(jq '.runs[0].items' "$T/hist")))" "items of both dir runs"
diff -r "$ksrc" "$SHM/kd_out" >"$T/diff" || fail "the resumed dir mirror differs: $(head -5 "$T/diff")"
lsc m mirror history k --json >"$T/hist"
assert_eq ok "$(jq -r '.runs[0].state' "$T/hist")" "the resumed run"
assert_eq failed "$(jq -r '.runs[1].state' "$T/hist")" "the interrupted run"
assert_eq interrupted "$(jq -r '.runs[1].note' "$T/hist")" "the interrupted run's note"
first=$(jq '.runs[1].items' "$T/hist")
second=$(jq '.runs[0].items' "$T/hist")
((first >= 200 && first < nk)) || fail "the interrupted run acknowledged $first items"
assert_eq "$nk" "$((first + second))" "items of both runs (nothing acknowledged was sent again)"
assert_exit 0 lsc m mirror create kref --source store:/k --target "dir:$SHM/k_ref"
assert_exit 0 lsc m mirror run kref --wait
diff -r --no-dereference "$SHM/k_ref" "$SHM/k_out" >"$T/diff" || fail "the resumed mirror differs: $(head -5 "$T/diff")"

# an incremental run longer than a page of the log (500): every item changed once
sed 's/kill test/changed again/' "$T/k.ndjson" >"$T/k2.ndjson"
lsc m import "$T/k2.ndjson" >/dev/null
assert_exit 0 lsc m mirror run k --wait
assert_eq "$nk" "$(run_field k items)" "items of an incremental run over $nk changes"
assert_exit 0 lsc m mirror run kref --wait
diff -r --no-dereference "$SHM/k_ref" "$SHM/k_out" >"$T/diff" || fail "the incremental mirror differs: $(head -5 "$T/diff")"
grep -q "changed again 77" "$SHM/k_out/k/003/item77" || fail "an item was not updated"

# pause: no run starts; resume: it does
assert_exit 0 lsc m mirror pause k
assert_exit 1 lsc m mirror run k
assert_contains "$ERR" "paused"
assert_exit 0 lsc m mirror resume k
assert_exit 0 lsc m mirror run k --wait

# --every: runs start by themselves, one at a time
assert_exit 0 lsc m mirror create ev --source store:/s --target "dir:$SHM/ev_out" --every 1s
two_runs() { (($(lsc m mirror history ev --json | jq '.runs | length') >= 2)); }
wait_until 20 two_runs || fail "--every 1s did not run the job twice"
assert_same_file "$SHM/s_out/s/big" "$SHM/ev_out/s/big"
assert_exit 0 lsc m mirror pause ev
wait_until 20 job_idle ev || fail "the scheduled run did not end"
assert_exit 0 lsc m mirror rm ev

stop_server m

# --mirror-root: directories outside every root are refused, and nothing is created
mkdir -p "$SHM/roots/in"
start_server mr --mirror-root "$SHM/roots"
assert_exit 1 lsc mr mirror create out --source store:/s --target "dir:$SHM/elsewhere"
assert_contains "$ERR" "outside every --mirror-root"
assert_exit 1 lsc mr mirror create out2 --source "dir:$SHM/src" --target "dir:$SHM/roots/in"
assert_contains "$ERR" "outside every --mirror-root"
assert_eq "$(lsc mr mirror ls --json | jq '.mirrors | length')" 0 "jobs after refusals"
assert_exit 0 lsc mr mirror create in --source store:/s --target "dir:$SHM/roots/in"
assert_eq "$(lsc mr mirror ls --json | jq -r '.mirrors[].name')" in "the job within the root"
stop_server mr
log "ok"
