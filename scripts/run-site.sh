#!/usr/bin/env bash
# `make run`: starts a local lockstep site on 127.0.0.1 - a primary, a replica and a staging
# server, data in ./data - with sample content, a mirroring job copying the site to
# ./data/mirror every 20 s, a consumer watching notifications, and a light trickle of writes and
# notifications so that the dashboard (printed first) moves. Ctrl-C stops everything it started,
# by PID, and keeps the data.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$PWD/build/lockstep
base=${LOCKSTEP_RUN_PORT:-7070} # the primary's HTTP port; the others follow: +1, +10, +11, +20, +21
mkdir -p data
pids=()
stop() { # exit status: 0 when stopped on purpose (Ctrl-C), else the failure's
  local rc=$1
  trap - INT TERM EXIT
  echo
  # the helpers first (the trickle, the watcher), the servers last, replicas before the primary
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  echo "site stopped (data kept in ./data; rm -rf data to start afresh)"
  exit "$rc"
}
trap 'stop 0' INT TERM
trap 'stop $?' EXIT

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

start primary $base $((base + 1)) --role primary
start replica $((base + 10)) $((base + 11)) --role replica --upstream 127.0.0.1:$((base + 1))
start staging $((base + 20)) $((base + 21)) --role staging --upstream 127.0.0.1:$((base + 1))

P=http://127.0.0.1:$base R=http://127.0.0.1:$((base + 10)) S=http://127.0.0.1:$((base + 20))
lsp() { "$bin" "$@" --server $P >/dev/null; }
if "$bin" status --server $P --json | grep -q '"seq": 0,'; then
  echo '<h1>Welcome</h1>' | lsp put /site/index.html --kind page --meta '{"title":"Home"}' --publish
  echo '<h1>About us</h1>' | lsp put /site/about.html --kind page --meta '{"title":"About"}' --publish
  echo '<h1>Coming soon</h1>' | lsp put /site/news.html --kind page
  for i in $(seq -w 1 40); do # some media, so that a mirror run has something to show
    head -c 300000 /dev/urandom | lsp put "/site/media/photo-$i.jpg" --kind media --publish
  done
fi
if ! "$bin" mirror show site-copy --server $P >/dev/null 2>&1; then
  lsp mirror create site-copy --source store:/site --target "dir:$PWD/data/mirror" \
    --published-only --delete --every 20s --package-items 4
  lsp mirror run site-copy
fi

# a consumer on the primary, printing what it is told to data/watch.log
"$bin" watch --consumer demo --channel cache --server $P >>data/watch.log 2>&1 &
pids+=($!)
# the trickle: a write every 2 s (drafts, published now and then), a notification every 5 s;
# its sleeps are reads that time out, so that stopping it leaves no child behind
(
  exec 3<> <(:)
  n=0
  while :; do
    n=$((n + 1))
    flags=(); ((n % 3)) || flags=(--publish)
    printf '<p>visit %d at %s</p>' "$n" "$(date +%T)" |
      "$bin" put /site/live/counter.html --kind page "${flags[@]}" --server $P >/dev/null 2>&1 || true
    ((n % 5)) || "$bin" notify cache "{\"drop\":\"/site/live/counter.html\",\"n\":$n}" \
      --server $P >/dev/null 2>&1 || true
    read -r -t 2 -u 3 || true
  done
) &
pids+=($!)

cat <<MSG

  Dashboard:  $P/     (every server has one: $R/, $S/)

A lockstep site is running on 127.0.0.1 (logs and data in ./data):
  primary   $P   peer port $((base + 1))   accepts writes
  replica   $R   peer port $((base + 11))   exact copy of the primary
  staging   $S   peer port $((base + 21))   published content only
  mirror    site-copy: published /site -> ./data/mirror, every 20 s
  a write every 2 s and a notification every 5 s keep the dashboard moving;
  consumer "demo" prints the notifications to data/watch.log

Try:
MSG
try() { printf '  %-72s # %s\n' "$1" "$2"; }
try "echo 'Hello' | build/lockstep put /site/hello.html --server $P" "write on the primary"
try "build/lockstep get /site/hello.html --server $R" "read it on the replica"
try "build/lockstep get /site/hello.html --server $S" "a draft: not on staging"
try "build/lockstep publish /site/hello.html --server $P" "now it is"
try "build/lockstep nodes --all --server $P" "every server of the site"
try "build/lockstep mirror run site-copy --server $P" "a mirror run, now"
try "build/lockstep watch --consumer me --server $S" "notifications, on staging"
cat <<MSG

Ctrl-C stops everything.
MSG
wait
