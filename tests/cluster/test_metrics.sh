#!/usr/bin/env bash
# GET /metrics (docs/api.md, "Metrics"): the exposition parses (promparse.py: every line, a TYPE
# and HELP for each family, counters in _total, no series twice, every name lockstep_), and its
# values are those the JSON API and `lockstep ... --json` give at the same moment: seq, epoch,
# the downstream's applied seq and lag, a replica's upstream seq and lag, consumers by state and
# each consumer's position, pending and lag, a mirror job's runs, items and bytes. Replication
# counts follow what happened (a catch-up after a restart adds one, no snapshot), notifications
# accepted count exactly, and the HTTP answers by route pattern and code grow by exactly the
# requests made (a 404 without a route under "none"). The log: every line logfmt; a warning
# provoked (garbage on the peer port) is in the log, in GET /v1/status "warnings" and in
# lockstep_log_messages_total; a bad --log-level is refused, and --log-level error hides the
# warnings from the log but not from status. The human tables of status and nodes show what
# --json shows.
set -euo pipefail
source "$(dirname "$0")/lib_repl.sh"

export LOCKSTEP_RECKON_MS=300 # consumers' pending counts settle fast
start_node P
start_node R --role replica --upstream "$PEER_P"
for i in 1 2 3 4 5; do printf 'page %d' "$i" | lsc P put "/m/$i" --publish >/dev/null; done
wait_caught_up R P 15

# scrape NAME [SERVER]: GET /metrics into $T/NAME.txt, checked and parsed into $T/NAME.json
scrape() {
    local url
    url=$(url_of "${2:-P}")
    curl -sf -D "$T/$1.headers" "$url/metrics" >"$T/$1.txt" || fail "GET /metrics on ${2:-P} failed"
    python3 "$CLUSTER_DIR/promparse.py" --prefix lockstep_ <"$T/$1.txt" >"$T/$1.json" 2>"$T/$1.err" ||
        fail "the exposition of ${2:-P} does not parse: $(head -5 "$T/$1.err")"
}
# metric SCRAPE 'name{labels}': its value ("absent" when the series is not there)
metric() { jq -r --arg k "$2" '.[$k] // "absent"' "$T/$1.json"; }
# delta A B SERIES: B's value minus A's (an absent series counts 0)
delta() {
    local a b
    a=$(jq -r --arg k "$3" '.[$k] // 0' "$T/$1.json")
    b=$(jq -r --arg k "$3" '.[$k] // 0' "$T/$2.json")
    echo $((b - a))
}

_applied() { [[ "$(lsc P nodes --json | jq -r '.nodes[] | select(.name == "R") | .applied_seq')" == "$(seq_of P)" ]]; }
wait_until 10 _applied || fail "R's applied_seq did not reach P's seq"

# --- the format
scrape first
grep -qi '^Content-Type: text/plain; version=0.0.4' "$T/first.headers" ||
    fail "Content-Type: $(grep -i '^Content-Type' "$T/first.headers")"
assert_eq 1 "$(metric first 'lockstep_info{name="P",role="primary",version="0.1.0"}')" "lockstep_info"

# --- the server, and the downstream R, against status and nodes (--json)
lsc P status --json >"$T/status.P"
lsc P nodes --json >"$T/nodes.P"
scrape s1
lsc P nodes --json >"$T/nodes.P2"
for f in seq epoch log_first_seq downstreams; do
    name=$f
    [[ $f == downstreams ]] && name=downstreams_connected
    assert_eq "$(jq -r ".$f" "$T/status.P")" "$(metric s1 "lockstep_$name")" "lockstep_$name = status .$f"
done
assert_eq 1 "$(metric s1 lockstep_upstream_live)" "a primary is live"
for f in applied_seq lag_changes lag_bytes lag_seconds; do
    want=$(jq -r ".nodes[] | select(.name == \"R\") | .$f" "$T/nodes.P")
    assert_eq "$want" "$(metric s1 "lockstep_downstream_$f{downstream=\"R\"}")" "lockstep_downstream_$f = nodes .$f"
