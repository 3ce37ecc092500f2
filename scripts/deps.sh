#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs what building and testing cdn needs, from Debian 12's packages
# only, when something is missing. Sourced by run-cdn and run-tests.
set -euo pipefail

# libsystemd-dev at the version of the installed libsystemd0: a newer
# candidate would upgrade the machine's systemd along with it.
cdn_libsystemd_version=$(dpkg-query -W -f='${Version}' libsystemd0 2>/dev/null || true)
CDN_DEPS=(
  build-essential pkg-config meson ninja-build
  libuv1-dev "libsystemd-dev${cdn_libsystemd_version:+=$cdn_libsystemd_version}" libinih-dev libspdlog-dev libhttp-parser-dev
  libcurl4-openssl-dev libssl-dev libnghttp2-dev libcli11-dev nlohmann-json3-dev libgtest-dev
  curl openssl iproute2 python3-pytest
)
# Tests and benchmarks also run the rivals and fuzzers.
# prometheus: promtool checks the metrics pages; goaccess reads the access log;
# clang-tidy-14 runs the committed .clang-tidy (the lint suite).
CDN_TEST_DEPS=(clang clang-tidy-14 goaccess nghttp2-client libclang-rt-14-dev nginx-light haproxy wrk hyperfine systemd util-linux prometheus nodejs)
# Packaging and documentation (tests/package, tests/doc): the .deb build, lintian,
# the man pages (scdoc, rendered by man-db), bash completion's install path,
# and /etc/mime.types (media-types) for the replica's content types.
CDN_TEST_DEPS+=(dpkg-dev debhelper lintian scdoc man-db bash-completion media-types)
# The HTTP caching test suite (tests/conformance) runs on Node and installs its
# modules with npm. Debian's npm is a package of its own; NodeSource's nodejs
# carries npm and conflicts with Debian's, so npm is asked for only when none
# is on PATH.
command -v npm >/dev/null 2>&1 || CDN_TEST_DEPS+=(npm)
# Both daemons' /.cdn/dashboard is loaded in headless Chromium (tests/dashboard).
CDN_TEST_DEPS+=(chromium)
# cdn-get's progress line is read from a tmux pane (tests/integration/test_cli.py).
CDN_TEST_DEPS+=(tmux)
# The slow suite scans the [tls] port with testssl.sh (tests/testssl).
CDN_TEST_DEPS+=(testssl.sh)

cdn_sudo() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

cdn_missing() {
  local missing=() p name want have
  for p in "$@"; do
    name=${p%%=*}
    have=$(dpkg-query -W -f='${Status} ${Version}' "$name" 2>/dev/null || true)
    if [[ "$have" != "install ok installed"* ]]; then
      missing+=("$p")
    elif [[ "$p" == *=* ]]; then
      want=${p#*=}
      [[ "$have" == *" $want" ]] || missing+=("$p")
    fi
  done
  echo "${missing[@]+"${missing[@]}"}"
}

cdn_install_deps() {
  local missing
  missing=$(cdn_missing "$@")
  [ -z "$missing" ] && return 0
  echo "== installing: $missing"
  export DEBIAN_FRONTEND=noninteractive
  cdn_sudo apt-get update -q
  # shellcheck disable=SC2086
  cdn_sudo apt-get install -y -q --no-install-recommends $missing </dev/null
}
