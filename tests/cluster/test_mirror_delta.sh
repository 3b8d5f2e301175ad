#!/usr/bin/env bash
# Mirroring sends a large changed file as a librsync delta (docs/mirror.md), trees in /dev/shm:
#   - dir -> dir: a 1-byte change in a 4 MiB file travels as a delta far smaller than the file,
#     the result is byte-identical (cmp), mode and mtime kept; a small changed file goes whole;
#   - a target copy that was corrupted, or truncated (still >= 64 KiB), or cut below 64 KiB, ends
#     identical to the source all the same;
#   - a no-change run sends nothing, and a new empty directory alone is still made;
#   - store -> dir: a large changed item whose copy exists travels as a delta too.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

run_field() { lsc m mirror history "$1" --json | jq -r ".runs[0].$2"; }
# a field of the newest run's first target: tfield JOB FIELD
tfield() { lsc m mirror history "$1" --json | jq -r ".runs[0].targets[0].$2"; }

start_server m
use_server m

src=$SHM/src out=$SHM/out
mkdir -p "$src/d"
head -c $((4 * 1024 * 1024)) /dev/urandom >"$src/d/big"
head -c $((1024 * 1024)) /dev/urandom >"$src/mid"
head -c 1000 /dev/urandom >"$src/small"
chmod 640 "$src/d/big"

assert_exit 0 lsc m mirror create d --source "dir:$src" --target "dir:$out"
assert_exit 0 lsc m mirror run d --wait
assert_eq 3 "$(run_field d items)" "items of the first run"
assert_eq 0 "$(tfield d delta_files)" "deltas of the first run (no copy yet)"
cmp "$src/d/big" "$out/d/big" || fail "big differs after the first run"

# one byte changed in the middle of the 4 MiB file
printf 'X' | dd of="$src/d/big" bs=1 seek=2000000 conv=notrunc status=none
printf 'y' | dd of="$src/small" bs=1 seek=10 conv=notrunc status=none
touch -d '2020-01-02 03:04:05' "$src/d/big"
assert_exit 0 lsc m mirror run d --wait
assert_eq 2 "$(run_field d items)" "items after a change"
assert_eq 1 "$(tfield d delta_files)" "files sent as deltas"
delta=$(tfield d delta_bytes)
log "a 1-byte change in 4 MiB: delta of $delta bytes"
((delta > 0 && delta < 64 * 1024)) || fail "the delta of a 1-byte change is $delta bytes"
assert_eq 1000 "$(tfield d whole_bytes)" "bytes sent whole (the small file)"
cmp "$src/d/big" "$out/d/big" || fail "big differs after the delta"
cmp "$src/small" "$out/small" || fail "small differs"
assert_eq "$(stat -c '%a %Y' "$src/d/big")" "$(stat -c '%a %Y' "$out/d/big")" "mode and mtime"
[[ -z $(find "$out" -name '.lsmirror-*') ]] || fail "a temporary file was left"

# the targets' copies damaged: corrupted in place, truncated, cut below the threshold
head -c 5000 /dev/urandom | dd of="$out/d/big" bs=1 seek=100000 conv=notrunc status=none
truncate -s 300000 "$out/mid"
printf 'Z' | dd of="$src/d/big" bs=1 seek=3000000 conv=notrunc status=none
printf 'Z' | dd of="$src/mid" bs=1 seek=5 conv=notrunc status=none
assert_exit 0 lsc m mirror run d --wait
assert_eq ok "$(run_field d state)" "state with damaged copies"
assert_eq 2 "$(tfield d delta_files)" "deltas against damaged copies"
cmp "$src/d/big" "$out/d/big" || fail "big differs after a delta against a corrupted copy"
cmp "$src/mid" "$out/mid" || fail "mid differs after a delta against a truncated copy"
truncate -s 100 "$out/mid"
printf 'W' | dd of="$src/mid" bs=1 seek=5 conv=notrunc status=none
assert_exit 0 lsc m mirror run d --wait
assert_eq 0 "$(tfield d delta_files)" "deltas against a copy under 64 KiB"
cmp "$src/mid" "$out/mid" || fail "mid differs after a whole copy"

# a no-change run stops after its counting pass; a new empty directory is still work for it
assert_exit 0 lsc m mirror run d --wait
assert_eq 0 "$(run_field d items)" "items of a no-change run"
mkdir -m 750 "$src/empty"
assert_exit 0 lsc m mirror run d --wait
[[ -d "$out/empty" ]] || fail "a new empty directory was not made in the target"
assert_eq 750 "$(stat -c %a "$out/empty")" "the new directory's mode"

# store -> dir
head -c $((2 * 1024 * 1024)) /dev/urandom >"$T/blob"
lsc m put /s/blob "$T/blob" >/dev/null
assert_exit 0 lsc m mirror create s --source store:/s --target "dir:$SHM/s_out"
assert_exit 0 lsc m mirror run s --wait
printf 'Q' | dd of="$T/blob" bs=1 seek=1000000 conv=notrunc status=none
lsc m put /s/blob "$T/blob" >/dev/null
assert_exit 0 lsc m mirror run s --wait
assert_eq 1 "$(tfield s delta_files)" "store items sent as deltas"
delta=$(tfield s delta_bytes)
((delta > 0 && delta < 64 * 1024)) || fail "the delta of a 1-byte change (store) is $delta bytes"
cmp "$T/blob" "$SHM/s_out/s/blob" || fail "the store item differs after the delta"

stop_server m
log "ok"
