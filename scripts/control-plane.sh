#!/usr/bin/env bash
# A real Kubernetes control plane on 127.0.0.1, for tests, benchmarks and the demo:
# etcd, kube-apiserver and kube-controller-manager as built by `make control-plane`
# (scripts/build-control-plane.sh) into target/control-plane/bin.
#
#   scripts/control-plane.sh up DIR        start; print "kubeconfig DIR/kubeconfig" once /readyz
#                                          answers ok; run until SIGTERM or SIGINT, then stop
#                                          everything it started (exit 0). If a component dies,
#                                          print the tail of its log and exit 1.
#   scripts/control-plane.sh stop DIR COMPONENT
#                                          stop one component (etcd, kube-apiserver or
#                                          kube-controller-manager) of the control plane
#                                          running in DIR, and keep it stopped;
#   scripts/control-plane.sh start DIR COMPONENT
#                                          start it again on the same ports and data; returns
#                                          once the API server is ready again;
#   scripts/control-plane.sh restart DIR COMPONENT    both.
#   scripts/control-plane.sh down DIR      stop the control plane running in DIR.
#
# DIR keeps the state and logs: pki/ (CA, serving and client certificates, the service
# account key), etcd/ (data), logs/COMPONENT.log, kubeconfig (admin: a client certificate
# in system:masters), ca.crt (the cluster CA), ports.env, supervisor.pid.
#
# Environment: CONTROL_PLANE_BIN (directory of the binaries; default
# target/control-plane/bin of this repository), STOP_ON_EOF=1 (also stop when standard
# input closes: a test harness that dies takes its control plane with it),
# KUBE_APISERVER_ARGS, KUBE_CONTROLLER_MANAGER_ARGS (extra flags, word-split).
set -euo pipefail
# Loopback only: no component may send anything through a proxy.
unset HTTP_PROXY HTTPS_PROXY ALL_PROXY NO_PROXY http_proxy https_proxy all_proxy no_proxy

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${CONTROL_PLANE_BIN:-$root/target/control-plane/bin}"
components=(etcd kube-apiserver kube-controller-manager)

die() { echo "control-plane: $*" >&2; exit 1; }

usage() {
  sed -n '2,27p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# --- certificates -------------------------------------------------------------------

make_pki() {
  local pki="$1"
  mkdir -p "$pki"
  [ -f "$pki/done" ] && return 0
  (
    cd "$pki"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -keyout ca.key -out ca.crt \
      -subj "/CN=image-reflector test cluster CA" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    leaf() { # name subject extensions...
      local name="$1" subj="$2"; shift 2
      openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "$subj" 2>/dev/null
      printf '%s\n' "$@" >"$name.ext"
      openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
        -out "$name.crt" -extfile "$name.ext" 2>/dev/null
      rm -f "$name.csr" "$name.ext"
    }
    leaf apiserver "/CN=kube-apiserver" \
      "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.0.0.1" \
      "extendedKeyUsage=serverAuth" "keyUsage=critical,digitalSignature,keyEncipherment"
    leaf admin "/O=system:masters/CN=admin" \
      "extendedKeyUsage=clientAuth" "keyUsage=critical,digitalSignature,keyEncipherment"
    leaf controller-manager "/CN=system:kube-controller-manager" \
      "extendedKeyUsage=clientAuth" "keyUsage=critical,digitalSignature,keyEncipherment"
    openssl genrsa -out service-account.key 2048 2>/dev/null
    openssl rsa -in service-account.key -pubout -out service-account.pub 2>/dev/null
    touch done
  )
}

write_kubeconfig() { # file user cert key
  local file="$1" user="$2" cert="$3" key="$4"
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: image-reflector-test
    cluster:
      server: https://127.0.0.1:${APISERVER_PORT}
      certificate-authority: ${dir}/pki/ca.crt
users:
  - name: ${user}
    user:
      client-certificate: ${cert}
      client-key: ${key}
contexts:
  - name: ${user}@image-reflector-test
    context:
      cluster: image-reflector-test
      user: ${user}
      namespace: default
current-context: ${user}@image-reflector-test
EOF
}

# --- components ---------------------------------------------------------------------

start_component() { # name
  local name="$1" log="$dir/logs/$1.log"
  local pki="$dir/pki"
  echo "--- started $(date -u +%FT%TZ)" >>"$log"
  case "$name" in
    etcd)
      "$bin/etcd" --name default --data-dir "$dir/etcd" \
        --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster "default=http://127.0.0.1:$ETCD_PEER_PORT" \
        --unsafe-no-fsync --log-level warn >>"$log" 2>&1 &
      ;;
    kube-apiserver)
      # shellcheck disable=SC2086
      "$bin/kube-apiserver" \
        --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
        --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
        --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
        --client-ca-file "$pki/ca.crt" \
        --requestheader-client-ca-file "$pki/ca.crt" --requestheader-allowed-names front-proxy-client \
        --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
        --requestheader-extra-headers-prefix X-Remote-Extra- \
        --service-cluster-ip-range 10.0.0.0/24 \
        --service-account-issuer https://kubernetes.default.svc.cluster.local \
        --service-account-signing-key-file "$pki/service-account.key" \
        --service-account-key-file "$pki/service-account.pub" \
        --api-audiences https://kubernetes.default.svc.cluster.local \
        --authorization-mode RBAC \
        --endpoint-reconciler-type none \
        --cert-dir "$pki" \
        --profiling=false \
        ${KUBE_APISERVER_ARGS:-} >>"$log" 2>&1 &
      ;;
    kube-controller-manager)
      # shellcheck disable=SC2086
      "$bin/kube-controller-manager" \
        --kubeconfig "$dir/controller-manager.kubeconfig" \
        --authentication-kubeconfig "$dir/controller-manager.kubeconfig" \
        --authorization-kubeconfig "$dir/controller-manager.kubeconfig" \
        --secure-port 0 \
        --leader-elect=false \
        --controllers namespace-controller,garbage-collector-controller,serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller \
        --service-account-private-key-file "$pki/service-account.key" \
        --root-ca-file "$pki/ca.crt" \
        --use-service-account-credentials=true \
        --profiling=false \
        ${KUBE_CONTROLLER_MANAGER_ARGS:-} >>"$log" 2>&1 &
      ;;
    *) die "unknown component $name" ;;
  esac
  echo $! >"$dir/$name.pid"
}

