#!/usr/bin/env bash
# Batches: `lockstep import` of NDJSON applies every kind of operation; a malformed line or an
# operation that fails makes the whole file fail with nothing written; POST /v1/batch directly;
# a 50k-line import.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

start_server bat

field() { "$LOCKSTEP" stat "$1" --json | jq -r ".$2"; }
ls_paths() { "$LOCKSTEP" ls --json "$@" | jq -r .path | tr '\n' ' ' | sed 's/ $//'; }

# --- every operation
printf 'pre-existing' | "$LOCKSTEP" put /b/old >/dev/null
printf 'to purge' | "$LOCKSTEP" put /b/purged >/dev/null
s0=$(seq_of bat)
head -c 3000 /dev/urandom >"$T/bin"
printf '\0\0' >>"$T/bin"
b64=$(base64 -w0 <"$T/bin")
cat >"$T/ops.ndjson" <<EOF
{"op":"put","path":"/b/text","body":"hello\nworld \u00e9\tx"}
{"op":"put","path":"/b/bin","body_base64":"$b64"}
{"op":"put","path":"/b/page","body":"<p>","kind":"page","meta":{"title":"T","n":[1,2],"z":{"a":true}},"status":"published"}

{"op":"put","path":"/b/page","body":"<p>v2"}
{"op":"put","path":"/b/draft","body":"d","status":"draft"}
{"op":"put","path":"/b/empty"}
{"op":"publish","path":"/b/draft"}
{"op":"unpublish","path":"/b/draft"}
{"op":"publish","path":"/b/page","version":1}
{"op":"delete","path":"/b/old"}
{"op":"move","path":"/b/text","to":"/b/moved"}
{"op":"purge","path":"/b/purged"}
{"op":"put","path":"/b/crlf","body":"crlf line"}
EOF
printf '{"op":"put","path":"/b/last","body":"no newline at the end"}' >>"$T/ops.ndjson"
sed -i '14s/$/\r/' "$T/ops.ndjson" # one CRLF line (and line 4 is blank)
assert_exit 0 "$LOCKSTEP" import "$T/ops.ndjson"
assert_contains "$OUT" "imported 14 operations" "import output"
assert_contains "$OUT" "(seq $((s0 + 1)) to $((s0 + 14)))" "import output"
assert_eq $((s0 + 14)) "$(seq_of bat)" "seq after the import"

assert_eq "$(printf 'hello\nworld \xc3\xa9\tx' | sha256sum)" "$("$LOCKSTEP" get /b/moved | sha256sum)" \
    "body with escapes, moved"
assert_exit 3 "$LOCKSTEP" get /b/text
"$LOCKSTEP" get /b/bin >"$T/got"
assert_same_file "$T/bin" "$T/got" "body_base64"
assert_eq "<p>v2" "$("$LOCKSTEP" get /b/page)" "page latest"
assert_eq page "$(field /b/page kind)" "kind kept by the second put"
assert_eq '{"n":[1,2],"title":"T","z":{"a":true}}' "$("$LOCKSTEP" stat /b/page --json | jq -cS .meta)" \
    "meta kept by the second put"
assert_eq 1 "$(field /b/page published_version)" "publish version 1"
assert_eq changed "$(field /b/page status)" "page status"
assert_eq draft "$(field /b/draft status)" "publish then unpublish"
assert_eq 0 "$(field /b/empty size)" "put without a body"
assert_exit 3 "$LOCKSTEP" get /b/old
assert_eq "/b/old" "$("$LOCKSTEP" ls /b --deleted --json | jq -r 'select(.deleted) | .path')" "delete leaves a tombstone"
assert_exit 3 "$LOCKSTEP" history /b/purged
assert_eq "crlf line" "$("$LOCKSTEP" get /b/crlf)" "a CRLF line"
assert_eq "no newline at the end" "$("$LOCKSTEP" get /b/last)" "last line without a newline"
assert_eq "put put put put put put publish unpublish publish delete move purge put put" \
    "$("$LOCKSTEP" changes --since "$s0" --json | jq -r .op | tr '\n' ' ' | sed 's/ $//')" \
    "ops in the change log"

