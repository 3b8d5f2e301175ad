#!/usr/bin/env bash
# A store written by lockstep 0.1.0 (tests/fixtures/store-v0.1.0.tar.gz, made by the binary of
# that release: eleven changes of every kind, a published older version, a tombstone, a move, a
# purge, a 70 KB blob) opens with this binary, which migrates it forward: every item, version
# and seq is there, the digest is the one 0.1.0 computed, and writing goes on at seq 12.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

tar -C "$T" -xzf "$(dirname "$0")/../fixtures/store-v0.1.0.tar.gz"
mv "$T/store" "$T/old"
start_server old
assert_eq 11 "$(seq_of old)" "seq after the upgrade"
assert_eq "4 5348e0294b450b7ef7da43e33b5eaab8d527d9e781834c78866ef07d0c1247e4" \
    "$(lsc old digest --json | jq -r '"\(.items) \(.digest)"')" "items and digest written by 0.1.0"
assert_eq "1 put /site/a.html 1|2 put /site/a.html 2|3 put /site/b.html 1|4 put /site/c.html 1|5 delete /site/c.html 1|6 put /site/d.html 1|7 move /site/d.html 1|8 put /site/p.html 1|9 purge /site/p.html 1|10 put /files/big.bin 1|11 publish /site/a.html 1" \
    "$(lsc old changes --json | jq -r '"\(.seq) \(.op) \(.path) \(.version)"' | paste -sd'|')" "the log"
assert_eq "changed 2 1 A" "$(lsc old stat /site/a.html --json | jq -r '"\(.status) \(.version) \(.published_version) \(.meta.title)"')" "/site/a.html"
assert_eq "one" "$(lsc old get /site/a.html --version 1)" "version 1 of /site/a.html"
assert_eq "two" "$(lsc old get /site/a.html)" "version 2 of /site/a.html"
assert_eq "mv" "$(lsc old get /site/e.html)" "the moved item"
assert_exit 3 "$LOCKSTEP" get /site/c.html
assert_exit 3 "$LOCKSTEP" get /site/p.html
assert_eq "70000 file" "$(lsc old get /files/big.bin | wc -c) $(lsc old stat /files/big.bin --json | jq -r .kind)" "the blob"
printf 'new' | lsc old put /site/new.html - >/dev/null
assert_eq 12 "$(seq_of old)" "the next write's seq"
# and once more after a restart on the migrated store
stop_server old
start_server old
assert_eq 12 "$(seq_of old)" "seq after a restart"
assert_eq "new" "$(lsc old get /site/new.html)" "the write after the upgrade"
