#!/usr/bin/env bash
# Runs the whole pattern on this machine, on loopback only: a service registry and three
# dynamic-port-servers, each on a port the kernel picks. Prints the URLs to open, streams the
# registry's log (registrations, health changes) and runs until Ctrl-C; then the servers
# deregister and everything stops.
#
#   make demo                        (or scripts/demo.sh)
# Env: BIN_DIR          use DIR/service-registry and DIR/dynamic-port-server (default: cargo build)
#      DEMO_API         registry API address  (default 127.0.0.1:10080, the seed's port)
#      DEMO_HTTP        registry UI address   (default 127.0.0.1:8080)
#      DEMO_SERVERS     how many servers      (default 3)
#      DEMO_SECONDS     stop by itself after this many seconds (default: run until Ctrl-C)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

API_ADDR=${DEMO_API:-127.0.0.1:10080}
HTTP_ADDR=${DEMO_HTTP:-127.0.0.1:8080}
COUNT=${DEMO_SERVERS:-3}
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/dynamic-ports-demo.XXXXXX")
PIDS=()
REGISTRY_PID=""

say() { echo "demo: $*"; }
die() { echo "demo: $*" >&2; exit 1; }

# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
    trap - EXIT INT TERM
    echo
    say "stopping: the servers deregister, then the registry stops"
    local pid i
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for (( i = 0; i < 50; i++ )); do   # at most 5s: each server's deregistration takes at most 2s
        local alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        (( alive )) || break
        sleep 0.1
    done
    [[ -n $REGISTRY_PID ]] && kill -TERM "$REGISTRY_PID" 2>/dev/null
    sleep 0.3
    for pid in "${PIDS[@]}" $REGISTRY_PID; do kill -KILL "$pid" 2>/dev/null; done
    wait 2>/dev/null
    say "stopped; the logs are in $LOGS"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

free() { # free HOST:PORT -> exit 0 if it can be bound
    python3 -c 'import socket,sys
h,p=sys.argv[1].rsplit(":",1); s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try: s.bind((h,int(p)))
except OSError: sys.exit(1)' "$1"
}

command -v curl >/dev/null || die "curl is needed"
command -v python3 >/dev/null || die "python3 is needed"
if [[ -z ${BIN_DIR:-} ]]; then
    say "building (cargo build)"
    cargo build --quiet -p service-registry -p dynamic-port-server \
        --bin service-registry --bin dynamic-port-server || die "cargo build failed"
    BIN_DIR=$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug
fi
for b in service-registry dynamic-port-server; do
    [[ -x $BIN_DIR/$b ]] || die "$BIN_DIR/$b does not exist (build it, or set BIN_DIR)"
done

for var in API_ADDR HTTP_ADDR; do
    if ! free "${!var}"; then
        say "${!var} is in use; taking a free port instead"
        printf -v "$var" '%s' "${!var%:*}:0"
    fi
done

# setsid: Ctrl-C reaches only this script, which stops the servers before the registry.
# Faster than the defaults (5s, 30s) so that changes show within seconds.
setsid "$BIN_DIR/service-registry" -api="$API_ADDR" -http="$HTTP_ADDR" \
    -check-interval=1s -deregister-critical-after=10s \
    > >(trap '' INT; tee "$LOGS/registry.log" | sed -u 's/^/[registry] /') 2>&1 &
REGISTRY_PID=$!

addr_from_log() { # LABEL FILE
    grep -oE "$1 [0-9.]+:[0-9]+" "$2" 2>/dev/null | tail -n 1 | awk '{print $NF}'
}
for (( i = 0; i < 100; i++ )); do
    API=$(addr_from_log "API listening on" "$LOGS/registry.log")
    UI=$(addr_from_log "UI listening on" "$LOGS/registry.log")
    [[ -n $API && -n $UI ]] && break
    kill -0 "$REGISTRY_PID" 2>/dev/null || die "the registry stopped; see $LOGS/registry.log"
    sleep 0.1
done
[[ -n $API && -n $UI ]] || die "the registry did not report its addresses within 10s; see $LOGS/registry.log"

declare -a PORTS=()
for (( n = 1; n <= COUNT; n++ )); do
    setsid "$BIN_DIR/dynamic-port-server" -service-registry="$API" -advertised-ip=127.0.0.1 \
        -bind-ip=127.0.0.1 -service-instance-name="demo-$n" -port-file="$LOGS/port-$n" \
        >"$LOGS/server-$n.log" 2>&1 &
    PIDS+=($!)
done
for (( n = 1; n <= COUNT; n++ )); do
    for (( i = 0; i < 100; i++ )); do
        [[ -s $LOGS/port-$n ]] && break
        sleep 0.1
    done
    PORTS[n]=$(cat "$LOGS/port-$n" 2>/dev/null || echo "?")
done

cat <<EOF

============================================================================
 The registry and $COUNT servers are running (loopback only). Open:

   The registry's page   http://$UI/
   Its JSON              http://$UI/endpoints
   Only passing ones     http://$UI/endpoints?status=passing
EOF
for (( n = 1; n <= COUNT; n++ )); do
    printf '   %-22shttp://127.0.0.1:%s/   (pid %s, log %s)\n' \
        "Server demo-$n" "${PORTS[n]}" "${PIDS[n-1]}" "$LOGS/server-$n.log"
done
cat <<EOF

 Try:
   curl -s http://$UI/endpoints | python3 -m json.tool
   kill -9 ${PIDS[0]}    # demo-1 dies without deregistering: critical, then removed after 10s
   kill ${PIDS[1]}       # demo-2 stops cleanly: it deregisters and leaves at once
   curl -s -X POST http://$API/register -d '{"Name":"by-hand","Address":"127.0.0.1:9"}'

 Ctrl-C stops everything.
============================================================================

EOF

deadline=$(( ${DEMO_SECONDS:-0} > 0 ? $(date +%s) + DEMO_SECONDS : 0 ))
while kill -0 "$REGISTRY_PID" 2>/dev/null; do
    (( deadline == 0 || $(date +%s) < deadline )) || exit 0
    sleep 1
done
die "the registry stopped unexpectedly; see $LOGS/registry.log"
