# shellcheck shell=bash
# tests/cluster/lib_msg.sh - what the messenger's shared-database tests share (sourced after
# lib.sh by test_messenger_pg.sh and test_messenger_sqlite.sh).
#
#   pub NAME CHANNEL PAYLOAD   one publish to server NAME, retried while it fails (bounded, 20 s);
#                              prints the id
#   pub_loop NAME PREFIX COUNT CHANNEL
#                              COUNT publishes of "PREFIX-1" ... in order; each acknowledged one
#                              appended as "ID PAYLOAD" to $T/acked.PREFIX
#   received FILE              the JSON lines of FILE (a watcher's) as "ID PAYLOAD"

pub() {
    local i out
    for ((i = 0; i < 100; i++)); do
        if out=$(curl -sf -m 5 -X POST "$(url_of "$1")/v1/notify?channel=$2" -d "$3"); then
            jq -r '.ids[0]' <<<"$out"
            return 0
        fi
        sleep 0.2
    done
    return 1
}

pub_loop() {
    local i id
    for ((i = 1; i <= $3; i++)); do
        id=$(pub "$1" "$4" "\"$2-$i\"") || return 1
        echo "$id \"$2-$i\"" >>"$T/acked.$2"
    done
}

received() { jq -r '"\(.id) \(.payload | tojson)"' "$1"; }
