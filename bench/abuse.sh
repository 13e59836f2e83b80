#!/usr/bin/env bash
# make abuse: `image-reflector serve --webhook-only` under abuse on loopback
# (examples/webhook_abuse): slow-loris heads, 10,000 idle TLS connections, 10,000
# stalled handshakes, oversized heads, HTTP/2 rapid reset, stalled bodies. During each
# case legitimate AdmissionReviews (bench/review.json) arrive at RATE/s over one HTTP/2
# connection; it prints their p50/p99/max beside the same without abuse (the first row),
# the server's peak RSS per case and its VmHWM, and what the server did to the abuser.
# Figures only: it fails when the server dies, never on a figure.
#
# Knobs: RATE=200 (legitimate reviews per second), CASE_SECONDS=15 (per case; the server's
# timeouts are 10 s, so a case outlasts them), CASES="slow-loris ..." (all by default),
# PROFILE=release|debug, IMAGE_REFLECTOR=PATH (another build of the server).
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${RATE:-200}
CASE_SECONDS=${CASE_SECONDS:-15}
CASES=${CASES:-}
PROFILE=${PROFILE:-release}
CARGO=${CARGO:-cargo}

command -v openssl >/dev/null || { echo "abuse: openssl is missing; run ./scripts/install-test-deps.sh" >&2; exit 1; }

echo "abuse: building ($PROFILE)"
if [ "$PROFILE" = release ]; then
  $CARGO build --release --quiet --bin image-reflector --example webhook_abuse
else
  $CARGO build --quiet --bin image-reflector --example webhook_abuse
fi
target=${CARGO_TARGET_DIR:-target}/$PROFILE
server_bin=${IMAGE_REFLECTOR:-$target/image-reflector}

tmp=$(mktemp -d)
server=
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# Every connection takes a descriptor on both ends: 10,000 idle connections need more
# than the usual 1,024.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" -lt 12000 ]; then
  echo "abuse: the open-files limit is $(ulimit -n); 10,000 connections need about 12,000 (raise ulimit -n)" >&2
  exit 1
fi

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$tmp/ca.key" \
  -out "$tmp/ca.crt" -days 1 -subj "/CN=abuse CA" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$tmp/tls.key" \
  -out "$tmp/tls.csr" -subj "/CN=127.0.0.1" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$tmp/ext"
openssl x509 -req -in "$tmp/tls.csr" -CA "$tmp/ca.crt" -CAkey "$tmp/ca.key" -CAcreateserial \
  -out "$tmp/tls.crt" -days 1 -extfile "$tmp/ext" 2>/dev/null
tr -d '\n' < bench/review.json > "$tmp/body.json"

"$server_bin" serve --webhook-only --log-encoding json --log-level info \
  --webhook-addr 127.0.0.1:0 --health-addr 127.0.0.1:0 --metrics-addr 127.0.0.1:0 \
  --tls-cert-file "$tmp/tls.crt" --tls-key-file "$tmp/tls.key" 2> "$tmp/server.log" &
server=$!
for _ in $(seq 1 200); do
  grep -q '"listening"' "$tmp/server.log" 2>/dev/null && break
  sleep 0.05
done
grep -q '"listening"' "$tmp/server.log" || { echo "abuse: the server did not start; log:" >&2; cat "$tmp/server.log" >&2; exit 1; }
addr=$(grep '"listening"' "$tmp/server.log" | sed -E 's/.*"webhook":"([^"]+)".*/\1/')

echo "abuse: machine $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ); server pid $server ($server_bin)"
# shellcheck disable=SC2086 # CASES is a list
"$target/examples/webhook_abuse" "https://$addr/validate" "$tmp/ca.crt" "$tmp/body.json" \
  "$server" "$RATE" "$CASE_SECONDS" $CASES

echo
echo "abuse: the server's warnings, by message:"
grep '"level":"WARN"' "$tmp/server.log" | sed -E 's/.*"message":"([^"]*)".*/\1/' | sort | uniq -c | sort -rn || true
