#!/usr/bin/env bash
# The project's test command (the README's second command; CI runs it too).
# Builds the binaries the multi-process tests drive, then runs every test of
# the default workspace members (the etcd benchmark crate is not among them).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
cargo build --locked --bins
if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --locked --no-fail-fast "$@"
else
  exec cargo test --locked --no-fail-fast "$@"
fi
