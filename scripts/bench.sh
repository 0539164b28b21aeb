#!/usr/bin/env bash
# The benchmark (`make bench`): builds what it measures if needed, then runs the
# driver, which prints one markdown table on stdout (progress on stderr).
#
#   scripts/bench.sh            the full run, under 10 minutes: the main table, then the scale
#                               run's (100,000 endpoints, `--scale`)
#   scripts/bench.sh --quick    about 3 minutes: the main table only, shorter windows, detection
#                               with a 1 s interval
#   scripts/bench.sh --scale    the scale run alone, about 75 s once built
#
# Any other arguments go to the driver (`--keep-logs`, `--nginx PATH|none`; see bench/).
# Environment:
#   BENCH_INSTALL_NGINX=1   install nginx with apt-get first (it is the ceiling of the read
#                           figures); without it, nginx is used only if already installed.
#   BENCH_GO_SEED=1         build the Go original with ../shared/anchors/go-seed/build.sh (next to
#                           the repo; an error without it) into $GO_SEED_OUT (default /tmp/go-seed) and
#                           measure it beside ours (`--go-seed DIR`). Its code is never copied here.
#   CARGO_TARGET_DIR        honoured; default: the repo's target/.
#
# All traffic stays on 127.0.0.1. The driver starts every process it measures and stops each
# of them on every way out, SIGKILL of the driver included (they die with it).
set -euo pipefail
cd "$(dirname "$0")/.."

musl=x86_64-unknown-linux-musl
target_dir=${CARGO_TARGET_DIR:-target}

if [[ ${BENCH_INSTALL_NGINX:-0} == 1 ]] && ! command -v nginx >/dev/null && [[ ! -x /usr/sbin/nginx ]]; then
    echo "bench.sh: installing nginx (BENCH_INSTALL_NGINX=1)" >&2
    (
        # Installed, not started: the benchmark runs its own nginx on a loopback port. A
        # policy-rc.d that says 101 keeps the package from starting the system service.
        policy=/usr/sbin/policy-rc.d
        if [[ ! -e $policy ]]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy"
            trap 'rm -f "$policy"' EXIT
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nginx >&2
    ) || echo "bench.sh: could not install nginx; the table will say so" >&2
fi

go_seed=()
if [[ ${BENCH_GO_SEED:-0} == 1 ]]; then
    anchor=../shared/anchors/go-seed/build.sh
    if [[ -x $anchor || -f $anchor ]]; then
        out=${GO_SEED_OUT:-/tmp/go-seed}
        echo "bench.sh: building the Go original into $out (BENCH_GO_SEED=1)" >&2
        OUT=$out bash "$anchor" >&2
        go_seed=(--go-seed "$out")
    else
        # Asked for and not there: no table without the Go figures it was asked to hold.
        echo "bench.sh: BENCH_GO_SEED=1 but no $anchor next to the repo" >&2
        exit 1
    fi
fi

echo "bench.sh: building the static musl release binaries and the benchmark tools (if needed)" >&2
cargo build --release --target "$musl" -p service-registry -p dynamic-port-server \
    --bin service-registry --bin dynamic-port-server >&2
cargo build --release -p bench >&2

# The fleet holds one descriptor per simulated server: as many as the hard limit allows. The
# Go original leaves each probe's connection open, so the fleet holds 10,000 more while it
# checks: raise the hard limit where allowed (root), and go on with what there is otherwise.
ulimit -Hn 65536 2>/dev/null || true
hard=$(ulimit -Hn)
[[ $hard == unlimited ]] && hard=65536
ulimit -n "$hard"
if (($(ulimit -n) < 12500)); then
    echo "bench.sh: the open-file limit is $(ulimit -n); the fleet needs about 12,500" >&2
    exit 1
fi

release=$target_dir/$musl/release
driver=(
    "$target_dir/release/bench"
    --registry "$release/service-registry"
    --server "$release/dynamic-port-server"
    --fleet "$target_dir/release/fleet"
    --loadgen "$target_dir/release/loadgen"
)
for arg in "$@"; do
    if [[ $arg == --quick || $arg == --scale ]]; then
        exec "${driver[@]}" "${go_seed[@]}" "$@"
    fi
done
# The full run: the main table, then the scale run's (100,000 endpoints), each from its own
# processes, one after the other, on stdout.
"${driver[@]}" "${go_seed[@]}" "$@"
echo
"${driver[@]}" --scale "$@"
