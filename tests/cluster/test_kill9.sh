#!/usr/bin/env bash
# Crash safety: writers put (small bodies, blob-sized bodies and 3-line imports) while the server
# is killed with SIGKILL; after a restart on the same data every acknowledged write is there with
# its exact content, every import is all or nothing, and the change log is gapless from 1 to the
# status seq. Three rounds.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ROUNDS=${ROUNDS:-3}
start_server k9

# put_writer ROUND W: puts to /k/rROUND/wW/I until $T/stop exists (at most 2000); every 5th body is
# 100 KB (a blob). Acknowledged puts: "PATH SHA256" lines in $T/acked.ROUND.W
put_writer() {
    local r=$1 w=$2 i path body sha rc
    for ((i = 1; i <= 2000; i++)); do
        [[ -e "$T/stop" ]] && break
        path=/k/r$r/w$w/$i
        body="$T/body.$w"
        if ((i % 5 == 0)); then
            head -c 100000 /dev/urandom >"$body"
        else
            printf 'round %d writer %d put %d %s' "$r" "$w" "$i" "$RANDOM$RANDOM" >"$body"
        fi
        sha=$(sha256sum <"$body")
        rc=0
        "$LOCKSTEP" put "$path" "$body" >/dev/null 2>>"$T/err" || rc=$?
        ((rc == 0)) && echo "$path ${sha%% *}" >>"$T/acked.$r.$w"
    done
    return 0
}

# batch_writer ROUND: imports of 3 puts to /kb/rROUND/J/{1,2,3}; "J" lines in $T/batches.ROUND for
# every import tried, "J" in $T/acked-batches.ROUND for every one acknowledged
batch_writer() {
    local r=$1 j rc
    for ((j = 1; j <= 2000; j++)); do
        [[ -e "$T/stop" ]] && break
        printf '{"op":"put","path":"/kb/r%d/%d/%d","body":"%d-%d"}\n' \
            "$r" "$j" 1 "$j" 1 "$r" "$j" 2 "$j" 2 "$r" "$j" 3 "$j" 3 >"$T/batch.ndjson"
        echo "$j" >>"$T/batches.$r"
        rc=0
        "$LOCKSTEP" import "$T/batch.ndjson" >/dev/null 2>>"$T/err" || rc=$?
        ((rc == 0)) && echo "$j" >>"$T/acked-batches.$r"
    done
    return 0
}

verify() { # ROUND: everything acknowledged in rounds 1..ROUND is there
    local upto=$1 s
    cat "$T"/acked.* >"$T/acked-all" 2>/dev/null || : >"$T/acked-all"
    python3 - "$T" "$upto" "$URL_k9" <<'EOF' || fail "acknowledged writes missing or wrong after a SIGKILL (round $upto)"
import hashlib, json, os, sys, urllib.error, urllib.request
T, upto, base = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def get(path):
    try:
        with urllib.request.urlopen(base + "/v1/items" + path, timeout=30) as r:
            return r.read()
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise
bad = 0
n = 0
for line in open(os.path.join(T, "acked-all")):
    path, sha = line.split()
    n += 1
    body = get(path)
    if body is None:
        print(f"{path}: acknowledged, but not found"); bad += 1
    elif hashlib.sha256(body).hexdigest() != sha:
        print(f"{path}: acknowledged with sha256 {sha}, got {hashlib.sha256(body).hexdigest()}"); bad += 1
nb = 0
for r in range(1, upto + 1):
    def read(name):
        p = os.path.join(T, f"{name}.{r}")
        return [int(x) for x in open(p).read().split()] if os.path.exists(p) else []
    acked = set(read("acked-batches"))
    for j in read("batches"):
        bodies = [get(f"/kb/r{r}/{j}/{k}") for k in (1, 2, 3)]
        present = [b is not None for b in bodies]
        if j in acked and not all(present):
            print(f"import r{r}/{j}: acknowledged, but items missing: {present}"); bad += 1
        elif any(present) and not all(present):
            print(f"import r{r}/{j}: partly applied: {present}"); bad += 1
        elif all(present) and bodies != [f"{j}-{k}".encode() for k in (1, 2, 3)]:
            print(f"import r{r}/{j}: wrong bodies {bodies}"); bad += 1
        nb += j in acked
print(f"checked {n} acknowledged puts and {nb} acknowledged imports", file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
    s=$(seq_of k9)
    "$LOCKSTEP" changes --json | jq -r .seq >"$T/seqs"
    seq 1 "$s" | cmp -s - "$T/seqs" ||
        fail "change log after SIGKILL (round $upto) is not 1..$s: $(seq 1 "$s" | diff - "$T/seqs" | head -5)"
    assert_eq "$s" "$(jq -r .seq < <("$LOCKSTEP" changes --since $((s - 1)) --json))" "last change"
}

for ((round = 1; round <= ROUNDS; round++)); do
    rm -f "$T/stop"
    pids=()
    for w in 1 2; do
        put_writer "$round" "$w" &
        pids+=($!)
        bg_track $!
    done
    batch_writer "$round" &
    pids+=($!)
    bg_track $!
    # let them write for 1 to 2 s, then SIGKILL the server in the middle of it
    sleep "1.$((round * 3))"
    kill9_server k9
    touch "$T/stop"
    for pid in "${pids[@]}"; do bg_wait "$pid" 60 || fail "a writer failed"; done
    n=$(cat "$T"/acked."$round".* 2>/dev/null | wc -l)
    nb=$(cat "$T/acked-batches.$round" 2>/dev/null | wc -l)
    log "round $round: $n puts and $nb imports acknowledged before SIGKILL"
    ((n > 0)) || fail "no put was acknowledged in round $round: $(tail -3 "$T/err")"
    restart_server k9
    verify "$round"
done

# the server goes on from there: new writes take the next seqs, and a clean stop works
s=$(seq_of k9)
printf 'after' | "$LOCKSTEP" put /k/after >/dev/null
assert_eq $((s + 1)) "$(seq_of k9)" "seq after the crashes"
assert_eq after "$("$LOCKSTEP" get /k/after)" "a write after the crashes"
stop_server k9
start_server k9
verify "$ROUNDS"
stop_server k9
