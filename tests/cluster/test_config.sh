#!/usr/bin/env bash
# `lockstep serve --config FILE`: INI keys work, flags override them, unknown keys and bad values
# fail with a clear error and exit 2.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

history_count() { lsc "$1" history "$2" --json | jq '.versions | length'; }

# --- every key from the file
P1=$(free_port)
L1=$(free_port) # the peer (replication) port
cat >"$T/a.ini" <<EOF
; a comment
# another comment
[server]
data = $T/cfgdata
http = 127.0.0.1:$P1
listen = 127.0.0.1:$L1
name = from-file
max-versions = 2
max-body = 2K
log-level = warn
idle-timeout = 30s
sync = normal
EOF
start_server_args cfg "$P1" --config "$T/a.ini" || fail "serve --config did not start: $(tail -3 "$T/cfg.log")"
assert_eq from-file "$(status_field cfg name)" "name from the file"
assert_eq "127.0.0.1:$P1" "$(status_field cfg http)" "http from the file"
[[ -f "$T/cfgdata/store.db" ]] || fail "data from the file: no store in $T/cfgdata"
for i in 1 2 3 4; do printf 'v%d' "$i" | lsc cfg put /doc >/dev/null; done
assert_eq 2 "$(history_count cfg /doc)" "versions kept with max-versions = 2 from the file"
head -c 2049 /dev/urandom >"$T/2049"
assert_exit 1 lsc cfg put /big "$T/2049"
assert_contains "$ERR" "body is larger than --max-body (2048 bytes)" "max-body from the file"
# log-level = warn: the info line about serving is not logged
assert_eq 0 "$(grep -c ' level=info ' "$T/cfg.log" || true)" "info lines with log-level = warn"
stop_server cfg

# --config=FILE works too
start_server_args cfg "$P1" --config="$T/a.ini" || fail "serve --config=FILE did not start"
assert_eq from-file "$(status_field cfg name)" "name with --config=FILE"
stop_server cfg

# --- comments after values, quotes, a byte order mark and [server]
P3=$(free_port)
{
    printf '\xEF\xBB\xBF'
    cat <<EOF
[server]
data = "$T/cfgdata3" # where
http = '127.0.0.1:$P3' ; the API
listen = 127.0.0.1:$(free_port)
name = "two words" # the name
max-versions = 3 # three, not "3 # three"
log-level = "warn"
EOF
} >"$T/c.ini"
start_server_args cfg3 "$P3" --config "$T/c.ini" ||
    fail "serve with comments and quotes did not start: $(tail -3 "$T/cfg3.log")"
assert_eq "two words" "$(status_field cfg3 name)" "a quoted name with a comment after it"
for i in 1 2 3 4 5; do printf 'v%d' "$i" | lsc cfg3 put /doc >/dev/null; done
assert_eq 3 "$(history_count cfg3 /doc)" "max-versions = 3 # three"
[[ -f "$T/cfgdata3/store.db" ]] || fail "a quoted data directory with a comment"
stop_server cfg3

# --- flags override the file, whatever their order
P2=$(free_port)
start_server_args cfg2 "$P2" --name from-flag --config "$T/a.ini" --http "127.0.0.1:$P2" \
    --listen "127.0.0.1:$(free_port)" \
    --max-versions 5 --data "$T/cfgdata2" --log-level info ||
    fail "serve --config with flags did not start: $(tail -3 "$T/cfg2.log")"
assert_eq from-flag "$(status_field cfg2 name)" "a flag overrides the file's name"
assert_eq "127.0.0.1:$P2" "$(status_field cfg2 http)" "a flag overrides the file's http"
assert_exit 1 "$LOCKSTEP" status --server "http://127.0.0.1:$P1"
[[ -f "$T/cfgdata2/store.db" ]] || fail "a flag overrides the file's data"
for i in 1 2 3 4 5 6 7; do printf 'v%d' "$i" | lsc cfg2 put /doc >/dev/null; done
assert_eq 5 "$(history_count cfg2 /doc)" "a flag overrides the file's max-versions"
assert_exit 1 lsc cfg2 put /big "$T/2049" # max-body = 2K still from the file
grep -q ' level=info ' "$T/cfg2.log" || fail "--log-level info did not override the file's warn"
stop_server cfg2

