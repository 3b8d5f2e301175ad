#!/usr/bin/env bash
# Byte-exact put/get round trips: empty, text, binary with NUL bytes, bodies around the inline
# threshold and the 8 MiB upload part size, 100 MiB through upload sessions, stdin pipes;
# get -o, get --version, stat --json fields and the body hash.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DATA_ROOT=$SHM start_server rt

# roundtrip PATH FILE: put FILE at PATH, get it back to stdout and with -o, compare bytes and hashes
roundtrip() {
    local path=$1 file=$2 want_sha size
    assert_exit 0 "$LOCKSTEP" put "$path" "$file"
    assert_contains "$OUT" "put $path version" "put output"
    "$LOCKSTEP" get "$path" >"$SHM/got"
    assert_same_file "$file" "$SHM/got" "get $path"
    rm -f "$SHM/got.o"
    assert_exit 0 "$LOCKSTEP" get "$path" -o "$SHM/got.o"
    assert_eq "" "$OUT" "get -o prints nothing"
    assert_same_file "$file" "$SHM/got.o" "get -o $path"
    want_sha=$(sha256sum <"$file" | cut -d' ' -f1)
    size=$(stat -c %s "$file")
    "$LOCKSTEP" stat "$path" --json >"$T/stat.json"
    assert_eq "$want_sha" "$(jq -r .sha256 "$T/stat.json")" "stat sha256 of $path"
    assert_eq "$size" "$(jq -r .size "$T/stat.json")" "stat size of $path"
    rm -f "$SHM/got" "$SHM/got.o"
}

# --- small bodies
: >"$T/empty"
roundtrip /rt/empty "$T/empty"
assert_eq e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 \
    "$("$LOCKSTEP" stat /rt/empty --json | jq -r .sha256)" "sha256 of the empty body"
assert_eq 0 "$("$LOCKSTEP" get /rt/empty | wc -c)" "empty body length"

printf 'hello, world\nsecond line\r\n\ttabbed  trailing spaces   \n' >"$T/text"
roundtrip /rt/text.txt "$T/text"

printf 'line without newline at the end' >"$T/nonl"
roundtrip /rt/nonl "$T/nonl"

printf 'caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\n' >"$T/utf8"
roundtrip "/rt/ünïcødé €/päth" "$T/utf8"

# binary with NUL bytes at the start, middle and end, stored inline (< 64 KiB) and as a blob
{ printf '\0\0\0abc\0'; head -c 1000 /dev/urandom; printf '\0'; } >"$T/bin-small"
assert_eq 1008 "$(stat -c %s "$T/bin-small")" "test file size"
roundtrip /rt/bin-small "$T/bin-small"
{ printf '\0'; head -c 300000 /dev/urandom; printf '\0\0'; } >"$SHM/bin-blob"
roundtrip /rt/bin-blob "$SHM/bin-blob"

# the inline threshold (64 KiB) and the upload part size (8 MiB), each side of the boundary
for n in 65535 65536 65537 $((8 * 1048576 - 1)) $((8 * 1048576)) $((8 * 1048576 + 1)) \
    $((16 * 1048576 + 5)); do
    head -c "$n" /dev/urandom >"$SHM/b$n"
    roundtrip "/rt/size/$n" "$SHM/b$n"
    rm -f "$SHM/b$n"
done

# the same content twice (stored once) and then one of them changed: both still read right
cp "$SHM/bin-blob" "$SHM/bin-blob2"
roundtrip /rt/bin-blob-copy "$SHM/bin-blob2"
head -c 100 /dev/urandom >>"$SHM/bin-blob2"
roundtrip /rt/bin-blob-copy "$SHM/bin-blob2"
roundtrip /rt/bin-blob "$SHM/bin-blob"

# --- stdin: a small body and a 20 MiB one through a pipe (uploads without a known size)
printf 'from stdin\n' | "$LOCKSTEP" put /rt/stdin >/dev/null
assert_eq "from stdin" "$("$LOCKSTEP" get /rt/stdin)" "put from stdin"
head -c $((20 * 1048576 + 3)) /dev/urandom >"$SHM/pipe"
cat "$SHM/pipe" | "$LOCKSTEP" put /rt/pipe - >/dev/null
"$LOCKSTEP" get /rt/pipe | cmp - "$SHM/pipe" || fail "20 MiB body put through a pipe differs"
rm -f "$SHM/pipe"

# --- 100 MiB through upload sessions (13 parts of 8 MiB)
head -c $((100 * 1048576)) /dev/urandom >"$SHM/big"
t0=$SECONDS
roundtrip /rt/big "$SHM/big"
log "100 MiB put+get+stat in $((SECONDS - t0)) s"
# no upload session is left behind
assert_eq 0 "$(find "$DATA_rt/uploads" -type f | wc -l)" "upload sessions left after the put"
rm -f "$SHM/big"

