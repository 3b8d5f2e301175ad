#!/usr/bin/env bash
# The dashboard without a browser (docs/dashboard.md): GET / on a primary P with a replica R and
# a staging server S lists all three, each with its role, seq and lag, on every one of them; a
# write shows as lag on the replica's row until it has applied it, and as 0 after; the assets
# are embedded (GET /dash/dash.js and /dash/dash.css answer, with their types); the event stream
# starts with every section; a server killed shows "down", not hidden; a server with tokens
# asks for a report token for the page as for /v1/status. Scale: with 200 more servers in the
# site registry (a fake downstream reports them) and 1,000 consumers, / lists every one of them
# and is answered in well under a second.
set -euo pipefail
source "$(dirname "$0")/lib_repl.sh"

start_node P --heartbeat-timeout 3s
start_node R --role replica --upstream "$PEER_P" --heartbeat-timeout 3s
start_node S --role staging --upstream "$PEER_P" --heartbeat-timeout 3s
for i in 1 2 3; do printf 'page %d' "$i" | lsc P put "/site/$i.html" --publish >/dev/null; done
wait_caught_up R P 20
wait_caught_up S P 20
seq=$(seq_of P)

page() { curl -sf "$(url_of "$1")/"; }
# row ON WHO: WHO's row of the servers table on ON's page, one line
row() { page "$1" | grep -o "<tr data-name=\"$2\"[^>]*>.*" | sed 's|</tr>.*||'; }
cell() { sed -n "s|.*<td class=$2>\([^<]*\)<.*|\1|p" <<<"$1"; }
_all_listed() {
    local on=$1 r
    for who in P:primary R:replica S:staging; do
        r=$(row "$on" "${who%%:*}")
        [[ -n "$r" && $(cell "$r" role) == "${who#*:}" && $(cell "$r" seq) == "$seq" &&
           $(cell "$r" lag) == 0 && "$r" == *'class="st-active"'* ]] || return 1
    done
}
for on in P R S; do
    wait_until 15 _all_listed "$on" ||
        fail "the page of $on does not list P, R and S active at seq $seq with lag 0: $(page "$on" | grep -o '<table class=servers>.*</table>' | head -c 3000)"
done
html=$(page P)
assert_contains "$html" '<!doctype html>' "the page"
assert_contains "$html" '<section id=summary>' "the summary"
assert_contains "$html" '<dd class=role>primary</dd>' "P's own role in its summary"
assert_contains "$html" '<section id=mirrors>' "the mirrors section"
assert_contains "$html" '<section id=messenger>' "the messenger section"
assert_contains "$html" '<svg class=chart' "the chart"
assert_contains "$html" '<script src="/dash/dash.js">' "the script"
ctype=$(curl -sf -o "$T/js" -w '%{content_type}' "$URL_P/dash/dash.js")
assert_contains "$ctype" 'text/javascript' "dash.js's type"
assert_contains "$(cat "$T/js")" 'EventSource' "dash.js"
ctype=$(curl -sf -o "$T/css" -w '%{content_type}' "$URL_P/dash/dash.css")
assert_contains "$ctype" 'text/css' "dash.css's type"
[[ $(wc -c <"$T/css") -gt 500 ]] || fail "dash.css is nearly empty"
timeout 3 curl -sN "$URL_P/v1/dashboard/events" >"$T/events" || true
assert_contains "$(head -c 200 "$T/events")" 'event: sections' "the event stream's first event"
for s in summary rates servers messenger mirrors warnings; do
    assert_contains "$(head -n 3 "$T/events")" "\"$s\":" "the first event's $s section"
done

# --- lag: R stopped, P written; R's row on P shows the changes it lacks, in bytes and time too
kill -STOP "$PID_R"
for i in 4 5; do head -c 5000 /dev/urandom | base64 | lsc P put "/site/big$i" >/dev/null; done
sleep 1.2
r=$(row P R)
assert_eq 2 "$(cell "$r" lag)" "R's lag in changes while stopped"
# two bodies of 6,756 bytes (and their log records): 13.3 KiB, not one of them alone
[[ $(cell "$r" lagbytes) =~ ^1[34]\.[0-9]\ KiB$ ]] || fail "R's lag in bytes: $r"
[[ $(cell "$r" lagtime) =~ ^[0-9]+\ s$ ]] || fail "R's lag in seconds: $r"
kill -CONT "$PID_R"
seq=$(seq_of P)
wait_caught_up R P 20
_r_caught_up() { r=$(row P R); [[ $(cell "$r" lag) == 0 && $(cell "$r" seq) == "$seq" ]]; }
wait_until 10 _r_caught_up || fail "R's row after it caught up: $(row P R)"
# an idle site: no lag grows with time
sleep 2
assert_eq "0 s" "$(cell "$(row P R)" lagtime)" "R's lag time on an idle site"

