#!/usr/bin/env bash
# lockstep verify: a clean store verifies clean (exit 0); then one inline body damaged in store.db
# and one blob file with a flipped byte (made while the server is stopped) are both named, with
# exit 1, while the digest still gives the old value: it hashes the recorded hashes, not bodies.
# Also: a second verify while one runs gets 409, and --rate really bounds the reading.
set -euo pipefail
CLI_LEAK_CHECK=1 # every CLI command it runs is leak-checked too (lib.sh)
source "$(dirname "$0")/lib.sh"

start_server v
use_server v
for i in 1 2 3; do printf 'inline body %d' "$i" | lsc v put "/in/$i" >/dev/null; done
printf 'version two' | lsc v put /in/1 >/dev/null
head -c 300000 /dev/urandom >"$T/big1"
head -c 200000 /dev/urandom >"$T/big2"
lsc v put /blob/one "$T/big1" >/dev/null
lsc v put /blob/two "$T/big2" >/dev/null
lsc v put /blob/same "$T/big2" >/dev/null # the same file as /blob/two

assert_exit 0 lsc v verify
assert_contains "$OUT" "7 versions checked (2 blob files, $((300000 + 200000 + 3 * 13 + 11)) bytes)"
assert_contains "$OUT" ": 0 damaged"
assert_exit 0 lsc v verify --json
assert_eq 0 "$(jq '.damaged | length' <<<"$OUT")" "damaged, clean store"
assert_eq 7 "$(jq '.checked' <<<"$OUT")" "versions checked"
digest_before=$(digest_of v)

stop_server v
# an inline body rotted in place (the hash recorded beside it stays)
sqlite3 "$DATA_v/store.db" "UPDATE versions SET body=CAST('inline bodz 2' AS BLOB)
    WHERE item=(SELECT id FROM items WHERE path='/in/2') AND version=1"
# one byte of /blob/two's file flipped (/blob/same shares it)
sha2=$(sha256sum "$T/big2" | cut -c1-64)
blob2="$DATA_v/blobs/${sha2:0:2}/${sha2:2}"
[[ -f "$blob2" ]] || fail "no blob file at $blob2"
printf '\xff' | dd of="$blob2" bs=1 seek=1000 conv=notrunc status=none
# and /blob/one's file gone
sha1=$(sha256sum "$T/big1" | cut -c1-64)
rm "$DATA_v/blobs/${sha1:0:2}/${sha1:2}"
start_server v

assert_exit 1 lsc v verify
assert_contains "$OUT" "DAMAGED /in/2 version 1: sha256 mismatch"
assert_contains "$OUT" "DAMAGED /blob/two version 1: sha256 mismatch in blobs/${sha2:0:2}/${sha2:2}"
assert_contains "$OUT" "DAMAGED /blob/same version 1: sha256 mismatch"
assert_contains "$OUT" "DAMAGED /blob/one version 1: missing in blobs/${sha1:0:2}/${sha1:2}"
assert_contains "$OUT" ": 4 damaged"
assert_not_contains "$OUT" "/in/1"
assert_exit 1 lsc v verify --json
assert_eq "/blob/one /blob/same /blob/two /in/2" \
    "$(jq -r '[.damaged[].path] | sort | join(" ")' <<<"$OUT")" "damaged paths"
assert_eq "$sha2" "$(jq -r '.damaged[] | select(.path=="/blob/two") | .sha256' <<<"$OUT")" \
    "the damaged blob's recorded hash"
# why verify is needed: the digest saw nothing
assert_eq "$digest_before" "$(digest_of v)" "digest after the damage"

# --rate bounds the reading (about 200 KB at 50K/s: some 4 s), and meanwhile a second verify is
# refused rather than taking the other reader thread
lsc v verify --rate 50K --json >"$T/slow.json" 2>&1 &
slow=$!
bg_track "$slow"
sleep 1.5 # (a probe any sooner could itself be the first verify, and the slow one the second)
assert_eq 409 "$(curl -s -o /dev/null -w '%{http_code}' "$URL_v/v1/verify")" \
    "a second verify while one runs"
rc=0
bg_wait "$slow" 60 || rc=$?
assert_eq 1 "$rc" "the slow verify's exit (damage found)"
secs=$(jq '.seconds' "$T/slow.json")
awk -v s="$secs" 'BEGIN { exit !(s >= 2.0) }' || fail "--rate 50K read 200 KB in $secs s"
assert_exit 2 lsc v verify --rate lots
assert_contains "$ERR" "--rate"
# the server still answers, and the damage is still there to be seen
assert_exit 1 lsc v verify --rate 0

# a server stopping mid-scrub (this one would read for minutes) cancels it and exits at once
lsc v verify --rate 1K >/dev/null 2>&1 &
bg_track $!
sleep 1
t0=$(date +%s)
stop_server v
(($(date +%s) - t0 < 5)) || fail "stopping during a verify took $(($(date +%s) - t0)) s"
