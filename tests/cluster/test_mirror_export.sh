#!/usr/bin/env bash
# A mirror server pulls a directory another server exports (docs/mirror.md, "Exports"):
#   - `serve --export files=DIR` behind tokens: no token gets 401, a token whose role may not
#     read (notify) gets 403, in the API and as a mirror run (failed, the reason in its note,
#     nothing written);
#   - path traversal is refused: '..', '.', empty parts, a symlink on the way, a symlink that
#     points outside (its content is never served; it is mirrored as a symlink);
#   - the listing pages in strcmp order of the paths, from any cursor;
#   - lockstep://HOST:PORT/export/files -> dir: equal to the source (modes, mtimes, symlinks, a
#     file larger than one piece, empty directories); a re-run sends nothing; a change and a
#     deletion (--delete) send exactly those;
#   - kill -9 of the exporting server mid-run: the run fails, the next one after its restart
#     sends the rest only; kill -9 of the mirror server mid-run: the restarted server resumes;
#     both times the two runs' items add up to the total and the result equals the source.
set -euo pipefail
CLI_LEAK_CHECK=1 # every CLI command it runs is leak-checked too (lib.sh)
source "$(dirname "$0")/lib.sh"

run_field() { lsc m mirror history "$1" --json | jq -r ".runs[${3:-0}].$2"; }
job_idle() { [[ $(lsc m mirror show "$1" --json | jq -r .running) == false ]]; }
tree_attrs() { (cd "$1" && find . -not -type d -printf '%P %m %T@ %l\n' | sort); }
acked() { (($(lsc m mirror show "$1" --json | jq '.progress.items_done // 0') >= $2)); }

src=$SHM/src
mkdir -p "$src/a/b" "$src/empty" "$src/a0" "$T/outside"
echo secret >"$T/outside/secret"
printf 'one' >"$src/a/one"
printf 'deep' >"$src/a/b/deep"
printf 'dot' >"$src/a.x"
printf 'zero' >"$src/a0/z"
chmod 0751 "$src/a/b"
printf 'exec' >"$src/a/run.sh"
chmod 0755 "$src/a/run.sh"
touch -d '2001-02-03 04:05:06' "$src/a/one"
ln -s one "$src/a/link"
ln -s "$T/outside/secret" "$src/escape"
ln -s "$T/outside" "$src/escdir"
head -c 9000000 /dev/urandom >"$src/big" # more than one 8 MiB piece
mkdir -p "$src/many"
for i in $(seq 1 620); do printf 'f%d' "$i" >"$src/many/f$i"; done

mkdir -p "$T/S"
assert_exit 0 "$LOCKSTEP" token create --data "$T/S" --role admin --name adm
export LOCKSTEP_TOKEN=$OUT
assert_exit 0 "$LOCKSTEP" token create --data "$T/S" --role read --name reader
printf '%s\n' "$OUT" >"$T/read.token"
READER=$OUT
assert_exit 0 "$LOCKSTEP" token create --data "$T/S" --role notify --name notifier
printf '%s\n' "$OUT" >"$T/notify.token"
NOTIFIER=$OUT
# an export holding the server's own data directory is refused at start
assert_exit 1 "$LOCKSTEP" serve --data "$T/S" --http 127.0.0.1:1 --export "all=$T"
assert_contains "$ERR" "data directory"
assert_exit 1 "$LOCKSTEP" serve --data "$T/S" --http 127.0.0.1:1 --export "rel=some/dir"
assert_contains "$ERR" "absolute"
DATA_ROOT=$T start_server S --export "files=$src"
start_server m
S=$(url_of S)

# ---------------------------------------------------------------- the API, and refusals
get() { curl -s -o "$T/body" -w '%{http_code}' -H "Authorization: Bearer ${2:-$READER}" "$S$1"; }
assert_eq 401 "$(curl -s -o /dev/null -w '%{http_code}' "$S/v1/exports/files/list")" "no token"
assert_eq 403 "$(get /v1/exports/files/list "$NOTIFIER")" "a notify token"
assert_eq 200 "$(get /v1/exports)" "the exports"
assert_eq '["files"]' "$(jq -c .exports "$T/body")" "the exports"
assert_eq 404 "$(get /v1/exports/nope/list)" "an unknown export"
assert_eq 200 "$(get '/v1/exports/files/file?path=/a/one')" "a file"
assert_eq one "$(cat "$T/body")" "a file's content"
for bad in '/../outside/secret' '/a/../../outside/secret' '/a/./one' '//a/one' 'a/one' '/..' \
    '/a/one/'; do
    assert_eq 400 "$(get "/v1/exports/files/file?path=$(jq -rn --arg p "$bad" '$p|@uri')")" \
        "path $bad"
