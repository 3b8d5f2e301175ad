#!/usr/bin/env bash
# A full disk: writes fail with a clear error (HTTP 507, code disk_full) and change nothing,
# what was acknowledged before stays readable, and after a restart with room again the store
# opens consistent (gapless seq) and takes writes. Needs root to mount a small tmpfs; skipped
# (exit 77) where mounting is not allowed.
source "$(dirname "$0")/lib.sh"

small=$T/small
mkdir -p "$small"
if [[ $(id -u) != 0 ]] || ! mount -t tmpfs -o size=3m tmpfs "$small" 2>/dev/null; then
    echo "skipped: cannot mount a tmpfs here"
    exit 77
fi
# Unmount first, then lib.sh's cleanup (which keeps the test's exit status).
trap 'rc=$?; umount -l "$small" 2>/dev/null; (exit $rc); _cleanup' EXIT

DATA_ROOT=$small start_server full --listen "127.0.0.1:$(free_port)" --sync full
acked=()
failed=""
for ((i = 0; i < 200; i++)); do
    size=$(((i % 2) ? 100000 : 6000)) # blobs and inline bodies
    head -c "$size" /dev/urandom >"$T/body$i"
    if lsc full put "/fill/$i" "$T/body$i" >"$T/out" 2>"$T/err"; then
        acked+=("$i")
    else
        failed=$i
        break
    fi
done
[[ -n "$failed" ]] || fail "the 3 MiB disk never filled up"
assert_contains "$(cat "$T/err")" "no space left" "CLI error on a full disk"
log "disk full after ${#acked[@]} acknowledged writes"

# The same failure over HTTP: the right status and code, and nothing written.
seq_before=$(status_field full seq)
code=$(curl -s -o "$T/reply" -w '%{http_code}' -X PUT --data-binary @"$T/body$failed" \
    "$(url_of full)/v1/items/fill/again")
assert_eq 507 "$code" "HTTP status on a full disk"
assert_eq disk_full "$(jq -r .error.code "$T/reply")" "error code"
assert_eq "$seq_before" "$(status_field full seq)" "seq after failed writes"
assert_exit 3 lsc full get /fill/again

# Everything acknowledged is still there, byte for byte.
for i in "${acked[@]}"; do
    lsc full get "/fill/$i" -o "$T/got" || fail "acknowledged /fill/$i unreadable on a full disk"
    assert_same_file "$T/body$i" "$T/got" "/fill/$i"
done

# Restart with room to spare: consistent, gapless, writable.
stop_server full
mount -o remount,size=64m "$small"
start_server full
assert_eq "$seq_before" "$(status_field full seq)" "seq after restart"
assert_eq "$(seq 1 "$seq_before" | tr '\n' ' ')" \
    "$(lsc full changes --json | jq -r .seq | tr '\n' ' ')" "log after restart"
for i in "${acked[@]}"; do
    lsc full get "/fill/$i" -o "$T/got"
    assert_same_file "$T/body$i" "$T/got" "/fill/$i after restart"
done
echo more | lsc full put /fill/more >/dev/null || fail "no write possible after the disk has room"
assert_eq "more" "$(lsc full get /fill/more)"
stop_server full
echo "disk full: ok"
