#!/usr/bin/env bash
# Installs the Debian packages therasync needs to build, test and benchmark.
# Idempotent: does nothing when everything is present.
set -euo pipefail
# libclang-rt-dev: clang's sanitizer and libFuzzer runtimes (make ubsan, make fuzz);
# clang only recommends it, and recommends are not installed here.
# zlib1g-dev: the bench's --hdr histogram log is zlib-compressed (HdrHistogram's format).
pkgs=(build-essential clang pkg-config libzmq3-dev liblua5.4-dev lua5.4 libcurl4-openssl-dev
      libcjson-dev libsqlite3-dev sqlite3 libmicrohttpd-dev libjemalloc-dev libcriterion-dev wrk
      libsodium-dev libclang-rt-dev python3-zmq zlib1g-dev
      systemd groff-base)  # test_install: systemd-analyze security, groff -man -ww
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "setup: installing ${missing[*]}" >&2
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
