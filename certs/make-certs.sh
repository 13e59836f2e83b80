#!/usr/bin/env bash
# Makes a development CA and a serving certificate for the webhook Service, and renders
# the webhook configurations with the CA as caBundle. Not for production: use
# cert-manager (webhook/cert-manager/) there.
#
#   SERVICE    Service name            (default image-reflector-webhook)
#   NAMESPACE  its namespace           (default flux-system)
#   OUT        output directory        (default certs/out)
#   DAYS       validity in days        (default 365)
set -euo pipefail

SERVICE=${SERVICE:-image-reflector-webhook}
NAMESPACE=${NAMESPACE:-flux-system}
OUT=${OUT:-certs/out}
DAYS=${DAYS:-365}
here=$(cd "$(dirname "$0")/.." && pwd)

command -v openssl >/dev/null || { echo "make-certs: openssl is needed (apt-get install openssl)" >&2; exit 1; }
mkdir -p "$OUT"
umask 077

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$OUT/ca.key" -out "$OUT/ca.crt" -days "$DAYS" \
  -subj "/CN=image-reflector development CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$OUT/tls.key" -out "$OUT/tls.csr" -subj "/CN=$SERVICE.$NAMESPACE.svc" 2>/dev/null

cat > "$OUT/tls.ext" <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:$SERVICE,DNS:$SERVICE.$NAMESPACE,DNS:$SERVICE.$NAMESPACE.svc,DNS:$SERVICE.$NAMESPACE.svc.cluster.local
EXT
openssl x509 -req -in "$OUT/tls.csr" -CA "$OUT/ca.crt" -CAkey "$OUT/ca.key" -CAcreateserial \
  -out "$OUT/tls.crt" -days "$DAYS" -extfile "$OUT/tls.ext" 2>/dev/null
rm -f "$OUT/tls.csr" "$OUT/tls.ext" "$OUT/ca.srl"
openssl verify -CAfile "$OUT/ca.crt" "$OUT/tls.crt" >/dev/null

ca_bundle=$(base64 -w0 < "$OUT/ca.crt")
sed -e "s|\${CA_BUNDLE}|$ca_bundle|g" -e "s|\${SERVICE}|$SERVICE|g" -e "s|\${NAMESPACE}|$NAMESPACE|g" \
  "$here/webhook/ca-bundle/webhook-configurations.yaml.in" > "$OUT/webhook-configurations.yaml"
sed -e "s|\${SERVICE}|$SERVICE|g" -e "s|\${NAMESPACE}|$NAMESPACE|g" \
  "$here/webhook/service.yaml" > "$OUT/service.yaml"

echo "make-certs: wrote $OUT/ca.crt, $OUT/tls.crt, $OUT/tls.key (for $SERVICE.$NAMESPACE.svc)"
echo "make-certs: wrote $OUT/webhook-configurations.yaml (caBundle filled in) and $OUT/service.yaml"
echo "  kubectl -n $NAMESPACE create secret tls $SERVICE-tls --cert=$OUT/tls.crt --key=$OUT/tls.key"
