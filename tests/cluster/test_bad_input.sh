#!/usr/bin/env bash
# Bad input: bad paths, bad meta, bodies over --max-body, unknown endpoints, malformed chunked
# bodies and garbage on the HTTP port each get a clear error and change nothing; the server
# survives all of it; usage errors exit 2; every command's --help works.
set -euo pipefail
CLI_LEAK_CHECK=1 # every CLI command it runs is leak-checked too (lib.sh)
source "$(dirname "$0")/lib.sh"

start_server bad
U=$URL_bad
printf 'seed' | "$LOCKSTEP" put /seed >/dev/null
S=$(seq_of bad)
D=$(digest_of bad)
unchanged() { # WHAT
    assert_eq "$S" "$(seq_of bad)" "seq after $1"
    assert_eq "$D" "$(digest_of bad)" "digest after $1"
}

# http_json METHOD URL-PATH [curl args]: sets CODE and BODY
http_json() {
    local method=$1 path=$2
    shift 2
    CODE=$(curl -s --path-as-is -o "$T/body" -w '%{http_code}' -X "$method" "$@" "$U$path")
    BODY=$(cat "$T/body")
}
# expect_error STATUS CODE [MESSAGE]: the last reply was {"error":{"code":CODE,"message":...}}
expect_error() {
    assert_eq "$1" "$CODE" "HTTP status (reply: $BODY)"
    assert_eq '["error"]' "$(jq -c keys <<<"$BODY")" "keys of the error reply"
    assert_eq '["code","message"]' "$(jq -c '.error | keys' <<<"$BODY")" "keys of the error object"
    assert_eq "$2" "$(jq -r .error.code <<<"$BODY")" "error code"
    if [[ -n "${3:-}" ]]; then assert_eq "$3" "$(jq -r .error.message <<<"$BODY")" "error message"; fi
}

# --- bad paths from the CLI: exit 1, one clear line, nothing sent
long=/$(printf 'a%.0s' $(seq 1024)) # 1025 bytes
ok_long=/$(printf 'b%.0s' $(seq 1023)) # 1024 bytes: the longest path
check_cli_path() { # PATH MESSAGE
    local cmd
    for cmd in put get stat history rm purge publish unpublish; do
        assert_exit 1 "$LOCKSTEP" "$cmd" "$1" </dev/null
        assert_eq "lockstep $cmd: $1: $2" "$ERR" "$cmd of a bad path"
    done
    assert_exit 1 "$LOCKSTEP" mv /seed "$1"
    assert_eq "lockstep mv: $1: $2" "$ERR" "mv to a bad path"
}
check_cli_path "" "path is empty"
check_cli_path "relative/path" "path must be absolute (start with '/')"
check_cli_path / "path '/' names no item"
check_cli_path /a//b "path has an empty segment"
check_cli_path /a/./b "path has a '.' or '..' segment"
check_cli_path /a/../b "path has a '.' or '..' segment"
check_cli_path /a/.. "path has a '.' or '..' segment"
check_cli_path /a/ "path has an empty segment"
check_cli_path "$long" "path is longer than 1024 bytes"
check_cli_path "$(printf '/a\tb')" "path contains a control character"
check_cli_path "$(printf '/a\xffb')" "path is not valid UTF-8"
check_cli_path "$(printf '/a\xc0\xafb')" "path is not valid UTF-8"
unchanged "bad paths from the CLI"
# the longest path is fine
assert_exit 0 "$LOCKSTEP" put "$ok_long" < <(printf 'long')
assert_eq long "$("$LOCKSTEP" get "$ok_long")" "a 1024-byte path"
S=$(seq_of bad)
D=$(digest_of bad)

