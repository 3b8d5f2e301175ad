#!/usr/bin/env bash
# Versions and publishing: versions count up, history lists them, --max-versions prunes the old
# ones but keeps the published one, pruned versions are gone; put --publish, changed, unpublish,
# publish --version N.
set -euo pipefail
CLI_LEAK_CHECK=1 # every CLI command it runs is leak-checked too (lib.sh)
source "$(dirname "$0")/lib.sh"

start_server ver --max-versions 3

history_versions() { # PATH -> "6 5 4 2"
    "$LOCKSTEP" history "$1" --json | jq -r '[.versions[].version] | map(tostring) | join(" ")'
}
field() { # PATH FIELD
    "$LOCKSTEP" stat "$1" --json | jq -r ".$2"
}

# --- versions increase by one with every put, seq by one with every write
seq0=$(seq_of ver)
assert_eq 0 "$seq0" "seq of a new store"
for i in 1 2 3 4 5 6; do
    if ((i == 2)); then
        assert_exit 0 "$LOCKSTEP" put /doc --publish < <(printf 'body %d' "$i")
    else
        assert_exit 0 "$LOCKSTEP" put /doc < <(printf 'body %d' "$i")
    fi
    assert_eq "put /doc version $i seq $i" "$OUT" "put #$i"
done
assert_eq 6 "$(seq_of ver)" "seq after 6 puts"

# --- --max-versions 3: versions 6 5 4 kept, plus 2 because it is published; 1 and 3 pruned
assert_eq "6 5 4 2" "$(history_versions /doc)" "history with --max-versions 3"
assert_exit 0 "$LOCKSTEP" history /doc
assert_eq 4 "$(printf '%s\n' "$OUT" | wc -l)" "history lines"
assert_contains "$(printf '%s\n' "$OUT" | sed -n 4p)" "published" "history marks the published version"
assert_contains "$(printf '%s\n' "$OUT" | sed -n 1p)" "v6" "history is newest first"
for v in 1 3; do
    assert_exit 3 "$LOCKSTEP" get /doc --version "$v"
    assert_contains "$ERR" "no version $v" "get of pruned version $v"
    assert_exit 3 "$LOCKSTEP" stat /doc --version "$v"
done
for v in 2 4 5 6; do
    assert_eq "body $v" "$("$LOCKSTEP" get /doc --version "$v")" "get --version $v"
done
assert_eq "body 6" "$("$LOCKSTEP" get /doc)" "get of the latest"

# publishing a pruned version fails and changes nothing
s=$(seq_of ver)
assert_exit 3 "$LOCKSTEP" publish /doc --version 1
assert_contains "$ERR" "/doc has no version 1"
assert_eq "$s" "$(seq_of ver)" "seq after a failed publish"
assert_eq 2 "$(field /doc published_version)" "published_version after a failed publish"

# --- publish semantics
assert_eq changed "$(field /doc status)" "status: published v2, latest v6"
assert_eq 2 "$(field /doc published_version)" "published_version"

printf 'body 7' | "$LOCKSTEP" put /doc --publish >/dev/null
assert_eq published "$(field /doc status)" "status after put --publish"
assert_eq 7 "$(field /doc published_version)" "published_version after put --publish"
assert_eq 7 "$(field /doc version)" "version after put --publish"
# v2 is no longer published: now pruned (only 7 6 5 kept)
assert_eq "7 6 5" "$(history_versions /doc)" "history once v2 is no longer published"

printf 'body 8' | "$LOCKSTEP" put /doc >/dev/null
assert_eq changed "$(field /doc status)" "status after a new put"
assert_eq 7 "$(field /doc published_version)" "published_version stays after a new put"
assert_eq 8 "$(field /doc version)" "version after a new put"

assert_exit 0 "$LOCKSTEP" unpublish /doc
assert_contains "$OUT" "unpublish /doc version 7" "unpublish output"
assert_eq draft "$(field /doc status)" "status after unpublish"
assert_eq null "$(field /doc published_version)" "published_version after unpublish"
assert_eq "body 8" "$("$LOCKSTEP" get /doc)" "unpublish keeps the body"
assert_eq "8 7 6" "$(history_versions /doc)" "unpublish keeps the versions"

# unpublishing what is not published is an error and changes nothing
s=$(seq_of ver)
assert_exit 1 "$LOCKSTEP" unpublish /doc
assert_eq "lockstep unpublish: /doc is not published" "$ERR" "unpublish of a draft"
assert_eq "$s" "$(seq_of ver)" "seq after a failed unpublish"