# --- a malformed line 3: nothing of the file is written
good1='{"op":"put","path":"/bad/one","body":"1"}'
good2='{"op":"put","path":"/bad/two","body":"2"}'
good4='{"op":"put","path":"/bad/four","body":"4"}'
check_rejected() { # LINE3 EXPECTED-MESSAGE-PART
    local s d
    s=$(seq_of bat)
    d=$(digest_of bat)
    printf '%s\n%s\n%s\n%s\n' "$good1" "$good2" "$1" "$good4" >"$T/bad.ndjson"
    assert_exit 1 "$LOCKSTEP" import "$T/bad.ndjson"
    assert_contains "$ERR" "line 3" "import error for line 3 = $1"
    assert_contains "$ERR" "$2" "import error for line 3 = $1"
    assert_eq 1 "$(printf '%s\n' "$ERR" | wc -l)" "the error is one line"
    assert_eq "$s" "$(seq_of bat)" "seq after a rejected import ($1)"
    assert_eq "$d" "$(digest_of bat)" "digest after a rejected import ($1)"
    assert_exit 3 "$LOCKSTEP" get /bad/one
}
check_rejected '{"op":"put","path":"/bad/three","body":"3"' "not valid JSON"
check_rejected 'not json at all' "not valid JSON"
check_rejected '{"op":"put","path":"/a/../b","body":"3"}' "'.' or '..' segment"
check_rejected '{"op":"put","path":"relative","body":"3"}' "absolute"
check_rejected '{"op":"put","path":"/a//b"}' "empty segment"
check_rejected '{"op":"put","path":"/x","meta":[1,2]}' "meta must be a JSON object"
check_rejected '{"op":"put","path":"/x","meta":"{}"}' "meta "
check_rejected '{"op":"frobnicate","path":"/x"}' '"op" must be one of'
check_rejected '{"op":"put","path":"/x","colour":"red"}' 'unknown field "colour"'
check_rejected '{"op":"put","path":"/x","body":"a","body_base64":"YQ=="}' 'not both'
check_rejected '{"op":"put","path":"/x","body_base64":"!!!"}' 'not valid base64'
check_rejected '{"op":"put","path":"/x","status":"live"}' '"status" must be'
check_rejected '{"op":"move","path":"/bad/one"}' 'missing "to"'
check_rejected '{"op":"publish","path":"/bad/one","version":0}' '"version" must be a positive integer'
check_rejected '[1,2,3]' 'must be a JSON object'

# --- an operation that fails when applied (line 3): nothing of the file is written either
s=$(seq_of bat)
d=$(digest_of bat)
printf '%s\n%s\n%s\n%s\n' "$good1" "$good2" '{"op":"publish","path":"/bad/missing"}' "$good4" \
    >"$T/fail.ndjson"
assert_exit 3 "$LOCKSTEP" import "$T/fail.ndjson"
assert_eq "lockstep import: line 3: /bad/missing: not found" "$ERR" "import error"
assert_eq "$s" "$(seq_of bat)" "seq after a failed import"
assert_eq "$d" "$(digest_of bat)" "digest after a failed import"
assert_exit 3 "$LOCKSTEP" get /bad/one
# the same with a conflict: a move onto an item the batch itself created
printf '%s\n%s\n%s\n' "$good1" "$good2" '{"op":"move","path":"/bad/one","to":"/bad/two"}' \
    >"$T/fail2.ndjson"
assert_exit 1 "$LOCKSTEP" import "$T/fail2.ndjson"
assert_eq "lockstep import: line 3: /bad/two exists" "$ERR" "import error"
assert_eq "$s" "$(seq_of bat)" "seq after a failed import"
assert_eq "$d" "$(digest_of bat)" "digest after a failed import"
# and the server goes on working: the log is still gapless
printf '%s\n' "$good1" | "$LOCKSTEP" import - >/dev/null
assert_eq $((s + 1)) "$(seq_of bat)" "seq after a good import"
assert_eq 1 "$("$LOCKSTEP" get /bad/one)" "import from stdin"
"$LOCKSTEP" changes --json | jq -r .seq >"$T/seqs"
seq 1 $((s + 1)) | cmp -s - "$T/seqs" || fail "change log seqs are not 1..$((s + 1))"