# --- bad paths over HTTP: 400 bad_path
http_json PUT /v1/items/a%FFb --data-binary x
expect_error 400 bad_path "path is not valid UTF-8"
http_json PUT /v1/items/a%00b --data-binary x
expect_error 400 bad_path "path contains a NUL byte"
http_json PUT /v1/items/a%00 --data-binary x
expect_error 400 bad_path "path contains a NUL byte"
http_json PUT /v1/items/a%01b --data-binary x
expect_error 400 bad_path "path contains a control character"
http_json PUT /v1/items/a//b --data-binary x
expect_error 400 bad_path "path has an empty segment"
http_json PUT /v1/items/a/./b --data-binary x
expect_error 400 bad_path "path has a '.' or '..' segment"
http_json PUT /v1/items/a/../b --data-binary x
expect_error 400 bad_path "path has a '.' or '..' segment"
http_json PUT /v1/items/a/%2e%2e/b --data-binary x
expect_error 400 bad_path "path has a '.' or '..' segment"
http_json PUT /v1/items/a/ --data-binary x
expect_error 400 bad_path "path has an empty segment"
http_json PUT /v1/items/ --data-binary x
expect_error 400 bad_path
http_json PUT "/v1/items$long" --data-binary x
expect_error 400 bad_path "path is longer than 1024 bytes"
http_json GET /v1/items/a%FF
expect_error 400 bad_path "path is not valid UTF-8"
http_json GET /v1/stat/a/../b
expect_error 400 bad_path
http_json GET /v1/history/a//b
expect_error 400 bad_path
http_json DELETE /v1/items/a%00
expect_error 400 bad_path
http_json POST /v1/publish/a/./b
expect_error 400 bad_path
http_json POST "/v1/move/seed?to=relative"
expect_error 400 bad_path
http_json POST "/v1/move/seed?to=/a/../b"
expect_error 400 bad_path
http_json GET "/v1/list?prefix=/a//b"
expect_error 400 bad_path
unchanged "bad paths over HTTP"

# --- meta must be a JSON object
for meta in '[1,2]' '[]' '[{"a":1}]'; do
    assert_exit 1 "$LOCKSTEP" put /m --meta "$meta" < <(printf 'x')
    assert_eq "lockstep put: meta must be a JSON object" "$ERR" "put --meta $meta"
    http_json PUT /v1/items/m -H "X-Lockstep-Meta: $meta" --data-binary x
    expect_error 400 bad_meta "meta must be a JSON object"
done
for meta in '"text"' '42' 'null' 'true'; do # (jansson refuses these as documents)
    assert_exit 1 "$LOCKSTEP" put /m --meta "$meta" < <(printf 'x')
    assert_contains "$ERR" "lockstep put: meta " "put --meta '$meta'"
    http_json PUT /v1/items/m -H "X-Lockstep-Meta: $meta" --data-binary x
    expect_error 400 bad_meta
done
assert_exit 1 "$LOCKSTEP" put /m --meta '{"a":' < <(printf 'x')
assert_contains "$ERR" "lockstep put: meta is not valid JSON" "put --meta with broken JSON"
assert_exit 1 "$LOCKSTEP" put /m --meta '{"a":1,"a":2}' < <(printf 'x')
assert_contains "$ERR" "meta is not valid JSON" "put --meta with a duplicate key"
deep=$(printf '{"a":%.0s' $(seq 40))1$(printf '}%.0s' $(seq 40))
assert_exit 1 "$LOCKSTEP" put /m --meta "$deep" < <(printf 'x')
assert_eq "lockstep put: meta is nested deeper than 32 levels" "$ERR" "put --meta nested 40 deep"
assert_exit 3 "$LOCKSTEP" get /m
unchanged "bad meta"

# --- bad query parameters and kinds
http_json GET "/v1/items/seed?version=abc"
expect_error 400 bad_request
http_json GET "/v1/items/seed?version=-1"
expect_error 400 bad_request
http_json GET "/v1/changes?limit=0"
expect_error 400 bad_request
http_json GET "/v1/changes?since=x"
expect_error 400 bad_request
http_json PUT "/v1/items/k?kind=" --data-binary x
expect_error 400 bad_request
http_json PUT "/v1/items/k?kind=%FF" --data-binary x
expect_error 400 bad_request
http_json PUT "/v1/items/k?kind=$(printf 'k%.0s' $(seq 65))" --data-binary x
expect_error 400 bad_request
http_json POST "/v1/move/seed"
expect_error 400 bad_request "move needs ?to=DESTINATION"
# a NUL in a decoded value once cut it short: the move went to /u/a, the kind was "a"
http_json POST "/v1/move/seed?to=/u/a%00b"
expect_error 400 bad_request "a query parameter holds a NUL byte (%00)"
http_json PUT "/v1/items/k?kind=a%00b" --data-binary x
expect_error 400 bad_request "a query parameter holds a NUL byte (%00)"
http_json POST "/v1/uploads/x/commit?path=/up/nul%00evil"
expect_error 400 bad_request "a query parameter holds a NUL byte (%00)"
assert_exit 3 "$LOCKSTEP" stat /u/a
unchanged "bad query parameters"