assert_exit 0 "$LOCKSTEP" publish /doc --version 6
assert_contains "$OUT" "publish /doc version 6" "publish --version output"
assert_eq 6 "$(field /doc published_version)" "published_version after publish --version 6"
assert_eq changed "$(field /doc status)" "status after publishing an older version"
assert_eq 8 "$(field /doc version)" "publish --version does not change the latest version"

assert_exit 0 "$LOCKSTEP" publish /doc
assert_eq 8 "$(field /doc published_version)" "publish publishes the latest"
assert_eq published "$(field /doc status)" "status after publish"

# publishing an old version keeps it past pruning
"$LOCKSTEP" publish /doc --version 6 >/dev/null
for i in 9 10 11 12; do printf 'body %d' "$i" | "$LOCKSTEP" put /doc >/dev/null; done
assert_eq "12 11 10 6" "$(history_versions /doc)" "the published version survives pruning"
assert_eq "body 6" "$("$LOCKSTEP" get /doc --version 6)" "get of the old published version"

# the change log tells the same story
"$LOCKSTEP" changes --json >"$T/changes"
assert_eq "$(seq_of ver)" "$(wc -l <"$T/changes")" "one change per write"
assert_eq "put put put put put put put put unpublish publish publish publish put put put put" \
    "$(jq -r .op "$T/changes" | tr '\n' ' ' | sed 's/ $//')" "ops in the change log"
assert_eq "2 7" "$(jq -r 'select(.op=="put" and .published) | .version' "$T/changes" | tr '\n' ' ' |
    sed 's/ $//')" "puts marked published in the change log"
assert_eq "7 6 8 6" "$(jq -r 'select(.op=="unpublish" or .op=="publish") | .version' "$T/changes" |
    tr '\n' ' ' | sed 's/ $//')" "versions of (un)publish changes"
assert_eq "1 2 3 4 5 6 7 8 9 10 11 12" \
    "$(jq -r 'select(.op=="put") | .version' "$T/changes" | tr '\n' ' ' | sed 's/ $//')" \
    "put versions in the change log"

# --- ls shows the status
printf 'x' | "$LOCKSTEP" put /draft >/dev/null
assert_exit 0 "$LOCKSTEP" ls --json
assert_eq "changed draft" "$(printf '%s\n' "$OUT" | jq -r .status | tr '\n' ' ' | sed 's/ $//')" \
    "ls statuses"

# --- versions of other items are independent; publish/unpublish of a missing item
printf 'a' | "$LOCKSTEP" put /other >/dev/null
assert_eq 1 "$(field /other version)" "first version of another item"
assert_exit 3 "$LOCKSTEP" publish /missing
assert_exit 3 "$LOCKSTEP" unpublish /missing

# --- --if-version
assert_exit 1 "$LOCKSTEP" put /other --if-version 5 < <(printf 'b')
assert_contains "$ERR" "/other is at version 1, not 5"
assert_exit 0 "$LOCKSTEP" put /other --if-version 1 < <(printf 'b')
assert_eq 2 "$(field /other version)" "put --if-version"

# --- pruning survives a restart, and the numbering goes on
stop_server ver
start_server ver --max-versions 3
assert_eq "12 11 10 6" "$(history_versions /doc)" "history after a restart"
printf 'body 13' | "$LOCKSTEP" put /doc >/dev/null
assert_eq 13 "$(field /doc version)" "version after a restart"

# --- pruning a version also removes its body's blob file (when no other version shares it)
blob_count() { find "$DATA_ver/blobs" -path "$DATA_ver/blobs/tmp" -prune -o -type f -print | wc -l; }
b0=$(blob_count)
for i in 1 2 3 4 5; do
    head -c 100000 /dev/urandom >"$T/blob$i"
    "$LOCKSTEP" put /blobs/x "$T/blob$i" >/dev/null
done
assert_eq "5 4 3" "$(history_versions /blobs/x)" "history of /blobs/x"
"$LOCKSTEP" get /blobs/x --version 3 | cmp - "$T/blob3" || fail "version 3 of /blobs/x"
assert_eq $((b0 + 3)) "$(blob_count)" "blob files once versions 1 and 2 of /blobs/x were pruned"
stop_server ver
