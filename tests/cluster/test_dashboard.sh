#!/usr/bin/env bash
# The dashboard in a real browser (docs/dashboard.md): Debian's chromium, driven by
# playwright-core (tests/browser, the version pinned in its package-lock.json, installed into the
# build tree), opens the dashboard of a primary P with a replica R and a staging server S, and
# checks (tests/browser/dashboard.js): each server listed with its role and lag; a write moves
# the seq on the page without a reload; S stopped is shown down; a mirroring job run shows a
# progress bar that moves, then its last run. The screenshot goes to build/dashboard.png.
# Skipped (77) only when chromium cannot be installed here; npm failing to install playwright-core
# is a failure.
set -euo pipefail
source "$(dirname "$0")/lib_repl.sh"

ROOT=$(cd "$CLUSTER_DIR/../.." && pwd)
if [[ ! -x /usr/bin/chromium ]]; then
    log "installing chromium"
    sudo=; [[ $(id -u) -eq 0 ]] || sudo=sudo
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        $sudo apt-get install -y -qq --no-install-recommends chromium; } >"$T/apt.log" 2>&1 || true
    [[ -x /usr/bin/chromium ]] || { log "SKIP: chromium cannot be installed: $(tail -n 3 "$T/apt.log")"; exit 77; }
fi
command -v npm >/dev/null || fail "npm is missing (scripts/deps.sh test installs it)"
# playwright-core into the build tree, once per version of the lock file
NODE_DIR=$LS_TOOLS/browser
if ! cmp -s "$ROOT/tests/browser/package-lock.json" "$NODE_DIR/package-lock.json" ||
    [[ ! -d "$NODE_DIR/node_modules/playwright-core" ]]; then
    mkdir -p "$NODE_DIR"
    cp "$ROOT/tests/browser/package.json" "$ROOT/tests/browser/package-lock.json" "$NODE_DIR/"
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error) >"$T/npm.log" 2>&1 ||
        fail "npm ci (playwright-core) failed: $(tail -n 5 "$T/npm.log")"
fi
cp "$ROOT/tests/browser/dashboard.js" "$NODE_DIR/"

# each package of a mirror run waits 250 ms (a test hook of mirror_package.c): a run of 40 items
# sent two a package lasts about 5 s, long enough to watch its progress bar move
LOCKSTEP_MIRROR_PACKAGE_DELAY_MS=250 start_node P
start_node R --role replica --upstream "$PEER_P"
start_node S --role staging --upstream "$PEER_P"
python3 - "$PORT_P" <<'PY'
import http.client, os, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
for i in range(40):
    c.request("PUT", "/v1/items/media/f%04d?publish=1" % i, body=os.urandom(20000))
    r = c.getresponse()
    r.read()
    assert r.status in (200, 201), r.status
PY
mkdir -p "$T/mirror"
curl -sf -X POST "$URL_P/v1/mirrors" \
    -d "{\"name\":\"media\",\"source\":\"store:/media\",\"targets\":[\"dir:$T/mirror\"],\"package_items\":2}" >/dev/null
wait_caught_up R P 30
wait_caught_up S P 30

mkdir -p "$ROOT/build"
P_URL=$URL_P S_PID=$PID_S MIRROR=media SHOT="$ROOT/build/dashboard.png" \
    timeout 120 node "$NODE_DIR/dashboard.js" || fail "the browser test failed (above)"
# the script stopped S: reap it, and see it exited cleanly
bg_wait "$PID_S" 10 || fail "S did not exit cleanly after SIGTERM"
_PID[S]=""
[[ -s "$ROOT/build/dashboard.png" ]] || fail "no screenshot"
assert_eq 40 "$(find "$T/mirror" -type f | wc -l)" "files mirrored"
log "ok"
