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

. scripts/callgrind-lib.sh
bench_setup bench-instructions

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

write_agent_config info
measure "agent, log info" "$bin/dice-agent" --config "$work/agent.toml"
write_agent_config warn
measure "agent, log warn" "$bin/dice-agent" --config "$work/agent.toml"
measure "reference h2c" "$bin/dice-reference" --h2c 127.0.0.1:0 --tls 127.0.0.1:0 \
    --cert "$pki/server.pem" --key "$pki/server-key.pem" --client-ca "$pki/ca.pem"
