#!/usr/bin/env bash
# Runs every check and test: formatting, lints, then the unit and integration
# tests against the real binaries (built first, once), with the Python test
# venv that scripts/setup-test-env.sh makes.
set -euo pipefail
cd "$(dirname "$0")/.."

need() {
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || {
        echo "test.sh: $1 not found: $2" >&2
        exit 1
    }
}
need cargo "install Rust with rustup"
need openssl "apt-get install openssl (the tests make RSA and SEC1 keys with it)"
need nginx "apt-get install nginx chromium (the compatibility tests run the real nginx)"
need chromium "apt-get install nginx chromium (the Django test loads its page in headless Chromium)"

# The Python client's tests and the Django example's run in .venv (grpcio, Django).
./scripts/setup-test-env.sh
export DICE_PYTHON="$PWD/.venv/bin/python"

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --bins --locked
cargo test --workspace --locked
