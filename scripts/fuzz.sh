#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ (cargo-fuzz, libFuzzer) for FUZZ_SECONDS each (default
# 60) and prints a table: executions, corpus size, and whether it crashed. `make fuzz`
# runs it; `make fuzz-smoke` (part of `make test`) runs it with a few seconds a target, so
# a target that no longer builds or crashes at once is caught.
#
# Installs cargo-fuzz from crates.io when it is missing (CI machines start fresh), and
# builds with the project's stable toolchain: RUSTC_BOOTSTRAP=1 lets it take the
# sanitizer flags cargo-fuzz passes (-Z...), so no nightly toolchain is needed.
#
# Each target reads its seeds (fuzz/seeds/TARGET, in git), the crash inputs found before
# (fuzz/regressions/TARGET, in git: each one is also a unit test in src/) and the corpus
# grown by earlier runs on this machine (fuzz/corpus/TARGET, not in git). A crash leaves
# its input in fuzz/artifacts/TARGET/ and fails the run.
#
# FUZZ_BUILD picks the build: `release` (default: optimised, debug assertions,
# AddressSanitizer; what `make fuzz` runs) or `smoke` (unoptimised, no sanitizer: a cold
# build costs a fraction of the release one, which matters on a fresh CI machine, and 3 s
# of it still shows that every target builds and survives its seeds and past crashes).
#
# Usage: scripts/fuzz.sh [TARGET...]   (FUZZ_SECONDS=N, FUZZ_REPORT=FILE for the table)
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
SECONDS_EACH="${FUZZ_SECONDS:-60}"
REPORT="${FUZZ_REPORT:-target/fuzz-report.md}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION (crates.io)"
  cargo install --quiet --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

case "${FUZZ_BUILD:-release}" in
  release) build=(); what="optimised, with debug assertions and AddressSanitizer" ;;
  smoke) build=(--dev --sanitizer none); what="unoptimised, no sanitizer" ;;
  *) echo "fuzz: FUZZ_BUILD is release or smoke, not ${FUZZ_BUILD}" >&2; exit 2 ;;
esac
echo "fuzz: building ${#targets[@]} targets ($what)"
build_start=$(date +%s)
cargo fuzz build "${build[@]}"
echo "fuzz: built in $(( $(date +%s) - build_start )) s"

mkdir -p "$(dirname "$REPORT")" target/fuzz-logs
rows=()
failed=()
total_runs=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  dirs=("fuzz/corpus/$t" "fuzz/seeds/$t")
  [ -d "fuzz/regressions/$t" ] && dirs+=("fuzz/regressions/$t")
  log="target/fuzz-logs/$t.log"
  # -malloc_limit_mb: no parser of a few KiB of input has any business allocating more.
  if cargo fuzz run "${build[@]}" "$t" "${dirs[@]}" -- \
      -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=256 \
      -print_final_stats=1 >"$log" 2>&1; then
    result=ok
  else
    result="CRASH (see $log, fuzz/artifacts/$t/)"
    failed+=("$t")
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n 1 || true)
  runs=${runs:-0}
  total_runs=$((total_runs + runs))
  corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
  regressions=0
  [ -d "fuzz/regressions/$t" ] && regressions=$(find "fuzz/regressions/$t" -type f | wc -l)
  rows+=("| \`$t\` | $runs | $corpus | $regressions | $result |")
  printf 'fuzz: %-18s %10s runs  corpus %5s  %s\n' "$t" "$runs" "$corpus" "$result"
done

{
  echo "Fuzzing, $(date -u +%Y-%m-%d), ${SECONDS_EACH} s a target:"
  echo
  echo "| target | executions | corpus | crashes found before (regressions) | this run |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "${#targets[@]} targets, $total_runs executions, ${#failed[@]} crashed."
} >"$REPORT"
echo
cat "$REPORT"

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashed: ${failed[*]}; reproduce with: RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET fuzz/artifacts/TARGET/crash-..." >&2
  exit 1
fi
