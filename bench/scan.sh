#!/usr/bin/env bash
# make bench-scan: list 10,000 tags from Debian's docker-registry and 100,000 tags from the
# paginating stand-in (pages of 100 and of 1000), with image-reflector scan and with
# skopeo list-tags on the same repositories, in the same run. Prints wall time and peak
# RSS of each (median wall of RUNS runs, highest RSS) and the ratio ours/skopeo.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
CARGO=${CARGO:-cargo}

for tool in skopeo docker-registry /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "bench-scan: $tool is missing; run make test-deps" >&2; exit 1; }
done

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

# measure NAME COMMAND...: RUNS runs; prints "median_wall_s max_rss_kb"; checks the count.
measure() {
  local expect=$1; shift
  local walls=() rss=0
  for _ in $(seq "$RUNS"); do
    /usr/bin/time -f "%e %M" -o "$work/time" "$@" >"$work/out" 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
    local count
    count=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(len(d.get("tags") or d.get("Tags") or []))' "$work/out")
    [ "$count" = "$expect" ] || { echo "bench-scan: expected $expect tags, got $count from: $*" >&2; exit 1; }
    read -r w m <"$work/time"
    walls+=("$w"); [ "$m" -gt "$rss" ] && rss=$m
  done
  local median
  median=$(printf '%s\n' "${walls[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  echo "$median $rss"
}

printf '%-44s %10s %10s %12s %12s %9s %9s\n' "case" "ours s" "skopeo s" "ours RSS KB" "skopeo RSS" "time o/s" "RSS o/s"
row() {
  local name=$1 expect=$2 image=$3 page=$4
  read -r ow orss < <(measure "$expect" "$OURS" --log-level error scan "$image" --page-size "$page" \
      --requests-per-second 0 --max-tags 1000000 --exclude '^$' -o json --all-tags)
  read -r sw srss < <(measure "$expect" skopeo list-tags --tls-verify=false "docker://$image")
  ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
  printf '%-44s %10s %10s %12s %12s %9s %9s\n' "$name" "$ow" "$sw" "$orss" "$srss" \
    "$(ratio "$ow" "$sw")" "$(ratio "$orss" "$srss")"
}
row "docker-registry 10,000 tags (one page)" 10000 "${addr[REGISTRY]}/bench/ten-thousand" 1000
row "stand-in 100,000 tags, pages of 100" 100000 "${addr[STANDIN_100]}/bench/hundred-thousand" 100
row "stand-in 100,000 tags, pages of 1000" 100000 "${addr[STANDIN_1000]}/bench/hundred-thousand" 1000
echo "(median wall of $RUNS runs, highest peak RSS; o/s = ours/skopeo, below 1 is better)"
