#!/usr/bin/env bash
# `make bench-scale`: many ImageRepositories of many tags on the real control plane, for
# image-reflector and for Flux's image-reflector-controller v1.2.0 (Badger, and the
# FluxStorage feature gate's filesystem storage) in the same run, each in turn on its own
# shard, with the same client-side API limits, against one paginating registry stand-in.
# Prints, per controller and as ours/Flux beside each target: time from the first create
# until all are Ready, peak RSS (VmHWM), API writes per unchanged rescan (kube-apiserver's
# apiserver_request_total), registry requests in the minute after a restart. The driver,
# test-support/src/bin/bench_scale/, says how it measures. Figures only: it never fails on
# a timing.
#
# Knobs (environment):
#   LOAD=1000x1000           REPOSxTAGS (10000x100 is the second load); or REPOS=, TAGS=
#   CONTROLLERS=ours,flux,flux-fluxstorage   who is measured, in this order
#   KUBE_API_QPS=50 KUBE_API_BURST=300 CONCURRENT=4   the same for every controller
#   NAMESPACES=10 RESCAN_OBJECTS=200 RESCAN_INTERVAL=10s RESCAN_WINDOW=35 RESTART_WINDOW=60
#   REGISTRY_DEFAULT_PAGE_SIZE=100 READY_TIMEOUT=3600
#   KUBE_APISERVER_ARGS=--enable-priority-and-fairness=false   Flux then keeps its client-side
#                            limit (with API Priority and Fairness on, kube-apiserver's default,
#                            it drops it; image-reflector keeps it either way)
#   SERVE_ARGS="..." FLUX_ARGS="..."   extra flags for image-reflector serve / Flux's controller
#   PROFILE=release          or debug, to reuse a debug build
# (every knob: target/release/bench_scale --help)
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
PROFILE=${PROFILE:-release}

if [ -n "${LOAD:-}" ]; then
  [[ "$LOAD" =~ ^([0-9]+)x([0-9]+)$ ]] || { echo "bench-scale: LOAD must be REPOSxTAGS, such as 10000x100 (got '$LOAD')" >&2; exit 1; }
  export REPOS="${BASH_REMATCH[1]}" TAGS="${BASH_REMATCH[2]}"
fi
for tool in docker-registry; do
  command -v "$tool" >/dev/null || { echo "bench-scale: $tool is missing; run 'make test-deps'" >&2; exit 1; }
done
for tool in kube-apiserver image-reflector-controller; do
  [ -x "target/control-plane/bin/$tool" ] || { echo "bench-scale: target/control-plane/bin/$tool is missing; run 'make control-plane'" >&2; exit 1; }
done

flags=()
[ "$PROFILE" = release ] && flags=(--release)
echo "== building ($PROFILE): image-reflector, bench_scale"
"$CARGO" build --quiet "${flags[@]}" --bin image-reflector
"$CARGO" build --quiet "${flags[@]}" -p test-support --bin bench_scale

echo "   machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
IMAGE_REFLECTOR_BIN="$(pwd)/target/$PROFILE/image-reflector" "target/$PROFILE/bench_scale"
