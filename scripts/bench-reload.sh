#!/usr/bin/env bash
# Certificate rotation benchmark: builds the release binaries, then runs
# tests/benches/reload.rs against them. It prints the rotation latency
# (median and max over 100 rotations) and the RPCs that failed during 100
# rotations under continuous load; BENCHMARKS.md records the numbers.
# DICE_BENCH_ROTATIONS=N changes the count.
set -euo pipefail

exec "$(dirname "$0")/bench-release.sh" reload
