#!/usr/bin/env bash
# A replica whose disk fills up while it follows: the batches it cannot apply fail, and none
# after them may move its position past them (two batches wait for its writer at once, so a
# later one would otherwise commit over a failed one). Once the disk has room again it
# converges: the same digest as the primary and every seq of the primary's log in its own.
# Needs root to mount a small tmpfs; skipped (exit 77) where mounting is not allowed.
source "$(dirname "$0")/lib_repl.sh"

small=$T/small
mkdir -p "$small"
if [[ $(id -u) != 0 ]] || ! mount -t tmpfs -o size=4m tmpfs "$small" 2>/dev/null; then
    echo "skipped: cannot mount a tmpfs here"
    exit 77
fi
trap 'rc=$?; umount -l "$small" 2>/dev/null; (exit $rc); _cleanup' EXIT

start_node P
DATA_ROOT=$small start_node R --role replica --upstream "$PEER_P" --sync full
wait_caught_up R P 20

# Bodies of all sizes (inline and blobs) in batches, as fast as the primary takes them: about
# 12 MiB, three times the replica's disk.
for ((b = 0; b < 30; b++)); do
    : >"$T/batch.ndjson"
    for ((i = 0; i < 8; i++)); do
        size=$((((b * 8 + i) % 3) == 0 ? 150000 : 20000))
        printf '{"op":"put","path":"/fill/%d/%d","body_base64":"%s"}\n' "$b" "$i" \
            "$(head -c "$size" /dev/urandom | base64 -w0)" >>"$T/batch.ndjson"
    done
    lsc P import "$T/batch.ndjson" >/dev/null 2>&1 || fail "import of batch $b on the primary"
done
echo last | lsc P put /last - >/dev/null
want=$(seq_of P)

wait_until 30 grep -qi "no space left" "$T/R.log" || fail "the replica's disk never filled up: $(tail -5 "$T/R.log"; df -h "$small" | tail -1)"
log "the replica's disk is full at seq $(seq_of R) of $want"
# Its position never passes a change it does not hold: what it has applied is a prefix.
have=$(seq_of R)
((have < want)) || fail "the replica reports seq $have of $want on a full disk"
assert_eq "$(seq 1 "$have" | tr '\n' ' ')" "$(lsc R changes --json | jq -r .seq | tr '\n' ' ')" \
    "the replica's log on a full disk (seq 1..$have)"

mount -o remount,size=128m "$small"
wait_caught_up R P 60
assert_same_digest P R
assert_eq "$(seq 1 "$want" | tr '\n' ' ')" "$(lsc R changes --json --since 0 | jq -r .seq | tr '\n' ' ')" \
    "the replica's log after the disk has room"
assert_eq last "$(lsc R get /last)" "/last on the replica"
stop_server R
stop_server P
echo "replica disk full: ok"
