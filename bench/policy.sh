#!/usr/bin/env bash
# Benchmark of ImagePolicy tag selection: each policy kind (semver, alphabetical,
# numerical), without and with filterTags, over the same TAGS tags (default 100,000).
# Prints the median time per evaluation of RUNS runs (default 15) from a release build,
# and ours/baseline, where the baseline is a plain sort of the same tags measured in the
# same run. Target: under 20 ms per evaluation.
#
# Usage: bench/policy.sh [TAGS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
"$CARGO" build --release --quiet --example bench_policy
exec target/release/examples/bench_policy "${1:-100000}" "${2:-15}"
