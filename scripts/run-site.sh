#!/usr/bin/env bash
# `make run`: starts a local lockstep site on 127.0.0.1 - a primary, a replica and a staging
# server, data in ./data - loads sample content on first start, and stops all three cleanly
# on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$PWD/build/lockstep
mkdir -p data
pids=()
stop() {
  trap - INT TERM EXIT
  echo
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  echo "site stopped (data kept in ./data)"
}
trap stop INT TERM EXIT

start() { # name http peer [flags...]
  local name=$1 http=$2 peer=$3; shift 3
  "$bin" serve --data "data/$name" --name "$name" --http "127.0.0.1:$http" \
    --listen "127.0.0.1:$peer" "$@" 2>>"data/$name.log" &
  pids+=($!)
  for _ in $(seq 100); do
    "$bin" status --server "http://127.0.0.1:$http" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "$name did not start; see data/$name.log" >&2
  exit 1
}

start primary 7070 7071 --role primary
start replica 7080 7081 --role replica --upstream 127.0.0.1:7071
start staging 7090 7091 --role staging --upstream 127.0.0.1:7071

P=http://127.0.0.1:7070
if "$bin" status --server $P --json | grep -q '"seq": 0,'; then
  echo '<h1>Welcome</h1>' | "$bin" put /site/index.html --kind page --meta '{"title":"Home"}' --publish --server $P >/dev/null
  echo '<h1>About us</h1>' | "$bin" put /site/about.html --kind page --meta '{"title":"About"}' --publish --server $P >/dev/null
  echo '<h1>Coming soon</h1>' | "$bin" put /site/news.html --kind page --server $P >/dev/null
fi

cat <<MSG

A lockstep site is running on 127.0.0.1 (logs and data in ./data):
  primary   http://127.0.0.1:7070   peer port 7071   accepts writes
  replica   http://127.0.0.1:7080   peer port 7081   exact copy of the primary
  staging   http://127.0.0.1:7090   peer port 7091   published content only

Try:
  echo 'Hello' | build/lockstep put /site/hello.html --server $P      # write on the primary
  build/lockstep get /site/hello.html --server http://127.0.0.1:7080   # read it on the replica
  build/lockstep get /site/hello.html --server http://127.0.0.1:7090   # a draft: not on staging
  build/lockstep publish /site/hello.html --server $P                  # now it is
  build/lockstep nodes --all --server $P                               # every server of the site
  build/lockstep watch --consumer demo --server http://127.0.0.1:7090  # notifications, on staging
  build/lockstep notify cache '{"drop":"/site/hello.html"}' --server http://127.0.0.1:7080
                                                                     # (published via the replica)

Ctrl-C stops all three.
MSG
wait
