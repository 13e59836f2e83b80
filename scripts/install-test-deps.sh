#!/usr/bin/env bash
# Installs what the test suite and benchmarks need, idempotently: Debian packages (the
# real OCI registry, htpasswd, skopeo, tinyproxy, microsocks, wrk, openssl, curl) and
# moto[server] for python3 with pip (the AWS emulator of the cloud login tests). The
# Go-built components (kube-apiserver, etcd, kubectl, Flux's controllers...) come from
# scripts/build-control-plane.sh (make control-plane), which needs Go, checked here.
# Safe to run again: it installs only what is missing.
set -euo pipefail

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }
have docker-registry || need_pkgs+=(docker-registry)
have htpasswd || need_pkgs+=(apache2-utils)
have skopeo || need_pkgs+=(skopeo)
have tinyproxy || need_pkgs+=(tinyproxy)
have microsocks || need_pkgs+=(microsocks)
have wrk || need_pkgs+=(wrk)
have openssl || need_pkgs+=(openssl)
have curl || need_pkgs+=(curl)

if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "install-test-deps: installing ${need_pkgs[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
fi

# moto: STS and ECR for the AWS login tests (test-support/src/moto.rs runs it).
if ! python3 -c 'import moto.server, werkzeug, cryptography' >/dev/null 2>&1; then
  if ! have python3; then
    echo "install-test-deps: python3 is not on PATH; the AWS login tests run moto (PyPI moto[server]) with it" >&2
    exit 1
  fi
  echo "install-test-deps: installing moto[server] with pip"
  if ! python3 -m pip install --quiet 'moto[server]>=5,<6'; then
    echo "install-test-deps: pip could not install moto[server] (is pip present, and PyPI reachable?);" >&2
    echo "  the AWS login tests need it: python3 -m pip install 'moto[server]'" >&2
    exit 1
  fi
fi

if ! have go; then
  echo "install-test-deps: go is not on PATH; make control-plane builds kube-apiserver, etcd," >&2
  echo "  kubectl and Flux's controllers from Go modules and needs Go 1.26 (these machines have it)" >&2
  exit 1
fi
echo "install-test-deps: all present (docker-registry, htpasswd, skopeo, tinyproxy, microsocks, wrk, openssl, curl, moto, go)"
