#!/usr/bin/env bash
# A throwaway single-node Kubernetes (v1.20.2, Debian's source) for trying dynamic-ports end to
# end on one machine, as root, with no internet but the package registries.
#
#   scripts/local-cluster.sh up                  build once (cached), then start the cluster
#   scripts/local-cluster.sh down                stop it and restore the host; idempotent
#   scripts/local-cluster.sh status              what runs
#   scripts/local-cluster.sh kubectl ARGS...     kubectl inside the cluster's network namespace
#   scripts/local-cluster.sh load-images IMAGE...  podman images (NAME:TAG) into the cluster
#   scripts/local-cluster.sh exec CMD...         a command inside that namespace (curl, chromium)
#   scripts/local-cluster.sh build               only the build step of `up`
#
# Env: DP_CLUSTER_CACHE (/var/cache/dynamic-ports-cluster): the build and the cluster's state,
#      outside the clone. The Kubernetes tree and its Go build cache take ~3 GB there.
#
# Network: every component runs inside a network namespace this script creates ($NODE_NS), so
# the node address, the pod range and the service range exist nowhere else. The node's only
# link is a veth into a second namespace ($DEAD_NS) that forwards nothing, and a mangle rule
# drops anything leaving the node for an address outside the node's /24. The host's own
# network never sees the cluster. Enter it with nsenter --net, not `ip netns exec`: the latter
# also makes a private mount namespace and remounts /sys, which hides /sys/fs/cgroup from the
# kubelet and the kubelet's volume mounts from containerd.
#
# The kubelet sets host-wide sysctls (vm.overcommit_memory, kernel.panic, ...). `up` records
# them before it starts anything and `down` puts them back. Background and every workaround:
# shared/KUBERNETES.md.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${DP_CLUSTER_CACHE:-/var/cache/dynamic-ports-cluster}
PATCH=$REPO/scripts/k8s-patches/kube-proxy-endpoints-by-ip-port.patch
# The newest Kubernetes Debian ships as source (bookworm); the version below is its upstream.
K8S_SOURCE=kubernetes
K8S_VERSION_PREFIX=1.20.5+really1.20.2
COMPONENTS=(kube-apiserver kubectl kubelet kube-proxy kube-controller-manager kube-scheduler)
DEBIAN_PACKAGES=(etcd-server containerd containernetworking-plugins conntrack runc iptables
    golang-go golang-github-modern-go-reflect2-dev gcc libc6-dev iproute2 openssl podman curl rsync)

NODE_NS=dp-k8s-node        # the node: every component runs here
DEAD_NS=dp-k8s-dead        # the node's only neighbour; forwards nothing
NODE_NAME=dp-node
NODE_IP=10.250.0.2         # inside $NODE_NS only
DEAD_IP=10.250.0.1         # inside $DEAD_NS only
NODE_NET=10.250.0.0/24
POD_CIDR=10.244.0.0/24     # the pod bridge cni0, inside $NODE_NS
SERVICE_CIDR=10.96.0.0/24  # ClusterIPs, NAT rules inside $NODE_NS
API_SERVICE_IP=10.96.0.1
PAUSE_IMAGE=k8s.gcr.io/pause:3.2  # the kubelet 1.20 default sandbox image

BIN=$CACHE/bin
STAMP=$CACHE/build.stamp
RUN=$CACHE/run             # state of one `up`; removed by `down`
LOGS=$CACHE/logs           # logs of the last `up`; kept after `down` for a post-mortem
KUBECONFIG_FILE=$CACHE/kubeconfig
SAVED_SYSCTLS=$CACHE/host-sysctls.saved
SAVED_HOST=$CACHE/host-state.saved
SOCK=$RUN/containerd/containerd.sock
# The host-wide sysctls the kubelet 1.20 sets when protectKernelDefaults is off
# (pkg/kubelet/cm/container_manager_linux.go, setupKernelTunables).
HOST_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
    kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
