#!/bin/sh
# SPDX-License-Identifier: MIT
# Each built man page renders with man -l: a NAME section, no groff or man
# warning on standard error. Usage: man_test.sh PAGE...
set -u
fail=0
for page in "$@"; do
  err=$(mktemp)
  out=$(MANWIDTH=80 LC_ALL=C.UTF-8 man --warnings -l "$page" 2>"$err")
  rc=$?
  name=$(basename "$page")
  if [ $rc -ne 0 ]; then
    echo "FAIL $name: man -l exited $rc"; cat "$err"; fail=1
  elif [ -s "$err" ]; then
    echo "FAIL $name: warnings:"; cat "$err"; fail=1
  elif ! printf '%s\n' "$out" | grep -q '^NAME$'; then
    echo "FAIL $name: no NAME section in:"; printf '%s\n' "$out" | head -20; fail=1
  else
    echo "PASS $name: $(printf '%s\n' "$out" | wc -l) lines"
  fi
  rm -f "$err"
done
exit $fail
