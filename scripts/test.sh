#!/usr/bin/env bash
# Runs every check and test: formatting, lints, then the unit and integration
# tests against the real binaries (built first, once).
set -euo pipefail
cd "$(dirname "$0")/.."

need() {
    command -v "$1" >/dev/null 2>&1 || {
        echo "test.sh: $1 not found: $2" >&2
        exit 1
    }
}
need cargo "install Rust with rustup"
need openssl "apt-get install openssl (the tests make RSA and SEC1 keys with it)"

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --bins --locked
cargo test --workspace --locked
