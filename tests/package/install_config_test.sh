#!/bin/sh
# SPDX-License-Identifier: MIT
# `meson install` puts the example configuration into an empty /etc/cdn and
# never replaces a file there: an edited replicad.ini survives a second
# install. Usage: install_config_test.sh BUILD_DIR
set -u
build=$1
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
fail=0
install_once() {
  meson install -C "$build" --no-rebuild --destdir "$dest" >"$dest.log" 2>&1 || {
    echo "FAIL meson install: exit $?"; cat "$dest.log"; exit 1
  }
}
install_once
etc=$(find "$dest" -type d -path '*/etc/cdn' | head -1)
for f in replicad.ini balancerd.ini servers.txt; do
  if [ -f "$etc/$f" ]; then echo "PASS first install: $f installed"; else echo "FAIL first install: no $f under $dest"; fail=1; fi
done
printf '# edited by the operator\n[server]\nport = 34000\n' >"$etc/replicad.ini"
rm "$etc/servers.txt"
install_once
if grep -q 'edited by the operator' "$etc/replicad.ini"; then
  echo "PASS second install: the edited replicad.ini is kept"
else
  echo "FAIL second install: replicad.ini was replaced:"; cat "$etc/replicad.ini"; fail=1
fi
if [ -f "$etc/servers.txt" ]; then
  echo "PASS second install: a missing servers.txt is installed again"
else
  echo "FAIL second install: servers.txt not installed again"; fail=1
fi
rm -f "$dest.log"
exit $fail
