#!/usr/bin/env bash
# Runs one benchmark of tests/benches/ (NAME: fleet, reload or rotate) against the
# release binaries: builds them, then points DICE_AGENT_BIN and DICECTL_BIN at
# them. scripts/bench-fleet.sh, bench-reload.sh and bench-rotate.sh say what each
# measures.
set -euo pipefail
[ "$#" -eq 1 ] || {
    echo "usage: bench-release.sh NAME (a bench of dice-tests: fleet, reload, rotate)" >&2
    exit 2
}
cd "$(dirname "$0")/.."

cargo build --release --bins --locked
# cargo runs a bench from its package folder, so the paths must be absolute.
export DICE_AGENT_BIN="$PWD/target/release/dice-agent"
export DICECTL_BIN="$PWD/target/release/dicectl"
cargo bench -p dice-tests --bench "$1" --locked
