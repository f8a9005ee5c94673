#!/usr/bin/env bash
# dicectl fan-out benchmark: builds the release binaries, then runs
# tests/benches/fleet.rs against them: `dicectl roll --all` (and `health`)
# over a 1000-entry fleet file spread across 4 local agents. It prints the
# wall time (median, min, max over 10 runs) and the peak RSS of the dicectl
# process (GNU time); BENCHMARKS.md records the numbers. DICE_BENCH_RUNS=N
# changes the count.
set -euo pipefail

exec "$(dirname "$0")/bench-release.sh" fleet