done
assert_eq 400 "$(get '/v1/exports/files/list?after=/a/../..')" "a cursor with .."
assert_eq 404 "$(get '/v1/exports/files/file?path=/etc/passwd')" "an absolute path is the export's"
assert_eq 403 "$(get '/v1/exports/files/file?path=/escape')" "a symlink pointing outside"
assert_contains "$(cat "$T/body")" "symlink"
assert_eq 403 "$(get '/v1/exports/files/file?path=/escdir/secret')" "a symlinked directory"
assert_eq 400 "$(get '/v1/exports/files/file?path=/a')" "a directory"
assert_eq 200 "$(get '/v1/exports/files/file?path=/big&offset=8388608&length=100')" "a piece"
cmp -s "$T/body" <(tail -c +8388609 "$src/big" | head -c 100) || fail "the piece's bytes"

# the listing, 7 at a time: every file once, in strcmp order of the paths, nothing outside
cursor="" pages=0
: >"$T/listed"
while :; do
    assert_eq 200 "$(get "/v1/exports/files/list?limit=7&after=$(jq -rn --arg p "$cursor" '$p|@uri')")"
    jq -r '.entries[] | select(.type != "dir") | .path' "$T/body" >>"$T/listed"
    cursor=$(jq -r .next "$T/body")
    pages=$((pages + 1))
    [[ $(jq -r .done "$T/body") == false ]] || break
    ((pages < 200)) || fail "the listing does not end"
done
(cd "$src" && find . -not -type d -printf '/%P\n' | LC_ALL=C sort) >"$T/expect"
diff "$T/expect" "$T/listed" >"$T/diff" || fail "the paged listing: $(head -5 "$T/diff")"
((pages > 90)) || fail "only $pages pages"
[[ $(grep -c secret "$T/listed" || true) == 0 ]] || fail "the listing went outside the export"

# ---------------------------------------------------------------- a mirror job refused
SRC="lockstep://127.0.0.1:$PORT_S/export/files"
assert_exit 0 lsc m mirror create noauth --source "$SRC" --target "dir:$SHM/noauth"
assert_exit 1 lsc m mirror run noauth --wait
assert_eq failed "$(run_field noauth state)" "a run without a token"
assert_contains "$(run_field noauth note)" "401"
assert_exit 0 lsc m mirror create wrong --source "$SRC" --target "dir:$SHM/wrong" \
    --token-file "$T/notify.token"
assert_exit 1 lsc m mirror run wrong --wait
assert_contains "$(run_field wrong note)" "403"
assert_eq 0 "$(find "$SHM/noauth" "$SHM/wrong" -type f 2>/dev/null | wc -l)" "files pulled without the right token"
assert_exit 1 lsc m mirror create bad --source "lockstep://127.0.0.1:$PORT_S/export/" --target "dir:$SHM/x"
assert_contains "$ERR" "name is missing"
assert_exit 1 lsc m mirror create bad --source "lockstep://127.0.0.1:$PORT_S/export/a%b" --target "dir:$SHM/x"
assert_contains "$ERR" "letters, digits"
assert_exit 1 lsc m mirror create bad --source "$SRC" --target "dir:$SHM/x" --token-file rel/tok
assert_contains "$ERR" "token_file"

# ---------------------------------------------------------------- pull
assert_exit 0 lsc m mirror create pull --source "$SRC" --target "dir:$SHM/out" --delete \
    --token-file "$T/read.token"
