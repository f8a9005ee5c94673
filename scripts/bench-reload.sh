#!/usr/bin/env bash
# Certificate rotation benchmark: builds the release binaries, then runs
# tests/benches/reload.rs against them. It prints the rotation latency
# (median and max over 100 rotations) and the RPCs that failed during 100
# rotations under continuous load; BENCHMARKS.md records the numbers.
# DICE_BENCH_ROTATIONS=N changes the count.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --bins --locked
# cargo runs a bench from its package folder, so the path must be absolute.
export DICE_AGENT_BIN="$PWD/target/release/dice-agent"
export DICECTL_BIN="$PWD/target/release/dicectl"
cargo bench -p dice-tests --bench reload --locked
