#!/usr/bin/env bash
# Publishing a version a replica does not hold. A snapshot with --sync-max-versions 1 carries
# only the latest and the published version of each item, and a replica with a lower
# --max-versions prunes what the primary keeps; when the primary then publishes an older
# version, the replica gets that version with the publish and applies it (it used to fail the
# batch for ever). Inline bodies and blobs; the replicas end with the primary's digest.
set -euo pipefail
source "$(dirname "$0")/lib_repl.sh"

start_node P --sync-max-versions 1
head -c 100000 /dev/urandom >"$SHM/big1"
head -c 100000 /dev/urandom >"$SHM/big2"
for v in 1 2 3; do printf 'doc v%d' "$v" | lsc P put /doc >/dev/null; done
lsc P put /big "$SHM/big1" >/dev/null
lsc P put /big "$SHM/big2" >/dev/null

# S: a fresh replica gets a snapshot with one version per item; K prunes to 2 versions itself
start_node S --role replica --upstream "$PEER_P"
start_node K --role replica --upstream "$PEER_P" --max-versions 2
wait_caught_up S P 20
wait_caught_up K P 20
assert_eq 3 "$(lsc S history /doc --json | jq -r '[.versions[].version] | join(",")')" \
    "versions of /doc on S after its snapshot"
for v in 4 5; do printf 'doc v%d' "$v" | lsc P put /doc >/dev/null; done
wait_caught_up K P 20
assert_eq 4,5 "$(lsc K history /doc --json | jq -r '[.versions[].version] | sort | join(",")')" \
    "versions of /doc on K (--max-versions 2)"

# the primary publishes versions the replicas lack, then goes on
assert_exit 0 lsc P publish /doc --version 1
assert_exit 0 lsc P publish /big --version 1
echo after | lsc P put /after - >/dev/null
for n in S K; do
    wait_caught_up "$n" P 20
    assert_same_digest P "$n"
    assert_eq "doc v1" "$(lsc "$n" get /doc --version 1)" "/doc v1 on $n"
    lsc "$n" get /big --version 1 | cmp -s - "$SHM/big1" || fail "/big v1 on $n"
    assert_eq "1 changed" "$(lsc "$n" stat /doc --json | jq -r '"\(.published_version) \(.status)"')" \
        "/doc on $n"
    assert_eq after "$(lsc "$n" get /after)" "/after on $n"
    assert_not_contains "$(cat "$(node_log "$n")")" "failed" "$n's log"
done

# republishing what they hold already changes nothing else
assert_exit 0 lsc P publish /doc --version 5
wait_caught_up S P 20
assert_same_digest P S
stop_server K
stop_server S
stop_server P
echo "publish of versions a replica lacks: ok"
