#!/usr/bin/env bash
# One primary feeding several downstreams at once: two exact replicas (R1, R2) and one with
# --include /a (R3, whose frames differ from theirs). Large frames (1 KiB documents of random
# hex, imported by the thousand) go out while every downstream is live, so the upstream
# compresses a frame once for the downstreams that get the same one (src/node/peer.c, zcache)
# and assembles every CHANGES frame in one kept buffer: each downstream must end with exactly
# its own content. Then R2 is stopped, more is written, and it catches up while R1 and R3 take
# live frames (downstreams at different places, frames that must not be mistaken for each
# other's).
set -euo pipefail
source "$(dirname "$0")/lib_repl.sh"

start_node P
start_node R1 --role replica --upstream "$PEER_P"
start_node R2 --role replica --upstream "$PEER_P"
start_node R3 --role replica --upstream "$PEER_P" --include /a
for n in R1 R2 R3; do wait_caught_up "$n" P 30; done

# gen FILE TAG N: N puts of 1 KiB bodies, alternately under /a and /b
gen() {
    python3 - "$1" "$2" "$3" <<'EOF'
import json, os, sys
out, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(out, "w") as f:
    for i in range(n):
        d = "/a" if i % 2 == 0 else "/b"
        f.write(json.dumps({"op": "put", "path": "%s/%s/%05d" % (d, tag, i),
                            "body": os.urandom(512).hex()}) + "\n")
EOF
}

# check: R1 and R2 equal to P; R3 holds P's /a and nothing else
check() {
    local a_items
    for n in R1 R2 R3; do wait_caught_up "$n" P 60; done
    assert_same_digest P R1
    assert_same_digest P R2
    assert_same_digest P R3 /a
    a_items=$(lsc P digest /a --json | jq -r .items)
    assert_eq "$a_items" "$(lsc R3 digest --json | jq -r .items)" "R3's items: P's under /a ($1)"
}

for k in 1 2; do
    gen "$T/imp$k" "r$k" 1500
    lsc P import "$T/imp$k" >/dev/null
done
check "all live"

# R2 away while more is written; it comes back behind the others, which stay live
stop_server R2
gen "$T/imp4" r4 2000
lsc P import "$T/imp4" >/dev/null
start_node R2 --role replica --upstream "$PEER_P"
gen "$T/imp5" r5 1500
lsc P import "$T/imp5" >/dev/null
check "R2 catching up"
assert_eq continue "$(status_field R2 last_sync)" "R2's sync after its restart"

# a few bodies read back from each exact replica
for p in /a/r1/00000 /b/r2/01499 /a/r4/01998 /b/r5/00001; do
    want=$(lsc P get "$p")
    for n in R1 R2; do assert_eq "$want" "$(lsc "$n" get "$p")" "$p on $n"; done
done
assert_eq "$(lsc P get /a/r5/00002)" "$(lsc R3 get /a/r5/00002)" "/a/r5/00002 on R3"
assert_exit 3 "$LOCKSTEP" get /b/r5/00001 --server "$URL_R3"
log "ok"
