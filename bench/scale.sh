#!/usr/bin/env bash
# `make bench-scale`: 1,000 ImageRepositories of 1,000 tags each against the project's
# Kubernetes API stand-in (kube-standin) and its paginating registry stand-in
# (bench_registry), both on 127.0.0.1, measured on a release build of
# `image-reflector serve`. Prints, each beside its target (issue 5) and a baseline measured
# in the same run:
#   1. time from the first create until every object is Ready;
#   2. peak RSS (VmHWM) of the image-reflector process;
#   3. API writes per unchanged rescan (stand-in's GET /debug/write-counts);
#   4. registry requests in the first minute after a restart (bench_registry's counters).
# Figures only: it never fails on a timing.
#
# Knobs (environment):
#   REPOS=1000 TAGS=1000 NAMESPACES=10   the objects created (spread over namespaces)
#   PAGE_SIZE=1000                       --registry-page-size of image-reflector
#   REGISTRY_DEFAULT_PAGE_SIZE=100       the stand-in's page size when no n is sent
#   REGISTRY_MAX_PAGE_SIZE=0             refuse n above this with 413 (0: no limit)
#   RESCAN_OBJECTS=200 RESCAN_INTERVAL=10s RESCAN_WINDOW=35   phase 2
#   RESTART_WINDOW=60                    phase 3
#   WEBHOOKS=1                           register the admission webhooks (left out by default)
#   SERVE_ARGS="--concurrent 8 ..."      extra flags for image-reflector serve
#   KEEP=1                               keep the work directory (logs, store)
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in python3 openssl; do
  command -v "$tool" >/dev/null || { echo "bench-scale: $tool is missing; run 'make test-deps'" >&2; exit 1; }
done

echo "== building release binaries (image-reflector, kube-standin, bench_registry)"
cargo build --quiet --release --bin image-reflector
cargo build --quiet --release -p kube-standin --bins

work=$(mktemp -d /tmp/image-reflector-bench-scale.XXXXXX)
cleanup() {
  if [ "${KEEP:-}" = 1 ]; then echo "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

echo "   machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
WORK="$work" BIN_DIR="$(pwd)/target/release" python3 bench/scale.py
