# Shared by bench-instructions.sh and bench-rate-limit.sh (sourced, not run):
# the set-up of a run, starting a server on its ready file, loading it with
# `dicectl bench` over h2c at 4x16 (connections x streams), and counting its
# instructions per RPC with valgrind's callgrind.

# bench_setup SCRIPT: checks for valgrind, builds the release binaries, and
# sets $bin, $secs (DICE_BENCH_SECS, default 4) and $work (removed on exit,
# after stopping the server still running, if any).
bench_setup() {
    script="$1"
    command -v valgrind >/dev/null || {
        echo "$script: valgrind is missing; install it (apt-get install valgrind)" >&2
        exit 1
    }
    cargo build --release --bins --locked
    bin="$PWD/target/release"
    secs="${DICE_BENCH_SECS:-4}"
    work="$(mktemp -d)"
    pid=""
    trap bench_cleanup EXIT
}

bench_cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}

# start_ready NAME COMMAND...: runs COMMAND --ready-file, waits for the ready
# file, and sets $pid and $addr (the address of its listener named h2c).
start_ready() {
    local name="$1"
    shift
    rm -f "$work/ready"
    "$@" --ready-file "$work/ready" 2>"$work/$name.log" >/dev/null &
    pid=$!
    for _ in $(seq 600); do [ -s "$work/ready" ] && break; sleep 0.1; done
    [ -s "$work/ready" ] || { echo "$script: $name did not get ready; see its log:" >&2; cat "$work/$name.log" >&2; exit 1; }
    addr=$(awk '$2 == "h2c" { print $3 }' "$work/ready")
}

stop_server() {
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=""
}

# load DURATION: `dicectl bench` against $addr; prints its JSON.
load() {
    "$bin/dicectl" --output json bench --node "h2c://$addr" -c 4 -s 16 -d "$1"
}

# json_field FIELD: the field of the first node of the JSON on stdin.
json_field() {
    python3 -c "import json, sys; print(json.load(sys.stdin)['nodes'][0]['$1'])"
}

# measure NAME COMMAND...: starts COMMAND under callgrind, warms up, counts the
# instructions of $secs seconds of load and prints them per RPC.
measure() {
    local name="$1"
    shift
    rm -f "$work/cg.out"*
    start_ready "$name" valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" "$@"
    load 1s >/dev/null
    callgrind_control -z "$pid" >/dev/null 2>&1
    local out
    out=$(load "${secs}s")
    callgrind_control -d "$pid" >/dev/null 2>&1
    stop_server
    local requests instructions
    requests=$(json_field requests <<<"$out")
    instructions=$(awk '/^totals:/ { print $2 }' "$work/cg.out.1")
    awk -v n="$name" -v r="$requests" -v i="$instructions" \
        'BEGIN { printf "%-22s %8d RPCs  %8.0f instructions per RPC\n", n, r, i / r }'
}
