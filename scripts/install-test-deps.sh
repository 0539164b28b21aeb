#!/usr/bin/env bash
# The programs `make test` needs from Debian, installed if missing (the first step of
# `make test`, and of .ci/run). A test never passes by skipping, so what a test drives must be
# here before the tests run:
#   podman, runc       make images, scripts/smoke-images.sh (CONTAINER_ENGINE=podman)
#   curl               scripts/smoke.sh, scripts/smoke-images.sh
#   musl-tools         make build: ring (the mirror's TLS) compiles C for the musl target
#   python3-venv       the pinned manifest validators' venv (scripts/install-tools.sh)
#   chromium, chromium-driver   tests/tests/live_page.rs (a real headless browser)
#   prometheus         tests/tests/prometheus.rs (prometheus and promtool)
# and from rustup, added when missing: the musl target (make build, make images), rustfmt and
# clippy (make fmt-check, make clippy).
#
# As root on a machine with apt-get it installs only the packages that are missing, so a second
# run changes nothing. Otherwise it prints one line per missing program, naming its Debian
# package, and exits 1. Nothing missing: one line saying so, exit 0.
#
# Usage: scripts/install-test-deps.sh
set -euo pipefail

# A program (a command looked up on PATH, or an absolute path where the tests expect it) and
# the Debian package that provides it.
NEEDS=(
    "podman podman"
    "runc runc"
    "curl curl"
    "musl-gcc musl-tools"
    "/usr/bin/chromium chromium"
    "/usr/bin/chromedriver chromium-driver"
    "/usr/bin/prometheus prometheus"
    "/usr/bin/promtool prometheus"
)

have() {
    if [[ $1 == /* ]]; then [[ -x $1 ]]; else command -v "$1" >/dev/null 2>&1; fi
}

# A Python that can make a venv: ${PYTHON:-python3}, or else Debian's /usr/bin/python3 (which
# `make test` and .ci/run fall back to).
python_ok() {
    local python
    for python in "${PYTHON:-python3}" /usr/bin/python3; do
        "$python" -c 'import venv, ensurepip' >/dev/null 2>&1 && return 0
    done
    return 1
}

# Lines "PROGRAM PACKAGE", one per missing program.
missing() {
    local need
    for need in "${NEEDS[@]}"; do
        have "${need%% *}" || echo "$need"
    done
    python_ok || echo "python3-with-venv python3-venv"
}

# The Rust parts come from rustup, not apt: added as whoever runs this (rustup is per user).
rust_parts() {
    rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl ||
        rustup target add x86_64-unknown-linux-musl
    cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
    cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
}
if ! command -v rustup >/dev/null 2>&1; then
    echo "install-test-deps: missing rustup: the musl target, rustfmt and clippy are added with it (https://rustup.rs)" >&2
    exit 1
fi
rust_parts >&2 || { echo "install-test-deps: rustup could not add the musl target, rustfmt or clippy" >&2; exit 1; }

lines=$(missing)
if [[ -z $lines ]]; then
    echo "install-test-deps: podman, runc, curl, musl-gcc, chromium, chromedriver, prometheus, promtool, python3 with venv: all installed"
    exit 0
fi

if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    why=$([[ $(id -u) -ne 0 ]] && echo "not root" || echo "no apt-get")
    while read -r program package; do
        echo "install-test-deps: missing $program: install the Debian package $package" >&2
    done <<<"$lines"
    echo "install-test-deps: cannot install them here ($why); as root on Debian run scripts/install-test-deps.sh" >&2
    exit 1
fi

# python3-venv alone does not bring a /usr/bin/python3 on a machine without one.
mapfile -t packages < <(awk '{print $2} $2 == "python3-venv" {print "python3"}' <<<"$lines" | sort -u)
echo "install-test-deps: installing ${packages[*]}"
export DEBIAN_FRONTEND=noninteractive
# Another apt-get may hold the dpkg lock for a while (an unattended upgrade, a parallel job):
# wait for it, bounded, rather than fail at once.
apt_get() { apt-get -o DPkg::Lock::Timeout=300 "$@"; }
apt_get update -qq
apt_get install -y -qq "${packages[@]}" >/dev/null

lines=$(missing)
if [[ -n $lines ]]; then
    while read -r program package; do
        echo "install-test-deps: still missing $program after installing $package" >&2
    done <<<"$lines"
    exit 1
fi
echo "install-test-deps: installed ${packages[*]}"
