#!/usr/bin/env bash
# rm leaves a tombstone, a put revives it with the next version; mv carries the history and
# refuses to overwrite a live item; purge removes everything and numbering starts again.
set -euo pipefail
CLI_LEAK_CHECK=1 # every CLI command it runs is leak-checked too (lib.sh)
source "$(dirname "$0")/lib.sh"

start_server tmp

field() { "$LOCKSTEP" stat "$1" --json | jq -r ".$2"; }
history_versions() {
    "$LOCKSTEP" history "$1" --json | jq -r '[.versions[].version] | map(tostring) | join(" ")'
}
ls_paths() { # [ls args] -> paths, space separated
    "$LOCKSTEP" ls --json "$@" | jq -r .path | tr '\n' ' ' | sed 's/ $//'
}
blob_count() { find "$DATA_tmp/blobs" -path "$DATA_tmp/blobs/tmp" -prune -o -type f -print | wc -l; }

# --- rm: a tombstone
printf 'one' | "$LOCKSTEP" put /t/a >/dev/null
printf 'two' | "$LOCKSTEP" put /t/a --publish >/dev/null
printf 'keep' | "$LOCKSTEP" put /t/b >/dev/null
assert_exit 0 "$LOCKSTEP" rm /t/a
assert_eq "delete /t/a version 2 seq $(seq_of tmp)" "$OUT" "rm output"
assert_exit 3 "$LOCKSTEP" get /t/a
assert_contains "$ERR" "/t/a" "get of a tombstone"
assert_exit 3 "$LOCKSTEP" stat /t/a
assert_eq "/t/b" "$(ls_paths /t)" "ls hides tombstones"
assert_eq "/t/a /t/b" "$(ls_paths /t --deleted)" "ls --deleted shows tombstones"
"$LOCKSTEP" ls /t --deleted --json | jq -s -e 'any(.[]; .path == "/t/a" and .deleted == true)' >/dev/null ||
    fail "ls --deleted --json does not mark the tombstone deleted"
assert_exit 0 "$LOCKSTEP" ls /t --deleted
assert_contains "$OUT" "/t/a  (deleted)" "plain ls --deleted"
# a tombstone is not live: rm, publish, unpublish, mv of it are "not found", and change nothing
s=$(seq_of tmp)
assert_exit 3 "$LOCKSTEP" rm /t/a
assert_exit 3 "$LOCKSTEP" publish /t/a
assert_exit 3 "$LOCKSTEP" mv /t/a /t/z
assert_eq "$s" "$(seq_of tmp)" "seq after failed operations on a tombstone"
assert_exit 3 "$LOCKSTEP" rm /t/never
assert_eq "$s" "$(seq_of tmp)" "seq after rm of a missing item"

# --- a put on a tombstone revives it with the next version, as a draft
assert_exit 0 "$LOCKSTEP" put /t/a < <(printf 'three')
assert_eq "put /t/a version 3 seq $((s + 1))" "$OUT" "put on a tombstone"
assert_eq three "$("$LOCKSTEP" get /t/a)" "revived body"
assert_eq draft "$(field /t/a status)" "a revived item is a draft"
assert_eq "3 2 1" "$(history_versions /t/a)" "history of a revived item"
assert_eq one "$("$LOCKSTEP" get /t/a --version 1)" "old version of a revived item"
assert_eq "/t/a /t/b" "$(ls_paths /t)" "ls shows the revived item"

# --- mv moves the history
printf 'm1' | "$LOCKSTEP" put /m/src >/dev/null
printf 'm2' | "$LOCKSTEP" put /m/src --kind page --meta '{"k":"v"}' --publish >/dev/null
printf 'm3' | "$LOCKSTEP" put /m/src >/dev/null
sha_before=$(field /m/src sha256)
assert_exit 0 "$LOCKSTEP" mv /m/src /m/dst/deeper
assert_eq "move /m/dst/deeper version 3 seq $(seq_of tmp)" "$OUT" "mv output"
assert_eq "3 2 1" "$(history_versions /m/dst/deeper)" "history after mv"
for v in 1 2 3; do
    assert_eq "m$v" "$("$LOCKSTEP" get /m/dst/deeper --version "$v")" "version $v after mv"
