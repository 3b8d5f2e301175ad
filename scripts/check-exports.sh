#!/bin/sh
# check-exports.sh shared|static LIB: fails when liblockstep lets out a symbol that is not its
# own. The shared library exports the lockstep_ API and nothing else; the static one (whose
# every global symbol reaches the application's link) defines only lockstep_ and ls_ names.
# Sanitizer builds may add their instrumentation's symbols (__asan_, __ubsan_, __tsan_): allowed.
set -eu
kind=$1 lib=$2
case $kind in
shared) syms=$(nm -D --defined-only "$lib" | awk '$2 ~ /[A-Z]/ { print $3 }') ;;
static) syms=$(nm -g --defined-only "$lib" | awk 'NF == 3 { print $3 }') ;;
*) echo "usage: check-exports.sh shared|static LIB" >&2; exit 2 ;;
esac
[ "$kind" = shared ] && allowed='^lockstep_' || allowed='^(lockstep_|ls_)'
bad=$(printf '%s\n' "$syms" | grep -Ev "$allowed" | grep -Ev '^(__(odr_)?asan|__ubsan|__tsan|_init$|_fini$)' || true)
if [ -n "$bad" ]; then
    echo "check-exports: $lib exports symbols outside its prefixes:" >&2
    printf '  %s\n' $bad >&2
    exit 1
fi
[ -n "$(printf '%s\n' "$syms" | grep -E '^lockstep_open$')" ] || {
    echo "check-exports: $lib does not export lockstep_open" >&2
    exit 1
}
