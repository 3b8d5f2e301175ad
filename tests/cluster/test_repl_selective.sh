#!/usr/bin/env bash
# A replica with --include /a holds exactly the /a subtree (the item /a and everything under
# /a/, not /ab): its digest of /a equals the primary's and it holds nothing else, at the
# primary's seq. Moves into /a bring the item (as it is, published or not), moves out of /a
# remove it, moves within /a and outside it are reflected; writes elsewhere are acknowledged
# (wait_replicas counts the filtered replica). A replica with two --include prefixes and a
# snapshot taken late (after the writes) gets the same.
set -euo pipefail
source "$(dirname "$0")/lib_repl.sh"

start_node P
start_node R --role replica --upstream "$PEER_P" --include /a

# assert_subtree: R holds exactly P's /a subtree
assert_subtree() {
    local what=$1
    wait_caught_up R P 15
    local dp dr
    dp=$(lsc P digest /a --json | jq -c '{seq,items,digest}')
    dr=$(lsc R digest /a --json | jq -c '{seq,items,digest}')
    if [[ "$dp" != "$dr" ]]; then
        diff <(lsc P ls /a --json | jq -c '{path,kind,version,status,published_version,sha256,meta}') \
            <(lsc R ls /a --json | jq -c '{path,kind,version,status,published_version,sha256,meta}') >&2 || true
    fi
    assert_eq "$dp" "$dr" "digest of /a on R against P ($what; the differing items are above)"
    assert_eq "$(lsc P ls /a --json | jq -r .path)" "$(lsc R ls / --json | jq -r .path)" "paths on R ($what)"
    assert_eq "$(lsc P digest /a --json | jq -r .items)" "$(lsc R digest --json | jq -r .items)" "items on R ($what)"
}

printf 'root a' | lsc P put /a >/dev/null
printf 'a1' | lsc P put /a/1 --publish >/dev/null
printf 'a2' | lsc P put /a/sub/2 >/dev/null
printf 'ab' | lsc P put /ab/1 --publish >/dev/null
printf 'b1' | lsc P put /b/1 >/dev/null
printf 'b2 v1' | lsc P put /b/pub --publish >/dev/null
printf 'b2 v2' | lsc P put /b/pub >/dev/null # published v1, draft v2
printf 'b3' | lsc P put /b/draft >/dev/null
printf 'c' | lsc P put /c >/dev/null
cat >"$T/batch" <<'EOF'
{"op":"put","path":"/a/batch","body":"in","status":"published"}
{"op":"put","path":"/z/batch","body":"out"}
{"op":"put","path":"/a/batch","body":"in 2"}
EOF
lsc P import "$T/batch" >/dev/null
assert_subtree "after the first writes"
assert_eq "a2" "$(lsc R get /a/sub/2)" "R: /a/sub/2"
assert_eq "root a" "$(lsc R get /a)" "R: the item /a itself"
for p in /ab/1 /b/1 /c /z/batch; do assert_exit 3 "$LOCKSTEP" get "$p" --server "$URL_R"; done
assert_eq "1 2" "$(lsc R history /a/batch --json | jq -r '[.versions[].version] | sort | map(tostring) | join(" ")')" \
    "R: the versions of /a/batch"

# --- writes outside /a still advance R's seq, and wait_replicas counts R
before=$(seq_of R)
printf 'b again' | lsc P put /b/1 >/dev/null
wait_caught_up R P 15
(($(seq_of R) > before)) || fail "R's seq did not advance on a write outside /a"
assert_exit 0 "$LOCKSTEP" put /b/waited - --wait-replicas 1 --server "$URL_P" < <(printf 'w')
assert_exit 0 "$LOCKSTEP" put /a/waited - --wait-replicas 1 --server "$URL_P" < <(printf 'aw')
assert_eq aw "$(lsc R get /a/waited)" "R right after put --wait-replicas 1 in /a"