# --- unknown endpoints and methods: JSON errors
http_json GET /v2/items/seed
expect_error 404 not_found "no such endpoint: /v2/items/seed"
http_json GET /nothing # (GET / is the dashboard)
expect_error 404 not_found "no such endpoint: /nothing"
http_json GET /v1/itemsX/seed
expect_error 404 not_found
http_json POST /v1/statusx
expect_error 404 not_found
http_json DELETE /v1/status
expect_error 400 bad_request "method not allowed on /v1/status"
http_json PUT /v1/publish/seed
expect_error 400 bad_request
http_json POST /v1/items/seed
expect_error 400 bad_request
http_json GET /v1/uploads/0123456789abcdef0123456789abcdef
expect_error 404 not_found
http_json PUT "/v1/uploads/../../store.db?offset=0" --data-binary x
expect_error 404 not_found
http_json POST "/v1/uploads/0123456789abcdef0123456789abcdef/commit?path=/x"
expect_error 404 not_found
unchanged "unknown endpoints"

# --- an upload session after its commit: a failed commit leaves it committable, a good one
# closes it, and a part sent afterwards cannot change what was stored under its hash
printf 'first part;' >"$T/p1"
printf 'late part' >"$T/p2"
http_json POST /v1/uploads
assert_eq 201 "$CODE" "create an upload ($BODY)"
up=$(jq -r .id <<<"$BODY")
http_json PUT "/v1/uploads/$up?offset=0" --data-binary @"$T/p1"
assert_eq 200 "$CODE" "append ($BODY)"
# a part at the wrong offset: 409 bad_offset with the size held (as docs/api.md says)
http_json PUT "/v1/uploads/$up?offset=5" --data-binary @"$T/p1"
assert_eq "409 bad_offset 11" "$CODE $(jq -r '"\(.error.code) \(.size)"' <<<"$BODY")" \
    "a part at the wrong offset ($BODY)"
http_json POST "/v1/uploads/$up/commit?path=/up/late&if_version=7"
expect_error 409 conflict
assert_exit 3 "$LOCKSTEP" get /up/late
http_json GET "/v1/uploads/$up"
assert_eq "200 11" "$CODE $(jq -r .size <<<"$BODY")" "the session after a failed commit ($BODY)"
http_json POST "/v1/uploads/$up/commit?path=/up/late"
assert_eq 200 "$CODE" "commit ($BODY)"
http_json PUT "/v1/uploads/$up?offset=11" --data-binary @"$T/p2"
expect_error 404 not_found
"$LOCKSTEP" get /up/late | cmp - "$T/p1" || fail "the committed upload changed after its commit"
assert_eq "$(sha256sum <"$T/p1" | cut -d' ' -f1) 11" \
    "$("$LOCKSTEP" stat /up/late --json | jq -r '"\(.sha256) \(.size)"')" "hash and size of the upload"
assert_exit 0 "$LOCKSTEP" purge /up/late
S=$(seq_of bad) # the new baseline for unchanged
D=$(digest_of bad)

# --- bodies over --max-body (a server with --max-body 1K)
start_server small --max-body 1K
head -c 1024 /dev/urandom >"$T/1024"
head -c 1025 /dev/urandom >"$T/1025"
head -c $((9 * 1048576)) /dev/urandom >"$SHM/9M"
assert_exit 0 lsc small put /fits "$T/1024"
s_small=$(seq_of small)
assert_exit 1 lsc small put /big "$T/1025"
assert_eq "lockstep put: body is larger than --max-body (1024 bytes)" "$ERR" "put of 1025 bytes"
CODE=$(curl -s -o "$T/body" -w '%{http_code}' -X PUT --data-binary @"$T/1025" "$URL_small/v1/items/big")
BODY=$(cat "$T/body")
expect_error 413 too_large "body is larger than --max-body (1024 bytes)"
# chunked: the same JSON 413 (the body fits --max-request, evhttp's own limit)
CODE=$(curl -s -o "$T/body" -w '%{http_code}' -X PUT -H 'Transfer-Encoding: chunked' \
    --data-binary @"$T/1025" "$URL_small/v1/items/big")
