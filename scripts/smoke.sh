#!/usr/bin/env bash
# Smoke test with the real binaries as local processes, on loopback only:
# a registry and three servers; all three turn passing; one killed with SIGKILL goes critical
# and is removed; one stopped with SIGTERM deregisters and leaves at once; the page lists the
# survivor; everything stops with exit 0. Exits non-zero with a clear message on any failure,
# bounded in time (about 10s when all is well, under a minute when it is not), and cleans up
# on every exit path.
#
#   scripts/smoke.sh                 builds the debug binaries if needed (cargo build)
#   BIN_DIR=DIR scripts/smoke.sh     uses DIR/service-registry and DIR/dynamic-port-server
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
SMOKE_NAME=smoke
# shellcheck source=scripts/smoke-lib.sh
source scripts/smoke-lib.sh

declare -A PID=()

mode_start_registry() {
    "$BIN_DIR/service-registry" "$@" >"$SMOKE_WORK/registry.log" 2>&1 &
    PID[registry]=$!
}
mode_registry_log() { cat "$SMOKE_WORK/registry.log" 2>/dev/null; }
mode_start_server() {
    local n=$1; shift
    # -bind-ip keeps the test servers on loopback; the image smoke test keeps the default 0.0.0.0.
    "$BIN_DIR/dynamic-port-server" "$@" -bind-ip=127.0.0.1 -port-file="$SMOKE_WORK/port-$n" >"$SMOKE_WORK/server-$n.log" 2>&1 &
    PID[$n]=$!
}
mode_server_log() { cat "$SMOKE_WORK/server-$1.log" 2>/dev/null; }
mode_signal() {
    kill -s "$2" "${PID[$1]}" 2>/dev/null
    # Reap a SIGKILLed process at once, so bash does not report "Killed" later.
    [[ $2 != KILL ]] || wait "${PID[$1]}" 2>/dev/null
}
mode_exit_code() { # NAME SECONDS
    local pid=${PID[$1]} i
    for (( i = 0; i < $2 * 10; i++ )); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then EXIT_CODE="still running after ${2}s"; return; fi
    wait "$pid" 2>/dev/null
    EXIT_CODE=$?
}
mode_extra_checks() {
    local n port
    for n in "${SERVERS[@]}"; do
        port=$(cat "$SMOKE_WORK/port-$n" 2>/dev/null)
        [[ $port == "${SERVER_PORT[$n]}" ]] ||
            fail "smoke-$n's -port-file holds '$port', its log says port ${SERVER_PORT[$n]}"
    done
    ok "each server wrote its port to its -port-file"
}
mode_cleanup() {
    local name pid i
    for name in "${!PID[@]}"; do kill -TERM "${PID[$name]}" 2>/dev/null; done
    for (( i = 0; i < 30; i++ )); do
        local alive=0
        for pid in "${PID[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        (( alive )) || break
        sleep 0.1
    done
    for pid in "${PID[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    wait 2>/dev/null
}

smoke_traps
need curl python3

if [[ -z ${BIN_DIR:-} ]]; then
    need cargo
    say "building the debug binaries if needed (cargo build)"
    cargo build --quiet -p service-registry -p dynamic-port-server \
        --bin service-registry --bin dynamic-port-server || fail "cargo build failed"
    target_dir=$(cargo metadata --format-version 1 --no-deps | json_eval 'd["target_directory"]') ||
        fail "cargo metadata failed"
    BIN_DIR=$target_dir/debug
fi
for b in service-registry dynamic-port-server; do
    [[ -x $BIN_DIR/$b ]] || fail "$BIN_DIR/$b does not exist (build it, or set BIN_DIR)"
done
say "binaries: $BIN_DIR"

run_story
