#!/usr/bin/env bash
# Runs each cargo-fuzz target in fuzz/ for a bounded time: SECONDS each
# (default 60). Targets: `config` (the agent's TOML config parser) and
# `tls_material` (certificate, key and CRL loading). Corpora grow in
# fuzz/corpus/TARGET (git-ignored), seeded from the repository's configs,
# fuzz/seeds/ and a fresh `dicectl certs init`; crashes land in
# fuzz/artifacts/TARGET. Exits 1 if any target found a crash.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). libFuzzer builds use
# nightly-only rustc flags; on a stable toolchain RUSTC_BOOTSTRAP=1 allows
# them, which this script sets.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
case "$seconds" in
'' | *[!0-9]*)
    echo "usage: scripts/fuzz.sh [SECONDS]  (time per target, default 60)" >&2
    exit 2
    ;;
esac
command -v cargo-fuzz >/dev/null 2>&1 || {
    echo "fuzz.sh: cargo-fuzz not found: cargo install cargo-fuzz" >&2
    exit 1
}
export RUSTC_BOOTSTRAP=1

# Seeds: every config the repository has, valid or not.
mkdir -p fuzz/corpus/config fuzz/corpus/tls_material
cp config/*.toml tests/fixtures/config/valid/*.toml tests/fixtures/config/invalid/*.toml \
    fuzz/corpus/config/
# Seeds: CRLs and chains (fuzz/seeds), and a fresh dev PKI with its keys.
cp fuzz/seeds/tls_material/* fuzz/corpus/tls_material/
pki="$(mktemp -d)"
trap 'rm -rf "$pki"' EXIT
cargo build --quiet --bin dicectl
target/debug/dicectl certs init --out "$pki" >/dev/null
for file in "$pki"/*.pem; do
    cp "$file" "fuzz/corpus/tls_material/pki-$(basename "$file")"
done

failed=()
for target in config tls_material; do
    echo "fuzz.sh: $target for ${seconds}s"
    # -timeout: one input taking longer is a finding too (a hang).
    if ! (cd fuzz && cargo fuzz run "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1); then
        failed+=("$target")
    fi
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz.sh: crashes in: ${failed[*]} (inputs in fuzz/artifacts/; reproduce with" \
        "\`cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET artifacts/TARGET/FILE\`)" >&2
    exit 1
fi
echo "fuzz.sh: no crashes (${seconds}s per target)"