# an empty file is refused as an empty batch is (not "0 operations (seq 0 to 1)"), and
# writes nothing; so is a file of blank lines
s=$(seq_of bat)
: >"$T/empty.ndjson"
assert_exit 1 "$LOCKSTEP" import "$T/empty.ndjson"
assert_eq "lockstep import: the batch holds no operation" "$ERR" "import of an empty file"
printf '\n\r\n\n' >"$T/blank.ndjson"
assert_exit 1 "$LOCKSTEP" import - <"$T/blank.ndjson"
assert_eq "lockstep import: the batch holds no operation" "$ERR" "import of blank lines"
assert_eq "$s" "$(seq_of bat)" "seq after empty imports"
assert_exit 1 "$LOCKSTEP" import "$T/does-not-exist.ndjson"
assert_contains "$ERR" "cannot open"

# --- 50k lines in one import
s=$(seq_of bat)
awk 'BEGIN { for (i = 1; i <= 50000; i++) printf "{\"op\":\"put\",\"path\":\"/many/%05d\",\"body\":\"item %d\",\"kind\":\"k\",\"meta\":{\"i\":%d}}\n", i, i, i }' >"$T/many.ndjson"
t0=$SECONDS
assert_exit 0 "$LOCKSTEP" import "$T/many.ndjson"
log "50k-line import in $((SECONDS - t0)) s"
assert_contains "$OUT" "imported 50000 operations" "50k import output"
assert_eq $((s + 50000)) "$(seq_of bat)" "seq after the 50k import"
assert_eq "50000" "$(lsc bat digest /many --json | jq -r .items)" "items under /many"
assert_eq "item 31337" "$("$LOCKSTEP" get /many/31337)" "one of the 50k items"
assert_eq '{"i":50000}' "$("$LOCKSTEP" stat /many/50000 --json | jq -c .meta)" "meta of the last item"
assert_eq 50000 "$("$LOCKSTEP" ls /many --json | wc -l)" "ls of the 50k items (paged)"
"$LOCKSTEP" changes --since "$s" --json | jq -r .seq >"$T/seqs"
seq $((s + 1)) $((s + 50000)) | cmp -s - "$T/seqs" || fail "change log seqs of the 50k import"

# a 50k-line file whose last line fails: nothing written
s=$(seq_of bat)
d=$(digest_of bat)
sed -e 's#/many/#/many2/#' "$T/many.ndjson" >"$T/many2.ndjson"
echo '{"op":"unpublish","path":"/many2/00001"}' >>"$T/many2.ndjson"
assert_exit 1 "$LOCKSTEP" import "$T/many2.ndjson"
assert_eq "lockstep import: line 50001: /many2/00001 is not published" "$ERR" "50k import failing at the end"
assert_eq "$s" "$(seq_of bat)" "seq after the failed 50k import"
assert_eq "$d" "$(digest_of bat)" "digest after the failed 50k import"
assert_eq 0 "$(lsc bat digest /many2 --json | jq -r .items)" "items under /many2"

# --- POST /v1/batch directly
U=$URL_bat
s=$(seq_of bat)
# GET, an empty batch, a bad first line: JSON errors {"error":{"code":...,"message":...}}
code=$(curl -s -o "$T/reply" -w '%{http_code}' "$U/v1/batch")
assert_eq 400 "$code" "GET /v1/batch"
jq -e '.error.code and .error.message' "$T/reply" >/dev/null || fail "GET /v1/batch reply: $(cat "$T/reply")"
code=$(curl -s -o "$T/reply" -w '%{http_code}' -X POST --data-binary '' "$U/v1/batch")
assert_eq 400 "$code" "empty batch"
assert_eq bad_batch "$(jq -r .error.code "$T/reply")" "empty batch code"
assert_eq "the batch holds no operation" "$(jq -r .error.message "$T/reply")" "empty batch message"
code=$(curl -s -o "$T/reply" -w '%{http_code}' -X POST --data-binary $'{"op":"put","path":"/a/../b"}\n'"$good1" "$U/v1/batch")
assert_eq 400 "$code" "a batch with a bad first line"
assert_eq '["error"]' "$(jq -c keys "$T/reply")" "error reply keys"
assert_eq '["code","message"]' "$(jq -c '.error | keys' "$T/reply")" "error object keys"
assert_eq bad_batch "$(jq -r .error.code "$T/reply")" "error code"
assert_eq "line 1: path has a '.' or '..' segment" "$(jq -r .error.message "$T/reply")" "error message"
assert_eq "$s" "$(seq_of bat)" "seq after rejected batches"
# valid batches
printf '%s\n%s\n' '{"op":"put","path":"/http/a","body":"A"}' '{"op":"put","path":"/http/b","body":"B","status":"published"}' >"$T/http.ndjson"
code=$(curl -s -o "$T/reply" -w '%{http_code}' -X POST -H 'Content-Type: application/x-ndjson' \
    --data-binary @"$T/http.ndjson" "$U/v1/batch")
