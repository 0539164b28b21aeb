#!/usr/bin/env bash
# End to end on a real Kubernetes: the README's "Run it on Kubernetes" walk-through, typed as a
# user types it, with a PASS/FAIL line for each claim it makes and `N passed, M failed` at the
# end (exit 1 on any failure).
#
#   scripts/e2e-cluster.sh                  (as root; `make e2e-cluster` runs it)
#
# By default it builds the images (make images CONTAINER_ENGINE=podman), starts the throwaway
# cluster of scripts/local-cluster.sh, loads the images into it, walks through, and takes the
# cluster down again on every exit path, restoring the host.
#
# With DP_E2E_USE_KUBECONFIG=1 and KUBECONFIG set, it walks through on that cluster instead, in
# a namespace of its own (deleted at the end). Run it on a node of that cluster: the checks of
# ClusterIPs and of the server's process (SIGKILL) need the node's network and processes. The
# nodes must have the images: set IMAGE_PREFIX to where `make images push IMAGE_PREFIX=...`
# put them, or load them (kind load, minikube image load) first.
#
# Env: DP_E2E_USE_KUBECONFIG, KUBECONFIG, IMAGE_PREFIX (external cluster only),
#      DP_CLUSTER_CACHE (see scripts/local-cluster.sh), DP_E2E_ARTIFACTS (target/e2e-cluster).
# Every wait is bounded.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
REPO=$PWD
VERSION=$(scripts/version.sh)
ARTIFACTS=${DP_E2E_ARTIFACTS:-$REPO/target/e2e-cluster}
CLUSTER=$REPO/scripts/local-cluster.sh
REGISTER_INTERVAL=10 # the server's -register-interval default (server/src/config.rs)
HOST_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
    kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
mkdir -p "$ARTIFACTS"

