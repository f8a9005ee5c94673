#!/usr/bin/env bash
# Quickstart: builds, makes the dev PKI if missing, starts a local fleet of
# agents from config/, rolls against each, shows their health in one table,
# and keeps them serving in the foreground until Ctrl-C. config/fleet.toml
# describes the same fleet for `dicectl --fleet`.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/system-packages.sh
. scripts/system-packages.sh
need_cargo quickstart
# ring's build compiles C.
need_packages quickstart cc=gcc

cargo build --workspace --bins --locked
bin=target/debug
if [ ! -f certs/dev/ca.pem ]; then
    "$bin/dicectl" certs init --out certs/dev
fi

run=$(mktemp -d)
pids=()
stop() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$run"
}
trap stop EXIT
trap 'echo; echo "stopping the fleet"; exit 0' INT TERM

nodes=(node-1 node-2)
for node in "${nodes[@]}"; do
    "$bin/dice-agent" --config "config/$node.toml" --ready-file "$run/$node.ready" \
        2> >(sed -u "s/^/[$node] /" >&2) &
    pids+=($!)
done

# Wait for every agent's ready file (written once all its listeners are bound).
deadline=$((SECONDS + 15))
for i in "${!nodes[@]}"; do
    until [ -f "$run/${nodes[$i]}.ready" ]; do
        if ! kill -0 "${pids[$i]}" 2>/dev/null; then
            echo "quickstart: ${nodes[$i]} exited before it was ready (see its log above)" >&2
            exit 1
        fi
        if [ $SECONDS -ge $deadline ]; then
            echo "quickstart: ${nodes[$i]} not ready after 15s" >&2
            exit 1
        fi
        sleep 0.1
    done
done

tls=(--ca certs/dev/ca.pem --cert certs/dev/client.pem --key certs/dev/client-key.pem)
# config/fleet.toml names these agents at the addresses config/node-*.toml bind.
fleet=(--fleet config/fleet.toml)
echo
echo "== roll"
"$bin/dicectl" "${fleet[@]}" roll --all --count 3 || true
echo
echo "== health"
"$bin/dicectl" "${fleet[@]}" health || true

cat <<MSG

The fleet is serving (Ctrl-C stops it). In another terminal, try:
  $bin/dicectl --fleet config/fleet.toml health
  $bin/dicectl --fleet config/fleet.toml roll --all --count 3
  $bin/dicectl --fleet config/fleet.toml --output json health --label region=eu
  $bin/dicectl roll --node 127.0.0.1:8443 ${tls[*]}
  $bin/dice-agent --config config/node-1.toml --check
MSG
wait