BODY=$(cat "$T/body")
expect_error 413 too_large "body is larger than --max-body (1024 bytes)"
assert_exit 1 lsc small put /big "$SHM/9M" # through an upload session
assert_contains "$ERR" "exceed --max-body" "put of 9 MiB through an upload"
printf '{"op":"put","path":"/big","body_base64":"%s"}\n' "$(base64 -w0 <"$T/1025")" >"$T/big.ndjson"
CODE=$(curl -s -o "$T/body" -w '%{http_code}' -X POST --data-binary @"$T/big.ndjson" "$URL_small/v1/batch")
BODY=$(cat "$T/body")
assert_eq 413 "$CODE" "a batch line with a body over --max-body ($BODY)"
assert_eq too_large "$(jq -r .error.code <<<"$BODY")" "error code"
assert_exit 1 lsc small import "$T/big.ndjson"
assert_exit 3 lsc small get /big
assert_eq "$s_small" "$(seq_of small)" "seq after bodies over --max-body"
assert_eq 0 "$(find "$DATA_small/uploads" -type f -size +1k | wc -l)" "upload files over --max-body kept"
lsc small get /fits | cmp - "$T/1024" || fail "the 1024-byte body"
stop_server small
rm -f "$SHM/9M"
use_server bad

# --- garbage on the HTTP port: the server answers or closes, and lives on
python3 - "$PORT_bad" <<'EOF' || fail "sending garbage to the server"
import os, socket, sys, time
port = int(sys.argv[1])
def send(data, read=True, timeout=5.0, close_early=False):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
    except OSError:
        pass  # the server may close on us mid-send: that is fine
    if close_early:
        s.close()
        return b""
    got = b""
    if read:
        try:
            s.shutdown(socket.SHUT_WR)
            while len(got) < 1 << 20:
                b = s.recv(65536)
                if not b:
                    break
                got += b
        except OSError:
            pass
    s.close()
    return got
cases = {
    "random bytes": os.urandom(4096),
    "random bytes with newlines": b"\r\n".join(os.urandom(100) for _ in range(40)) + b"\r\n\r\n",
    "NUL bytes": b"\0" * 10000,
    "bad request line": b"THIS IS NOT HTTP\r\n\r\n",
    "no version": b"GET /v1/status\r\n\r\n",
    "bad version": b"GET /v1/status HTTP/9.9\r\n\r\n",
    "huge method": b"X" * 100000 + b" / HTTP/1.1\r\n\r\n",
    "huge URI": b"GET /v1/items/" + b"a" * 200000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "huge header": b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 200000 + b"\r\n\r\n",
    "many headers": b"GET /v1/status HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(20000)) + b"\r\n",
    "header without colon": b"GET /v1/status HTTP/1.1\r\nHost x\r\n\r\n",
    "bad content-length": b"PUT /v1/items/g HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\nxyz",
    "negative content-length": b"PUT /v1/items/g HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\nxyz",
    "huge content-length": b"PUT /v1/items/g HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\nxyz",
    "content-length over max-request": b"PUT /v1/items/g HTTP/1.1\r\nHost: x\r\nContent-Length: 17000000\r\n\r\nxyz",
    "short body then close": b"PUT /v1/items/g HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nonly this",
    "bad chunk": b"PUT /v1/items/g HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "huge chunk size": b"PUT /v1/items/g HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFF\r\nabc\r\n",
    "bad percent escape": b"GET /v1/items/%ZZ%%%FF%00 HTTP/1.1\r\nHost: x\r\n\r\n",
    "absolute URI": b"GET http://evil.example/v1/status HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad query": b"GET /v1/changes?since=1&&&===&%FF=%00&since=2 HTTP/1.1\r\nHost: x\r\n\r\n",
    "pipelined": b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n" * 50,
    "HTTP/1.0 keep-alive junk": b"GET /v1/status HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + os.urandom(1000),
}
for name, data in cases.items():
    send(data)
    send(data, close_early=True)
# half-open and idle connections do not block others
idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
for s in idle[:25]:
    s.sendall(b"GET /v1/sta")