PASSED=0
FAILED=0
pass() { echo "PASS: $*"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL: $*"; FAILED=$((FAILED + 1)); }
note() { echo "      $*"; }
# check DESCRIPTION CMD...: PASS or FAIL on CMD's status.
check() {
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}
now_ms() { date +%s%3N; }

T0=$(now_ms)
STEP_NAME=
STEP_T0=
TIMINGS=()
step() {
    local t
    t=$(now_ms)
    if [[ -n $STEP_NAME ]]; then
        TIMINGS+=("$(printf '%-66s %7.1fs' "$STEP_NAME" "$(((t - STEP_T0) / 100))e-1")")
    fi
    STEP_NAME=$1
    STEP_T0=$t
    [[ $1 == end ]] || { echo; echo "===== $1"; }
}
print_timings() {
    echo
    echo "===== timings"
    printf '  %s\n' "${TIMINGS[@]}"
    printf '  %-66s %7.1fs\n' total "$((($(now_ms) - T0) / 100))e-1"
}

if [[ ${DP_E2E_USE_KUBECONFIG:-} == 1 && -n ${KUBECONFIG:-} ]]; then
    MODE=external
    NS=dp-e2e-$(date +%s)
    KUBECTL_CMD="$(command -v kubectl) -n $NS"
    in_node() { "$@"; }
else
    MODE=local
    ((EUID == 0)) || { echo "e2e-cluster: run as root (it starts a local cluster)" >&2; exit 2; }
    KUBECTL_CMD="$CLUSTER kubectl"
    in_node() { "$CLUSTER" exec "$@"; }
fi
# What the README says to type, `kubectl ...`, goes through this.
kubectl() { $KUBECTL_CMD "$@"; }

PF_PID=
CLUSTER_UP=0
SUMMARY_DONE=0
cleanup() {
    local rc=$?
    [[ -n $PF_PID ]] && kill "$PF_PID" 2>/dev/null
    [[ -n ${PROXY_PID:-} ]] && kill "$PROXY_PID" 2>/dev/null
    if [[ $MODE == local && $CLUSTER_UP == 1 ]]; then
        echo "===== e2e-cluster: taking the local cluster down (exit path)"
        "$CLUSTER" down || echo "FAIL: scripts/local-cluster.sh down"
    elif [[ $MODE == external && -n ${NS:-} ]]; then
        command kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1
    fi
    if ((SUMMARY_DONE == 0)); then
        echo "FAIL: stopped before the end (exit $rc)"
        FAILED=$((FAILED + 1))
        print_timings
        echo
        echo "$PASSED passed, $FAILED failed"
        exit 1
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- helpers over the cluster

has_table() { grep -qi '<table' <<<"$1"; }

json_count() { jq 'length' 2>/dev/null; }
# Reads of the registry through the UI Service's ClusterIP, from the node (through kube-proxy).
ui() { in_node curl -fsS --max-time "${2:-2}" "http://$UI_IP:80$1"; }
endpoints() { ui "/endpoints${1:-}" "${2:-2}"; }
passing_count() { endpoints '?status=passing' | json_count; }
server_pods() { kubectl get pods -l app=dynamic-port-server -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}'; }
# wait_until SECONDS CMD...: polls every 0.2 s, at most SECONDS.
wait_until() {
    local deadline=$(($(now_ms) + $1 * 1000))
    shift
    while (($(now_ms) < deadline)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    return 1
}
n_passing_on_node() { # N: N passing records, all at NODE_IP, on N distinct ports
    local json
    json=$(endpoints '?status=passing') || return 1
    [[ $(jq 'length' <<<"$json") == "$1" ]] || return 1
    [[ $(jq --arg ip "$NODE_IP" '[.[] | select(.Address | startswith($ip + ":"))] | length' <<<"$json") == "$1" ]] || return 1
    [[ $(jq '[.[].Address | split(":")[1]] | unique | length' <<<"$json") == "$1" ]]
}
record_of() { endpoints | jq -c --arg n "$1" '.[] | select(.Name == $n)'; }
pid_of_container() { # containerd://ID -> the PID of its main process, found by its cgroup
    local id=${1#*://} d
    # A full container ID, or nothing: an empty one would match every process.
    [[ $id =~ ^[0-9a-f]{64}$ ]] || return 1
    for d in /proc/[0-9]*; do
        [[ ${d#/proc/} -gt 1 ]] || continue
        grep -q "kubepods.*$id" "$d/cgroup" 2>/dev/null || continue
        # The container's first process: its parent (the shim) is not in the container, and
        # it is not an exec probe (`healthcheck`), whose parent is the shim too.
        local ppid
        ppid=$(awk '/^PPid:/ { print $2 }' "$d/status" 2>/dev/null)
        grep -q "$id" "/proc/$ppid/cgroup" 2>/dev/null && continue
        tr '\0' ' ' <"$d/cmdline" 2>/dev/null | grep -q healthcheck && continue
        echo "${d#/proc/}"
        return 0
    done
    return 1
}

# What the walk-through drives, from Debian (the cluster's own packages come with `up`).
missing=()
for tool in jq:jq curl:curl chromium:chromium podman:podman runc:runc; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if ((${#missing[@]} > 0)); then
    echo "e2e-cluster: installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q "${missing[@]}" >/dev/null ||
        { echo "e2e-cluster: install ${missing[*]} (apt-get install ${missing[*]})" >&2; exit 2; }
fi

# ---------------------------------------------------------------------------------------------
step "make images CONTAINER_ENGINE=podman"
make images CONTAINER_ENGINE=podman || { fail "make images"; exit 1; }

if [[ $MODE == local ]]; then
    step "scripts/local-cluster.sh up"
    declare -A SYSCTL_BEFORE
    for k in "${HOST_SYSCTLS[@]}"; do SYSCTL_BEFORE[$k]=$(sysctl -n "$k" 2>/dev/null || echo '?'); done
    CLUSTER_UP=1
    "$CLUSTER" up || { fail "scripts/local-cluster.sh up"; exit 1; }
    pass "local cluster up"
    step "scripts/local-cluster.sh load-images"
    "$CLUSTER" load-images "service-registry:$VERSION" "dynamic-port-server:$VERSION" "endpointslice-mirror:$VERSION" ||
        { fail "load-images"; exit 1; }
    IMAGE_PREFIX=docker.io/library/
else
    step "namespace $NS on the cluster of \$KUBECONFIG"
    command kubectl create namespace "$NS" || { fail "kubectl create namespace $NS"; exit 1; }
    IMAGE_PREFIX=${IMAGE_PREFIX:-}
fi
NODE_IP=$(kubectl get nodes -o jsonpath='{.items[0].status.addresses[?(@.type=="InternalIP")].address}')
note "node IP: $NODE_IP"

# ---------------------------------------------------------------------------------------------
step "README 2: token Secret, services/, the registry, rollout"
TOKEN_DIR=$(mktemp -d)
(
    cd "$TOKEN_DIR" &&
        head -c 32 /dev/urandom | base64 >token &&
        kubectl create secret generic service-registry-token --from-file=token=token && rm token
) || fail "create the Secret service-registry-token"
rm -rf "$TOKEN_DIR"
kubectl create -f services/ || fail "kubectl create -f services/"
kubectl create -f deployments/service-registry.yaml || fail "kubectl create -f deployments/service-registry.yaml"
if [[ -n $IMAGE_PREFIX && $MODE == external ]]; then
    kubectl set image deployment/service-registry "service-registry=${IMAGE_PREFIX}service-registry:$VERSION"
fi
check "rollout of deployment/service-registry" kubectl rollout status deployment/service-registry --timeout=120s
UI_IP=$(kubectl get service service-registry-http -o jsonpath='{.spec.clusterIP}')
API_IP=$(kubectl get service service-registry -o jsonpath='{.spec.clusterIP}')
note "service-registry-http ClusterIP $UI_IP, service-registry ClusterIP $API_IP"

step "README 3: the server deployment, rollout"
kubectl create -f deployments/dynamic-port-server.yaml || fail "kubectl create -f deployments/dynamic-port-server.yaml"
if [[ -n $IMAGE_PREFIX && $MODE == external ]]; then
    kubectl set image deployment/dynamic-port-server "dynamic-port-server=${IMAGE_PREFIX}dynamic-port-server:$VERSION"
fi
check "rollout of deployment/dynamic-port-server" kubectl rollout status deployment/dynamic-port-server --timeout=120s

step "README 4: kubectl logs deployment/dynamic-port-server"
server_log_ok() {
    local log port
    log=$(kubectl logs deployment/dynamic-port-server 2>/dev/null) || return 1
    grep -q 'Starting dynamic port server\.\.\.' <<<"$log" || return 1
    port=$(sed -nE 's/.*Listening on 0\.0\.0\.0:([0-9]+)$/\1/p' <<<"$log" | head -n 1)
    [[ -n $port ]] || return 1
    grep -qF "Registering advertised endpoint [$NODE_IP:$port]" <<<"$log"
}
if wait_until 20 server_log_ok; then
    pass "the server's log: Starting..., Listening on 0.0.0.0:PORT, Registering advertised endpoint [$NODE_IP:PORT]"
else
    fail "the server's log lacks the seed's lines"
fi
kubectl logs deployment/dynamic-port-server 2>&1 | head -n 5 | sed 's/^/      | /'

step "README 5: port-forward service/service-registry-http, the page"
PF_LOG=$ARTIFACTS/port-forward.log
# In the local cluster `kubectl` runs inside the node's namespace, so the forward listens there.
$KUBECTL_CMD port-forward service/service-registry-http 8080:80 >"$PF_LOG" 2>&1 &
PF_PID=$!
if wait_until 20 in_node curl -fsS --max-time 2 -o /dev/null http://127.0.0.1:8080/healthz; then
    pass "kubectl port-forward service/service-registry-http 8080:80 answers"
    page=$(in_node curl -fsS --max-time 5 http://127.0.0.1:8080/)
    check "the page (GET /) through the port-forward" has_table "$page"
    forwarded_passing() {
        [[ $(in_node curl -fsS --max-time 2 'http://127.0.0.1:8080/endpoints?status=passing' | json_count) == 1 ]]
    }
    check "GET /endpoints through the port-forward lists the server as passing" wait_until 20 forwarded_passing
    SHOT=$ARTIFACTS/ui.png
    rm -f "$SHOT"
    profile=$(mktemp -d)
    in_node timeout 90 chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
        --disable-component-update --disable-sync --no-first-run --user-data-dir="$profile" \
        --window-size=1280,720 --screenshot="$SHOT" http://127.0.0.1:8080/ >"$ARTIFACTS/chromium.log" 2>&1
    rm -rf "$profile"
    if [[ -s $SHOT && $(head -c 8 "$SHOT" | od -An -tx1 | tr -d ' \n') == 89504e470d0a1a0a ]]; then
        pass "headless Chromium screenshot of the page: $SHOT ($(stat -c %s "$SHOT") bytes)"
    else
        fail "headless Chromium screenshot (see $ARTIFACTS/chromium.log)"
    fi
else
    fail "kubectl port-forward service/service-registry-http 8080:80 (see $PF_LOG)"
fi

step "README 6: kubectl scale deployment dynamic-port-server --replicas=3"
t=$(now_ms)
kubectl scale deployment dynamic-port-server --replicas=3
if wait_until 60 n_passing_on_node 3; then
    pass "3 endpoints passing at $NODE_IP on 3 distinct ports ($(($(now_ms) - t)) ms after scale)"
else
    fail "3 endpoints passing at $NODE_IP on 3 distinct ports"
fi
endpoints | jq -r '.[] | "      \(.Name) \(.Address) \(.Status)"'
nodes=$(kubectl get pods -l app=dynamic-port-server -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' | sort -u)
check "the 3 server pods share one node ($nodes)" test "$(wc -l <<<"$nodes")" -eq 1

step "the UI Service through kube-proxy (ClusterIP:80 from the node)"
check "GET http://$UI_IP:80/ answers the page" has_table "$(ui / 5)"
check "GET http://$UI_IP:80/endpoints answers 3 records" test "$(endpoints | json_count)" == 3

step "exec probes: Ready, 0 restarts"
probes_ok() {
    local out
    out=$(kubectl get pods -l app=dynamic-port-server -o jsonpath='{range .items[*]}{.status.containerStatuses[0].ready} {.status.containerStatuses[0].restartCount}{"\n"}{end}')
    [[ $(grep -c '^true 0$' <<<"$out") == 3 && $(wc -l <<<"$out") == 3 ]]
}
check "3 server pods Ready through the exec probes, 0 restarts" wait_until 30 probes_ok

step "a deleted server pod leaves the list"
victim=$(endpoints '?status=passing' | jq -r '.[0].Name')
gone() { ! endpoints '' 1 | jq -e --arg n "$victim" 'any(.[]; .Name == $n)' >/dev/null; }
t=$(now_ms)
kubectl delete pod "$victim" --wait=false >/dev/null
if wait_until 10 gone; then
    ms=$(($(now_ms) - t))
    if ((ms <= 1000)); then pass "deleted pod $victim gone from /endpoints in $ms ms"; else fail "deleted pod $victim gone only after $ms ms (> 1 s)"; fi
else
    fail "deleted pod $victim still listed after 10 s"
fi
check "3 passing again after the replacement" wait_until 60 n_passing_on_node 3

step "a SIGKILLed server process: critical, then back on a new port"
# One that is listed and passing (the pod deleted above may still be terminating).
victim=$(endpoints '?status=passing' | jq -r '.[0].Name')
old=$(record_of "$victim" | jq -r .Address)
KILLED_CID=
container_id() {
    local cid
    cid=$(kubectl get pod "$victim" -o jsonpath='{.status.containerStatuses[0].containerID}' 2>/dev/null)
    [[ $cid =~ ^[a-z]+://[0-9a-f]{64}$ ]] && echo "$cid"
}
kill_server() {
    local cid='' pid i
    # The kubelet posts a new container's ID a moment after it runs (the registry may see it
    # first), so wait, bounded, for an ID other than the one killed last.
    for ((i = 0; i < 50; i++)); do
        cid=$(container_id) && [[ $cid != "$KILLED_CID" ]] && break
        cid=''
        sleep 0.2
    done
    [[ -n $cid ]] || return 1
    pid=$(pid_of_container "$cid") || return 1
    KILLED_CID=$cid
    note "kill -KILL $pid (container ${cid:0:25}..., pod $victim)"
    kill -KILL "$pid"
}
status_is() { [[ $(record_of "$victim" | jq -r '"\(.Address) \(.Status)"') == "$1 $2" ]]; }
moved_and_passing() {
    local r
    r=$(record_of "$victim" | jq -r '"\(.Address) \(.Status)"')
    [[ $r == *" passing" && ${r% *} != "$old" ]]
}
t=$(now_ms)
kill_server || fail "found no process for pod $victim"
# The kubelet restarts a container's first crash at once (its back-off starts with the second),
# usually before the registry's second failed check: then the new instance replaces the record
# before it could turn critical. A second SIGKILL of the restarted instance is backed off for
# 10 s, which leaves the registry the time to see it die.
saw_critical=0
kills=1
deadline=$(($(now_ms) + 25000))
while (($(now_ms) < deadline)); do
    r=$(record_of "$victim" | jq -r '"\(.Address) \(.Status)"' 2>/dev/null)
    if [[ $r == "$old critical" ]]; then saw_critical=1; break; fi
    if [[ -n $r && ${r% *} != "$old" ]]; then
        ((kills < 4)) || break
        kills=$((kills + 1))
        note "restarted at once on ${r% *} before turning critical; killing the restarted one"
        old=${r% *}
        kill_server || { fail "found no process for the restarted pod $victim"; break; }
        deadline=$(($(now_ms) + 25000))
    fi
    sleep 0.2
done
if ((saw_critical)); then
    pass "the killed instance $old turned critical ($(($(now_ms) - t)) ms after the kill)"
else
    fail "the killed instance never turned critical"
fi
if wait_until 60 moved_and_passing; then
    pass "back under a new port after the kubelet's restart: $(record_of "$victim" | jq -r .Address) ($(($(now_ms) - t)) ms after the kill)"
else
    fail "not back on a new port within 60 s"
fi
restarts=$(kubectl get pod "$victim" -o jsonpath='{.status.containerStatuses[0].restartCount}')
check "the kubelet restarted the container (restartCount $restarts)" test "${restarts:-0}" -ge 1
check "3 passing after the restart" wait_until 30 n_passing_on_node 3

# ---------------------------------------------------------------------------------------------
step "Kubernetes Services for dynamic ports: deployments/endpointslice-mirror.yaml"
kubectl create -f deployments/endpointslice-mirror.yaml || fail "kubectl create -f deployments/endpointslice-mirror.yaml"
if [[ -n $IMAGE_PREFIX && $MODE == external ]]; then
    kubectl set image deployment/endpointslice-mirror "endpointslice-mirror=${IMAGE_PREFIX}endpointslice-mirror:$VERSION"
fi
check "rollout of deployment/endpointslice-mirror" kubectl rollout status deployment/endpointslice-mirror --timeout=120s
SVC_IP=$(kubectl get service dynamic-port-server -o jsonpath='{.spec.clusterIP}')
note "dynamic-port-server ClusterIP $SVC_IP"
MIRROR_SELECTOR=kubernetes.io/service-name=dynamic-port-server,endpointslice.kubernetes.io/managed-by=dynamic-ports-mirror
# The Service's ready endpoints in the mirror's slices, as sorted IP:PORT lines.
slice_ready() {
    kubectl get endpointslices -l "$MIRROR_SELECTOR" -o json |
        jq -r '[.items[] | .ports[0].port as $p | .endpoints[]? | select(.conditions.ready) | "\(.addresses[0]):\($p)"] | sort | .[]'
}
passing_addresses() { endpoints '?status=passing' | jq -r '[.[].Address] | sort | .[]'; }
slices_match_registry() { local s; s=$(slice_ready) && [[ -n $s && $s == "$(passing_addresses)" ]]; }
check "the mirror's EndpointSlices hold the 3 passing servers, each at its own port" wait_until 30 slices_match_registry
slice_ready | sed 's/^/      slice: /'
# Who answers a request to the Service's ClusterIP: each server names itself (X-Instance-Name).
answerer() { in_node curl -fsS --max-time 2 -D - -o /dev/null "http://$SVC_IP:80/" | tr -d '\r' | sed -n 's/^[Xx]-[Ii]nstance-[Nn]ame: //p'; }
spread=$(for _ in $(seq 30); do answerer; done | sort | uniq -c)
note "30 requests to $SVC_IP:80:"
sed 's/^/        /' <<<"$spread"
check "30 requests to the Service's ClusterIP reach all 3 instances" test "$(grep -c . <<<"$spread")" == 3

step "the mirror while the registry restarts and while it is away"
live=$(slice_ready)
kept_live() { local s; s=$(slice_ready) || return 0; comm -23 <(echo "$live") <(echo "$s") | grep -q . && return 1; return 0; }
reg=$(kubectl get pods -l app=service-registry -o jsonpath='{.items[0].metadata.name}')
kubectl delete pod "$reg" --wait=false >/dev/null
lost=0
deadline=$(($(now_ms) + (REGISTER_INTERVAL + 10) * 1000))
while (($(now_ms) < deadline)); do kept_live || lost=$((lost + 1)); sleep 0.5; done
check "a registry restart never takes a live endpoint out of the slices ($lost polls missed one)" test "$lost" == 0
check "after the restart the slices match the registry again" wait_until 30 slices_match_registry
kubectl scale deployment service-registry --replicas=0 >/dev/null
before=$(slice_ready)
changed=0
deadline=$(($(now_ms) + 30000))
while (($(now_ms) < deadline)); do [[ $(slice_ready) == "$before" ]] || changed=$((changed + 1)); sleep 1; done
check "with the registry stopped for 30 s the slices stay as they were ($changed polls differed)" test "$changed" == 0
kubectl scale deployment service-registry --replicas=1 >/dev/null
check "the registry back" kubectl rollout status deployment/service-registry --timeout=120s
UI_IP=$(kubectl get service service-registry-http -o jsonpath='{.spec.clusterIP}')
check "3 passing again" wait_until 40 n_passing_on_node 3
check "the slices match the registry again" wait_until 30 slices_match_registry

step "registry change -> EndpointSlice updated: 100 changes"
$KUBECTL_CMD proxy --port=18001 >"$ARTIFACTS/kubectl-proxy.log" 2>&1 &
PROXY_PID=$!
wait_until 10 in_node curl -fsS --max-time 1 -o /dev/null http://127.0.0.1:18001/version || fail "kubectl proxy"
SLICE_API=$(kubectl get endpointslices -l "$MIRROR_SELECTOR" -o jsonpath='{.items[0].apiVersion}')
SLICES_URL="http://127.0.0.1:18001/apis/$SLICE_API/namespaces/${NS:-default}/endpointslices?labelSelector=$(sed 's/=/%3D/g; s/,/%2C/g; s#/#%2F#g' <<<"$MIRROR_SELECTOR")"
TOKEN=$(kubectl get secret service-registry-token -o jsonpath='{.data.token}' | base64 -d)
latencies=()
for i in $(seq 100); do
    addr="$NODE_IP:$((45000 + i))"
    t=$(now_ms)
    in_node curl -fsS --max-time 2 -o /dev/null -H "Authorization: Bearer $TOKEN" -XPOST "http://$API_IP:10080/register" \
        -d "{\"Name\": \"latency-$i\", \"Address\": \"$addr\", \"Tags\": [\"dynamic-port-server\"]}" || { fail "register latency-$i"; break; }
    seen=
    while (($(now_ms) - t < 10000)); do
        if in_node curl -fsS --max-time 1 "$SLICES_URL" | jq -e --arg ip "${addr%:*}" --argjson p "${addr##*:}" \
            'any(.items[]; .ports[0].port == $p and any(.endpoints[]?; .addresses[0] == $ip))' >/dev/null; then
            seen=$(now_ms)
            break
        fi
        sleep 0.02
    done
    [[ -n $seen ]] || { fail "latency-$i never reached the slices"; break; }
    latencies+=($((seen - t)))
    in_node curl -fsS --max-time 2 -o /dev/null -H "Authorization: Bearer $TOKEN" -XPOST "http://$API_IP:10080/deregister" -d "{\"Name\": \"latency-$i\"}"
done
kill "$PROXY_PID" 2>/dev/null
PROXY_PID=
if ((${#latencies[@]} == 100)); then
    sorted=$(printf '%s\n' "${latencies[@]}" | sort -n)
    median=$(sed -n 50p <<<"$sorted")
    p99=$(sed -n 99p <<<"$sorted")
    pass "registry change -> slice updated over 100 changes: median $median ms, p99 $p99 ms, max $(tail -n 1 <<<"$sorted") ms (polled every 20 ms through kubectl proxy)"
    echo "POST /register -> EndpointSlice seen through kubectl proxy (polled every 20 ms, curl included), 100 changes: median $median ms, p99 $p99 ms" >"$ARTIFACTS/mirror-latency.txt"
fi
check "the slices match the registry again" wait_until 30 slices_match_registry

step "scale to 1: only that one answers; the annotation removed: its slices go"
kubectl scale deployment dynamic-port-server --replicas=1 >/dev/null
t=$(now_ms)
only_one() {
    local names
    names=$(for _ in $(seq 10); do answerer; done | sort -u)
    [[ $(grep -c . <<<"$names") == 1 ]] && [[ $(kubectl get pod "$names" -o jsonpath='{.metadata.deletionTimestamp}' 2>/dev/null) == "" ]]
}
if wait_until 15 only_one; then
    ms=$(($(now_ms) - t))
    if ((ms <= 2000)); then pass "scaled to 1: only one instance answers the ClusterIP $ms ms after the scale"; else fail "scaled to 1: only one instance answers, but after $ms ms (> 2 s)"; fi
else
    fail "scaled to 1: more than one instance still answers after 15 s"
fi
kubectl annotate service dynamic-port-server dynamic-ports/tag- >/dev/null
no_slices() { [[ $(kubectl get endpointslices -l "$MIRROR_SELECTOR" -o name | grep -c .) == 0 ]]; }
check "the annotation removed: the Service's slices are gone" wait_until 20 no_slices
kubectl annotate service dynamic-port-server dynamic-ports/tag=dynamic-port-server >/dev/null

step "a deleted registry pod: every server back"
names_before=$(server_pods | sort)
all_back() {
    local listed
    listed=$(endpoints '' 1 | jq -r '.[].Name' | sort) || return 1
    [[ $listed == "$names_before" ]]
}
reg=$(kubectl get pods -l app=service-registry -o jsonpath='{.items[0].metadata.name}')
t=$(now_ms)
kubectl delete pod "$reg" --wait=false >/dev/null
empty_first='' empty_last='' down_ms=0 back=
deadline=$((t + (REGISTER_INTERVAL + 5) * 1000 + 15000))
while (($(now_ms) < deadline)); do
    s=$(now_ms)
    if json=$(endpoints '' 0.5 2>/dev/null); then
        n=$(json_count <<<"$json")
        if [[ $n == 0 ]]; then
            [[ -n $empty_first ]] || empty_first=$s
            empty_last=$(now_ms)
        elif all_back; then
            back=$(now_ms)
            break
        fi
    else
        down_ms=$((down_ms + $(now_ms) - s))
    fi
    sleep 0.1
done
if [[ -n $empty_first ]]; then
    note "empty-list window: $((empty_last - empty_first)) ms (first seen empty $((empty_first - t)) ms after the delete); no answer for $down_ms ms in all"
else
    note "the list was never seen empty; no answer for $down_ms ms in all"
fi
if [[ -n $back ]] && ((back - t <= (REGISTER_INTERVAL + 5) * 1000)); then
    pass "every server back $((back - t)) ms after the registry pod was deleted (limit $((REGISTER_INTERVAL + 5)) s)"
else
    fail "not every server back within $((REGISTER_INTERVAL + 5)) s of deleting the registry pod (${back:+$((back - t)) ms})"
fi

step "writes: without the token 401, to the UI Service 405"
body='{"Name": "e2e", "Address": "'$NODE_IP':1"}'
code=$(in_node curl -s -o /dev/null -w '%{http_code}' --max-time 5 -XPOST "http://$API_IP:10080/register" -d "$body")
check "POST /register without the token to service-registry:10080 is 401 (got $code)" test "$code" == 401
code=$(in_node curl -s -o /dev/null -w '%{http_code}' --max-time 5 -XPOST "http://$UI_IP:80/register" -d "$body")
check "POST /register to the UI Service service-registry-http:80 is 405 (got $code)" test "$code" == 405

step "make deploy / make undeploy"
kill "$PF_PID" 2>/dev/null
PF_PID=
# A clean slate for make deploy, which also creates the Secret when it is missing.
kubectl delete -f deployments/ -f services/ --wait=true --timeout=60s >/dev/null ||
    fail "kubectl delete -f deployments/ -f services/"
kubectl delete secret service-registry-token >/dev/null || fail "kubectl delete secret service-registry-token"
no_pods() { [[ -z $(kubectl get pods -o name 2>/dev/null) ]]; }
wait_until 30 no_pods || note "pods still terminating"
if make deploy IMAGE_PREFIX="$IMAGE_PREFIX" KUBECTL="$KUBECTL_CMD"; then
    pass "make deploy IMAGE_PREFIX=$IMAGE_PREFIX KUBECTL=\"$KUBECTL_CMD\""
else
    fail "make deploy"
fi
check "after make deploy: rollout of deployment/service-registry" kubectl rollout status deployment/service-registry --timeout=120s
check "after make deploy: rollout of deployment/dynamic-port-server" kubectl rollout status deployment/dynamic-port-server --timeout=120s
check "after make deploy: rollout of deployment/endpointslice-mirror" kubectl rollout status deployment/endpointslice-mirror --timeout=120s
image=$(kubectl get deployment dynamic-port-server -o jsonpath='{.spec.template.spec.containers[0].image}')
check "the server's image carries the prefix ($image)" test "$image" == "${IMAGE_PREFIX}dynamic-port-server:$VERSION"
UI_IP=$(kubectl get service service-registry-http -o jsonpath='{.spec.clusterIP}')
check "after make deploy: the server is passing" wait_until 30 n_passing_on_node 1
if make undeploy KUBECTL="$KUBECTL_CMD"; then pass "make undeploy"; else fail "make undeploy"; fi
left=$(kubectl get deployments,services -l app.kubernetes.io/part-of=dynamic-ports -o name 2>/dev/null)
check "after make undeploy no deployment or service of the project is left" test -z "$left"

if [[ $MODE == local ]]; then
    step "scripts/local-cluster.sh down, the host restored"
    CLUSTER_UP=0
    check "scripts/local-cluster.sh down" "$CLUSTER" down
    left=$(pgrep -a -f "${DP_CLUSTER_CACHE:-/var/cache/dynamic-ports-cluster}/" || true)
    check "no process of the cluster left${left:+: $left}" test -z "$left"
    check "no network namespace of the cluster left" bash -c '! ip netns list | grep -q "^dp-k8s-"'
    check "no /kubepods cgroup left" bash -c '! compgen -G "/sys/fs/cgroup/*/kubepods" >/dev/null'
    for k in "${HOST_SYSCTLS[@]}"; do
        v=$(sysctl -n "$k" 2>/dev/null || echo '?')
        check "sysctl $k back to ${SYSCTL_BEFORE[$k]} (now $v)" test "$v" == "${SYSCTL_BEFORE[$k]}"
    done
fi

step end
print_timings
SUMMARY_DONE=1
echo
echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
