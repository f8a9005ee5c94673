#!/usr/bin/env bash
# Instructions per RPC, counted by valgrind's callgrind: the agent (log level
# info, then warn) and dice-reference, each over h2c at 4x16 connections x
# streams for a few seconds of `dicectl bench`. Unlike requests per second,
# the count barely moves with the machine's load, so it shows what a change
# to the per-RPC path is worth. User-space instructions only (the kernel's
# TCP work is not counted); under valgrind each server runs serialized, so
# absolute rates mean nothing, the counts per RPC do.
#
# DICE_BENCH_SECS=S measured seconds per server (default 4). Needs valgrind
# (apt-get install valgrind).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v valgrind >/dev/null || {
    echo "bench-instructions: valgrind is missing; install it (apt-get install valgrind)" >&2
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

"$bin/dicectl" certs init --out "$work/pki" >/dev/null
pki="$work/pki"
write_agent_config() {
    cat >"$work/agent.toml" <<EOF
[node]
name = "bench"
[tls]
cert = "$pki/server.pem"
key = "$pki/server-key.pem"
client_ca = "$pki/ca.pem"
[[listeners]]
name = "h2c"
address = "127.0.0.1:0"
mode = "h2c"
[log]
level = "$1"
EOF
}

# measure NAME COMMAND...: starts COMMAND under callgrind, waits for its ready
# file, warms up, counts the instructions of $secs seconds of load.
measure() {
    local name="$1"
    shift
    rm -f "$work/ready" "$work/cg.out"*
    valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" "$@" \
        --ready-file "$work/ready" 2>"$work/$name.log" >/dev/null &
    pid=$!
    for _ in $(seq 600); do [ -s "$work/ready" ] && break; sleep 0.1; done
    [ -s "$work/ready" ] || { echo "bench-instructions: $name did not get ready; see its log:" >&2; cat "$work/$name.log" >&2; exit 1; }
    local addr
    addr=$(awk '$2 == "h2c" { print $3 }' "$work/ready")
    local bench=("$bin/dicectl" --output json bench --node "h2c://$addr" -c 4 -s 16)
    "${bench[@]}" -d 1s >/dev/null
    callgrind_control -z "$pid" >/dev/null 2>&1
    local out
    out=$("${bench[@]}" -d "${secs}s")
    callgrind_control -d "$pid" >/dev/null 2>&1
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=""
    local requests instructions
    requests=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["nodes"][0]["requests"])' <<<"$out")
    instructions=$(awk '/^totals:/ { print $2 }' "$work/cg.out.1")
    awk -v n="$name" -v r="$requests" -v i="$instructions" \
        'BEGIN { printf "%-22s %8d RPCs  %8.0f instructions per RPC\n", n, r, i / r }'
}

write_agent_config info
measure "agent, log info" "$bin/dice-agent" --config "$work/agent.toml"
write_agent_config warn
measure "agent, log warn" "$bin/dice-agent" --config "$work/agent.toml"
measure "reference h2c" "$bin/dice-reference" --h2c 127.0.0.1:0 --tls 127.0.0.1:0 \
    --cert "$pki/server.pem" --key "$pki/server-key.pem" --client-ca "$pki/ca.pem"
