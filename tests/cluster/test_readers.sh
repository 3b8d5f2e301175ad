#!/usr/bin/env bash
# Long reads run on reader threads, not on the event loop: while a digest of 100k items is being
# computed, GET /v1/status, a stat and a write are answered before the digest is; a listing and
# history are answered correctly from the readers; a client that hangs up on a digest does not
# keep the server from answering the next one.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

start_server rd
python3 - "$URL_rd" <<'PY'
import http.client, sys, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
c = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
for base in range(0, 100000, 10000):
    body = "".join('{"op":"put","path":"/d/%06d","body":"x"}\n' % i for i in range(base, base + 10000))
    c.request("POST", "/v1/batch", body=body.encode())
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status
PY
assert_eq 100000 "$(seq_of rd)" "seq after loading"

# A digest and, once it is under way, three short requests: each must finish first.
out=$(python3 - "$URL_rd" <<'PY'
import http.client, sys, threading, time, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
done = {}
def req(name, method, path, body=None):
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    c.request(method, path, body=body)
    r = c.getresponse(); r.read()
    done[name] = (time.perf_counter(), r.status)
digests = [threading.Thread(target=req, args=("digest%d" % i, "GET", "/v1/digest")) for i in range(3)]
for t in digests: t.start()
time.sleep(0.05)
short = [threading.Thread(target=req, args=a) for a in
         (("status", "GET", "/v1/status"), ("stat", "GET", "/v1/stat/d/000001"),
          ("put", "PUT", "/v1/items/w", b"w"))]
for t in short: t.start()
for t in short + digests: t.join()
first_digest = min(done["digest%d" % i][0] for i in range(3))
for name in ("status", "stat", "put"):
    print("%s %d %s" % (name, done[name][1], "before" if done[name][0] < first_digest else "after"))
PY
)
assert_eq "status 200 before|stat 200 before|put 200 before" "$(paste -sd'|' <<<"$out")" \
    "short requests during three digests of 100k items"

# listings and history come from the readers, page by page
assert_eq "100 /d/000099" "$(curl -sf "$URL_rd/v1/list?prefix=/d&limit=100" | jq -r '"\(.items | length) \(.next)"')" "a page of the listing"
assert_eq "/d/000100" "$(curl -sf "$URL_rd/v1/list?prefix=/d&limit=1&after=/d/000099" | jq -r '.items[0].path')" "the next page"
assert_eq 1 "$(lsc rd history /d/000001 --json | jq '.versions | length')" "history"

# a client that hangs up on a digest: the server goes on answering, digests included
for _ in 1 2 3; do timeout 0.2 curl -s "$URL_rd/v1/digest" >/dev/null || true; done
assert_eq 100001 "$(lsc rd digest --json | jq -r .items)" "a digest after three abandoned ones"
# a blob read parked on min_seq whose client hangs up: the commit that wakes it finds nobody to
# stream to (it once handed libevent a connection that was gone, and the server crashed)
head -c 100000 /dev/urandom >"$T/blob"
lsc rd put /big "$T/blob" >/dev/null
next=$(($(seq_of rd) + 1))
curl -s --max-time 1 "$URL_rd/v1/items/big?min_seq=$next&wait_ms=30000" >/dev/null || true
printf 'wake' | lsc rd put /wake - >/dev/null
sleep 0.5
assert_eq "$next" "$(seq_of rd)" "the server after a parked blob read lost its client"
lsc rd get /big | cmp - "$T/blob" || fail "the blob reads back"

# a followed feed is GET only (a HEAD reply has no body to stream)
assert_eq 400 "$(curl -s -o /dev/null -w '%{http_code}' -I "$URL_rd/v1/changes?follow=1")" "HEAD of a followed feed"
stop_server rd
