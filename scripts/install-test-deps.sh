#!/usr/bin/env bash
# Installs what the test suite and benchmarks need, idempotently: Debian packages (the
# real OCI registry, htpasswd, skopeo, tinyproxy, microsocks, wrk, openssl) and kubectl's
# presence is checked. Safe to run again: it installs only what is missing.
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

if ! have kubectl; then
  echo "install-test-deps: kubectl is not on PATH and is not in Debian's archive;" >&2
  echo "  install kubectl v1.32 (the end-to-end tests drive the real kubectl)" >&2
  exit 1
fi
echo "install-test-deps: all present (docker-registry, htpasswd, skopeo, tinyproxy, microsocks, wrk, openssl, kubectl)"
