#!/usr/bin/env bash
# The project's test command (the README's second command; CI runs it too).
# Builds the binaries the multi-process tests drive, then runs every test of
# the default workspace members (the etcd benchmark crate is not among them).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# The object-store backend is tested against a real S3-compatible server
# (moto, from PyPI), which the tests start on a free loopback port.
if ! command -v moto_server >/dev/null 2>&1; then
  if ! command -v pip3 >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-pip
  fi
  pip3 install --quiet 'moto[server]' || pip3 install --quiet --break-system-packages 'moto[server]'
fi
# Render tests draw for real on Mesa's software Vulkan driver (lavapipe)
# where the machine has no GPU.
if ! ls /usr/share/vulkan/icd.d/lvp_icd.*.json >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mesa-vulkan-drivers
fi
cargo build --locked --bins
if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --locked --no-fail-fast "$@"
else
  exec cargo test --locked --no-fail-fast "$@"
fi
