#!/usr/bin/env bash
# A primary, a replica and a staging server; concurrent writers on the primary. The replica
# ends up an exact copy (digest, item count and seq equal; the same change log), staging holds
# exactly the primary's published versions (its digest equals the primary's --published-only
# one) and never a draft: a draft-only item is not found there, a new draft of a published item
# leaves staging's copy alone, publish brings the new version, unpublish takes it away.
# Writes on the replica and on staging fail (exit 1, naming the primary's address; HTTP 409
# read_only with X-Lockstep-Primary).
set -euo pipefail
source "$(dirname "$0")/lib_repl.sh"

N=${N:-60} # puts per writer

start_node P
start_node R --role replica --upstream "$PEER_P"
start_node S --role staging --upstream "$PEER_P"
wait_caught_up R P 15
wait_caught_up S P 15

# --- concurrent writers: drafts, published puts, and batches mixing every operation
pids=()
writer_loop P /drafts "$N" "$T/ack.drafts" &
pids+=($!)
bg_track $!
writer_loop P /pub "$N" "$T/ack.pub" --publish &
pids+=($!)
bg_track $!
batch_loop() {
    local k
    for ((k = 1; k <= N / 3; k++)); do
        {
            printf '{"op":"put","path":"/mix/%d/a","body":"a%d","status":"published"}\n' "$k" "$k"
            printf '{"op":"put","path":"/mix/%d/a","body":"a%d-draft"}\n' "$k" "$k"
            printf '{"op":"put","path":"/mix/%d/b","body":"b%d"}\n' "$k" "$k"
            printf '{"op":"publish","path":"/mix/%d/b"}\n' "$k"
            printf '{"op":"put","path":"/mix/%d/c","body":"c%d","status":"published"}\n' "$k" "$k"
            printf '{"op":"move","path":"/mix/%d/c","to":"/mix/%d/moved"}\n' "$k" "$k"
            printf '{"op":"put","path":"/mix/%d/d","body":"d%d","status":"published"}\n' "$k" "$k"
            if ((k % 2)); then
                printf '{"op":"unpublish","path":"/mix/%d/d"}\n' "$k"
            else
                printf '{"op":"delete","path":"/mix/%d/d"}\n' "$k"
            fi
        } >"$T/batch.$k"
        lsc P import "$T/batch.$k" >/dev/null 2>>"$T/batch.err" || echo "batch $k failed" >>"$T/batch.err"
    done
}
batch_loop &
pids+=($!)
bg_track $!
# meanwhile, reads on the replica work and see a consistent prefix
for ((i = 0; i < 20; i++)); do
    lsc R ls /pub >/dev/null || fail "ls on the replica during the writes"
    sleep 0.05
done
wait_pids 75 "${pids[@]}"
[[ ! -s "$T/batch.err" ]] || fail "a batch failed: $(head -3 "$T/batch.err")"
[[ ! -s "$T/ack.drafts.err" && ! -s "$T/ack.pub.err" ]] ||
    fail "a put failed: $(cat "$T"/ack.*.err | head -3)"
assert_eq "$N" "$(wc -l <"$T/ack.drafts")" "acknowledged draft puts"
assert_eq "$N" "$(wc -l <"$T/ack.pub")" "acknowledged published puts"

# --- the replica is an exact copy, staging holds the published versions
wait_caught_up R P 30
wait_caught_up S P 30
p_seq=$(seq_of P)
log "primary at seq $p_seq"
assert_same_digest P R
assert_eq "$(lsc P digest --published-only --json | jq -c '{seq,items,digest}')" \
    "$(lsc S digest --json | jq -c '{seq,items,digest}')" "staging digest against the primary's published-only digest"
# the replica's change log is the primary's
lsc P changes --json | jq -c '{seq,op,path,to,version}' >"$T/changes.P"
lsc R changes --json | jq -c '{seq,op,path,to,version}' >"$T/changes.R"
assert_same_file "$T/changes.P" "$T/changes.R" "the replica's change log"
assert_eq "$p_seq" "$(tail -n 1 "$T/changes.P" | jq -r .seq)" "last seq of the primary's log"
# every acknowledged write reads back on the replica
while read -r path body _; do
    assert_eq "$body" "$(lsc R get "$path")" "replica: $path"
done < <(sed -n '1~7p' "$T/ack.drafts" "$T/ack.pub")

