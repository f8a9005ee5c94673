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

command -v valgrind >/dev/null || {
    echo "bench-rate-limit: valgrind is missing; install it (apt-get install valgrind)" >&2
    exit 1
}
cargo build --release --bins --locked
bin="$PWD/target/release"
secs="${DICE_BENCH_SECS:-4}"
work="$(mktemp -d)"
pid=""
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

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

# start NAME [WRAPPER...]: starts the agent on NAME's config, waits for its
# ready file, sets $pid and $addr.
start() {
    local name="$1"
    shift
    local agent="$bin/dice-agent" config="$name"
    if [ "$name" = base ]; then agent="$DICE_AGENT_BASE" config=no-limit; fi
    rm -f "$work/ready"
    "$@" "$agent" --config "$work/$config.toml" --ready-file "$work/ready" \
        2>"$work/$name.log" >/dev/null &
    pid=$!
    for _ in $(seq 600); do [ -s "$work/ready" ] && break; sleep 0.1; done
    [ -s "$work/ready" ] || { echo "bench-rate-limit: $name did not get ready; see its log:" >&2; cat "$work/$name.log" >&2; exit 1; }
    addr=$(awk '$2 == "h2c" { print $3 }' "$work/ready")
}

stop() {
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=""
}

bench() {
    "$bin/dicectl" --output json bench --node "h2c://$addr" -c 4 -s 16 -d "$1"
}

field() {
    python3 -c "import json, sys; print(json.load(sys.stdin)['nodes'][0]['$1'])"
}

instructions() {
    local name="$1"
    rm -f "$work/cg.out"*
    start "$name" valgrind --tool=callgrind --callgrind-out-file="$work/cg.out"
    bench 1s >/dev/null
    callgrind_control -z "$pid" >/dev/null 2>&1
    local out
    out=$(bench "${secs}s")
    callgrind_control -d "$pid" >/dev/null 2>&1
    stop
    local requests total
    requests=$(field requests <<<"$out")
    total=$(awk '/^totals:/ { print $2 }' "$work/cg.out.1")
    awk -v n="$name" -v r="$requests" -v i="$total" \
        'BEGIN { printf "%-9s %8d RPCs  %8.0f instructions per RPC\n", n, r, i / r }'
}

throughput() {
    local name="$1"
    start "$name"
    bench 1s >/dev/null
    local out
    out=$(bench "${secs}s")
    stop
    printf "%-9s %10.0f requests per second\n" "$name" "$(field requests_per_sec <<<"$out")"
}

runs=(no-limit limit)
if [ -n "${DICE_AGENT_BASE:-}" ]; then runs=(base no-limit limit); fi
for round in 1 2; do
    for name in "${runs[@]}"; do instructions "$name"; done
done
for round in 1 2; do
    for name in "${runs[@]}"; do throughput "$name"; done
done
