#!/usr/bin/env bash
# Installs the manifest validators, pinned, in a venv at .venv-tools/ (gitignored).
# Idempotent: does nothing when the venv already has these exact versions.
# Usage: scripts/install-tools.sh            (PYTHON=python3.12 to choose the interpreter)
set -euo pipefail

KUBERNETES_VALIDATE_VERSION=1.37.0   # schemas for Kubernetes 1.25 ... 1.37
CHECKOV_VERSION=3.3.30

cd "$(dirname "$0")/.."
venv=.venv-tools
want="kubernetes-validate==$KUBERNETES_VALIDATE_VERSION checkov==$CHECKOV_VERSION"

if [[ -x $venv/bin/python && -f $venv/.pinned && "$(cat "$venv/.pinned")" == "$want" ]]; then
    echo "install-tools: $venv already has $want"
    exit 0
fi

python=${PYTHON:-python3}
if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
    echo "install-tools: $python cannot make a venv; on Debian: apt-get install -y python3-venv" >&2
    exit 1
fi
echo "install-tools: making $venv with $($python --version 2>&1) and installing $want"
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
# shellcheck disable=SC2086
"$venv/bin/pip" install --quiet --disable-pip-version-check $want
echo "$want" > "$venv/.pinned"
echo "install-tools: kubernetes-validate $("$venv/bin/kubernetes-validate" --version 2>&1 | tail -1), checkov $("$venv/bin/checkov" --version)"
