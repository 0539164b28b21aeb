#!/usr/bin/env bash
# `make deploy` / `make undeploy`: the write token's Secret (created with a random token when
# missing), then the registry with its Services, then the servers, then the EndpointSlice
# mirror, in that order: the server
# pods read the registry's address from the Services' environment variables, which Kubernetes
# gives only to pods started after the Services exist, and they register with the registry.
# Image names are set by kustomize (`images:`), not by editing the manifests.
#
#   scripts/deploy.sh deploy|undeploy
# Environment: KUBECTL (default kubectl), IMAGE_PREFIX (e.g. ghcr.io/me/), VERSION (the tag).
set -euo pipefail
cd "$(dirname "$0")/.."

action=${1:-}
[[ $action == deploy || $action == undeploy ]] || { echo "usage: scripts/deploy.sh deploy|undeploy" >&2; exit 2; }
KUBECTL=${KUBECTL:-kubectl}
IMAGE_PREFIX=${IMAGE_PREFIX:-}
VERSION=${VERSION:-$(scripts/version.sh)}
read -r -a kubectl <<<"$KUBECTL"

# kustomize reads only files below its own folder: each step gets a scratch folder in the repo
# with copies of its manifests and a kustomization that names the image.
work=target/deploy
rm -rf "$work"
step() { # NAME IMAGE SOURCE...
    local dir=$work/$1 image=$2 source
    shift 2
    mkdir -p "$dir"
    {
        echo "apiVersion: kustomize.config.k8s.io/v1beta1"
        echo "kind: Kustomization"
        echo "resources:"
        for source in "$@"; do
            # services/ and deployments/ both hold a service-registry.yaml: keep the folder in the name.
            local copy=${source//\//-}
            cp "$source" "$dir/$copy"
            echo "  - $copy"
        done
        echo "images:"
        echo "  - name: $image"
        echo "    newName: ${IMAGE_PREFIX}${image}"
        echo "    newTag: \"${VERSION}\""
    } >"$dir/kustomization.yaml"
}
step 1-registry service-registry services/service-registry.yaml services/service-registry-http.yaml \
    services/dynamic-port-server.yaml deployments/service-registry.yaml
step 2-servers dynamic-port-server deployments/dynamic-port-server.yaml
step 3-mirror endpointslice-mirror deployments/endpointslice-mirror.yaml

if [[ $action == deploy ]]; then
    if ! "${kubectl[@]}" get secret service-registry-token >/dev/null 2>&1; then
        echo "creating the Secret service-registry-token with a random write token"
        head -c 32 /dev/urandom | base64 | tr -d '\n' |
            "${kubectl[@]}" create secret generic service-registry-token --from-file=token=/dev/stdin
    fi
    "${kubectl[@]}" apply -k "$work/1-registry"
    "${kubectl[@]}" apply -k "$work/2-servers"
    "${kubectl[@]}" apply -k "$work/3-mirror"
else
    "${kubectl[@]}" delete --ignore-not-found -k "$work/3-mirror"
    "${kubectl[@]}" delete --ignore-not-found -k "$work/2-servers"
    "${kubectl[@]}" delete --ignore-not-found -k "$work/1-registry"
fi