# --- a server that is down is shown as down
kill9_server S
_s_down() { [[ "$(row P S)" == *'class="st-down"'* ]]; }
wait_until 10 _s_down || fail "S killed, not shown down on P: $(row P S)"
assert_contains "$(row P S)" '<td class=role>staging</td>' "S's row once down"

# --- scale: 200 more servers (reported by a fake downstream) and 1,000 consumers
store_id=$(lsc P status --json | jq -r .store_id)
python3 - "${_LISTEN[P]}" "$store_id" "$(seq_of P)" 25 >"$T/fake.log" 2>&1 <<'PY' &
import json, os, sys, time
sys.path.insert(0, os.environ["CLUSTER_DIR"])
import socks
port, store_id, seq, secs = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
s = socks.conn(port)
w = socks.hello(s, "fakehub")
assert w and w[0] == 2, w
s.sendall(socks.frame(3, {"store_id": store_id, "epoch": 1, "seq": seq, "snapshot_pending": False,
                          "filter": {"published_only": False, "include": []}}))
recs = [{"name": "fakehub", "role": "replica", "version": "test", "http": "", "peer": "",
         "upstream": "P", "seq": seq, "state": "active", "age_ms": 0}]
recs += [{"name": "fake-%03d" % i, "role": "replica", "version": "test",
          "http": "127.0.0.1:%d" % (20000 + i), "peer": "", "upstream": "fakehub",
          "seq": seq - (i % 3), "state": "active", "age_ms": 100} for i in range(200)]
s.setblocking(False)
end = time.time() + secs
while time.time() < end:
    s.sendall(socks.frame(11, {"name": "fakehub", "role": "replica", "version": "test", "seq": seq,
                               "uptime_s": 1, "time_ms": int(time.time() * 1000),
                               "site_every_ms": 1000, "site": recs}))
    try:
        while s.recv(65536):
            pass
    except BlockingIOError:
        pass
    time.sleep(0.5)
PY
fake=$!
bg_track "$fake"
python3 - "${PORT_P}" <<'PY'
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
for i in range(1000):
    c.request("GET", "/v1/notifications?consumer=c%04d&channel=ch%d&limit=1" % (i, i % 7))
    r = c.getresponse()
    r.read()
    assert r.status == 200, r.status
PY
_fakes_listed() { [[ $(page P | grep -o '<tr data-name="fake-[0-9]*"' | sort -u | wc -l) -eq 200 ]]; }
wait_until 10 _fakes_listed || fail "the 200 fake servers are not all listed: $(curl -s "$URL_P/v1/nodes?all=1" | jq -c '.nodes | length')"
best=9
for _ in 1 2 3; do
    t=$(curl -sf -o "$T/big.html" -w '%{time_total}' "$URL_P/")
    best=$(python3 -c "print(min($best, $t))")
done
servers=$(grep -o '<tr data-name="[^"]*" class="st-' "$T/big.html" | sort -u | wc -l)
consumers=$(grep -o '<tr data-name="c[0-9]*" class="cs-' "$T/big.html" | sort -u | wc -l)
log "/ with $servers servers and $consumers consumers: $(wc -c <"$T/big.html") bytes in ${best}s (best of 3)"
[[ $servers -ge 203 ]] || fail "servers listed: $servers, expected 204 (P R S, fakehub and 200)"
assert_eq 1000 "$consumers" "consumers listed"
assert_contains "$(cat "$T/big.html")" '<span class=chan>ch3 <small>' "a channel with its consumers"
python3 -c "import sys; sys.exit(0 if $best < 1.0 else 1)" || fail "/ took ${best}s with 200 servers and 1,000 consumers"
kill "$fake" 2>/dev/null || true
log "stopping R"

# --- tokens: the page needs what /v1/status needs
stop_server R
export LOCKSTEP_TOKEN=$("$LOCKSTEP" token create --data "$DATA_R" --role admin) # the readiness probe
"$LOCKSTEP" token create --data "$DATA_R" --role report >"$T/report"
start_node R --role replica --upstream "$PEER_P"
report=$(grep -o 'lst_[0-9a-f]*' "$T/report" | head -1)
assert_eq 401 "$(curl -s -o /dev/null -w '%{http_code}' "$URL_R/")" "/ without a token"
assert_eq 401 "$(curl -s -o /dev/null -w '%{http_code}' "$URL_R/v1/dashboard/events")" "the events without a token"
assert_eq 200 "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $report" "$URL_R/")" "/ with a report token"
log "ok"
