#!/bin/sh
# SPDX-License-Identifier: MIT
# The committed .clang-tidy held to the code: clang-tidy runs over every
# source file of the project (common/, daemons/, client/, bench/; the headers
# they include under HeaderFilterRegex) as the main build compiles it
# (compile_commands.json), and any warning fails. Two files at a time: the
# CI machine has two cores.
# Usage: clang_tidy_test.sh SOURCE_ROOT BUILD_ROOT CLANG_TIDY
set -u
src=$1 build=$2 tidy=$3
files=$(python3 - "$src" "$build" <<'PY'
import json, os, sys
src, build = (os.path.realpath(p) for p in sys.argv[1:3])
seen = set()
for e in json.load(open(os.path.join(build, "compile_commands.json"))):
    f = os.path.realpath(os.path.join(e["directory"], e["file"]))
    rel = os.path.relpath(f, src)
    if rel.split(os.sep)[0] in ("common", "daemons", "client", "bench") and f not in seen:
        seen.add(f)
        print(f)
PY
) || exit 1
n=$(printf '%s\n' "$files" | grep -c .)
if [ "$n" -lt 50 ]; then
  echo "FAIL: only $n source files found in $build/compile_commands.json"
  exit 1
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
# -Wno-unknown-warning-option: the build's flags are GCC's, some unknown to clang.
printf '%s\n' "$files" | xargs -P2 -n1 "$tidy" -p "$build" --quiet --warnings-as-errors='*' \
  --extra-arg=-Wno-unknown-warning-option >"$out" 2>&1
rc=$?
# clang-tidy counts the warnings it suppressed (system headers) on stderr.
grep -v -e '^[0-9]* warnings\? generated\.$' -e '^[0-9]* warnings\? treated as errors$' "$out"
if [ "$rc" -ne 0 ]; then
  echo "FAIL: clang-tidy found problems in the $n files above (checks: .clang-tidy)"
  exit 1
fi
echo "PASS: clang-tidy, $n files, no warning"
