#!/usr/bin/env bash
# The performance suite: builds the release binaries (dice-agent, dicectl and
# the bare-tonic dice-reference), then runs tests/benches/suite/ against
# them: the agent over mTLS and h2c, behind nginx (config/nginx.conf) and the
# reference server, at 1x1, 4x16 and 16x16 connections x streams and with a
# new connection per RPC, plus idle RSS, RSS with 10,000 idle mTLS
# connections and start-to-ready time. It prints the tables and rewrites the
# "## Performance suite" section of BENCHMARKS.md. A few minutes on 2 cores.
# A cell whose `dicectl bench` failed or counted errors is a failed cell: left
# out of the medians, its targets unmet, and the suite exits 1.
#
# DICE_BENCH_RUNS=N (default 5), DICE_BENCH_SECS=S per cell (default 3),
# DICE_BENCH_IDLE=N idle connections (default 10000), DICE_BENCH_WRITE=0 to
# leave BENCHMARKS.md alone. Needs nginx and openssl (apt-get install nginx).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --bins --locked
# cargo runs a bench from its package folder, so the paths must be absolute.
export DICE_AGENT_BIN="$PWD/target/release/dice-agent"
export DICECTL_BIN="$PWD/target/release/dicectl"
export DICE_REFERENCE_BIN="$PWD/target/release/dice-reference"
cargo bench -p dice-tests --bench suite --locked
