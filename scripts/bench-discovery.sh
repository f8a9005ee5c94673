#!/usr/bin/env bash
# dicectl at fleet scale: `dicectl roll --all` over fleet files of 10,000 and
# 50,000 entries spread round robin over 8 local release agents, so every
# entry is its own TCP connection and full TLS handshake (no resumption), as
# with that many hosts. For each size it runs the table output and --output
# jsonl; GNU time gives the wall time and dicectl's peak RSS. (Discovered
# entries cannot stand in here: on loopback they would share 8 addresses and
# one server name, and discovery merges a node found twice into one.)
# BENCHMARKS.md records the numbers.
#
#   DICE_BENCH_ENTRIES="10000 50000"   the fleet sizes
#   DICE_BENCH_NO_BUILD=1              use target/release as it is
set -euo pipefail
cd "$(dirname "$0")/.."

entries="${DICE_BENCH_ENTRIES:-10000 50000}"
agents=8
[ -x /usr/bin/time ] || {
    echo "bench-discovery.sh: GNU time is missing: apt-get install time" >&2
    exit 1
}
[ -n "${DICE_BENCH_NO_BUILD:-}" ] || cargo build --release --locked -p dicectl -p dice-agent
ctl="$PWD/target/release/dicectl"
agent="$PWD/target/release/dice-agent"

work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

"$ctl" certs init --out "$work/pki" >/dev/null
ports=()
for i in $(seq 1 "$agents"); do
    cat >"$work/agent-$i.toml" <<EOF
[node]
name = "bench-$i"
[tls]
cert = "$work/pki/server.pem"
key = "$work/pki/server-key.pem"
client_ca = "$work/pki/ca.pem"
[[listeners]]
name = "mtls"
address = "127.0.0.1:0"
mode = "mtls"
[log]
level = "warn"
EOF
    "$agent" --config "$work/agent-$i.toml" --ready-file "$work/ready-$i" 2>"$work/agent-$i.log" &
    pids+=("$!")
    for _ in $(seq 1 200); do
        [ -s "$work/ready-$i" ] && break
        sleep 0.05
    done
    [ -s "$work/ready-$i" ] || {
        echo "bench-discovery.sh: agent $i did not start: $(cat "$work/agent-$i.log")" >&2
        exit 1
    }
    ports+=("$(awk '$2 == "mtls" { sub(/.*:/, "", $3); print $3 }' "$work/ready-$i")")
done

client="[client]
ca = \"$work/pki/ca.pem\"
cert = \"$work/pki/client.pem\"
key = \"$work/pki/client-key.pem\"
timeout = \"10s\""

# run LABEL FLEET OUTPUT: one timed dicectl run; prints a Markdown row.
run() {
    local label="$1" fleet="$2" output="$3"
    local status=0
    /usr/bin/time -v -o "$work/time" "$ctl" --fleet "$fleet" --output "$output" roll --all \
        >"$work/out" 2>"$work/err" || status=$?
    local wall rss ok
    wall="$(awk -F': ' '/Elapsed \(wall clock\)/ { print $2 }' "$work/time")"
    rss="$(awk -F': ' '/Maximum resident set size/ { printf "%.1f", $2 / 1024 }' "$work/time")"
    if [ "$output" = jsonl ]; then
        ok="$(tail -n 1 "$work/out" | sed 's/.*"ok":\([0-9]*\).*/\1/')"
    else
        ok="$(tail -n 1 "$work/out" | sed 's/^ok \([0-9]*\).*/\1/')"
    fi
    echo "| $label | $output | $wall | $rss MiB | $ok ok, exit $status |"
}

echo "| fleet | output | wall | dicectl peak RSS | nodes |"
echo "|---|---|---|---|---|"
for n in $entries; do
    awk -v n="$n" -v ports="${ports[*]}" -v client="$client" 'BEGIN {
        split(ports, p, " "); print client
        for (i = 0; i < n; i++)
            printf "\n[[nodes]]\nname = \"n%d\"\naddress = \"127.0.0.1:%s\"\nserver_name = \"localhost\"\n", i, p[i % length(p) + 1]
    }' >"$work/static-$n.toml"

    run "$n [[nodes]]" "$work/static-$n.toml" table
    run "$n [[nodes]]" "$work/static-$n.toml" jsonl
done
