#!/usr/bin/env bash
# make bench-scan: list 10,000 tags from Debian's docker-registry (one page) and 100,000
# tags from the paginating stand-in (pages of 100 and of 1000, whatever `n` a client asks
# for) with image-reflector scan, with `crane ls` (go-containerregistry, the library
# behind Flux's scans, from `make control-plane`) and with `skopeo list-tags`, on the same
# repositories in the same run. Prints the median wall time and median peak RSS of RUNS
# runs of each, and the ratios ours/crane and ours/skopeo (below 1: ours is faster or
# smaller). Figures only: it never fails on a timing.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
CARGO=${CARGO:-cargo}
CRANE=target/control-plane/bin/crane

for tool in skopeo docker-registry /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "bench-scan: $tool is missing; run make test-deps" >&2; exit 1; }
done
[ -x "$CRANE" ] || { echo "bench-scan: $CRANE is missing; run make control-plane" >&2; exit 1; }

$CARGO build --release --quiet --bin image-reflector
$CARGO build --release --quiet -p test-support --bin bench_registries
OURS=target/release/image-reflector
SERVERS=target/release/bench_registries

work=$(mktemp -d)
coproc SRV { "$SERVERS"; }
srv_pid=$SRV_PID
cleanup() { exec {SRV[1]}>&- 2>/dev/null || true; kill "$srv_pid" 2>/dev/null || true; wait "$srv_pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
declare -A addr
while read -r line <&"${SRV[0]}"; do
  [ "$line" = READY ] && break
  addr[${line%%=*}]=${line#*=}
done

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# measure EXPECTED FORMAT COMMAND...: RUNS runs; prints "median_wall_s median_max_rss_kb";
# checks that every run listed EXPECTED tags (FORMAT json: {"tags": [...]}; lines: one a line).
measure() {
  local expect=$1 format=$2; shift 2
  local walls=() rsss=()
  for _ in $(seq "$RUNS"); do
    /usr/bin/time -f "%e %M" -o "$work/time" "$@" >"$work/out" 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
    local count
    if [ "$format" = json ]; then
      count=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(len(d.get("tags") or d.get("Tags") or []))' "$work/out")
    else
      count=$(grep -c . "$work/out" || true)
    fi
    [ "$count" = "$expect" ] || { echo "bench-scan: expected $expect tags, got $count from: $*" >&2; exit 1; }
    read -r w m <"$work/time"
    walls+=("$w"); rsss+=("$m")
  done
  echo "$(printf '%s\n' "${walls[@]}" | median) $(printf '%s\n' "${rsss[@]}" | median)"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

echo "bench-scan: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ); $RUNS runs each"
echo "  crane $("$CRANE" version 2>/dev/null || echo '?'), $(skopeo --version)"
printf '%-40s %8s %8s %8s %9s %9s %9s %7s %7s %7s %7s\n' "case" "ours s" "crane s" "skopeo s" \
  "ours MB" "crane MB" "skopeo MB" "t o/c" "t o/s" "RSS o/c" "RSS o/s"
row() {
  local name=$1 expect=$2 image=$3 page=$4
  read -r ow orss < <(measure "$expect" json "$OURS" --log-level error scan "$image" --page-size "$page" \
      --requests-per-second 0 --max-tags 1000000 --exclude '^$' -o json --all-tags)
  read -r cw crss < <(measure "$expect" lines "$CRANE" ls "$image")
  read -r sw srss < <(measure "$expect" json skopeo list-tags --tls-verify=false "docker://$image")
  mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
  printf '%-40s %8s %8s %8s %9s %9s %9s %7s %7s %7s %7s\n' "$name" "$ow" "$cw" "$sw" \
    "$(mb "$orss")" "$(mb "$crss")" "$(mb "$srss")" \
    "$(ratio "$ow" "$cw")" "$(ratio "$ow" "$sw")" "$(ratio "$orss" "$crss")" "$(ratio "$orss" "$srss")"
}
row "docker-registry 10,000 tags, one page" 10000 "${addr[REGISTRY]}/bench/ten-thousand" 1000
row "stand-in 100,000 tags, pages of 100" 100000 "${addr[STANDIN_100]}/bench/hundred-thousand" 100
row "stand-in 100,000 tags, pages of 1000" 100000 "${addr[STANDIN_1000]}/bench/hundred-thousand" 1000
echo "(medians of $RUNS runs: wall time in s, peak RSS in MiB; o/c = ours/crane, o/s = ours/skopeo,"
echo " below 1 is better; figures only: this benchmark never fails on a timing)"
