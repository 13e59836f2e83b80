#!/usr/bin/env bash
# `make bench-push`: push-to-latestRef latency through the push receiver over 20 pushes
# (p50 and max), and the registry requests a burst of 50 pushes causes, on the real stack:
# the control plane from `make control-plane`, Debian's docker-registry notifying the
# receiver, release builds of image-reflector and of the driver
# (test-support/src/bin/bench_push.rs, which says what it measures).
# Figures only: it never fails on a timing.
#
# Knobs (environment):
#   PUSHES=20 BURST=50      pushes measured one by one; tags in the burst
#   REPLICAS=2              1, or 2 with leader election (the registry notifies the one
#                           that does not lead, as it may in a cluster)
#   SERVE_ARGS="..."        extra flags for image-reflector serve
#   PROFILE=release         or debug, to reuse a debug build
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
PROFILE=${PROFILE:-release}

for tool in docker-registry kubectl; do
  command -v "$tool" >/dev/null || { echo "bench-push: $tool is missing; run 'make test-deps'" >&2; exit 1; }
done
[ -x target/control-plane/bin/kube-apiserver ] || { echo "bench-push: run 'make control-plane' first" >&2; exit 1; }

flags=()
[ "$PROFILE" = release ] && flags=(--release)
echo "== building ($PROFILE): image-reflector, bench_push"
"$CARGO" build --quiet "${flags[@]}" --bin image-reflector
"$CARGO" build --quiet "${flags[@]}" -p test-support --bin bench_push

echo "   machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
IMAGE_REFLECTOR_BIN="$(pwd)/target/$PROFILE/image-reflector" "target/$PROFILE/bench_push" \
  --pushes "${PUSHES:-20}" --burst "${BURST:-50}" --replicas "${REPLICAS:-2}" \
  --serve-args="${SERVE_ARGS:-}"