curl_api() { # path
  curl -fsS --max-time 5 --cacert "$dir/pki/ca.crt" --cert "$dir/pki/admin.crt" --key "$dir/pki/admin.key" \
    "https://127.0.0.1:${APISERVER_PORT}$1"
}

wait_ready() { # seconds [supervise]
  local deadline=$((SECONDS + $1))
  until [ "$(curl_api /readyz 2>/dev/null)" = "ok" ]; do
    [ "${2:-}" = supervise ] && for name in "${components[@]}"; do
      local pid
      pid="$(cat "$dir/$name.pid" 2>/dev/null || true)"
      if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null && [ ! -e "$dir/restart-$name" ] && [ ! -e "$dir/stopped-$name" ]; then
        # Another process took a port between free_port and the bind: the caller
        # picks new ports and starts again.
        grep -q "address already in use" "$dir/logs/$name.log" 2>/dev/null && return 2
        failed "$name"
      fi
    done
    [ $SECONDS -lt $deadline ] || { tail_logs; die "kube-apiserver was not ready within $1 s"; }
    sleep 0.2
  done
}

tail_logs() {
  for name in "${components[@]}"; do
    echo "control-plane: last lines of $dir/logs/$name.log:" >&2
    tail -n 20 "$dir/logs/$name.log" >&2 || true
  done
}

failed() { # component
  echo "control-plane: $1 exited; last lines of $dir/logs/$1.log:" >&2
  tail -n 40 "$dir/logs/$1.log" >&2 || true
  stop_all
  exit 1
}

stop_all() {
  local pids=()
  for name in kube-controller-manager kube-apiserver etcd; do
    local pid
    pid="$(cat "$dir/$name.pid" 2>/dev/null || true)"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -f "$dir/supervisor.pid"
}

# --- commands -----------------------------------------------------------------------

