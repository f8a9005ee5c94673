#!/usr/bin/env bash
# The cost of the per-client rate limiter per RPC: the agent over h2c at 4x16
# (connections x streams) without limits and with `limits.rpc_rate` set so
# high it never refuses, in the same run. Every connection comes from
# 127.0.0.1, so all RPCs share one client key (the limiter's busiest case).
# First instructions per RPC under valgrind's callgrind (user space only; the
# count barely moves with the machine's load), then requests per second from
# `dicectl bench` without valgrind, each configuration measured twice,
# interleaved.
#
# DICE_BENCH_SECS=S measured seconds per run (default 4). DICE_AGENT_BASE=BIN
# adds a row for another agent binary (say, one built before the limiter)
# without limits. Needs valgrind
# (apt-get install valgrind).
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/callgrind-lib.sh
bench_setup bench-rate-limit

# write_config NAME LIMITS: an h2c agent config with LIMITS as its [limits] table.
write_config() {
    cat >"$work/$1.toml" <<EOF2
[node]
name = "bench"
[[listeners]]
name = "h2c"
address = "127.0.0.1:0"
mode = "h2c"
[limits]
$2
EOF2
}
write_config "no-limit" ""
write_config "limit" 'rpc_rate = "1000000/s"'

# agent NAME: the command line of configuration NAME (base: $DICE_AGENT_BASE
# on the no-limit config).
agent() {
    if [ "$1" = base ]; then
        echo "$DICE_AGENT_BASE" --config "$work/no-limit.toml"
    else
        echo "$bin/dice-agent" --config "$work/$1.toml"
    fi
}

throughput() {
    local name="$1"
    # shellcheck disable=SC2046 # the command line is split on purpose
    start_ready "$name" $(agent "$name")
    load 1s >/dev/null
    local out
    out=$(load "${secs}s")
    stop_server
    printf "%-22s %10.0f requests per second\n" "$name" "$(json_field requests_per_sec <<<"$out")"
}

runs=(no-limit limit)
if [ -n "${DICE_AGENT_BASE:-}" ]; then runs=(base no-limit limit); fi
for round in 1 2; do
    # shellcheck disable=SC2046
    for name in "${runs[@]}"; do measure "$name" $(agent "$name"); done
done
for round in 1 2; do
    for name in "${runs[@]}"; do throughput "$name"; done
done