done
assert_eq 2 "$(field /m/dst/deeper published_version)" "published_version after mv"
assert_eq changed "$(field /m/dst/deeper status)" "status after mv"
assert_eq page "$(field /m/dst/deeper kind)" "kind after mv"
assert_eq '{"k":"v"}' "$("$LOCKSTEP" stat /m/dst/deeper --json | jq -c .meta)" "meta after mv"
assert_eq "$sha_before" "$(field /m/dst/deeper sha256)" "sha256 after mv"
assert_exit 3 "$LOCKSTEP" get /m/src
assert_exit 3 "$LOCKSTEP" history /m/src
assert_exit 3 "$LOCKSTEP" stat /m/src
assert_eq "/m/dst/deeper" "$(ls_paths /m --deleted)" "mv leaves nothing at the old path"
"$LOCKSTEP" changes --json | tail -1 >"$T/last"
assert_eq "move /m/src /m/dst/deeper" "$(jq -r '"\(.op) \(.path) \(.to)"' "$T/last")" "the move in the change log"
# and the item goes on at its new path
printf 'm4' | "$LOCKSTEP" put /m/dst/deeper >/dev/null
assert_eq 4 "$(field /m/dst/deeper version)" "version after mv and put"
# a new item at the old path starts at version 1
printf 'new' | "$LOCKSTEP" put /m/src >/dev/null
assert_eq 1 "$(field /m/src version)" "a new item at a moved-from path"

# --- mv onto a live item fails and changes nothing
s=$(seq_of tmp)
d=$(digest_of tmp)
assert_exit 1 "$LOCKSTEP" mv /m/src /m/dst/deeper
assert_eq "lockstep mv: /m/dst/deeper exists" "$ERR" "mv onto a live item"
assert_eq "$s" "$(seq_of tmp)" "seq after a refused mv"
assert_eq "$d" "$(digest_of tmp)" "digest after a refused mv"
assert_eq new "$("$LOCKSTEP" get /m/src)" "source after a refused mv"
assert_eq m4 "$("$LOCKSTEP" get /m/dst/deeper)" "destination after a refused mv"
assert_eq "4 3 2 1" "$(history_versions /m/dst/deeper)" "destination history after a refused mv"
# onto itself, from a missing item, to a bad path
assert_exit 1 "$LOCKSTEP" mv /m/src /m/src
assert_exit 3 "$LOCKSTEP" mv /m/nothing /m/else
assert_exit 1 "$LOCKSTEP" mv /m/src /m/bad/../path
assert_eq "$s" "$(seq_of tmp)" "seq after refused moves"

# --- mv onto a tombstone replaces it
printf 'tomb' | "$LOCKSTEP" put /m/tomb >/dev/null
"$LOCKSTEP" rm /m/tomb >/dev/null
assert_exit 0 "$LOCKSTEP" mv /m/src /m/tomb
assert_eq new "$("$LOCKSTEP" get /m/tomb)" "mv onto a tombstone"
assert_eq "1" "$(history_versions /m/tomb)" "the tombstone's versions are gone"

# --- purge removes everything
head -c 200000 /dev/urandom >"$T/blob"
blobs0=$(blob_count)
"$LOCKSTEP" put /p/x "$T/blob" >/dev/null
printf 'p2' | "$LOCKSTEP" put /p/x --publish >/dev/null
assert_eq $((blobs0 + 1)) "$(blob_count)" "blob files after a large put"
assert_exit 0 "$LOCKSTEP" purge /p/x
assert_eq "purge /p/x version 2 seq $(seq_of tmp)" "$OUT" "purge output"
assert_exit 3 "$LOCKSTEP" get /p/x
assert_exit 3 "$LOCKSTEP" get /p/x --version 1
assert_exit 3 "$LOCKSTEP" history /p/x
assert_exit 3 "$LOCKSTEP" stat /p/x
assert_eq "" "$(ls_paths /p --deleted)" "ls --deleted after purge"
blobs_after_purge=$(blob_count) # checked at the end
assert_exit 3 "$LOCKSTEP" purge /p/x
# a later put starts again at version 1
assert_exit 0 "$LOCKSTEP" put /p/x < <(printf 'again')
assert_eq "put /p/x version 1 seq $(seq_of tmp)" "$OUT" "put after purge"
assert_eq "1" "$(history_versions /p/x)" "history after purge and put"
assert_eq draft "$(field /p/x status)" "status after purge and put"

# purge of a tombstone removes it too
"$LOCKSTEP" rm /t/b >/dev/null
assert_eq "/t/a /t/b" "$(ls_paths /t --deleted)" "the tombstone is listed"
assert_exit 0 "$LOCKSTEP" purge /t/b
assert_eq "/t/a" "$(ls_paths /t --deleted)" "purge of a tombstone"
assert_exit 3 "$LOCKSTEP" history /t/b

# --- all of it survives a restart; the log has one entry per write, gapless
s=$(seq_of tmp)
d=$(digest_of tmp)
stop_server tmp
start_server tmp
assert_eq "$s" "$(seq_of tmp)" "seq after restart"
assert_eq "$d" "$(digest_of tmp)" "digest after restart"
assert_eq "/m/dst/deeper /m/tomb" "$(ls_paths /m --deleted)" "items after restart"
"$LOCKSTEP" changes --json | jq -r .seq >"$T/seqs"
seq 1 "$s" | cmp -s - "$T/seqs" || fail "change log seqs are not 1..$s"
stop_server tmp

# --- purge removed the body's blob file (no other version refers to that content)
assert_eq "$blobs0" "$blobs_after_purge" "blob files after purging the only item with that body"
