# Sourced by scripts/pairs and scripts/against-pingpong: one run of a tool's
# server and client on loopback, pinned as `cargo xtask bench` pins them
# (`cores` in xtask/src/bench/pingpong.rs): the server on the first CPU this
# process may use, the client on the second.

read -r server_cpu client_cpu < <(python3 -c 'import os; c = sorted(os.sched_getaffinity(0)); print(*c[:2])')
if [ -z "${client_cpu:-}" ]; then
    echo "$0: needs two CPUs, one for each side" >&2
    exit 2
fi

# `pinned_pair PORT COMMAND...`: COMMAND -B PORT as the server, then
# COMMAND -P PORT 127.0.0.1 as the client; prints the client's output.
pinned_pair() {
    local port=$1
    shift
    taskset -c "$server_cpu" "$@" -B "$port" >/dev/null 2>&1 &
    sleep 0.3
    taskset -c "$client_cpu" "$@" -P "$port" 127.0.0.1 2>/dev/null
    wait
}
