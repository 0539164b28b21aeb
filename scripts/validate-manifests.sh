#!/usr/bin/env bash
# Validates the Kubernetes manifests offline:
#   1. kubernetes-validate --strict against each Kubernetes version in K8S_VERSIONS
#      (schema, and no unknown fields);
#   2. scripts/check_manifests.py: selectors match template labels, Services select a
#      Deployment's pods and target declared ports, images carry the Cargo.toml version,
#      resources and security settings;
#   3. checkov (security lint), with any accepted finding skipped in the manifest itself.
# Needs the venv of scripts/install-tools.sh (it runs that script when the venv is missing).
# Exits non-zero, naming the check that failed, if any check fails.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
K8S_VERSIONS=${K8S_VERSIONS:-"1.30.0 1.37.0"}
venv=.venv-tools
manifests=(deployments/*.yaml deployments/examples/*.yaml services/*.yaml)
version=$(scripts/version.sh)

if [[ ! -x $venv/bin/checkov || ! -x $venv/bin/kubernetes-validate ]]; then
    scripts/install-tools.sh || { echo "validate: FAIL: could not install the validators" >&2; exit 1; }
fi

failed=()
step() { echo; echo "==> $*"; }

for k in $K8S_VERSIONS; do
    step "kubernetes-validate --strict -k $k ${manifests[*]}"
    "$venv/bin/kubernetes-validate" --strict --quiet -k "$k" "${manifests[@]}"
    rc=$?
    if (( rc == 0 )); then echo "ok: ${#manifests[@]} files valid for Kubernetes $k (strict)"
    else failed+=("schema validation for Kubernetes $k (kubernetes-validate exit $rc)"); fi
done

step "check_manifests.py $version ${manifests[*]}"
"$venv/bin/python" scripts/check_manifests.py "$version" "${manifests[@]}" ||
    failed+=("selector/port/image/resource checks (scripts/check_manifests.py)")

for dir in deployments services; do
    step "checkov -d $dir --framework kubernetes --skip-download --compact --quiet"
    "$venv/bin/checkov" -d "$dir" --framework kubernetes --skip-download --compact --quiet ||
        failed+=("checkov on $dir/")
done

echo
if (( ${#failed[@]} )); then
    printf 'validate: FAIL: %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "validate: all manifest checks passed"