# --- moves
lsc P mv /b/1 /a/from-b >/dev/null           # into /a: a draft
lsc P mv /b/pub /a/pub >/dev/null            # into /a: published v1 with a draft v2
lsc P mv /a/1 /b/out >/dev/null              # out of /a
lsc P mv /a/sub/2 /a/sub/moved >/dev/null    # within /a
lsc P mv /b/draft /c/draft >/dev/null        # outside /a
lsc P mv /ab/1 /a/from-ab >/dev/null         # from the look-alike prefix into /a
assert_subtree "after the moves"
assert_eq "b again" "$(lsc R get /a/from-b)" "R: an item moved into /a"
assert_eq "b2 v2" "$(lsc R get /a/pub)" "R: the latest version of a published item moved into /a"
assert_eq "$(lsc P stat /a/pub --json | jq -c '{status,version,published_version}')" \
    "$(lsc R stat /a/pub --json | jq -c '{status,version,published_version}')" "R: status of a published item moved into /a"
assert_eq "ab" "$(lsc R get /a/from-ab)" "R: an item moved from /ab into /a"
assert_exit 3 "$LOCKSTEP" get /a/1 --server "$URL_R"
assert_exit 3 "$LOCKSTEP" get /b/out --server "$URL_R"
assert_exit 3 "$LOCKSTEP" get /a/sub/2 --server "$URL_R"
assert_eq "a2" "$(lsc R get /a/sub/moved)" "R: an item moved within /a"
# changes to moved-in items follow; moved-out items stay away
printf 'from-b v2' | lsc P put /a/from-b >/dev/null
printf 'out v2' | lsc P put /b/out >/dev/null
lsc P publish /a/from-b >/dev/null
lsc P rm /a/sub/moved >/dev/null
lsc P purge /a/waited >/dev/null
# a round trip: out and back in
lsc P mv /a/batch /z/tmp >/dev/null
lsc P mv /z/tmp /a/batch-back >/dev/null
assert_subtree "after changes to moved items"
assert_eq "from-b v2" "$(lsc R get /a/from-b)" "R: a new version of a moved-in item"
assert_eq published "$(lsc R stat /a/from-b --json | jq -r .status)" "R: publish of a moved-in item"
assert_exit 3 "$LOCKSTEP" get /b/out --server "$URL_R"
assert_exit 3 "$LOCKSTEP" get /a/sub/moved --server "$URL_R"
assert_exit 3 "$LOCKSTEP" get /a/waited --server "$URL_R"
assert_eq "in 2" "$(lsc R get /a/batch-back)" "R: an item moved out and back in"

# --- restart: R continues with its filter
stop_server R
printf 'while down' | lsc P put /a/down >/dev/null
printf "kept" | lsc P put /a/sub/kept >/dev/null
printf 'while down' | lsc P put /b/down >/dev/null
lsc P mv /a/from-ab /b/gone >/dev/null
start_node R --role replica --upstream "$PEER_P" --include /a
assert_subtree "after a restart"
assert_eq continue "$(status_field R last_sync)" "R's last_sync after a restart"
assert_exit 3 "$LOCKSTEP" get /a/from-ab --server "$URL_R"

# --- a late replica with two prefixes gets its subtrees by snapshot
start_node R2 --role replica --upstream "$PEER_P" --include /a/sub --include /c
wait_caught_up R2 P 15
assert_eq snapshot "$(status_field R2 last_sync)" "R2's last_sync"
assert_same_digest P R2 /a/sub
assert_same_digest P R2 /c
assert_eq "$(lsc P ls /a/sub --json | jq -r .path; lsc P ls /c --json | jq -r .path)" \
    "$(lsc R2 ls / --json | jq -r .path)" "paths on R2"
printf 'c2' | lsc P put /c/new >/dev/null
printf 'x' | lsc P put /a/not-sub >/dev/null
wait_caught_up R2 P 15
assert_eq c2 "$(lsc R2 get /c/new)" "R2: a new item under /c"
assert_exit 3 "$LOCKSTEP" get /a/not-sub --server "$URL_R2"
assert_subtree "at the end"

stop_server R2
stop_server R
stop_server P
