#!/usr/bin/env bash
# Upload sessions: a full table of abandoned sessions does not block uploads (the least recently
# touched one idle for 10 minutes makes room), and the ".commit" file a crash leaves behind (a
# commit under way, e.g. an import that had committed) is removed at the next start.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

start_server up
U=$URL_up

# --- 1024 sessions fill the table; a new one is refused while they are all fresh
python3 - "$U" 1024 >"$T/ids" <<'PY'
import http.client, json, sys, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
c = http.client.HTTPConnection(u.hostname, u.port)
for _ in range(int(sys.argv[2])):
    c.request("POST", "/v1/uploads")
    r = c.getresponse()
    body = r.read()
    assert r.status == 201, (r.status, body)
    print(json.loads(body)["id"])
PY
assert_eq 1024 "$(wc -l <"$T/ids")" "sessions created"
code=$(curl -s -o "$T/reply" -w '%{http_code}' -X POST "$U/v1/uploads")
assert_eq 503 "$code" "a session beyond the table, all fresh"
assert_eq "too many upload sessions in progress" "$(jq -r .error.message "$T/reply")" "full table"

# --- one idle for 11 minutes makes room; the others stay
old=$(sed -n 5p "$T/ids")
touch -d '-11 minutes' "$DATA_up/uploads/$old"
code=$(curl -s -o "$T/reply" -w '%{http_code}' -X POST "$U/v1/uploads")
assert_eq 201 "$code" "a new session once one has been idle for 11 minutes: $(cat "$T/reply")"
code=$(curl -s -o /dev/null -w '%{http_code}' "$U/v1/uploads/$old")
assert_eq 404 "$code" "the idle session made room"
[[ ! -e "$DATA_up/uploads/$old" ]] || fail "the idle session's file is still there"
code=$(curl -s -o /dev/null -w '%{http_code}' "$U/v1/uploads/$(sed -n 6p "$T/ids")")
assert_eq 200 "$code" "a fresh session is kept"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$U/v1/uploads")
assert_eq 503 "$code" "full again, nothing idle"
# and an upload larger than one request goes through once a session is idle again
touch -d '-1 hour' "$DATA_up/uploads/$(sed -n 7p "$T/ids")"
head -c $((17 * 1048576)) /dev/urandom >"$T/big"
assert_exit 0 "$LOCKSTEP" put /big "$T/big"
"$LOCKSTEP" get /big >"$T/big.back"
assert_same_file "$T/big" "$T/big.back" "the 17 MiB put through an upload session"

# --- a .commit file left by a crash is removed at the next start; sessions stay
stop_server up
keep=$(sed -n 8p "$T/ids")
head -c 100000 /dev/urandom >"$DATA_up/uploads/0123456789abcdef0123456789abcdef.commit"
start_server up
[[ ! -e "$DATA_up/uploads/0123456789abcdef0123456789abcdef.commit" ]] ||
    fail "a leftover .commit file survived the start"
grep -q "removed 1 upload file(s) left by commits interrupted by a crash" "$T/up.log" ||
    fail "the removal is not logged"
code=$(curl -s -o /dev/null -w '%{http_code}' "$URL_up/v1/uploads/$keep")
assert_eq 200 "$code" "a session survives the restart"

