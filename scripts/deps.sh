#!/usr/bin/env bash
# Installs the Debian packages lockstep needs, and only those that are missing, so that
# `make`, `make run` and `make test` work on a fresh Debian machine. Usage: deps.sh [build|test|bench]
set -euo pipefail
want=(cmake make gcc pkg-config libsqlite3-dev libevent-dev libssl-dev libjansson-dev
      libzstd-dev libcurl4-openssl-dev libinih-dev libpq-dev librsync-dev)
case "${1:-build}" in
  test)  want+=(libcmocka-dev curl python3 jq clang libclang-rt-dev sqlite3
               postgresql chromium nodejs) # postgresql: test_messenger_pg starts a real
         # server; chromium, node and npm: test_dashboard (playwright-core). Some nodejs
         # packages bring npm along: Debian's npm only when there is none.
         command -v npm >/dev/null || want+=(npm) ;;
  bench) want+=(curl python3 redis-server rsync libpq-dev time) ;; # time: bench/mirror.sh
esac
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}" >&2
sudo=; [ "$(id -u)" -ne 0 ] && sudo=sudo
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