done
assert_eq "$(seq_of P)" "$(metric s1 'lockstep_downstream_applied_seq{downstream="R"}')" "R's applied seq is P's seq"
assert_eq 1 "$(metric s1 'lockstep_downstream_up{downstream="R"}')" "R is up"
(($(metric s1 lockstep_repl_sent_bytes_total) > 0)) || fail "no bytes sent to R: $(metric s1 lockstep_repl_sent_bytes_total)"
assert_eq 1 "$(($(metric s1 lockstep_repl_catchups_total) + $(metric s1 lockstep_repl_snapshots_total)))" \
    "one sync of R so far (a catch-up or a snapshot)"

# the replica's own figures against its status
lsc R status --json >"$T/status.R"
scrape r1 R
assert_eq "$(jq -r .upstream_seq "$T/status.R")" "$(metric r1 lockstep_upstream_seq)" "R: upstream_seq"
assert_eq "$(jq -r .lag_changes "$T/status.R")" "$(metric r1 lockstep_upstream_lag_changes)" "R: upstream lag"
assert_eq "$(jq -r .seq "$T/status.R")" "$(metric r1 lockstep_seq)" "R: seq"
assert_eq 1 "$(metric r1 lockstep_upstream_live)" "R follows live"

# --- a restart of R while P writes: one catch-up more, no snapshot, and lag while R is away
stop_server R
printf 'while away' | lsc P put /m/6 >/dev/null
printf 'while away' | lsc P put /m/7 >/dev/null
scrape away
assert_eq 0 "$(metric away 'lockstep_downstream_up{downstream="R"}')" "R is down while stopped"
assert_eq 2 "$(metric away 'lockstep_downstream_lag_changes{downstream="R"}')" "R's lag while stopped"
start_node R --role replica --upstream "$PEER_P"
wait_caught_up R P 15
wait_until 10 _applied || fail "R's applied_seq did not reach P's seq after its restart"
scrape s2
assert_eq 1 "$(delta s1 s2 lockstep_repl_catchups_total)" "catch-ups after R's restart"
assert_eq 0 "$(delta s1 s2 lockstep_repl_snapshots_total)" "snapshots after R's restart"
(($(delta s1 s2 lockstep_repl_sent_bytes_total) > 0)) || fail "no bytes sent for the catch-up"
assert_eq 0 "$(metric s2 'lockstep_downstream_lag_changes{downstream="R"}')" "R's lag after catching up"

# --- notifications and a consumer
curl -sf -X POST "$URL_P/v1/notify" -d '[{"channel":"news","payload":1},{"channel":"news","payload":2},{"channel":"news","payload":3}]' >/dev/null
curl -sf "$URL_P/v1/notifications?consumer=c1&channel=news&from=start" >"$T/page1"
assert_eq 3 "$(jq '.notifications | length' "$T/page1")" "c1's first page"
first_id=$(jq '.notifications[0].id' "$T/page1")
curl -sf -X POST "$URL_P/v1/consumers/c1/ack" -d "{\"id\":$first_id}" >/dev/null
curl -sf "$URL_P/v1/notifications?consumer=idle&channel=other" >/dev/null # a second, with nothing
# wait until the reckoning has seen c1's two pending notifications
_pending2() { [[ "$(lsc P consumers --json | jq -r '.consumers[] | select(.name == "c1") | .pending')" == 2 ]]; }
wait_until 10 _pending2 || fail "c1's pending did not settle at 2: $(lsc P consumers --json)"
lsc P consumers --json >"$T/consumers.before"
scrape s3
lsc P consumers --json >"$T/consumers"
lsc P status --json >"$T/status.P3"
assert_eq 3 "$(delta s2 s3 lockstep_notifications_published_total)" "notifications accepted"
assert_eq 1 "$(delta s2 s3 lockstep_consumer_acks_total)" "acks"
for c in c1 idle; do
    for f in position pending; do
        want=$(jq -r ".consumers[] | select(.name == \"$c\") | .$f" "$T/consumers")
        assert_eq "$want" "$(metric s3 "lockstep_consumer_$f{consumer=\"$c\"}")" "$c: lockstep_consumer_$f = consumers .$f"
    done
    # the lag grows with the clock: between the values read just before and just after
    lo=$(jq -r ".consumers[] | select(.name == \"$c\") | .lag_seconds" "$T/consumers.before")
    hi=$(jq -r ".consumers[] | select(.name == \"$c\") | .lag_seconds" "$T/consumers")
    got=$(metric s3 "lockstep_consumer_lag_seconds{consumer=\"$c\"}")
    ((lo <= got && got <= hi)) || fail "$c: lag_seconds $got on /metrics, $lo then $hi in consumers"
