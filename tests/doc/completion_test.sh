#!/bin/bash
# SPDX-License-Identifier: MIT
# The bash completion scripts, loaded into bash-completion as bash would:
# options, the values of --policy and --log-level, and exactly the options a
# program's --help lists are offered. Usage: completion_test.sh SOURCE_ROOT BUILD_ROOT
set -u
src=$1 build=$2
lib=/usr/share/bash-completion/bash_completion
[ -r "$lib" ] || { echo "SKIP: no $lib (apt-get install bash-completion)"; exit 77; }
# shellcheck source=/dev/null
. "$lib"
fail=0
complete_words() {  # PROGRAM FUNCTION WORD... : COMPREPLY for the last word
  local prog=$1 fn=$2
  shift 2
  # shellcheck source=/dev/null
  . "$src/completions/$prog"
  COMP_WORDS=("$prog" "$@")
  COMP_CWORD=$#
  COMP_LINE="$prog $*"
  COMP_POINT=${#COMP_LINE}
  COMPREPLY=()
  "$fn" "$prog" "${COMP_WORDS[-1]}" "${COMP_WORDS[-2]}"
  printf '%s\n' "${COMPREPLY[@]}" | sort | tr '\n' ' '
}
expect() {  # WHAT GOT WANT
  if [ "$2" = "$3" ]; then echo "PASS $1"; else echo "FAIL $1: got '$2', want '$3'"; fail=1; fi
}
expect "cdn-balancerd --policy" "$(complete_words cdn-balancerd _cdn_balancerd --policy '')" \
  "best consistent least-loaded p2c round-robin "
expect "cdn-replicad --log-level w" "$(complete_words cdn-replicad _cdn_replicad --log-level w)" "warn "
expect "cdn-get -q" "$(complete_words cdn-get _cdn_get -q)" "-q "
# Completion offers exactly the options --help lists, short and long: a flag
# added without its completion, or a completed flag that no longer exists, fails.
for p in replicad:daemons/replicad/cdn-replicad balancerd:daemons/balancerd/cdn-balancerd get:client/cdn-get \
    purge:client/cdn-purge; do
  name=cdn-${p%%:*} exe=$build/${p#*:}
  offered=" $(complete_words "$name" "_${name//-/_}" -) "
  listed=" $("$exe" --help | grep -E '^  +-' | awk '{print $1}' | grep -oE -- '--?[a-z][a-z-]*' |
    sort -u | tr '\n' ' ') "
  for opt in $listed; do
    [[ "$offered" == *" $opt "* ]] || { echo "FAIL $name: $opt is not completed"; fail=1; }
  done
  for opt in $offered; do
    [[ "$listed" == *" $opt "* ]] || { echo "FAIL $name: $opt is completed but not in --help"; fail=1; }
  done
  [ "$(wc -w <<<"$listed")" -ge 8 ] || { echo "FAIL $name: too few options read from --help"; fail=1; }
  echo "checked $name: $(wc -w <<<"$offered") options offered, $(wc -w <<<"$listed") in --help"
done
exit $fail