# --- staging never holds a draft
lsc S ls / --json >"$T/ls.S"
assert_eq "published" "$(jq -r .status "$T/ls.S" | sort -u | tr '\n' ' ' | sed 's/ $//')" "statuses on staging"
assert_eq "$(lsc P ls / --json | jq -r 'select(.published_version != null) | .path' | sort)" \
    "$(jq -r .path "$T/ls.S" | sort)" "the paths on staging: the primary's published items"
assert_exit 3 "$LOCKSTEP" get /drafts/1 --server "$URL_S"
assert_exit 3 "$LOCKSTEP" get /mix/1/d --server "$URL_S" # unpublished
assert_exit 3 "$LOCKSTEP" get /mix/2/d --server "$URL_S" # deleted
assert_eq "b1" "$(lsc S get /mix/1/b)" "staging: published in a batch"
assert_eq "a1" "$(lsc S get /mix/1/a)" "staging: the published version, not the later draft"
assert_eq "c1" "$(lsc S get /mix/1/moved)" "staging: a moved item"
assert_exit 3 "$LOCKSTEP" get /mix/1/c --server "$URL_S"
assert_eq "pub-5" "$(lsc S get /pub/5)" "staging: put --publish"

# a draft-only item
printf 'draft only' | lsc P put /d/draft-only >/dev/null
# a published item, then a new draft of it
printf 'old published' | lsc P put /d/item --publish >/dev/null
printf 'new draft' | lsc P put /d/item >/dev/null
wait_caught_up S P 15
wait_caught_up R P 15
assert_exit 3 "$LOCKSTEP" get /d/draft-only --server "$URL_S"
assert_eq "old published" "$(lsc S get /d/item)" "staging after a new draft of a published item"
assert_eq "new draft" "$(lsc R get /d/item)" "the replica has the draft"
assert_eq "published" "$(lsc S stat /d/item --json | jq -r .status)" "status on staging"
assert_not_contains "$(lsc S ls /d)" "draft-only" "ls /d on staging"
assert_eq "$(lsc P digest --published-only --json | jq -c '{items,digest}')" \
    "$(lsc S digest --json | jq -c '{items,digest}')" "staging digest after the draft"
# publish brings the new version
lsc P publish /d/item >/dev/null
wait_caught_up S P 15
assert_eq "new draft" "$(lsc S get /d/item)" "staging after publish"
# unpublish removes it
lsc P unpublish /d/item >/dev/null
wait_caught_up S P 15
wait_caught_up R P 15
assert_exit 3 "$LOCKSTEP" get /d/item --server "$URL_S"
assert_not_contains "$(lsc S ls /d)" "/d/item" "ls /d on staging after unpublish"
assert_eq "new draft" "$(lsc R get /d/item)" "the replica keeps the unpublished item"
# published again: back on staging
lsc P publish /d/item >/dev/null
wait_caught_up S P 15
assert_eq "new draft" "$(lsc S get /d/item)" "staging after publishing again"
assert_same_digest P R
assert_eq "$(lsc P digest --published-only --json | jq -c '{seq,items,digest}')" \
    "$(lsc S digest --json | jq -c '{seq,items,digest}')" "final staging digest"

# --- writes on the replica and on staging fail and name the primary
for n in R S; do
    printf 'x' >"$T/x"
    assert_exit 1 "$LOCKSTEP" put /nope "$T/x" --server "$(url_of $n)"
    assert_contains "$ERR" "127.0.0.1:$PORT_P" "put on $n"
    assert_exit 1 "$LOCKSTEP" rm /pub/1 --server "$(url_of $n)"
    assert_contains "$ERR" "127.0.0.1:$PORT_P" "rm on $n"
    assert_exit 1 "$LOCKSTEP" import "$T/batch.1" --server "$(url_of $n)"
    assert_contains "$ERR" "127.0.0.1:$PORT_P" "import on $n"
    code=$(curl -s -o "$T/body" -D "$T/headers" -w '%{http_code}' -X PUT --data-binary x \
        "$(url_of $n)/v1/items/nope")
    assert_eq 409 "$code" "HTTP status of a PUT on $n"
    assert_eq read_only "$(jq -r .error.code "$T/body")" "error code of a PUT on $n"
    assert_eq "127.0.0.1:$PORT_P" "$(grep -i '^X-Lockstep-Primary:' "$T/headers" | cut -d' ' -f2 | tr -d '\r')" \
        "X-Lockstep-Primary from $n"
done
assert_exit 3 "$LOCKSTEP" get /nope --server "$URL_P"

stop_server S
stop_server R
stop_server P
