#!/usr/bin/env bash
# `lockstep report` (docs/mirror.md, "Distributed report"): three servers (a primary and two
# replicas), each with its own mirroring jobs and history:
#   - by default the servers are those of the site registry; per job and source the newest result
#     wins, whichever server holds it; every server holding the job is named;
#   - with one server stopped the report still completes, lists it as unreachable and exits 1;
#   - a server that accepts connections and never answers does not hold the report up beyond
#     its --timeout;
#   - GET /v1/report needs the role report: a report token reads it, a notify token is refused.
set -euo pipefail
CLI_LEAK_CHECK=1 # every CLI command it runs is leak-checked too (lib.sh)
source "$(dirname "$0")/lib.sh"

report_json() { "$LOCKSTEP" report "$@" --json; }

mkdir -p "$SHM/src"
for i in 1 2 3; do echo "file $i" >"$SHM/src/f$i"; done
start_server a
start_server b --role replica --upstream "127.0.0.1:${_LISTEN[a]}"
start_server c --role replica --upstream "127.0.0.1:${_LISTEN[a]}"
in_registry() { (($(lsc a nodes --all --json | jq '.nodes | length') == 3)); }
wait_until 20 in_registry || fail "the site registry does not list three servers"

# "shared" runs on a, then on b (newer, and partial: one more target under a file); "conly" on c
touch "$SHM/afile"
assert_exit 0 lsc a mirror create shared --source "dir:$SHM/src" --target "dir:$SHM/out_a"
assert_exit 0 lsc a mirror run shared --wait
sleep 0.05
assert_exit 0 lsc b mirror create shared --source "dir:$SHM/src" --target "dir:$SHM/out_b" \
    --target "dir:$SHM/afile/sub"
assert_exit 1 lsc b mirror run shared --wait
assert_exit 0 lsc c mirror create conly --source "dir:$SHM/src" --target "dir:$SHM/out_c"
assert_exit 0 lsc c mirror run conly --wait
assert_exit 0 lsc a mirror create never --source store:/x --target "dir:$SHM/out_n"

assert_exit 0 report_json --server "$(url_of a)"
echo "$OUT" >"$T/r1"
assert_eq 3 "$(jq '.servers | length' "$T/r1")" "servers asked"
assert_eq 0 "$(jq .unreachable "$T/r1")" "unreachable"
assert_eq 3 "$(jq '.jobs | length' "$T/r1")" "jobs"
assert_eq b "$(jq -r '.jobs[] | select(.job=="shared") | .server' "$T/r1")" "the newest shared run's server"
assert_eq partial "$(jq -r '.jobs[] | select(.job=="shared") | .last.state' "$T/r1")" "its state"
assert_eq '["a","b"]' "$(jq -c '[.jobs[] | select(.job=="shared") | .servers[]] | sort' "$T/r1")" "servers holding shared"
assert_eq ok "$(jq -r '.jobs[] | select(.job=="conly") | .last.state' "$T/r1")" "conly"
assert_eq null "$(jq -r '.jobs[] | select(.job=="never") | .last' "$T/r1")" "a job that never ran"
assert_exit 0 "$LOCKSTEP" report --server "$(url_of a)"
assert_contains "$OUT" "conly"
assert_contains "$OUT" "never"

# a new run on a makes a's result the newest
assert_exit 0 lsc a mirror run shared --wait
assert_exit 0 report_json --servers "$(url_of a),$(url_of b),$(url_of c)"
assert_eq a "$(jq -r '.jobs[] | select(.job=="shared") | .server' <<<"$OUT")" "after a's new run"

# c stopped, and a server that never answers
stop_server c
python3 "$CLUSTER_DIR/mute_http.py" "$T/mute.port" 60 &
bg_track $!
wait_until 10 test -s "$T/mute.port" || fail "the mute server did not start"
mute="http://127.0.0.1:$(cat "$T/mute.port")"
start=$(date +%s%N)
assert_exit 1 report_json --servers "$(url_of a),$(url_of b),$(url_of c),$mute" --timeout 2s
ms=$((($(date +%s%N) - start) / 1000000))
((ms < 6000)) || fail "the report took $ms ms with a server that never answers"
echo "$OUT" >"$T/r2"
assert_eq 2 "$(jq .unreachable "$T/r2")" "unreachable servers"
assert_eq unreachable "$(jq -r --arg u "$(url_of c)" '.servers[] | select(.url==$u) | .state' "$T/r2")" "the stopped server"
assert_eq unreachable "$(jq -r --arg u "$mute" '.servers[] | select(.url==$u) | .state' "$T/r2")" "the mute server"
assert_eq a "$(jq -r '.jobs[] | select(.job=="shared") | .server' "$T/r2")" "shared, without c"
assert_eq 0 "$(jq '[.jobs[] | select(.job=="conly")] | length' "$T/r2")" "c's job, c being down"
assert_exit 1 "$LOCKSTEP" report --server "$(url_of a)" # the registry still lists c
assert_contains "$OUT" "unreachable: $(url_of c)"
log "a report with a stopped and a mute server took $ms ms"

# the role
mkdir -p "$T/d"
assert_exit 0 "$LOCKSTEP" token create --data "$T/d" --role admin --name adm
ADMIN=$OUT
assert_exit 0 "$LOCKSTEP" token create --data "$T/d" --role report --name rep
REPORT=$OUT
assert_exit 0 "$LOCKSTEP" token create --data "$T/d" --role notify --name note
NOTIFY=$OUT
LOCKSTEP_TOKEN=$ADMIN start_server d
code() { curl -s -o /dev/null -w '%{http_code}' ${1:+-H "Authorization: Bearer $1"} "$(url_of d)/v1/report"; }
assert_eq 200 "$(code "$REPORT")" "a report token"
assert_eq 403 "$(code "$NOTIFY")" "a notify token"
assert_eq 401 "$(code "")" "no token"
LOCKSTEP_TOKEN=$REPORT assert_exit 0 report_json --servers "$(url_of d)"
LOCKSTEP_TOKEN=$NOTIFY assert_exit 1 report_json --servers "$(url_of d)"
assert_contains "$(jq -r '.servers[0].error' <<<"$OUT")" "403"
LOCKSTEP_TOKEN=$ADMIN stop_server d
stop_server b
stop_server a
echo ok