up() {
  for name in "${components[@]}"; do
    [ -x "$bin/$name" ] || die "$bin/$name is missing; run 'make control-plane' first"
  done
  command -v openssl >/dev/null || die "openssl is missing (apt-get install openssl)"
  command -v curl >/dev/null || die "curl is missing (apt-get install curl)"
  mkdir -p "$dir/logs" "$dir/etcd"
  dir="$(cd "$dir" && pwd)"
  if [ -f "$dir/supervisor.pid" ] && kill -0 "$(cat "$dir/supervisor.pid")" 2>/dev/null; then
    die "a control plane already runs in $dir (pid $(cat "$dir/supervisor.pid"))"
  fi
  make_pki "$dir/pki"
  cp "$dir/pki/ca.crt" "$dir/ca.crt"
  echo $$ >"$dir/supervisor.pid"

  trap 'stop_all; exit 0' TERM INT
  if [ "${STOP_ON_EOF:-}" = 1 ]; then
    # Standard input closes when whoever started us dies: stop then too. (fd 3: an
    # asynchronous list's own standard input is /dev/null.)
    exec 3<&0
    ( cat <&3 >/dev/null || true; kill -TERM $$ 2>/dev/null ) &
  fi

  local attempt
  for attempt in 1 2 3; do
    if [ ! -f "$dir/ports.env" ]; then
      {
        echo "ETCD_PORT=$(free_port)"
        echo "ETCD_PEER_PORT=$(free_port)"
        echo "APISERVER_PORT=$(free_port)"
      } >"$dir/ports.env"
    fi
    # shellcheck disable=SC1091
    source "$dir/ports.env"
    write_kubeconfig "$dir/kubeconfig" admin "$dir/pki/admin.crt" "$dir/pki/admin.key"
    write_kubeconfig "$dir/controller-manager.kubeconfig" kube-controller-manager \
      "$dir/pki/controller-manager.crt" "$dir/pki/controller-manager.key"
    start_component etcd
    start_component kube-apiserver
    local ready=0
    wait_ready 120 supervise || ready=$?
    [ "$ready" = 0 ] && break
    echo "control-plane: a port was taken by another process; trying new ports ($attempt of 3)" >&2
    stop_all
    echo $$ >"$dir/supervisor.pid"
    rm -rf "$dir/ports.env" "$dir/etcd"
    mkdir -p "$dir/etcd"
    [ "$attempt" -lt 3 ] || die "no free ports after 3 attempts"
  done
  start_component kube-controller-manager
  echo "kubeconfig $dir/kubeconfig"

  # Supervise: a component that exits is restarted when `restart` asked for it (the
  # marker file), and otherwise ends the control plane with its log.
  while true; do
    for name in "${components[@]}"; do
      local pid
      pid="$(cat "$dir/$name.pid")"
      if ! kill -0 "$pid" 2>/dev/null; then
        wait "$pid" 2>/dev/null || true
        if [ -e "$dir/stopped-$name" ]; then
          :
        elif [ -e "$dir/restart-$name" ]; then
          start_component "$name"
          rm -f "$dir/restart-$name"
        else
          failed "$name"
        fi
      fi
    done
    sleep 0.2 &
    wait $! || true
  done
}

running() {
  [ -f "$dir/supervisor.pid" ] && kill -0 "$(cat "$dir/supervisor.pid")" 2>/dev/null \
    || die "no control plane runs in $dir"
  # shellcheck disable=SC1091
  source "$dir/ports.env"
}

known() { # component
  case " ${components[*]} " in *" $1 "*) ;; *) die "unknown component $1 (one of ${components[*]})" ;; esac
}

stop_one() { # component: stop it and keep it stopped until start_one
  local name="$1" pid
  known "$name"; running
  pid="$(cat "$dir/$name.pid")"
  touch "$dir/stopped-$name"
  kill -TERM "$pid" 2>/dev/null || true
  # kube-apiserver's graceful shutdown can take 10 s or more; 3 s, then SIGKILL.
  for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
}

start_one() { # component: start it again on the same ports and data; wait until ready
  local name="$1"
  known "$name"; running
  [ -e "$dir/stopped-$name" ] || die "$name was not stopped with 'stop'"
  touch "$dir/restart-$name"
  rm -f "$dir/stopped-$name"
  local deadline=$((SECONDS + 30))
  while [ -e "$dir/restart-$name" ]; do
    [ $SECONDS -lt $deadline ] || die "the supervisor did not start $name within 30 s"
    sleep 0.1
  done
  wait_ready 120
}

down() {
  [ -f "$dir/supervisor.pid" ] || die "no control plane runs in $dir"
  local pid
  pid="$(cat "$dir/supervisor.pid")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  die "the control plane (pid $pid) did not stop within 15 s"
}

[ $# -ge 2 ] || usage
cmd="$1"
dir="$2"
case "$cmd" in
  up) [ $# -eq 2 ] || usage; up ;;
  stop) [ $# -eq 3 ] || usage; dir="$(cd "$dir" && pwd)"; stop_one "$3" ;;
  start) [ $# -eq 3 ] || usage; dir="$(cd "$dir" && pwd)"; start_one "$3" ;;
  restart) [ $# -eq 3 ] || usage; dir="$(cd "$dir" && pwd)"; stop_one "$3"; start_one "$3" ;;
  down) [ $# -eq 2 ] || usage; dir="$(cd "$dir" && pwd)"; down ;;
  *) usage ;;
esac
