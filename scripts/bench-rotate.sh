#!/usr/bin/env bash
# Fleet rotation benchmark: builds the release binaries, then runs
# tests/benches/rotate.rs against them: `dicectl certs rotate --all` over 100
# local agents (ECDSA P-256), 10 of them with a client rolling throughout. It
# prints the wall time per run and per node, and the RPCs that failed (the
# goal: none, and under 5 s for the fleet); BENCHMARKS.md records the numbers.
# It exits 1 if a rotation or any RPC failed.
# DICE_BENCH_RUNS=N and DICE_BENCH_AGENTS=N change the counts.
set -euo pipefail

exec "$(dirname "$0")/bench-release.sh" rotate
