#!/usr/bin/env bash
# 8 writer processes at once, to their own paths and to shared ones (and one of them importing
# 4-line batches): every acknowledged write is in the store and in the change log exactly once,
# the log's seqs are 1..N without a gap, a batch's entries are contiguous, and the versions of a
# shared item count up by one per write.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

# Under ThreadSanitizer (make tsan) fewer: what it needs is the writers overlapping, not volume.
if [[ -n "${LS_TSAN:-}" ]]; then PUTS=${PUTS:-40} BATCHES=${BATCHES:-12}; fi
PUTS=${PUTS:-150}      # per put writer (7 of them)
BATCHES=${BATCHES:-40} # imports of 4 operations by the batch writer
start_server con --max-versions 100000

# writer W: PUTS puts, odd ones to /wW/I, even ones to /shared/(I/2 % 3); one "PATH BODY" line per
# acknowledged put in $T/acked.W, one per failed put in $T/failed.W
put_writer() {
    local w=$1 i path body rc
    for ((i = 1; i <= PUTS; i++)); do
        if ((i % 2)); then path=/w$w/$i; else path=/shared/$((i / 2 % 3)); fi
        body="w$w-i$i"
        rc=0
        printf '%s' "$body" | "$LOCKSTEP" put "$path" >/dev/null 2>>"$T/err.$w" || rc=$?
        if ((rc == 0)); then
            echo "$path $body" >>"$T/acked.$w"
        else
            echo "$path $body rc=$rc" >>"$T/failed.$w"
        fi
    done
}

# the batch writer: BATCHES imports of 4 puts each (3 own paths and one shared)
batch_writer() {
    local w=$1 k j rc
    for ((k = 1; k <= BATCHES; k++)); do
        : >"$T/batch.$k"
        for j in 1 2 3; do
            printf '{"op":"put","path":"/batch/%d/%d","body":"b%d-%d"}\n' "$k" "$j" "$k" "$j" >>"$T/batch.$k"
        done
        printf '{"op":"put","path":"/shared/1","body":"b%d-4"}\n' "$k" >>"$T/batch.$k"
        rc=0
        "$LOCKSTEP" import "$T/batch.$k" >/dev/null 2>>"$T/err.$w" || rc=$?
        if ((rc == 0)); then
            for j in 1 2 3; do echo "/batch/$k/$j b$k-$j" >>"$T/acked.$w"; done
            echo "/shared/1 b$k-4" >>"$T/acked.$w"
        else
            echo "batch $k rc=$rc" >>"$T/failed.$w"
        fi
    done
}

t0=$SECONDS
pids=()
for w in 1 2 3 4 5 6 7; do
    : >"$T/acked.$w"
    put_writer "$w" &
    pids+=($!)
    bg_track $!
done
: >"$T/acked.8"
batch_writer 8 &
pids+=($!)
bg_track $!

# wait for the writers, at most 150 s
for pid in "${pids[@]}"; do
    bg_wait "$pid" 150 || fail "writer $pid exited non-zero"
done
log "$((7 * PUTS)) puts and $BATCHES imports by 8 writers in $((SECONDS - t0)) s"

cat "$T"/acked.* >"$T/acked"
N=$(wc -l <"$T/acked")
if compgen -G "$T/failed.*" >/dev/null; then
    fail "$(cat "$T"/failed.* | wc -l) writes failed, e.g. $(head -3 "$T"/failed.*) $(head -3 "$T"/err.* 2>/dev/null)"
fi
assert_eq $((7 * PUTS + 4 * BATCHES)) "$N" "acknowledged writes"

# --- the change log: seqs 1..N, each once, in order; status seq == N
"$LOCKSTEP" changes --json >"$T/changes"
jq -r .seq "$T/changes" >"$T/seqs"
assert_eq "$N" "$(wc -l <"$T/seqs")" "change log entries"
seq 1 "$N" | cmp -s - "$T/seqs" || fail "change log seqs are not 1..$N: $(seq 1 "$N" | diff - "$T/seqs" | head -5)"
assert_eq "$N" "$(seq_of con)" "status seq"
assert_eq "$N" "$(sort -u "$T/seqs" | wc -l)" "distinct seqs"

# every acknowledged write appears once in the log (as a put of its path)
jq -r 'select(.op=="put") | .path' "$T/changes" | sort >"$T/log-paths"
cut -d' ' -f1 "$T/acked" | sort >"$T/acked-paths"
cmp -s "$T/acked-paths" "$T/log-paths" || fail "the paths of the puts in the log differ from the acknowledged writes"

# a batch's four entries are contiguous in the log
for ((k = 1; k <= BATCHES; k++)); do
    first=$(jq -r --arg p "/batch/$k/1" 'select(.path==$p) | .seq' "$T/changes")
    got=$(jq -r --argjson f "$first" 'select(.seq >= $f and .seq < $f + 4) | .path' "$T/changes" | tr '\n' ' ')
    assert_eq "/batch/$k/1 /batch/$k/2 /batch/$k/3 /shared/1 " "$got" "log entries of batch $k"
done

# --- the store: own paths hold their body; shared paths have one version per write
python3 - "$T/acked" "$URL_con" <<'EOF' || fail "store contents differ from the acknowledged writes"
import hashlib, json, sys, urllib.request, urllib.parse
acked = [l.rstrip("\n").split(" ", 1) for l in open(sys.argv[1])]
base = sys.argv[2]
def get(url):
    with urllib.request.urlopen(base + url, timeout=30) as r:
        return r.read()
by_path = {}
for path, body in acked:
    by_path.setdefault(path, []).append(body)
bad = 0
for path, bodies in by_path.items():
    if len(bodies) == 1:
        got = get("/v1/items" + urllib.parse.quote(path)).decode()
        if got != bodies[0]:
            print(f"{path}: expected {bodies[0]!r}, got {got!r}"); bad += 1
        continue
    hist = json.loads(get("/v1/history" + urllib.parse.quote(path)))["versions"]
    versions = sorted(v["version"] for v in hist)
    if versions != list(range(1, len(bodies) + 1)):
        print(f"{path}: versions {versions[:5]}... ({len(versions)}), expected 1..{len(bodies)}"); bad += 1
    want = sorted(hashlib.sha256(b.encode()).hexdigest() for b in bodies)
    got = sorted(v["sha256"] for v in hist)
    if want != got:
        print(f"{path}: the bodies of its versions differ from the acknowledged writes"); bad += 1
sys.exit(1 if bad else 0)
EOF

# the versions of each shared item count up in log order
for p in /shared/0 /shared/1 /shared/2; do
    jq -r --arg p "$p" 'select(.path==$p) | .version' "$T/changes" >"$T/v"
    seq 1 "$(wc -l <"$T/v")" | cmp -s - "$T/v" || fail "versions of $p in log order are not 1, 2, 3, ..."
done

# --- the same holds after a restart
stop_server con
start_server con --max-versions 100000
assert_eq "$N" "$(seq_of con)" "seq after restart"
"$LOCKSTEP" changes --json | jq -r .seq | cmp -s - "$T/seqs" || fail "change log after restart"
stop_server con
