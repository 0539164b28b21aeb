#!/usr/bin/env bash
# Smoke test of the real images: the story of scripts/smoke.sh, with the registry and the
# three servers as containers on the host network (what hostNetwork pods get), run as the
# images' non-root user with a read-only root filesystem and no capabilities, as in
# deployments/. Also runs the server's Kubernetes exec probe (`healthcheck`) inside a
# container, and checks the images' user, entrypoint and size. Loopback only; every wait is
# bounded; every container it starts is removed on every exit path.
#
#   CONTAINER_ENGINE=podman scripts/smoke-images.sh     (run `make images` first)
# Env: CONTAINER_ENGINE (docker), REGISTRY_IMAGE / SERVER_IMAGE / MIRROR_IMAGE (NAME:VERSION),
#      MAX_IMAGE_BYTES (1048576: the goal of at most 1 MiB per image; 0 to skip that check),
#      MAX_MIRROR_BYTES (2097152: the mirror carries TLS, its goal is 2 MiB).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
SMOKE_NAME=smoke-images
# shellcheck source=scripts/smoke-lib.sh
source scripts/smoke-lib.sh

ENGINE=${CONTAINER_ENGINE:-docker}
if [[ $(basename "$ENGINE") == podman && -z ${CONTAINERS_CONF:-} ]]; then
    export CONTAINERS_CONF=$PWD/scripts/containers.conf
fi
VERSION=$(scripts/version.sh)
REGISTRY_IMAGE=${REGISTRY_IMAGE:-service-registry:$VERSION}
SERVER_IMAGE=${SERVER_IMAGE:-dynamic-port-server:$VERSION}
MIRROR_IMAGE=${MIRROR_IMAGE:-endpointslice-mirror:$VERSION}
# The mirror carries TLS for the Kubernetes API: its goal is 2 MiB.
MAX_MIRROR_BYTES=${MAX_MIRROR_BYTES:-2097152}
MAX_IMAGE_BYTES=${MAX_IMAGE_BYTES:-1048576}
PORT_DIR=/run/dynamic-port-server
PREFIX=dps-smoke-$$
CONTAINERS=()

# As in the Deployments: non-root (the image's USER), read-only root, no capabilities,
# no privilege escalation, host networking.
RUN_FLAGS=(--network host --read-only --cap-drop ALL --security-opt no-new-privileges)

engine() { timeout 60 "$ENGINE" "$@"; }
cname() { echo "$PREFIX-$1"; }   # registry or a server number
cname_of() { if [[ $1 == registry ]]; then cname registry; else cname "smoke-$1"; fi; }

mode_start_registry() {
    CONTAINERS+=("$(cname registry)")
    engine run -d --name "$(cname registry)" "${RUN_FLAGS[@]}" "$REGISTRY_IMAGE" "$@" >/dev/null ||
        fail "$ENGINE run $REGISTRY_IMAGE failed"
}
mode_registry_log() { engine logs "$(cname registry)" 2>&1; }
mode_start_server() {
    local n=$1; shift
    CONTAINERS+=("$(cname "smoke-$n")")
    # The port file goes to a small writable tmpfs, as the emptyDir volume in the Deployment.
    engine run -d --name "$(cname "smoke-$n")" "${RUN_FLAGS[@]}" \
        --tmpfs "$PORT_DIR:rw,size=64k,mode=1777" \
        "$SERVER_IMAGE" "$@" -port-file="$PORT_DIR/port" >/dev/null ||
        fail "$ENGINE run $SERVER_IMAGE failed"
}
mode_server_log() { engine logs "$(cname "smoke-$1")" 2>&1; }
mode_signal() { engine kill --signal "$2" "$(cname_of "$1")" >/dev/null 2>&1; }
mode_exit_code() { # NAME SECONDS
    local name code
    name=$(cname_of "$1")
    code=$(timeout "$2" "$ENGINE" wait "$name" 2>/dev/null | tail -n 1)
    EXIT_CODE=${code:-"still running after ${2}s (or gone)"}
}
mode_extra_checks() {
    # The Kubernetes exec probe, as the kubelet runs it: inside the running container.
    engine exec "$(cname smoke-3)" /dynamic-port-server healthcheck -port-file="$PORT_DIR/port" >/dev/null 2>&1 ||
        fail "the exec probe '/dynamic-port-server healthcheck -port-file=$PORT_DIR/port' failed in smoke-3"
    ok "the exec probe (/dynamic-port-server healthcheck) passes inside smoke-3"
    if engine exec "$(cname smoke-3)" /dynamic-port-server healthcheck -port-file=/nonexistent >/dev/null 2>&1; then
        fail "the exec probe passed with a missing port file; it must fail"
    fi
    ok "the exec probe fails when the port file is missing"
}
mode_cleanup() {
    local c
    for c in "${CONTAINERS[@]}"; do
        timeout 20 "$ENGINE" kill "$c" >/dev/null 2>&1
        timeout 20 "$ENGINE" rm -f "$c" >/dev/null 2>&1
    done
}

smoke_traps
need curl python3 timeout
command -v "$ENGINE" >/dev/null 2>&1 || fail "container engine '$ENGINE' not found (set CONTAINER_ENGINE)"
engine info >/dev/null 2>&1 ||
    fail "'$ENGINE info' fails: no working container engine (on a machine without a Docker daemon use CONTAINER_ENGINE=podman)"
say "engine: $ENGINE${CONTAINERS_CONF:+ (CONTAINERS_CONF=$CONTAINERS_CONF)}"

for image in "$REGISTRY_IMAGE" "$SERVER_IMAGE" "$MIRROR_IMAGE"; do
    limit=$MAX_IMAGE_BYTES
    [[ $image == "$MIRROR_IMAGE" ]] && limit=$MAX_MIRROR_BYTES
    info=$(engine image inspect --format '{{.Size}} {{.Config.User}} {{json .Config.Entrypoint}}' "$image" 2>/dev/null) ||
        fail "image $image not found: run 'make images' first"
    read -r size user entrypoint <<<"$info"
    name=${image##*/}; name=${name%%:*}
    [[ $user == 65532:65532 ]] || fail "$image runs as user '$user', expected 65532:65532"
    [[ $entrypoint == "[\"/$name\"]" ]] || fail "$image's entrypoint is $entrypoint, expected [\"/$name\"]"
    if (( limit > 0 && size > limit )); then
        fail "$image is $size bytes, over the goal of $limit"
    fi
    ok "$image: $size bytes, user $user, entrypoint $entrypoint"
done
cmd=$(engine image inspect --format '{{json .Config.Cmd}}' "$REGISTRY_IMAGE")
[[ $cmd == '["-api=0.0.0.0:10080","-http=0.0.0.0:8080"]' ]] ||
    fail "$REGISTRY_IMAGE's default arguments are $cmd, expected -api=0.0.0.0:10080 -http=0.0.0.0:8080"
ok "$REGISTRY_IMAGE listens on 0.0.0.0:10080 (API) and 0.0.0.0:8080 (UI) by default"

run_story
