# image-reflector: build, run, test, bench. `make help` lists the targets.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: help build release test test-deps lint fmt demo certs manifests \
        bench bench-webhook bench-scan bench-scale bench-policy standin

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

build: ## debug build of the workspace
	$(CARGO) build --workspace

release: ## optimised binary at target/release/image-reflector
	$(CARGO) build --release --bin image-reflector

test-deps: ## install what the tests need (apt packages), idempotently
	./scripts/install-test-deps.sh

test: test-deps ## install test dependencies, then run every test (unit, integration, end to end)
	$(CARGO) build --workspace --all-targets
	$(CARGO) test --workspace --no-fail-fast

lint: ## formatting and clippy, as CI expects
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

manifests: ## regenerate manifests/crds/ from the Rust types in src/api
	$(CARGO) run --quiet --bin image-reflector -- crds --output-dir manifests/crds

certs: ## development CA + webhook serving certificate in certs/out, and webhook configs with caBundle
	./certs/make-certs.sh

standin: ## run the in-memory Kubernetes API stand-in with the project's CRDs (kubeconfig: target/kube-standin.kubeconfig)
	$(CARGO) run --quiet -p kube-standin -- --crds manifests/crds --kubeconfig-out target/kube-standin.kubeconfig $(STANDIN_ARGS)

demo: ## the main job with no cluster: registry + API stand-in + image-reflector + kubectl apply
	./scripts/demo.sh

bench-scale: ## 1,000 ImageRepositories x 1,000 tags: time to Ready, peak RSS, writes per rescan, registry requests after restart
	./bench/scale.sh
