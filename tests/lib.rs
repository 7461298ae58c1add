//! Multi-process end-to-end tests of CADDY: real `caddyd` processes on
//! loopback, driven with `caddyctl` and the SDK (see `tests/`). They need
//! the binaries built first (`cargo build --bins`, which `scripts/test.sh`
//! does).
