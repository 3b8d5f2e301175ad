#!/usr/bin/env bash
# A directory source is walked in path order, and each target's index is read beside the walk
# in the same order (docs/mirror.md, "Directory sources"): a row the walk passes over is a file
# the source no longer has. With names whose byte order differs from a directory's own order
# ("a" a directory, "a-b" and "a.c" files: "/a-b" < "/a.c" < "/a/x"), non-ASCII and spaced
# names, and packages of 2 items (a package is recorded while the index is being read):
#   - a full mirror is `diff -r` equal; a re-run sends nothing;
#   - additions, changes and deletions interleaved in path order (and a file that became a
#     directory) send exactly those, the target equals the source, and a re-run sends nothing
#     (no row a package wrote was taken for a file the source no longer has);
#   - without --delete, nothing is removed, and the rest is still sent;
#   - the same tree pulled from an export (lockstep://.../export/NAME, whose listing is in the
#     same order) gives the same: equal, nothing on a re-run, exactly the changes.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

run_field() { lsc m mirror history "$1" --json | jq -r ".runs[${3:-0}].$2"; }

src=$SHM/src
mkdir -p "$src/a/b" "$src/a-dir" "$src/z z" "$src/é"
for n in a-b a.c a0 a_ B 'sp ace' 'é1' f ~tilde; do printf '%s\n' "$n" >"$src/$n"; done
for n in x y a-b a.c b0; do printf 'in a %s\n' "$n" >"$src/a/$n"; done
for n in 1 2 3; do printf 'deep %s\n' "$n" >"$src/a/b/$n"; done
for n in one two; do printf '%s\n' "$n" >"$src/a-dir/$n"; done
for n in p q; do printf '%s\n' "$n" >"$src/z z/$n"; done
printf 'accent\n' >"$src/é/e"
nfiles=$(find "$src" -not -type d | wc -l)
start_server m --export "src=$src"
use_server m
ex_src="lockstep://$(url_of m | sed 's|^http://||')/export/src"

assert_exit 0 lsc m mirror create o --source "dir:$src" --target "dir:$SHM/dst" --delete \
    --package-items 2
assert_exit 0 lsc m mirror create keep --source "dir:$src" --target "dir:$SHM/keep" \
    --package-items 2
assert_exit 0 lsc m mirror create ex --source "$ex_src" --target "dir:$SHM/ex" --delete \
    --package-items 2
for j in o keep ex; do
    assert_exit 0 lsc m mirror run "$j" --wait
    assert_eq "$nfiles" "$(run_field "$j" items)" "items of the full mirror ($j)"
    assert_exit 0 lsc m mirror run "$j" --wait
    assert_eq 0 "$(run_field "$j" items)" "items of a no-change re-run ($j)"
done
diff -r --no-dereference "$src" "$SHM/dst" >"$T/diff" || fail "the mirror differs: $(head -5 "$T/diff")"
diff -r --no-dereference "$src" "$SHM/ex" >"$T/diff" || fail "the pull differs: $(head -5 "$T/diff")"

# interleaved in path order: gone, new, changed, gone, new... and /f, a file, is a directory now
sleep 0.01
rm "$src/a-b" "$src/a/x" "$src/a/b/2" "$src/a-dir/one" "$src/~tilde" "$src/z z/q"
printf 'new\n' >"$src/a-a"      # before the removed /a-b
printf 'new\n' >"$src/a/b/2x"   # right after the removed /a/b/2
printf 'new\n' >"$src/a/w"      # before the removed /a/x
printf 'new\n' >"$src/a-dir/o"  # before the removed /a-dir/one
printf 'new\n' >"$src/zz"       # after the removed /z z/q, the last path
printf 'changed\n' >"$src/a.c"
printf 'changed\n' >"$src/a/b0"
rm "$src/f"
mkdir "$src/f"
printf 'now a dir\n' >"$src/f/in"
# 6 removed + 5 new + 2 changed + /f removed + /f/in new
assert_exit 0 lsc m mirror run o --wait
assert_eq ok "$(run_field o state)" "the run after changes"
assert_eq 15 "$(run_field o items)" "items after interleaved changes"
diff -r --no-dereference "$src" "$SHM/dst" >"$T/diff" ||
    fail "the mirror differs after changes: $(head -5 "$T/diff")"
assert_exit 0 lsc m mirror run o --wait
assert_eq 0 "$(run_field o items)" "items of a re-run after changes"
diff -r --no-dereference "$src" "$SHM/dst" >"$T/diff" ||
    fail "the mirror differs after a re-run: $(head -5 "$T/diff")"

# the same from the export
assert_exit 0 lsc m mirror run ex --wait
assert_eq ok "$(run_field ex state)" "the pull after changes"
assert_eq 15 "$(run_field ex items)" "items pulled after interleaved changes"
diff -r --no-dereference "$src" "$SHM/ex" >"$T/diff" ||
    fail "the pull differs after changes: $(head -5 "$T/diff")"
assert_exit 0 lsc m mirror run ex --wait
assert_eq 0 "$(run_field ex items)" "items of a re-pull after changes"

# without --delete: the new and changed files only (the old /f stays: /f/in cannot be written)
assert_exit 1 lsc m mirror run keep --wait
assert_eq partial "$(run_field keep state)" "a file in the way of a new directory"
assert_eq 8 "$(run_field keep items)" "items without --delete (/f/in failed)"
for gone in a-b a/x a/b/2 a-dir/one '~tilde' 'z z/q'; do
    [[ -f "$SHM/keep/$gone" ]] || fail "/$gone was removed without --delete"
done
for new in a-a a/b/2x a/w a-dir/o zz; do
    cmp -s "$src/$new" "$SHM/keep/$new" || fail "/$new was not sent without --delete"
done
cmp -s "$src/a.c" "$SHM/keep/a.c" || fail "/a.c was not changed without --delete"
log "ok"