done
assert_eq "$first_id" "$(metric s3 'lockstep_consumer_position{consumer="c1"}')" "c1's position is its ack"
for st in live behind stalled reset; do
    assert_eq "$(jq -r ".messenger.states.$st" "$T/status.P3")" "$(metric s3 "lockstep_consumers{state=\"$st\"}")" "consumers $st"
done
assert_eq 0 "$(metric s3 lockstep_consumers_unlisted)" "no consumer without series"
assert_eq "$(jq -r '.seq' "$T/status.P3")" "$(metric s3 lockstep_seq)" "seq after the notifications"

# --- a mirror job
assert_exit 0 lsc P mirror create site --source store:/m --target "dir:$SHM/out"
assert_exit 0 lsc P mirror run site --wait
lsc P mirror history site --json >"$T/history"
scrape s4
assert_eq 1 "$(metric s4 'lockstep_mirror_runs_total{job="site",result="ok"}')" "runs ok"
assert_eq 0 "$(metric s4 'lockstep_mirror_runs_total{job="site",result="failed"}')" "runs failed"
for f in items bytes errors; do
    assert_eq "$(jq -r ".runs[0].$f" "$T/history")" "$(metric s4 "lockstep_mirror_${f}_total{job=\"site\"}")" "mirror $f = history .$f"
done
assert_eq 7 "$(metric s4 'lockstep_mirror_items_total{job="site"}')" "the job sent every item"
assert_eq 0 "$(metric s4 'lockstep_mirror_running{job="site"}')" "no run going on"

# --- HTTP answers by route and code: exactly the requests made between two scrapes
scrape h1
for i in 1 2 3 4 5 6 7; do curl -sf "$URL_P/v1/stat/m/1" >/dev/null; done
for i in 1 2; do curl -s "$URL_P/v1/stat/nope" >/dev/null; done
for i in 1 2 3; do curl -s "$URL_P/no/such/route" >/dev/null; done
curl -s -X POST "$URL_P/v1/status" >/dev/null # a method the route does not take
put_code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT --data-binary 'x' "$URL_P/v1/items/h/1")
scrape h2
assert_eq 7 "$(delta h1 h2 'lockstep_http_requests_total{code="200",route="/v1/stat/{path*}"}')" "200s of /v1/stat"
assert_eq 2 "$(delta h1 h2 'lockstep_http_requests_total{code="404",route="/v1/stat/{path*}"}')" "404s of /v1/stat"
assert_eq 3 "$(delta h1 h2 'lockstep_http_requests_total{code="404",route="none"}')" "404s without a route"
assert_eq 1 "$(delta h1 h2 'lockstep_http_requests_total{code="400",route="/v1/status"}')" "a refused method"
assert_eq 1 "$(delta h1 h2 "lockstep_http_requests_total{code=\"$put_code\",route=\"/v1/items/{path*}\"}")" "a put ($put_code)"
assert_eq 1 "$(delta h1 h2 'lockstep_http_requests_total{code="200",route="/metrics"}')" "the first scrape, once"
assert_eq 0 "$(delta h1 h2 'lockstep_http_requests_total{code="200",route="/v1/status"}')" "no status asked"
# and nothing else moved
total() { jq '[to_entries[] | select(.key | startswith("lockstep_http_requests_total")) | .value] | add' "$T/$1.json"; }
assert_eq 15 "$(($(total h2) - $(total h1)))" "every answer counted once"
assert_eq 0 "$(metric h2 lockstep_writer_queue_requests)" "the writer's queue when idle"
assert_eq 0 "$(metric h2 lockstep_writer_queue_bytes)" "the writer's queue bytes when idle"