# --- versions: get --version N and stat --version N
printf 'v1 body' >"$T/v1"
printf 'v2 body, longer' >"$T/v2"
printf '' >"$T/v3"
"$LOCKSTEP" put /rt/ver "$T/v1" >/dev/null
"$LOCKSTEP" put /rt/ver "$T/v2" --kind page --meta '{"b":2,"a":[1,"x"],"c":{"d":null}}' >/dev/null
assert_exit 0 "$LOCKSTEP" put /rt/ver "$T/v3" --publish
assert_eq "put /rt/ver version 3 seq $(seq_of rt)" "$OUT" "put output"
for v in 1 2 3; do
    "$LOCKSTEP" get /rt/ver --version "$v" >"$T/got"
    assert_same_file "$T/v$v" "$T/got" "get --version $v"
    assert_exit 0 "$LOCKSTEP" get /rt/ver --version "$v" -o "$T/got-o"
    assert_same_file "$T/v$v" "$T/got-o" "get --version $v -o"
done
assert_exit 3 "$LOCKSTEP" get /rt/ver --version 4
assert_contains "$ERR" "no version 4" "get of a version that does not exist"
assert_exit 3 "$LOCKSTEP" get /rt/missing
assert_eq "lockstep get: /rt/missing: not found" "$ERR" "get of a missing item"

# get -o: a failed get leaves an existing output file alone and leaves no partial file behind
printf 'keep me' >"$T/keep"
assert_exit 3 "$LOCKSTEP" get /rt/missing -o "$T/keep"
assert_eq "keep me" "$(cat "$T/keep")" "the -o file after a failed get"
assert_eq 0 "$(find "$T" -name 'keep.part*' | wc -l)" "partial output files"
assert_exit 0 "$LOCKSTEP" get /rt/ver -o "$T/keep"
assert_same_file "$T/v3" "$T/keep" "get -o replaces the file"

# --- stat --json: every field
"$LOCKSTEP" stat /rt/ver --json >"$T/stat.json"
jq -e 'has("path") and has("kind") and has("status") and has("version") and
       has("published_version") and has("seq") and has("size") and has("sha256") and
       has("meta")' "$T/stat.json" >/dev/null || fail "stat --json lacks a field: $(cat "$T/stat.json")"
assert_eq /rt/ver "$(jq -r .path "$T/stat.json")" "stat path"
assert_eq page "$(jq -r .kind "$T/stat.json")" "stat kind (kept from v2)"
assert_eq published "$(jq -r .status "$T/stat.json")" "stat status"
assert_eq 3 "$(jq -r .version "$T/stat.json")" "stat version"
assert_eq 3 "$(jq -r .published_version "$T/stat.json")" "stat published_version"
assert_eq 0 "$(jq -r .size "$T/stat.json")" "stat size"
assert_eq '{"a":[1,"x"],"b":2,"c":{"d":null}}' "$(jq -cS .meta "$T/stat.json")" "stat meta (kept from v2)"
assert_eq "$(sha256sum <"$T/v3" | cut -d' ' -f1)" "$(jq -r .sha256 "$T/stat.json")" "stat sha256"
seq_now=$(seq_of rt)
assert_eq "$seq_now" "$(jq -r .seq "$T/stat.json")" "stat seq (the item's last change)"
"$LOCKSTEP" stat /rt/ver --version 1 --json >"$T/stat1.json"
assert_eq 1 "$(jq -r .version "$T/stat1.json")" "stat --version 1: version"
assert_eq 7 "$(jq -r .size "$T/stat1.json")" "stat --version 1: size"
assert_eq document "$(jq -r .kind "$T/stat1.json")" "stat --version 1: kind"
assert_eq "$(sha256sum <"$T/v1" | cut -d' ' -f1)" "$(jq -r .sha256 "$T/stat1.json")" "stat --version 1: sha256"
"$LOCKSTEP" stat /rt/text.txt --json >"$T/stat.json"
assert_eq draft "$(jq -r .status "$T/stat.json")" "status of an unpublished item"
assert_eq null "$(jq -r .published_version "$T/stat.json")" "published_version of an unpublished item"
assert_eq document "$(jq -r .kind "$T/stat.json")" "default kind"
assert_eq '{}' "$(jq -c .meta "$T/stat.json")" "default meta"
assert_exit 3 "$LOCKSTEP" stat /rt/missing

# the plain stat output
assert_exit 0 "$LOCKSTEP" stat /rt/ver
assert_contains "$OUT" "status:    published"
assert_contains "$OUT" "sha256:    $(sha256sum <"$T/v3" | cut -d' ' -f1)"

# --- everything still reads the same after a clean restart
stop_server rt
start_server rt
"$LOCKSTEP" get /rt/bin-small | cmp - "$T/bin-small" || fail "bin-small after restart"
"$LOCKSTEP" get /rt/bin-blob | cmp - "$SHM/bin-blob" || fail "bin-blob after restart"
"$LOCKSTEP" get "/rt/ünïcødé €/päth" | cmp - "$T/utf8" || fail "utf-8 path after restart"
stop_server rt
