#!/bin/sh
# SPDX-License-Identifier: MIT
# Installs the example configuration into DIR (under $DESTDIR, as meson
# install sets it) without ever replacing a file already there: an operator's
# edited /etc/cdn/replicad.ini outlives `meson install` (install_data would
# overwrite it). A kept file is named on standard output (meson 1.0 shows a
# script's output only when it fails; run by hand, it is seen); the shipped
# version stays in the source tree (etc/cdn/). Debian packages do not need this (dpkg
# keeps an edited conffile), but their build runs it into an empty DESTDIR.
# Usage: install-config.sh DIR FILE...
set -eu
dir=$1
shift
dest="${DESTDIR:-}$dir"
mkdir -p "$dest"
for src in "$@"; do
  name=$(basename "$src")
  if [ -e "$dest/$name" ] || [ -L "$dest/$name" ]; then
    echo "Keeping existing $dir/$name (not replaced by the example)"
  else
    install -m 0644 "$src" "$dest/$name"
    echo "Installing $src to $dir"
  fi
done