# --- errors: exit 2, one clear line, no server
check_bad_config() { # FILE-CONTENT EXPECTED-STDERR
    local p
    p=$(free_port)
    printf '%s\n' "$1" >"$T/bad.ini"
    assert_exit 2 timeout 20 "$LOCKSTEP" serve --config "$T/bad.ini" --data "$T/never" --http "127.0.0.1:$p" \
        --listen "127.0.0.1:$(free_port)"
    assert_eq "$2" "$ERR" "serve with a config file holding: $1"
    [[ ! -e "$T/never" ]] || fail "a bad config file still created the data directory"
    assert_exit 1 "$LOCKSTEP" status --server "http://127.0.0.1:$p"
}
check_bad_config "$(printf 'name = x\nbogus = 1')" "lockstep: $T/bad.ini:2: unknown key 'bogus'"
check_bad_config "$(printf '[server]\nmax_versions = 3')" "lockstep: $T/bad.ini:2: unknown key 'max_versions'"
check_bad_config "max-versions = lots" "lockstep: $T/bad.ini:1: bad value for 'max-versions': lots"
check_bad_config "max-body = 12Q" "lockstep: $T/bad.ini:1: bad value for 'max-body': 12Q"
check_bad_config "idle-timeout = soon" "lockstep: $T/bad.ini:1: bad value for 'idle-timeout': soon"
# a key given twice is refused, naming the line (repeatable keys such as include add up)
check_bad_config "$(printf 'name = a\n; c\nname = b')" \
    "lockstep: $T/bad.ini:3: duplicate key 'name' (first set on line 1)"
# no sections but an optional [server]
check_bad_config "$(printf 'name = a\n[cluster]\nhttp = 127.0.0.1:1')" \
    "lockstep: $T/bad.ini:2: sections are not supported ([cluster]): the file holds only keys, optionally under [server]"
# the comment and the quotes are not part of the value, a '#' inside quotes is
check_bad_config "max-versions = 0 # none" "lockstep serve: --max-versions must be at least 1"
check_bad_config "max-versions = \"0\"" "lockstep serve: --max-versions must be at least 1"
check_bad_config "max-versions = \"2 # two\"" "lockstep: $T/bad.ini:1: bad value for 'max-versions': 2 # two"
check_bad_config "name = \"a" "lockstep: $T/bad.ini:1: 'name': the value's quote is not closed"
check_bad_config "name = \"a\" b" "lockstep: $T/bad.ini:1: 'name': text after the closing quote: b"
check_bad_config "$(printf 'name = a\n  b')" \
    "lockstep: $T/bad.ini:2: an indented line continues the value of 'name': not supported"
check_bad_config "name = $(printf 'x%.0s' $(seq 300))" "lockstep: $T/bad.ini:1: line longer than 198 characters"
# a UTF-8 byte order mark is skipped: the error is about the key, not about "\xEF\xBB\xBFbogus"
check_bad_config "$(printf '\xEF\xBB\xBFbogus = 1')" "lockstep: $T/bad.ini:1: unknown key 'bogus'"
check_bad_config "$(printf 'name = x\nthis line is not INI')" "lockstep: $T/bad.ini:2: syntax error"
check_bad_config "max-versions = 0" "lockstep serve: --max-versions must be at least 1"
check_bad_config "sync = sometimes" "lockstep serve: --sync must be full or normal"
check_bad_config "log-level = loud" "lockstep serve: --log-level must be debug, info, warn or error"
assert_exit 2 "$LOCKSTEP" serve --config "$T/does-not-exist.ini" --data "$T/never"
assert_eq "lockstep: cannot read config file $T/does-not-exist.ini" "$ERR" "a missing config file"
assert_exit 2 "$LOCKSTEP" serve --data "$T/never" --config
[[ ! -e "$T/never" ]] || fail "a bad config still created the data directory"

# the help names the config file and every key
assert_exit 0 "$LOCKSTEP" serve --help
for key in data http name max-versions max-body max-request sync log-level idle-timeout config; do
    assert_contains "$OUT" "--$key" "serve --help"
done
