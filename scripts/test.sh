#!/usr/bin/env bash
# Runs every check and test: formatting, lints, then the unit and integration
# tests against the real binaries (built first, once), with the Python test
# venv that scripts/setup-test-env.sh makes.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/system-packages.sh
. scripts/system-packages.sh
need_cargo test.sh
# What the tests run besides the workspace's own binaries: a C compiler for
# ring's build, openssl (RSA and SEC1 keys), the real nginx, headless Chromium
# (the Django page), python3 with venv (grpcio and Django in .venv),
# systemd-analyze (the unit file check), git (the version string) and chattr
# (a read-only key folder, even for root, in the admin API's tests).
need_packages test.sh cc=gcc openssl=openssl nginx=nginx chromium=chromium \
    python3=python3 py:ensurepip,venv=python3-venv systemd-analyze=systemd git=git \
    chattr=e2fsprogs
# The Debian packages' tests: dpkg-shlibdeps and strip (cargo-deb runs
# them), lintian, and cargo-deb itself, from cargo.
need_packages test.sh dpkg-shlibdeps=dpkg-dev strip=binutils lintian=lintian
need_cargo_deb test.sh
# pebble: the ACME server the [acme] tests obtain certificates from.
need_packages test.sh pebble=pebble
# dnsmasq serves the DNS SRV records of dicectl's discovery tests.
need_packages test.sh dnsmasq=dnsmasq-base
for component in rustfmt clippy; do
    cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1 ||
        rustup component add "$component" >/dev/null 2>&1 || {
        echo "test.sh: cargo ${component/rustfmt/fmt} is missing: rustup component add $component" >&2
        exit 1
    }
done

# The Python client's tests and the Django example's run in .venv (grpcio, Django).
./scripts/setup-test-env.sh
export DICE_PYTHON="$PWD/.venv/bin/python"

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --bins --locked
cargo test --workspace --locked
