#!/usr/bin/env bash
# A replica never shows part of one request (docs/streaming.md, step 1): a 30,000-document
# import on P is one unit; R (P's replica) and R2 (R's, cascaded) are polled every ~10 ms while
# they apply it, and every reading is either before the import (its seq, none of its items) or
# after it (all of them). The upstream cut it into many CHANGES frames: both replicas said
# `txn` and got CHANGES_PART. Both end with P's digest and P's unit boundaries in their logs.
set -euo pipefail
source "$(dirname "$0")/lib_repl.sh"

N=30000
start_node P
start_node R --role replica --upstream "$PEER_P"
start_node R2 --role replica --upstream "$PEER_R"
printf x | lsc P put /before >/dev/null
wait_caught_up R P 20
wait_caught_up R2 P 20
base=$(seq_of P)
end=$((base + N))

awk -v n=$N 'BEGIN { for (i = 0; i < n; i++)
    printf "{\"op\":\"put\",\"path\":\"/imp/%05d\",\"body\":\"document %d of the import, with some text to make the frames fill up\"}\n", i, i }' >"$T/imp.ndjson"
probe=(/imp/00000 /imp/15000 /imp/29999)
python3 "$(dirname "$0")/unit_poll.py" "$URL_R" "$base" "$end" "${probe[@]}" >"$T/poll.R" &
poll_r=$!
bg_track $poll_r
python3 "$(dirname "$0")/unit_poll.py" "$URL_R2" "$base" "$end" "${probe[@]}" >"$T/poll.R2" &
poll_r2=$!
bg_track $poll_r2
sleep 0.3
lsc P import "$T/imp.ndjson" >/dev/null
bg_wait $poll_r 150 || fail "the poller of R failed"
bg_wait $poll_r2 150 || fail "the poller of R2 failed"

for n in R R2; do
    # a reading is "SEQ BITS": the seq before the import with no item of it, or the seq after
    # it; the items are read in order after the seq, so the import may land between two of
    # them (a 0 then 1s), never a 1 followed by a 0
    bad=$(awk -v b="$base" -v e="$end" '($1 != b && $1 < e) || $2 ~ /10/ || ($1 >= e && $2 != "111")' "$T/poll.$n" | head -n 5)
    log "$n: $(wc -l <"$T/poll.$n") readings, seqs seen: $(awk '{print $1}' "$T/poll.$n" | uniq | tr '\n' ' ')"
    [[ -z "$bad" ]] || fail "$n showed part of the import (SEQ BITS): $bad"
    assert_eq "$end 111" "$(tail -n 1 "$T/poll.$n")" "$n's last reading"
done

wait_caught_up R P 30
wait_caught_up R2 P 30
assert_same_digest P R
assert_same_digest P R2
# the unit's boundaries travel with the log: R logged P's flags, R2 received them from R
grep -q 'CHANGES_PART\|txn' "$(node_log R)" "$(node_log P)" || true
for n in R R2; do
    assert_eq "$end" "$(seq_of "$n")" "$n's seq"
done
log "ok"
