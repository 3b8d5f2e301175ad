#!/usr/bin/env bash
# Digests: two servers fed the same operations agree (whole store, published only, a prefix);
# one extra write makes them differ, and only where it was written.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

start_server da
start_server db

# the same operations on both: an import, then CLI operations
head -c 100000 /dev/urandom >"$T/blob"
b64=$(base64 -w0 <"$T/blob")
{
    for i in $(seq 1 40); do
        printf '{"op":"put","path":"/docs/d%02d","body":"doc %d","kind":"doc","meta":{"n":%d,"tags":["a","b"]}}\n' "$i" "$i" "$i"
    done
    printf '{"op":"put","path":"/docs/bin","body_base64":"%s"}\n' "$b64"
    echo '{"op":"put","path":"/site/index.html","body":"<h1>hi</h1>","kind":"page","status":"published"}'
    echo '{"op":"put","path":"/site/about.html","body":"<p>about</p>","kind":"page"}'
    echo '{"op":"publish","path":"/docs/d01"}'
    echo '{"op":"delete","path":"/docs/d02"}'
    echo '{"op":"move","path":"/docs/d03","to":"/archive/d03"}'
} >"$T/feed.ndjson"
same_ops() { # NAME
    lsc "$1" import "$T/feed.ndjson" >/dev/null
    printf 'v2' | lsc "$1" put /docs/d04 --meta '{"edited":true}' >/dev/null
    printf 'v2' | lsc "$1" put /site/index.html >/dev/null
    lsc "$1" put /docs/blob "$T/blob" >/dev/null
    lsc "$1" publish /docs/d05 >/dev/null
    lsc "$1" publish /site/about.html >/dev/null
    lsc "$1" unpublish /site/about.html >/dev/null
    lsc "$1" rm /docs/d06 >/dev/null
    lsc "$1" purge /docs/d07 >/dev/null
    lsc "$1" mv /docs/d08 /docs2/d08 >/dev/null
}
same_ops da
same_ops db

digest_json() { lsc "$1" digest --json "${@:2}"; }
assert_same_digest() { # WHAT [digest args]
    local a b
    a=$(digest_json da "${@:2}")
    b=$(digest_json db "${@:2}")
    assert_eq "$(jq -r .digest <<<"$a") $(jq -r .items <<<"$a")" \
        "$(jq -r .digest <<<"$b") $(jq -r .items <<<"$b")" "$1: digest and items of da and db"
}
assert_other_digest() {
    local a b
    a=$(digest_json da "${@:2}" | jq -r .digest)
    b=$(digest_json db "${@:2}" | jq -r .digest)
    assert_ne "$a" "$b" "$1: digests of da and db"
}

assert_same_digest "whole store"
assert_same_digest "published only" --published-only
assert_same_digest "prefix /docs" /docs
assert_same_digest "prefix /site" /site
assert_same_digest "prefix /site, published only" /site --published-only
assert_eq "$(seq_of da)" "$(seq_of db)" "seq of both"

# the counts are right: 40 docs + bin + blob - d02 (deleted) - d03 (moved) - d06 - d07 - d08 = 37
d=$(digest_json da /docs)
assert_eq 37 "$(jq -r .items <<<"$d")" "items under /docs"
assert_eq /docs "$(jq -r .prefix <<<"$d")" "prefix in the reply"
assert_eq false "$(jq -r .published_only <<<"$d")" "published_only in the reply"
assert_eq "$(seq_of da)" "$(jq -r .seq <<<"$d")" "seq in the reply"
assert_eq 41 "$(digest_json da | jq -r .items)" "items in the store (37 + 2 + 1 + 1)"
assert_eq 3 "$(digest_json da --published-only | jq -r .items)" "published items (index, d01, d05)"
assert_eq 1 "$(digest_json da /docs2 | jq -r .items)" "items under /docs2"
assert_eq 0 "$(digest_json da /nothing | jq -r .items)" "items under an empty prefix"
# the digest of nothing is the hash of nothing
assert_eq e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 \
    "$(digest_json da /nothing | jq -r .digest)" "digest of an empty prefix"
# the plain output
assert_exit 0 lsc da digest
assert_eq "$(digest_json da | jq -r '"\(.digest)  \(.items) items at seq \(.seq)"')" "$OUT" "plain digest output"

# a prefix covers the item at the prefix and its subtree, not its siblings (/docs vs /docs2)
printf 'x' | lsc db put /docs2/extra >/dev/null
assert_same_digest "prefix /docs after a write under /docs2" /docs
assert_other_digest "prefix /docs2 after a write under /docs2" /docs2
assert_other_digest "whole store after a write under /docs2"

# one extra write makes them differ; the same write on the other brings them back together
printf 'x' | lsc da put /docs2/extra >/dev/null
assert_same_digest "whole store once both wrote /docs2/extra"
printf 'changed' | lsc da put /docs/d10 >/dev/null
assert_other_digest "whole store after one write to da"
assert_other_digest "prefix /docs after one write to da" /docs
assert_same_digest "prefix /site after a write under /docs" /site
assert_same_digest "published only after a draft write" --published-only
printf 'changed' | lsc db put /docs/d10 >/dev/null
assert_same_digest "whole store after the same write to db"

# a change of meta only, of kind only, or of status only changes the digest
printf 'changed' | lsc da put /docs/d11 --meta '{"n":11,"tags":["a","b"],"x":1}' >/dev/null
printf 'changed' | lsc db put /docs/d11 >/dev/null
assert_other_digest "meta differs"
printf 'changed' | lsc db put /docs/d11 --meta '{"x":1,"tags":["a","b"],"n":11}' >/dev/null
printf 'changed' | lsc da put /docs/d11 >/dev/null
assert_same_digest "same meta, keys in another order, same version"
printf 'k' | lsc da put /docs/d12 --kind other >/dev/null
printf 'k' | lsc db put /docs/d12 >/dev/null
assert_other_digest "kind differs"
printf 'k' | lsc da put /docs/d12 --kind doc >/dev/null
printf 'k' | lsc db put /docs/d12 >/dev/null
assert_same_digest "same kind again"
lsc da publish /docs/d12 >/dev/null
assert_other_digest "status differs"
assert_other_digest "status differs, published only" --published-only
lsc db publish /docs/d12 >/dev/null
assert_same_digest "both published"
assert_same_digest "both published, published only" --published-only

# publishing a different version changes the published-only digest
printf 'p2' | lsc da put /site/index.html >/dev/null
printf 'p2' | lsc db put /site/index.html >/dev/null
lsc da publish /site/index.html --version 2 >/dev/null
lsc db publish /site/index.html --version 1 >/dev/null
assert_other_digest "different published versions, published only" --published-only
lsc db publish /site/index.html --version 2 >/dev/null
assert_same_digest "same published versions, published only" --published-only
assert_same_digest "same published versions"

# the digest is of the live state: a tombstone, or an item created and purged, leaves no trace
printf 'gone' | lsc da put /tmp/gone >/dev/null
lsc da purge /tmp/gone >/dev/null
printf 'dead' | lsc da put /tmp/dead >/dev/null
lsc da rm /tmp/dead >/dev/null
assert_same_digest "after an item came and went on da only"
assert_ne "$(seq_of da)" "$(seq_of db)" "seqs differ"

# both agree after restarts too
stop_server da
stop_server db
start_server da
start_server db
assert_same_digest "after restarts"
assert_same_digest "after restarts, published only" --published-only
stop_server da
stop_server db
