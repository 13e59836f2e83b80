#!/usr/bin/env bash
# `make demo`: the main job end to end on a real Kubernetes control plane. Installs what it
# needs (Debian packages; kube-apiserver, etcd, kube-controller-manager and kubectl built
# from their Go modules by `make control-plane`, 12-25 minutes the first time, cached
# after), then starts a real OCI registry (Debian's docker-registry) holding a few tagged
# images, the control plane on 127.0.0.1, and `image-reflector serve` as its
# ServiceAccount (webhooks over HTTPS with a CA made now, controllers, tag store); installs
# the project's CRDs, RBAC and webhook configurations with kubectl; applies sample
# ImageRepositories and ImagePolicies; prints what `kubectl get` shows; stops everything.
#
#   KEEP=1 make demo   leaves everything running and prints how to reach it (Ctrl-C ends).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

./scripts/install-test-deps.sh
if [ ! -x target/control-plane/bin/kube-apiserver ]; then
  echo "== first run: building the control plane from Go modules (12-25 minutes on 2 cores; cached after)"
fi
./scripts/build-control-plane.sh kubernetes etcd
for tool in docker-registry openssl curl python3; do
  command -v "$tool" >/dev/null || { echo "demo: $tool is missing; run 'make test-deps'" >&2; exit 1; }
done
cargo build --quiet --bin image-reflector
bin="$root/target/debug"
kubectl_bin="$root/target/control-plane/bin/kubectl"

work=$(mktemp -d /tmp/image-reflector-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for_line() { # FILE PATTERN [SECONDS]: waits for a line in a log
  for _ in $(seq $((${3:-20} * 10))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "demo: timed out waiting for '$2' in $1:" >&2; tail -20 "$1" >&2; return 1
}

echo "== starting a local OCI registry (docker-registry)"
cat > "$work/registry.yml" <<EOF
version: 0.1
log: {level: info}
storage: {inmemory: {}}
http: {addr: 127.0.0.1:0, secret: demo}
EOF
docker-registry serve "$work/registry.yml" > "$work/registry.log" 2>&1 &
pids+=($!)
wait_for_line "$work/registry.log" "listening on"
registry=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$work/registry.log" | head -1 | sed 's/listening on //')
echo "   registry at $registry"

push_image() { # REPO TAG...
  local repo=$1; shift
  local config='{}' cdigest manifest mdigest location
  cdigest="sha256:$(printf '%s' "$config" | sha256sum | cut -d' ' -f1)"
  location=$(curl -sSf -D - -o /dev/null -X POST "http://$registry/v2/$repo/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:"{print $2}')
  case "$location" in http*) ;; *) location="http://$registry$location" ;; esac
  case "$location" in *\?*) sep='&' ;; *) sep='?' ;; esac
  curl -sSf -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' --data-binary "$config" "$location${sep}digest=$cdigest"
  manifest="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"$cdigest\",\"size\":2},\"layers\":[]}"
  for tag in "$@"; do
    curl -sSf -o /dev/null -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary "$manifest" "http://$registry/v2/$repo/manifests/$tag"
  done
}
push_image stefanprodan/podinfo 5.0.0 5.0.3 5.1.0 5.1.4 6.0.0 6.1.0-rc.1 latest
push_image fluxcd/app main-1a2b3c4-1700000001 main-5d6e7f8-1700000302 dev-0000000-1700009999
push_image library/alpine 3.17.3 3.18.9 3.19.4 3.20.3 edge latest
echo "   pushed podinfo, app and alpine with their tags"

echo "== starting the Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager $("$root/target/control-plane/bin/kube-apiserver" --version | cut -d' ' -f2))"
./scripts/control-plane.sh up "$work/cluster" > "$work/control-plane.out" 2> "$work/control-plane.log" &
pids+=($!)
wait_for_line "$work/control-plane.out" "^kubeconfig " 180
export KUBECONFIG="$work/cluster/kubeconfig"
kc() { "$kubectl_bin" --cache-dir "$work/kube-cache" "$@"; }
server=$(kc config view -o jsonpath='{.clusters[0].cluster.server}')
echo "   API server $server"

echo "== installing the CRDs, RBAC and the webhook configurations (as a user would)"
kc apply -k manifests/crds > /dev/null
kc apply -f manifests/namespace.yaml -f manifests/rbac/rbac.yaml > /dev/null
kc wait --for condition=Established --timeout 60s crd/imagerepositories.image.toolkit.fluxcd.io crd/imagepolicies.image.toolkit.fluxcd.io > /dev/null
OUT="$work/certs" ./certs/make-certs.sh > /dev/null
webhook_port=$(free_port)
# The one difference from a cluster: the webhook Service routes to this machine's
# loopback (ExternalName localhost, resolved by kube-apiserver itself) on the port the
# process listens on, instead of selecting Pods on port 443.
printf '%s\n' 'apiVersion: v1' 'kind: Service' 'metadata: {name: image-reflector-webhook, namespace: flux-system}' \
  'spec: {type: ExternalName, externalName: localhost}' | kc apply -f - > /dev/null