assert_eq 200 "$code" "POST /v1/batch status ($(cat "$T/reply"))"
assert_eq "{\"applied\":2,\"first_seq\":$((s + 1)),\"last_seq\":$((s + 2))}" "$(jq -cS . "$T/reply")" \
    "POST /v1/batch reply"
assert_eq B "$("$LOCKSTEP" get /http/b)" "a batch put"
assert_eq published "$(field /http/b status)" "a batch put with status published"
# many small valid batches in a row: each is answered 200 with its counts
for i in 1 2 3 4 5 6 7 8 9 10; do
    code=$(curl -s -o "$T/reply" -w '%{http_code}' -X POST \
        --data-binary "{\"op\":\"put\",\"path\":\"/http/n$i\",\"body\":\"$i\"}" "$U/v1/batch")
    assert_eq 200 "$code" "POST /v1/batch #$i ($(cat "$T/reply"))"
    assert_eq 1 "$(jq -r .applied "$T/reply")" "applied of batch #$i"
done
# a malformed line: 400 {"error":{"code":"bad_batch","message":"line 3: ..."}}
s=$(seq_of bat)
printf '%s\n%s\n%s\n' "$good1" "$good2" '{"op":"put","path":"/a/../b"}' >"$T/http-bad.ndjson"
code=$(curl -s -o "$T/reply" -w '%{http_code}' -X POST --data-binary @"$T/http-bad.ndjson" "$U/v1/batch")
assert_eq 400 "$code" "POST /v1/batch with a bad line"
assert_eq '["error"]' "$(jq -c keys "$T/reply")" "error reply keys"
assert_eq '["code","message"]' "$(jq -c '.error | keys' "$T/reply")" "error object keys"
assert_eq bad_batch "$(jq -r .error.code "$T/reply")" "error code"
assert_eq "line 3: path has a '.' or '..' segment" "$(jq -r .error.message "$T/reply")" "error message"
assert_eq "$s" "$(seq_of bat)" "seq after a rejected POST /v1/batch"
# an operation failing at apply time: 404 not_found naming the line, nothing written
printf '%s\n%s\n' "$good2" '{"op":"delete","path":"/http/nothing"}' >"$T/http-fail.ndjson"
code=$(curl -s -o "$T/reply" -w '%{http_code}' -X POST --data-binary @"$T/http-fail.ndjson" "$U/v1/batch")
assert_eq 404 "$code" "POST /v1/batch failing at apply time"
assert_eq not_found "$(jq -r .error.code "$T/reply")" "error code"
assert_eq "line 2: /http/nothing: not found" "$(jq -r .error.message "$T/reply")" "error message"
assert_eq "$s" "$(seq_of bat)" "seq after a failed POST /v1/batch"

# a line of 300 MiB in an imported file: refused as too long, nothing written, and the server
# never holds much more of it than the 64 MiB a line may have (reading it whole would take more
# than 512 MiB; a fresh server, and a sanitized build runs
# it without ASan's quarantine of freed memory, see test_upload_resume.sh)
{
    printf '%s\n' "$good1"
    printf '{"op":"put","path":"/huge","body":"'
    head -c $((300 * 1048576)) /dev/zero | tr '\0' a
    printf '"}\n'
} >"$SHM/huge.ndjson"
ASAN_OPTIONS="$ASAN_OPTIONS:quarantine_size_mb=0" DATA_ROOT=$SHM start_server huge
assert_exit 1 "$LOCKSTEP" import "$SHM/huge.ndjson"
assert_contains "$ERR" "line 2: longer than 67108864 bytes" "import of a 300 MiB line"
hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$PID_huge/status")
log "server VmHWM after the 300 MiB line: $hwm kB"
((hwm < 200 * 1024)) || fail "the server's peak RSS was $hwm kB for a refused 300 MiB line"
assert_eq 0 "$(seq_of huge)" "seq after the 300 MiB line"
stop_server huge
rm -f "$SHM/huge.ndjson"
use_server bat

stop_server bat