HOST_DIRS=(/var/log/pods /var/log/containers /var/lib/kubelet /run/netns)
# Start order; `down` stops them in reverse.
DAEMONS=(etcd containerd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

log() { echo "local-cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }
in_node() { nsenter --net="/run/netns/$NODE_NS" -- "$@"; }
kctl() { in_node "$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }
# wait_for SECONDS WHAT CMD...: polls CMD every 0.5 s, at most SECONDS.
wait_for() {
    local seconds=$1 what=$2 i
    shift 2
    for ((i = 0; i < seconds * 2; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    die "timed out after ${seconds}s waiting for $what"
}

# ---------------------------------------------------------------------------------------------
# Build (once; `up` reuses it while the stamp matches)

apt_private() { # apt-get/apt-cache with a private source list (deb-src) and lists dir
    local tool=$1
    shift
    "$tool" -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$CACHE/apt/sources.list.d" \
        -o Dir::State::Lists="$CACHE/apt/lists" "$@"
}

expected_stamp() {
    echo "source $K8S_SOURCE ${K8S_SOURCE_VERSION:-?}"
    echo "patch $(sha256sum <"$PATCH" | cut -d' ' -f1)"
    echo "reflect2 $(dpkg-query -W -f='${Version}' golang-github-modern-go-reflect2-dev 2>/dev/null)"
    echo "components ${COMPONENTS[*]}"
}

build_is_current() {
    [[ -f $STAMP ]] || return 1
    local b
    for b in "${COMPONENTS[@]}" etcd pause; do [[ -x $BIN/$b ]] || return 1; done
    [[ -f $CACHE/pause.tar ]] || return 1
    # The source version in the stamp is the one built; the patch and the component list must
    # still be the ones in this clone.
    K8S_SOURCE_VERSION=$(sed -n 's/^source [^ ]* //p' "$STAMP")
    [[ $(expected_stamp) == "$(cat "$STAMP")" ]]
}

install_packages() {
    local missing=() p
    for p in "${DEBIAN_PACKAGES[@]}"; do
        [[ $p == etcd-server ]] && continue # only its binary is used: apt-get download, below
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q "${missing[@]}" >&2 || {
        apt-get -o DPkg::Lock::Timeout=300 update -q >&2
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q "${missing[@]}" >&2
    }
}

build() {
    install_packages
    if build_is_current; then
        log "build: reusing $BIN (stamp: $(tr '\n' ' ' <"$STAMP"))"
        return 0
    fi
    local t0=$SECONDS src tree
    mkdir -p "$CACHE/apt/sources.list.d" "$CACHE/apt/lists/partial" "$CACHE/src" "$CACHE/gohome" "$BIN"
    # The machine's own Debian sources, as deb-src, in a private apt dir: /etc stays as it is.
    sed -E 's/^Types:.*/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
        >"$CACHE/apt/sources.list.d/debian-src.sources"
    apt_private apt-get update -q >&2
    K8S_SOURCE_VERSION=$(apt_private apt-cache showsrc "$K8S_SOURCE" | sed -n 's/^Version: //p' |
        grep -F "$K8S_VERSION_PREFIX" | head -n 1)
    [[ -n $K8S_SOURCE_VERSION ]] || die "no source package $K8S_SOURCE $K8S_VERSION_PREFIX* in Debian's lists"
    log "build: $K8S_SOURCE $K8S_SOURCE_VERSION, patched with $(basename "$PATCH")"
    src=$CACHE/src
    (cd "$src" && apt_private apt-get source -q --download-only "$K8S_SOURCE=$K8S_SOURCE_VERSION" >&2)
    # A fresh tree each build, so the patch applies to pristine source.
    rm -rf "$src/tree" "$src/.go"
    mkdir -p "$src/tree"
    tar -xzf "$src/${K8S_SOURCE}_${K8S_VERSION_PREFIX}.orig.tar.gz" -C "$src/tree" --strip-components=1
    tree=$src/tree
    patch -d "$tree" -p1 --forward <"$PATCH" >&2
    # Kubernetes 1.20 vendors reflect2 1.0.1, which reads Go's map iterator with the layout of
    # Go 1.17 and older; built with Debian's Go 1.19 the apiserver died with "fatal error:
    # fault" in mapiternext while encoding EndpointSlices as JSON. Debian builds its own
    # kubernetes package against reflect2 1.0.2 (which knows Go 1.18's layout): so does this.
    local reflect2=$tree/vendor/github.com/modern-go/reflect2
    rm -f "$reflect2"/*.go "$reflect2"/*.s
    cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go /usr/share/gocode/src/github.com/modern-go/reflect2/*.s "$reflect2/"
    # The 1.20 build scripts want the tree at GOPATH/src/k8s.io/kubernetes.
    mkdir -p "$src/.go/src/k8s.io"
    ln -s "$tree" "$src/.go/src/k8s.io/kubernetes"
    log "build: compiling ${COMPONENTS[*]} (about 5 min on 2 cores; log: $CACHE/build.log)"
    local what=()
    for b in "${COMPONENTS[@]}"; do what+=("cmd/$b"); done
    (cd "$src/.go/src/k8s.io/kubernetes" &&
        env GOPATH="$src/.go" CGO_ENABLED=0 GOPROXY=off GOFLAGS= HOME="$CACHE/gohome" \
            make WHAT="${what[*]}") >"$CACHE/build.log" 2>&1 ||
        { tail -n 30 "$CACHE/build.log" >&2; die "the Kubernetes build failed (see $CACHE/build.log)"; }
    for b in "${COMPONENTS[@]}"; do
        install -m 0755 "$tree/_output/local/bin/linux/amd64/$b" "$BIN/$b"
    done
    # The pause image cannot be pulled: compile it from the same tree.
    gcc -Os -static -o "$BIN/pause" "$tree/build/pause/linux/pause.c"
    build_pause_image
    # etcd: only the binary, from the Debian package, unpacked (never installed, so no
    # service starts).
    rm -rf "$CACHE/etcd" && mkdir -p "$CACHE/etcd"
    (cd "$CACHE/etcd" && apt-get download -q etcd-server >&2 && dpkg -x etcd-server_*.deb root)
    install -m 0755 "$CACHE/etcd/root/usr/bin/etcd" "$BIN/etcd"
    expected_stamp >"$STAMP"
    log "build: done in $((SECONDS - t0))s"
}

build_pause_image() {
    local ctx=$CACHE/pause-image
    rm -rf "$ctx" && mkdir -p "$ctx"
    cp "$BIN/pause" "$ctx/pause"
    printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$ctx/Containerfile"
    podman_ build -q -t "$PAUSE_IMAGE" -f "$ctx/Containerfile" "$ctx" >&2
    rm -f "$CACHE/pause.tar"
    podman_ save -q -o "$CACHE/pause.tar" "$PAUSE_IMAGE" >&2
}

podman_() { CONTAINERS_CONF=${CONTAINERS_CONF:-$REPO/scripts/containers.conf} timeout 300 podman "$@"; }

# ---------------------------------------------------------------------------------------------
# Up

is_up() { [[ -e /run/netns/$NODE_NS ]] || [[ -n $(running_daemons) ]]; }

running_daemons() {
    local d pid
    for d in "${DAEMONS[@]}"; do
        pid=$(cat "$RUN/pids/$d.pid" 2>/dev/null) || continue
        kill -0 "$pid" 2>/dev/null && echo "$d"
    done
    return 0
}

save_host_state() {
    # Recorded once: a second `up` without `down` must not take the kubelet's values as the
    # host's own.
    if [[ ! -f $SAVED_SYSCTLS ]]; then
        local k
        for k in "${HOST_SYSCTLS[@]}"; do
            echo "$k=$(sysctl -n "$k" 2>/dev/null || echo '?')"
        done >"$SAVED_SYSCTLS.tmp"
        mv "$SAVED_SYSCTLS.tmp" "$SAVED_SYSCTLS"
    fi
    if [[ ! -f $SAVED_HOST ]]; then
        {
            # Paths the kubelet hard-codes (its log dirs, device-plugins under /var/lib/kubelet)
            # and /run/netns (made by `ip netns add`): `down` removes them only if they are new.
            for d in "${HOST_DIRS[@]}"; do [[ -e $d ]] && echo "existed $d"; done
            # Network namespaces from before: `down` removes only CNI ones made since.
            for n in /run/netns/cni-*; do [[ -e $n ]] && echo "netns $n"; done
        } >"$SAVED_HOST.tmp" || true
        mv "$SAVED_HOST.tmp" "$SAVED_HOST"
    fi
}

make_network() {
    ip netns add "$NODE_NS"
    ip netns add "$DEAD_NS"
    # The veth is created inside the node namespace with its peer straight in the dead end:
    # neither end ever exists in the host's namespace.
    ip -n "$NODE_NS" link add eth0 type veth peer name eth0 netns "$DEAD_NS"
    ip -n "$NODE_NS" addr add "$NODE_IP/24" dev eth0
    ip -n "$DEAD_NS" addr add "$DEAD_IP/24" dev eth0
    ip -n "$NODE_NS" link set lo up
    ip -n "$NODE_NS" link set eth0 up
    ip -n "$DEAD_NS" link set lo up
    ip -n "$DEAD_NS" link set eth0 up
    ip -n "$NODE_NS" route add default via "$DEAD_IP"
    # The dead end forwards nothing (a new namespace starts with ip_forward=0; say it anyway).
    nsenter --net="/run/netns/$DEAD_NS" -- sysctl -q -w net.ipv4.ip_forward=0
    # The guard: nothing leaves the node for an address outside its /24. In mangle POSTROUTING,
    # after kube-proxy's DNAT; a filter OUTPUT rule would break ClusterIP traffic from
    # hostNetwork pods.
    in_node iptables -t mangle -A POSTROUTING -o eth0 ! -d "$NODE_NET" -j DROP
}

make_certs() {
    local p=$RUN/pki
    mkdir -p "$p"
    (
        cd "$p"
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 \
            -subj "/CN=dp-local-cluster-ca" 2>/dev/null
        cat >apiserver.ext <<EOF
subjectAltName=IP:$API_SERVICE_IP,IP:$NODE_IP,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth
EOF
        printf 'extendedKeyUsage=clientAuth\n' >client.ext
        cert() { # NAME SUBJECT EXTFILE
            openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
            openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
                -extfile "$3" -out "$1.crt" 2>/dev/null
        }
        cert apiserver "/CN=kube-apiserver" apiserver.ext
        cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" client.ext
        openssl genrsa -out sa.key 2048 2>/dev/null
        openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
        chmod 600 ./*.key
    )
    # Token users: random tokens made at each `up`.
    local user group f=$p/tokens.csv
    : >"$f"
    chmod 600 "$f"
    while read -r user group; do
        echo "$(head -c 24 /dev/urandom | base64 | tr -d '/+='),$user,$user${group:+,\"$group\"}" >>"$f"
    done <<EOF
admin system:masters
system:node:$NODE_NAME system:nodes
system:kube-controller-manager
system:kube-scheduler
system:kube-proxy
EOF
}

token_of() { awk -F, -v u="$1" '$2 == u { print $1 }' "$RUN/pki/tokens.csv"; }

write_kubeconfig() { # FILE USER
    cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: dp-local
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority: $RUN/pki/ca.crt
users:
- name: $2
  user:
    token: $(token_of "$2")
contexts:
- name: dp-local
  context:
    cluster: dp-local
    user: $2
    namespace: default
current-context: dp-local
EOF
    chmod 600 "$1"
}

write_configs() {
    mkdir -p "$RUN/containerd" "$RUN/cni/net.d" "$RUN/kubelet" "$RUN/etcd"
    write_kubeconfig "$KUBECONFIG_FILE" admin
    write_kubeconfig "$RUN/kubelet.kubeconfig" "system:node:$NODE_NAME"
    write_kubeconfig "$RUN/controller-manager.kubeconfig" system:kube-controller-manager
    write_kubeconfig "$RUN/scheduler.kubeconfig" system:kube-scheduler
    write_kubeconfig "$RUN/kube-proxy.kubeconfig" system:kube-proxy

    cat >"$RUN/containerd/config.toml" <<EOF
version = 2
root = "$RUN/containerd/root"
state = "$RUN/containerd/state"
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$RUN/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # No CAP_SYS_RESOURCE in this sandbox: without this runc fails every pod asking for the
  # kubelet's oom_score_adj of -998 ("can't get final child's PID from pipe").
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$RUN/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$RUN/cni/net.d"
EOF
    cat >"$RUN/cni/net.d/10-dp-bridge.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "dp-local",
  "plugins": [
    {
      "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$RUN/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
    cat >"$RUN/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failSwapOn: false
podCIDR: $POD_CIDR
address: $NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $RUN/pki/ca.crt}
authorization:
  mode: AlwaysAllow
# Plenty of disk is not guaranteed on a developer's machine: evict only when nearly full.
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "2%"
  imagefs.available: "2%"
imageGCHighThresholdPercent: 98
imageGCLowThresholdPercent: 95
EOF
}

controller_manager_can_start() {
    [[ $(kctl auth can-i get configmaps/extension-apiserver-authentication -n kube-system \
        --as=system:kube-controller-manager 2>/dev/null) == yes ]]
}

node_is_ready() {
    [[ $(kctl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}

start_daemon() { # NAME BINARY ARGS...: inside the node namespace, PID recorded
    local name=$1 pid
    shift
    # nsenter execs the binary (no fork without --fork), so $! is the daemon itself.
    nsenter --net="/run/netns/$NODE_NS" -- "$@" </dev/null >"$LOGS/$name.log" 2>&1 &
    pid=$!
    echo "$pid" >"$RUN/pids/$name.pid"
    sleep 0.3
    kill -0 "$pid" 2>/dev/null || { tail -n 20 "$LOGS/$name.log" >&2; die "$name exited at once"; }
}

up() {
    ((EUID == 0)) || die "run as root (network namespaces, containerd, the kubelet)"
    if is_up; then
        if [[ $(running_daemons | wc -l) -eq ${#DAEMONS[@]} ]]; then
            log "already up"
            print_env
            return 0
        fi
        log "a partial cluster is left over: taking it down first"
        down
    fi
    local t0=$SECONDS
    build
    save_host_state
    rm -rf "$RUN"
    mkdir -p "$RUN/pids" "$LOGS"
    rm -f "$LOGS"/*.log
    make_network
    make_certs
    write_configs
    log "up: starting etcd, containerd, kube-apiserver"
    start_daemon etcd "$BIN/etcd" --name dp-local --data-dir "$RUN/etcd" \
        --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
        --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
        --initial-cluster dp-local=http://127.0.0.1:2380 --listen-metrics-urls=
    start_daemon containerd /usr/bin/containerd --config "$RUN/containerd/config.toml"
    local p=$RUN/pki
    start_daemon kube-apiserver "$BIN/kube-apiserver" \
        --etcd-servers=http://127.0.0.1:2379 --advertise-address="$NODE_IP" --secure-port=6443 \
        --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" \
        --client-ca-file="$p/ca.crt" --token-auth-file="$p/tokens.csv" \
        --authorization-mode=Node,RBAC --allow-privileged=true \
        --service-cluster-ip-range="$SERVICE_CIDR" \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --service-account-key-file="$p/sa.pub" --service-account-signing-key-file="$p/sa.key" \
        --kubelet-client-certificate="$p/apiserver-kubelet-client.crt" \
        --kubelet-client-key="$p/apiserver-kubelet-client.key" \
        --kubelet-preferred-address-types=InternalIP
    wait_for 60 "containerd's socket" test -S "$SOCK"
    ctr_ images import "$CACHE/pause.tar" >/dev/null
    wait_for 90 "kube-apiserver /readyz" kctl get --raw /readyz
    # Started as soon as /readyz answers, the controller-manager exits with "forbidden ...
    # extension-apiserver-authentication": RBAC's bootstrap roles are not there yet.
    wait_for 60 "RBAC for the controller-manager" controller_manager_can_start
    log "up: starting the controller-manager, scheduler, kubelet, kube-proxy"
    start_daemon kube-controller-manager "$BIN/kube-controller-manager" \
        --kubeconfig="$RUN/controller-manager.kubeconfig" \
        --authentication-kubeconfig="$RUN/controller-manager.kubeconfig" \
        --authorization-kubeconfig="$RUN/controller-manager.kubeconfig" \
        --leader-elect=false --use-service-account-credentials \
        --service-account-private-key-file="$p/sa.key" --root-ca-file="$p/ca.crt" \
        --controllers='*,-nodeipam' --bind-address=127.0.0.1 --port=0
    start_daemon kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$RUN/scheduler.kubeconfig" \
        --authentication-kubeconfig="$RUN/scheduler.kubeconfig" \
        --authorization-kubeconfig="$RUN/scheduler.kubeconfig" \
        --leader-elect=false --bind-address=127.0.0.1 --port=0
    start_daemon kubelet "$BIN/kubelet" --config="$RUN/kubelet/config.yaml" \
        --kubeconfig="$RUN/kubelet.kubeconfig" --root-dir="$RUN/kubelet" \
        --container-runtime=remote --container-runtime-endpoint="unix://$SOCK" \
        --cert-dir="$RUN/kubelet/pki" \
        --node-ip="$NODE_IP" --hostname-override="$NODE_NAME" --pod-infra-container-image="$PAUSE_IMAGE"
    # Conntrack values 0: kube-proxy leaves the host-wide conntrack settings alone.
    start_daemon kube-proxy "$BIN/kube-proxy" --kubeconfig="$RUN/kube-proxy.kubeconfig" \
        --proxy-mode=iptables --cluster-cidr="$POD_CIDR" --hostname-override="$NODE_NAME" \
        --bind-address="$NODE_IP" --metrics-bind-address=127.0.0.1:10249 \
        --healthz-bind-address=127.0.0.1:10256 \
        --conntrack-max-per-core=0 --conntrack-min=0 \
        --conntrack-tcp-timeout-established=0 --conntrack-tcp-timeout-close-wait=0
    wait_for 90 "node $NODE_NAME Ready" node_is_ready
    wait_for 60 "the default ServiceAccount" kctl get serviceaccount default
    log "up: ready in $((SECONDS - t0))s"
    print_env
}

print_env() {
    echo "# The API is reachable only inside the network namespace $NODE_NS:"
    echo "#   scripts/local-cluster.sh kubectl get nodes"
    echo "#   or: nsenter --net=/run/netns/$NODE_NS $BIN/kubectl get nodes"
    echo "export KUBECONFIG=$KUBECONFIG_FILE"
}

ctr_() { timeout 120 ctr --address "$SOCK" -n k8s.io "$@"; }

load_images() {
    (($# > 0)) || die "usage: $0 load-images NAME:TAG..."
    [[ -S $SOCK ]] || die "the cluster is not up"
    local img tar
    for img in "$@"; do
        img=${img#localhost/}
        local qualified=docker.io/library/$img
        [[ $img == */* ]] && qualified=$img
        # The kubelet asks containerd for docker.io/library/NAME:TAG when a manifest says
        # image: NAME:TAG; podman names its local images localhost/NAME:TAG.
        podman_ tag "$img" "$qualified"
        tar=$(mktemp "$CACHE/image-XXXXXX.tar")
        rm -f "$tar"
        podman_ save -q -o "$tar" "$qualified" >&2
        ctr_ images import "$tar" >/dev/null
        rm -f "$tar"
        log "loaded $qualified"
    done
}

# ---------------------------------------------------------------------------------------------
# Down

pids_in_our_cgroups() { # every process in the kubelet's /kubepods cgroups
    local f
    for f in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
        [[ -d $f ]] || continue
        find "$f" -name cgroup.procs -exec cat {} + 2>/dev/null
    done | sort -u
}

pids_with_arg() { # PIDs whose command line contains STRING (our cache path: ours only)
    local f pid files
    # One grep over every command line (STRING is a path: no spaces, so the NULs between
    # arguments do not matter), then a second look at the few it names: grep's own command
    # line holds STRING too, and it has exited by then.
    files=$(grep -lsF -- "$1" /proc/[0-9]*/cmdline)
    for f in $files; do
        pid=${f#/proc/}
        pid=${pid%/cmdline}
        [[ $pid != "$BASHPID" ]] && { tr '\0' ' ' <"$f" | grep -qF -- "$1"; } 2>/dev/null && echo "$pid"
    done
    return 0
}

shim_pids() { # containerd's shims for this cluster: they carry its socket path
    local pid
    for pid in $(pids_with_arg "$SOCK"); do
        [[ $(cat "/proc/$pid/comm" 2>/dev/null) == containerd-shim* ]] && echo "$pid"
    done
    return 0
}

kill_and_wait() { # SIGNAL SECONDS PID...
    local sig=$1 seconds=$2 i
    shift 2
    (($# > 0)) || return 0
    kill "-$sig" "$@" 2>/dev/null || true
    for ((i = 0; i < seconds * 10; i++)); do
        local alive=0 pid
        for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || return 0
        sleep 0.1
    done
    return 1
}

stop_daemons() { # NAME...: SIGTERM to all at once, SIGKILL to any left after 10 s
    local name pid pids=()
    for name in "$@"; do
        pid=$(cat "$RUN/pids/$name.pid" 2>/dev/null) || continue
        kill -0 "$pid" 2>/dev/null && pids+=("$pid")
        rm -f "$RUN/pids/$name.pid"
    done
    ((${#pids[@]} > 0)) || return 0
    kill_and_wait TERM 10 "${pids[@]}" || kill_and_wait KILL 5 "${pids[@]}" ||
        log "warning: some of $* survived SIGKILL"
}

down() {
    ((EUID == 0)) || die "run as root"
    local i d pid
    # The kubelet and its peers first, so nothing restarts a container while the rest goes.
    stop_daemons kubelet kube-proxy kube-scheduler kube-controller-manager
    # The pods' processes: every process in /kubepods is one of this cluster's containers.
    local netns_inodes=() pids
    for pid in $(pids_in_our_cgroups); do
        netns_inodes+=("$(stat -L -c %i "/proc/$pid/ns/net" 2>/dev/null)") || true
    done
    for ((i = 0; i < 5; i++)); do
        pids=$(pids_in_our_cgroups)
        [[ -z $pids ]] && break
        # shellcheck disable=SC2086
        kill_and_wait KILL 3 $pids || true
    done
    # containerd's shims carry its socket path in their arguments.
    # shellcheck disable=SC2046
    kill_and_wait TERM 5 $(shim_pids) || kill_and_wait KILL 5 $(shim_pids) || true
    stop_daemons containerd kube-apiserver
    stop_daemons etcd
    # Anything else started from this cache (a daemon whose PID file was lost).
    # shellcheck disable=SC2046
    kill_and_wait KILL 5 $(pids_with_arg "$CACHE/") || true
    # Mounts under the state dir (pod volumes, container rootfs, sandbox shm), deepest first.
    local m
    while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "warning: could not unmount $m"
    done < <(awk -v run="$RUN/" 'index($5, run) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
    # The pods' network namespaces (CNI names them /run/netns/cni-*): those the pods used, and
    # any made since `up` that nothing uses any more.
    local n ino
    for n in /run/netns/cni-*; do
        [[ -e $n ]] || continue
        ino=$(stat -L -c %i "$n" 2>/dev/null || echo none)
        if printf '%s\n' "${netns_inodes[@]}" | grep -qx "$ino" ||
            { ! grep -qx "netns $n" "$SAVED_HOST" 2>/dev/null && [[ -z $(ip netns pids "${n##*/}" 2>/dev/null) ]]; }; then
            umount "$n" 2>/dev/null || true
            rm -f "$n"
        fi
    done
    for n in "$NODE_NS" "$DEAD_NS"; do
        [[ -e /run/netns/$n ]] && ip netns del "$n"
    done
    # The kubelet's cgroups, leaves first (rmdir fails on a cgroup that still has processes).
    for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
        [[ -d $d ]] || continue
        find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
        [[ -d $d ]] && log "warning: $d could not be removed"
    done
    restore_host_state
    rm -rf "$RUN"
    log "down: nothing of the cluster runs; host sysctls restored"
}

restore_host_state() {
    local line k v now
    if [[ -f $SAVED_SYSCTLS ]]; then
        while IFS= read -r line; do
            k=${line%%=*} v=${line#*=}
            [[ $v == '?' ]] && continue
            now=$(sysctl -n "$k" 2>/dev/null || echo '?')
            if [[ $now != "$v" ]]; then
                sysctl -q -w "$k=$v" || log "warning: could not restore $k=$v (now $now)"
            fi
        done <"$SAVED_SYSCTLS"
        rm -f "$SAVED_SYSCTLS"
    fi
    if [[ -f $SAVED_HOST ]]; then
        for d in "${HOST_DIRS[@]}"; do
            grep -qx "existed $d" "$SAVED_HOST" && continue
            if [[ $d == /run/netns ]]; then
                # `ip netns add` made it a mount point of its own; remove it only when empty.
                [[ -d $d && -z $(ls -A "$d") ]] || continue
                umount "$d" 2>/dev/null || true
                rmdir "$d" 2>/dev/null || true
            else
                rm -rf "$d"
            fi
        done
        rm -f "$SAVED_HOST"
    fi
}

status() {
    local d pid running=0
    for d in "${DAEMONS[@]}"; do
        pid=$(cat "$RUN/pids/$d.pid" 2>/dev/null || true)
        if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
            printf '  %-24s running (pid %s)\n' "$d" "$pid"
            running=$((running + 1))
        else
            printf '  %-24s stopped\n' "$d"
        fi
    done
    echo "  containerd shims         $(shim_pids | wc -l)"
    for d in "$NODE_NS" "$DEAD_NS"; do
        [[ -e /run/netns/$d ]] && echo "  netns $d exists" || echo "  netns $d absent"
    done
    if build_is_current; then echo "  build: current ($BIN)"; else echo "  build: none or stale"; fi
    if ((running == ${#DAEMONS[@]})); then
        kctl get nodes -o wide 2>/dev/null | sed 's/^/  /' || true
        echo "up"
    elif ((running == 0)); then
        echo "down"
    else
        echo "partly up: run '$0 down'"
        return 1
    fi
}

case ${1:-} in
    up) up ;;
    down) down ;;
    status) status ;;
    build) build ;;
    # exec all the way down: the caller's $! is kubectl itself (a port-forward can be stopped).
    kubectl) shift; [[ -e /run/netns/$NODE_NS ]] || die "the cluster is not up"
        exec nsenter --net="/run/netns/$NODE_NS" -- "$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@" ;;
    exec) shift; [[ -e /run/netns/$NODE_NS ]] || die "the cluster is not up"
        exec nsenter --net="/run/netns/$NODE_NS" -- "$@" ;;
    load-images) shift; load_images "$@" ;;
    *) sed -n '2,11s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
esac