sed "s/port: 443/port: $webhook_port/" "$work/certs/webhook-configurations.yaml" | kc apply -f - > /dev/null
token=$(kc -n flux-system create token image-reflector-controller --duration 24h)
cat > "$work/reflector.kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters: [{name: demo, cluster: {server: "$server", certificate-authority: "$work/cluster/ca.crt"}}]
users: [{name: image-reflector-controller, user: {token: "$token"}}]
contexts: [{name: demo, context: {cluster: demo, user: image-reflector-controller}}]
current-context: demo
KUBECONFIG

echo "== starting image-reflector serve as system:serviceaccount:flux-system:image-reflector-controller"
mkdir -p "$work/data"
health_port=$(free_port)
KUBECONFIG="$work/reflector.kubeconfig" RUNTIME_NAMESPACE=flux-system RUST_LOG=${RUST_LOG:-info} "$bin/image-reflector" serve \
  --webhook-addr "127.0.0.1:$webhook_port" --health-addr "127.0.0.1:$health_port" --metrics-addr 127.0.0.1:0 \
  --tls-cert-file "$work/certs/tls.crt" --tls-key-file "$work/certs/tls.key" \
  --storage-path "$work/data" > "$work/image-reflector.log" 2>&1 &
pids+=($!)
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$health_port/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$health_port/readyz" >/dev/null || { echo "demo: image-reflector did not become ready" >&2; tail -30 "$work/image-reflector.log" >&2; exit 1; }
echo "   ready (webhook https://127.0.0.1:$webhook_port, health http://127.0.0.1:$health_port)"

echo "== kubectl apply: ImageRepositories and ImagePolicies (v1beta1, v1beta2 and v1)"
kc apply -f - >/dev/null <<'EOF'
apiVersion: v1
kind: Namespace
metadata: {name: apps, labels: {team: apps}}
EOF
sed "s|REGISTRY|$registry|g" <<'EOF' | kc apply -f -
apiVersion: image.toolkit.fluxcd.io/v1beta1
kind: ImageRepository
metadata: {name: podinfo, namespace: default}
spec:
  image: REGISTRY/stefanprodan/podinfo
  interval: 1m
  accessFrom:
    namespaceSelectors:
      - matchLabels: {team: apps}
---
apiVersion: image.toolkit.fluxcd.io/v1beta2
kind: ImageRepository
metadata: {name: app, namespace: default}
spec:
  image: REGISTRY/fluxcd/app
  interval: 5m
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata: {name: alpine, namespace: default}
spec:
  image: REGISTRY/library/alpine
  interval: 10m
  exclusionList: ["^edge$", "^latest$"]
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata: {name: podinfo, namespace: default}
spec:
  imageRepositoryRef: {name: podinfo}
  policy:
    semver: {range: 5.x}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata: {name: app-latest-main, namespace: default}
spec:
  imageRepositoryRef: {name: app}
  filterTags:
    pattern: '^main-[a-f0-9]+-(?P<ts>[0-9]+)'
    extract: '$ts'
  policy:
    numerical: {order: asc}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata: {name: alpine, namespace: default}
spec:
  imageRepositoryRef: {name: alpine}
  digestReflectionPolicy: IfNotPresent
  policy:
    semver: {range: ">=3.18 <4"}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata: {name: podinfo-from-apps, namespace: apps}
spec:
  imageRepositoryRef: {name: podinfo, namespace: default}
  policy:
    semver: {range: ">=6.0.0-0"}
EOF

echo "== a spec that can never work is refused at once:"
sed "s|REGISTRY|$registry|g" <<'EOF' | kc apply -f - 2>&1 | sed 's/^/   /' || true
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata: {name: broken, namespace: default}
spec:
  image: https://REGISTRY/stefanprodan/podinfo:6.0.0
  interval: 0s
EOF

echo "== waiting for every object to be Ready"
for _ in $(seq 100); do
  not_ready=$(kc get imagerepositories,imagepolicies -A -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -vc '^True$' || true)
  [ "$not_ready" = 0 ] && break
  sleep 0.2
done

echo
echo '$ kubectl get imagerepositories -A -o wide'
kc get imagerepositories -A -o wide
echo
echo '$ kubectl get imagepolicies -A'
kc get imagepolicies -A
echo
echo '$ kubectl get imagepolicy alpine -o jsonpath={.status.latestRef}'
kc get imagepolicy alpine -o jsonpath='{.status.latestRef}'; echo

if [ "${KEEP:-}" = 1 ]; then
  echo
  echo "Everything is running. In another shell:"
  echo "  export KUBECONFIG=$work/cluster/kubeconfig"
  echo "  $kubectl_bin get imagerepositories -A"
  echo "Logs: $work/*.log. Ctrl-C stops it all."
  wait
fi