assert_exit 0 lsc m mirror show pull --json
assert_not_contains "$OUT" "$READER" "the job shows its token"
assert_exit 0 lsc m mirror run pull --wait
total=$(find "$src" -not -type d | wc -l)
assert_eq "$total" "$(run_field pull items)" "items of the first pull"
assert_eq ok "$(run_field pull state)"
diff <(tree_attrs "$src") <(tree_attrs "$SHM/out") >"$T/diff" || fail "attributes differ: $(head -5 "$T/diff")"
assert_same_file "$src/big" "$SHM/out/big"
[[ -d "$SHM/out/empty" ]] || fail "the empty directory was not made"
[[ -L "$SHM/out/escape" ]] || fail "the outside symlink is not a symlink"
assert_eq "$T/outside/secret" "$(readlink "$SHM/out/escape")" "the outside symlink's target"
assert_eq 751 "$(stat -c %a "$SHM/out/a/b")" "a directory's mode"

assert_exit 0 lsc m mirror run pull --wait
assert_eq 0 "$(run_field pull items)" "items of a no-change re-run"
printf 'changed' >"$src/many/f7"
rm "$src/a0/z"
assert_exit 0 lsc m mirror run pull --wait
assert_eq 2 "$(run_field pull items)" "a change and a deletion"
[[ ! -e "$SHM/out/a0/z" ]] || fail "the deletion was not mirrored"
assert_eq changed "$(cat "$SHM/out/many/f7")"
diff <(tree_attrs "$src") <(tree_attrs "$SHM/out") >/dev/null || fail "the pull differs after the change"

# ---------------------------------------------------------------- kill -9 of either side
ksrc=$SHM/ksrc
for d in $(seq 1 20); do
    mkdir -p "$ksrc/d$d"
    for f in $(seq 1 20); do printf 'kill test %d %d\n' "$d" "$f" >"$ksrc/d$d/f$f"; done
done
stop_server S
DATA_ROOT=$T start_server S --export "files=$src" --export "k=$ksrc"
stop_server m
LOCKSTEP_MIRROR_PACKAGE_DELAY_MS=100 start_server m
KSRC="lockstep://127.0.0.1:$PORT_S/export/k"
# the exporting server is killed
assert_exit 0 lsc m mirror create ks --source "$KSRC" --target "dir:$SHM/ks_out" \
    --package-items 20 --token-file "$T/read.token"
assert_exit 0 lsc m mirror run ks
wait_until 60 acked ks 100 || fail "the run did not get far enough"
kill9_server S
wait_until 30 job_idle ks || fail "the run did not end when its source went away"
assert_eq failed "$(run_field ks state)" "the run whose source was killed"
first=$(run_field ks items)
((first >= 100 && first < 400)) || fail "the cut run acknowledged $first items"
DATA_ROOT=$T start_server S --export "files=$src" --export "k=$ksrc"
assert_exit 0 lsc m mirror run ks --wait
assert_eq 400 "$((first + $(run_field ks items)))" "items of both runs (source killed)"
diff -r "$ksrc" "$SHM/ks_out" >"$T/diff" || fail "the resumed mirror differs: $(head -5 "$T/diff")"

# the mirror server is killed
assert_exit 0 lsc m mirror create km --source "$KSRC" --target "dir:$SHM/km_out" \
    --package-items 20 --token-file "$T/read.token"
assert_exit 0 lsc m mirror run km
wait_until 60 acked km 100 || fail "the run did not get far enough"
kill9_server m
start_server m # without the delay; it runs km again from its index
wait_until 60 job_idle km || fail "the resumed run did not end"
lsc m mirror history km --json >"$T/hist"
assert_eq ok "$(jq -r '.runs[0].state' "$T/hist")" "the resumed run"
assert_eq interrupted "$(jq -r '.runs[1].note' "$T/hist")" "the interrupted run's note"
first=$(jq '.runs[1].items' "$T/hist")
((first >= 100 && first < 400)) || fail "the interrupted run acknowledged $first items"
assert_eq 400 "$((first + $(jq '.runs[0].items' "$T/hist")))" "items of both runs (mirror killed)"
diff -r "$ksrc" "$SHM/km_out" >"$T/diff" || fail "the resumed mirror differs: $(head -5 "$T/diff")"
[[ -z "$(find "$SHM/km_out" -name '.lsmirror-*')" ]] || fail "a temporary file was left"

stop_server m
stop_server S
echo ok