# --- the log: logfmt, and a warning in status and in the counts
# (lib.sh heads each start with a line of its own, '=== TIME COMMAND')
bad=$(grep -v '^=== ' "$T/P.log" |
    grep -cvE '^ts=[0-9-]{10}T[0-9:.]{12}Z level=(debug|info|warn|error) node=P msg="([^"\\]|\\.)*"$' || true)
assert_eq 0 "$bad" "lines of P's log that are not logfmt: $(grep -vE '^ts=' "$T/P.log" | head -3)"
warn_before=$(metric h2 'lockstep_log_messages_total{level="warn"}')
curl -s --max-time 2 "http://$PEER_P/" >/dev/null 2>&1 || true # HTTP on the peer port
_warned() { lsc P status --json | jq -e '.warnings[] | select(.level == "warn" and (.msg | contains("closing the connection")))'; }
wait_until 10 _warned || fail "no warning in status: $(lsc P status --json | jq -c .warnings)"
w=$(lsc P status --json | jq -c '[.warnings[] | select(.msg | contains("closing the connection"))][-1]')
assert_eq '["level","msg","time"]' "$(jq -c 'keys' <<<"$w")" "a warning's fields"
date -d "$(jq -r .time <<<"$w")" +%s >/dev/null || fail "a warning's time: $w"
msg=$(jq -r .msg <<<"$w")
grep -qF "level=warn node=P msg=\"$msg\"" "$T/P.log" || fail "the warning is not in P's log as '$msg'"
scrape w1
(($(metric w1 'lockstep_log_messages_total{level="warn"}') > warn_before)) || fail "warn count did not grow"

# --- the human tables say what --json says
assert_exit 0 lsc P status
grep -qE "^seq +$(seq_of P)$" <<<"$OUT" || fail "status (text): no seq line: $OUT"
assert_contains "$OUT" "CONSUMERS" "status (text): the messenger's table"
line=$(grep '^native ' <<<"$OUT") || fail "status (text): no messenger row: $OUT"
[[ "$line" =~ ^native\ +2\ +([0-9]+) ]] || fail "status (text): messenger row '$line'"
assert_contains "$OUT" "closing the connection" "status (text): the last warnings"
assert_exit 0 lsc P nodes
header=$(head -1 <<<"$OUT")
row=$(grep '^R ' <<<"$OUT") || fail "nodes (text): no row for R: $OUT"
# aligned: APPLIED ends where R's applied seq ends
h_end=$(($(awk -v s="$header" 'BEGIN { print index(s, "APPLIED") }') + 6))
[[ "${row:0:$h_end}" =~ \ $(seq_of P)$ ]] || fail "nodes (text): APPLIED not aligned: '$header' / '$row'"
assert_exit 0 lsc P nodes --all
assert_contains "$(head -1 <<<"$OUT")" "LAST_HEARTBEAT" "nodes --all (text)"

# --- --log-level: a bad value is refused at start; error hides the warnings from the log, but
# status keeps them
assert_exit 2 "$LOCKSTEP" serve --data "$T/bad-level" --log-level loud
assert_contains "$ERR" "--log-level must be debug, info, warn or error" "a bad --log-level"
assert_exit 2 "$LOCKSTEP" serve --data "$T/bad-level" --log-level INFO
[[ ! -e "$T/bad-level" ]] || fail "serve with a bad --log-level created its data directory"
start_node Q --log-level error
curl -s --max-time 2 "http://$(peer_of Q)/" >/dev/null 2>&1 || true
_q_warned() { lsc Q status --json | jq -e '.warnings[] | select(.msg | contains("closing the connection"))'; }
wait_until 10 _q_warned || fail "Q's status lacks the warning its log level hides"
assert_eq 0 "$(grep -cE 'level=(info|warn)' "$T/Q.log" || true)" "info and warn lines with --log-level error"
