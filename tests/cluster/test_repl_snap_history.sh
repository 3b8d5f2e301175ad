#!/usr/bin/env bash
# A snapshot of one item with a long history: 2,000 versions of 60 KB (120 MB of inline bodies,
# all kept: --max-versions and --sync-max-versions 3000). The primary reads the item's versions
# in bounded batches, so its memory does not grow with the history: its peak RSS (VmHWM, reset
# just before) stays within 64 MB of where it was while a new replica takes the snapshot (it grew
# by the whole history, and kept it, when an item's versions were read all at once). The
# replica ends with the primary's digest and the item's full history.
set -euo pipefail
source "$(dirname "$0")/lib_repl.sh"

# freed memory sits in the sanitizer's quarantine (256 MB by default) and would count as RSS
export ASAN_OPTIONS="${ASAN_OPTIONS}:quarantine_size_mb=8"
VERSIONS=2000
start_node P --max-versions 3000 --sync-max-versions 3000
python3 - "$SHM" "$VERSIONS" <<'PY'
import base64, json, os, sys
d, n = sys.argv[1], int(sys.argv[2])
for part in range(4):
    with open("%s/ops%d.ndjson" % (d, part), "w") as f:
        for i in range(n // 4):
            body = base64.b64encode(os.urandom(45000)).decode()  # 60,000 bytes
            f.write(json.dumps({"op": "put", "path": "/history", "body": body}) + "\n")
PY
for part in 0 1 2 3; do
    lsc P import "$SHM/ops$part.ndjson" >/dev/null
    rm -f "$SHM/ops$part.ndjson"
done
printf 'other' | lsc P put /other >/dev/null
assert_eq "$VERSIONS" "$(lsc P history /history --json | jq '.versions | length')" \
    "versions of /history on P"

echo 5 >"/proc/$PID_P/clear_refs" # VmHWM := VmRSS
rss0=$(awk '/^VmRSS:/ {print $2}' "/proc/$PID_P/status")
start_node R --role replica --upstream "$PEER_P" --max-versions 3000
wait_caught_up R P 240
hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$PID_P/status")
rss1=$(awk '/^VmRSS:/ {print $2}' "/proc/$PID_P/status")
log "P: VmRSS ${rss0} kB before the snapshot, peak ${hwm} kB during it, ${rss1} kB after"
grow=$(((hwm - rss0) / 1024))
[[ $grow -lt 64 ]] || fail "the primary's peak RSS grew by $grow MB for one item's snapshot"
assert_same_digest P R
assert_eq "$VERSIONS" "$(lsc R history /history --json | jq '.versions | length')" \
    "versions of /history on R"
log "OK"