t0 = time.time()
got = send(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
if b"200" not in got.split(b"\r\n")[0] or time.time() - t0 > 5:
    print("status with 50 idle connections open:", got[:200]); sys.exit(1)
for s in idle:
    s.close()
EOF
_alive "$PID_bad" || fail "the server died on garbage input"
assert_exit 0 "$LOCKSTEP" status
assert_eq seed "$("$LOCKSTEP" get /seed)" "a read after the garbage"
assert_exit 3 "$LOCKSTEP" get /g
unchanged "garbage on the HTTP port"

# --- two Content-Length headers: the body's length is ambiguous (request smuggling); the
# request gets 400 bad_request in JSON, nothing is written, and the connection is closed
python3 - "$PORT_bad" >"$T/dup_cl" <<'EOF' || fail "sending two Content-Length headers"
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
body = b'{"op":"put","path":"/smuggled","body":"x"}\n'
s.sendall(b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
          b"Content-Length: 5\r\n\r\n" % len(body) + body +
          b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
got = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    got += b
sys.stdout.write(got.decode("latin-1"))
EOF
head -1 "$T/dup_cl" | grep -q "^HTTP/1.1 400 " || fail "two Content-Length headers: $(head -c 300 "$T/dup_cl")"
assert_eq 1 "$(grep -c '^HTTP/1.1' "$T/dup_cl")" "one answer, then the connection is closed"
body=$(sed -n '/^\r$/,$p' "$T/dup_cl" | tail -n +2)
assert_eq bad_request "$(jq -r .error.code <<<"$body")" "two Content-Length headers: code"
assert_eq "a request may have one Content-Length header, not 2" "$(jq -r .error.message <<<"$body")" \
    "two Content-Length headers: message"
assert_exit 3 "$LOCKSTEP" get /smuggled
unchanged "two Content-Length headers"
# --- chunked bodies (tests/cluster/chunked.py): a malformed chunk size line (a chunk extension,
# bad hex, a line too long, a size over 64 bits) or trailer gets 400 bad_request in JSON, the
# connection is closed and nothing is written; good chunked bodies are stored, also split
# across reads, on a keep-alive connection and pipelined
s_chunked=$(seq_of bad)
python3 "$CLUSTER_DIR/chunked.py" "$PORT_bad" || fail "chunked request bodies"
assert_eq $((s_chunked + 7)) "$(seq_of bad)" "seq after the chunked requests (7 good ones)"
for p in plain bytewise ka1 pipe1 pipe4 pipe5; do
    assert_eq "hello world" "$("$LOCKSTEP" get "/chunked/ok/$p")" "the chunked PUT /chunked/ok/$p"
done
assert_eq abc "$("$LOCKSTEP" get /chunked/ok/ka2)" "the second chunked PUT on a keep-alive connection"
for p in x ka3 pipe2 pipe3; do assert_exit 3 "$LOCKSTEP" get "/chunked/bad/$p"; done
# a real client's chunked uploads: curl (Expect: 100-continue) with 3 MiB, and a batch
head -c $((3 * 1048576)) /dev/urandom >"$SHM/3M"
CODE=$(curl -s -o "$T/body" -w '%{http_code}' -X PUT -H 'Transfer-Encoding: chunked' \
    --data-binary @"$SHM/3M" "$U/v1/items/chunked/ok/curl")
assert_eq 200 "$CODE" "curl's chunked PUT of 3 MiB ($(cat "$T/body"))"
"$LOCKSTEP" get /chunked/ok/curl | cmp - "$SHM/3M" || fail "curl's chunked PUT of 3 MiB"
rm -f "$SHM/3M"
printf '{"op":"put","path":"/chunked/ok/batch","body":"b"}\n' >"$T/chunked.ndjson"
CODE=$(curl -s -o "$T/body" -w '%{http_code}' -X POST -H 'Transfer-Encoding: chunked' \
    --data-binary @"$T/chunked.ndjson" "$U/v1/batch")
assert_eq 200 "$CODE" "a chunked batch ($(cat "$T/body"))"
assert_eq b "$("$LOCKSTEP" get /chunked/ok/batch)" "the chunked batch's item"
printf 'ok' | "$LOCKSTEP" put /after-garbage >/dev/null
assert_eq ok "$("$LOCKSTEP" get /after-garbage)" "a write after the garbage"
S=$(seq_of bad)
D=$(digest_of bad)

# --- usage errors: exit 2 with a pointer to --help; nothing sent
assert_exit 2 "$LOCKSTEP"
assert_contains "$ERR" "usage: lockstep COMMAND"
assert_exit 2 "$LOCKSTEP" frobnicate
assert_eq "lockstep: unknown command 'frobnicate' (see lockstep --help)" "$ERR" "unknown command"
assert_exit 2 "$LOCKSTEP" put
assert_eq "lockstep put: missing PATH (see lockstep put --help)" "$ERR" "put without a path"
assert_exit 2 "$LOCKSTEP" put /a /dev/null extra
assert_exit 2 "$LOCKSTEP" put /a --bogus
assert_eq "lockstep put: unknown option '--bogus' (see lockstep put --help)" "$ERR" "unknown option"
assert_exit 2 "$LOCKSTEP" put /a --kind
assert_exit 2 "$LOCKSTEP" get
assert_exit 2 "$LOCKSTEP" get /a /b
assert_exit 2 "$LOCKSTEP" get /seed --version abc
assert_eq "lockstep get: --version must be a positive integer (see lockstep get --help)" "$ERR" "get --version abc"
assert_exit 2 "$LOCKSTEP" get /seed --version 0
assert_exit 2 "$LOCKSTEP" get /seed --version
assert_exit 2 "$LOCKSTEP" get /seed -o
assert_exit 2 "$LOCKSTEP" stat
assert_exit 2 "$LOCKSTEP" stat /a /b
assert_exit 2 "$LOCKSTEP" ls /a /b
assert_exit 2 "$LOCKSTEP" history
assert_exit 2 "$LOCKSTEP" rm
assert_exit 2 "$LOCKSTEP" rm /a /b
assert_exit 2 "$LOCKSTEP" purge
assert_exit 2 "$LOCKSTEP" mv /a
assert_exit 2 "$LOCKSTEP" mv /a /b /c
assert_exit 2 "$LOCKSTEP" publish
assert_exit 2 "$LOCKSTEP" unpublish /a /b
assert_exit 2 "$LOCKSTEP" import a b
assert_exit 2 "$LOCKSTEP" changes --since -1
assert_exit 2 "$LOCKSTEP" changes --since abc
assert_exit 2 "$LOCKSTEP" changes extra
assert_exit 2 "$LOCKSTEP" digest /a /b
assert_exit 2 "$LOCKSTEP" status extra
assert_exit 2 "$LOCKSTEP" status --bogus
assert_exit 2 "$LOCKSTEP" serve
assert_eq "lockstep serve: --data DIR is required" "$ERR" "serve without --data"
assert_exit 2 "$LOCKSTEP" serve --data "$T/x" --bogus
assert_eq "lockstep serve: unknown option '--bogus' (see lockstep serve --help)" "$ERR" "serve --bogus"
assert_exit 2 "$LOCKSTEP" serve --data "$T/x" --max-versions 0
assert_exit 2 "$LOCKSTEP" serve --data "$T/x" --max-versions abc
assert_exit 2 "$LOCKSTEP" serve --data "$T/x" --max-body 12Q
assert_exit 2 "$LOCKSTEP" serve --data "$T/x" --sync sometimes
assert_exit 2 "$LOCKSTEP" serve --data "$T/x" --role replica
assert_exit 2 "$LOCKSTEP" serve --data "$T/x" --http
assert_exit 2 "$LOCKSTEP" serve --data "$T/x" extra
[[ ! -e "$T/x" ]] || fail "serve with a usage error created its data directory"
unchanged "usage errors"

# --- a server that cannot be reached: exit 1, one line
dead=$(free_port)
assert_exit 1 "$LOCKSTEP" get /seed --server "http://127.0.0.1:$dead"
assert_contains "$ERR" "lockstep get: cannot reach the server at http://127.0.0.1:$dead" "unreachable server"
assert_exit 1 "$LOCKSTEP" status --server "http://127.0.0.1:$dead"
assert_exit 1 "$LOCKSTEP" put /x --server "http://127.0.0.1:$dead" < <(printf 'x')
# a port already in use: serve fails with a clear message
assert_exit 1 "$LOCKSTEP" serve --data "$T/busy" --http "127.0.0.1:$PORT_bad" --listen "127.0.0.1:$(free_port)"
assert_contains "$ERR" "cannot listen on 127.0.0.1:$PORT_bad" "serve on a busy port"

# --- --help for every command: exit 0, the usage on stdout
for cmd in serve put get stat ls history rm purge mv publish unpublish import changes digest status; do
    assert_exit 0 "$LOCKSTEP" "$cmd" --help
    assert_contains "$OUT" "usage: lockstep $cmd" "$cmd --help"
    assert_eq "" "$ERR" "$cmd --help stderr"
done
assert_exit 0 "$LOCKSTEP" --help
assert_contains "$OUT" "usage: lockstep COMMAND"
assert_exit 0 "$LOCKSTEP" help
assert_exit 0 "$LOCKSTEP" --version
assert_contains "$OUT" "lockstep "

unchanged "everything"

# --- an empty (or blank) --meta is not valid JSON either: it must not be ignored
for meta in '' ' '; do
    assert_exit 1 "$LOCKSTEP" put /m --meta "$meta" < <(printf 'x')
    assert_contains "$ERR" "lockstep put: meta " "put --meta '$meta'"
    assert_exit 3 "$LOCKSTEP" get /m
    unchanged "put --meta '$meta'"
done
stop_server bad
