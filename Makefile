# image-reflector: build, run, test, bench. `make help` lists the targets.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: help build release test test-deps control-plane lint fmt demo certs manifests \
        bench bench-webhook bench-scan bench-scale bench-policy bench-push e2e compare-flux \
        fuzz fuzz-smoke robustness \
        chaos abuse

help: ## list targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

build: ## debug build of the workspace
	$(CARGO) build --workspace

release: ## optimised binary at target/release/image-reflector
	$(CARGO) build --release --bin image-reflector

test-deps: ## install what the tests need (apt packages), idempotently
	./scripts/install-test-deps.sh

control-plane: ## build kube-apiserver, kube-controller-manager, kubectl, etcd, Flux's controllers, crane and registry 3 from Go modules into target/control-plane/bin (cached)
	./scripts/build-control-plane.sh

test: test-deps control-plane fuzz-smoke ## install test dependencies, then run every test (the short fuzz pass, unit, integration, end to end)
	$(CARGO) build --workspace --all-targets
	$(CARGO) test --workspace --no-fail-fast

# Fuzzing (fuzz/README.md): FUZZ_SECONDS a target, FUZZ_TARGETS to pick some.
FUZZ_SECONDS ?= 60
fuzz: ## every fuzz target (cargo-fuzz, libFuzzer) for FUZZ_SECONDS (60) each; prints executions and crashes; installs cargo-fuzz if missing
	FUZZ_SECONDS=$(FUZZ_SECONDS) ./scripts/fuzz.sh $(FUZZ_TARGETS)

fuzz-smoke: ## the short fuzz pass `make test` runs: every target builds (unoptimised) and runs 3 s (its seeds and past crashes first)
	FUZZ_BUILD=smoke FUZZ_SECONDS=3 FUZZ_REPORT=target/fuzz-smoke-report.md ./scripts/fuzz.sh

robustness: test-deps control-plane ## the README's Robustness tables: fuzzing (FUZZ_SECONDS each), hostile registries, the secret scan and the RBAC listing
	FUZZ_SECONDS=$(FUZZ_SECONDS) ./scripts/fuzz.sh
	$(CARGO) test --test scanner hostile -- --nocapture --test-threads 1
	$(CARGO) test --test e2e secrets -- --nocapture --test-threads 1

e2e: test-deps control-plane ## only the end-to-end tests (real control plane + registry + image-reflector + kubectl; part of `make test`)
	$(CARGO) test --test e2e

# The differential against Flux's own controller (tests/compare/README.md): CASES is the
# directory of case files, COMPARE_ARGS more flags (--fast, --case GLOB, --jobs N, -v).
CASES ?= tests/compare/cases
compare-flux: test-deps control-plane ## Flux's image-reflector-controller and image-reflector on the same cases (CASES=DIR), field by field; fails on a difference not in tests/compare/known-differences.yaml (make test runs the fast subset)
	$(CARGO) build -p image-reflector -p test-support --bins
	$(CARGO) run --quiet -p test-support --bin compare-flux -- --cases $(CASES) $(COMPARE_ARGS)

lint: ## formatting, clippy and unused dependencies (cargo-machete, installed when missing), as CI expects
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	command -v cargo-machete >/dev/null || $(CARGO) install --locked cargo-machete
	$(CARGO) machete

fmt:
	$(CARGO) fmt --all

manifests: ## regenerate manifests/crds/ from the Rust types in src/api
	$(CARGO) run --quiet --bin image-reflector -- crds --output-dir manifests/crds

certs: ## development CA + webhook serving certificate in certs/out, and webhook configs with caBundle
	./certs/make-certs.sh

demo: ## the main job with no cluster: registry + API stand-in + image-reflector + kubectl apply
	./scripts/demo.sh

# Robustness (README, "Robustness"): figures printed, never asserted.
chaos: test-deps control-plane ## kill -9 image-reflector 50 times among 200 ImageRepositories on the real control plane, restart kube-apiserver and etcd, stop the registry, fill the disk under --storage-path (a tmpfs: needs root); prints kills survived and recovery times (about 10 min)
	$(CARGO) test --test e2e chaos_200_repositories_50_kills -- --ignored --nocapture

abuse: ## the webhook under abuse (slow-loris, 10,000 idle TLS connections, 10,000 stalled handshakes, oversized heads, HTTP/2 rapid reset, stalled bodies): legitimate p99 beside the p99 without abuse, server RSS (release build)
	CARGO=$(CARGO) ./bench/abuse.sh

bench-policy: ## tag selection over 100,000 tags per policy kind, with and without filterTags (release build)
	CARGO=$(CARGO) ./bench/policy.sh

bench-scan: test-deps control-plane ## tag listing: ours vs crane ls and skopeo list-tags (10,000 tags; 100,000 in pages of 100 and 1000): wall time, peak RSS, ratios
	CARGO=$(CARGO) ./bench/scan.sh

bench-webhook: test-deps control-plane ## webhook throughput and latency vs a bare axum+rustls baseline (wrk, fixed-rate load), and the latency the webhooks add to a create through the real API server beside a bare webhook's
	CARGO=$(CARGO) ./bench/webhook.sh

bench-push: test-deps control-plane ## push receiver: push-to-latestRef latency over 20 pushes (p50, max) and registry requests of a burst of 50 pushes
	CARGO=$(CARGO) ./bench/push.sh

bench: bench-webhook bench-scan bench-policy bench-scale bench-push ## every benchmark, one after another

# LOAD=REPOSxTAGS picks the load (10000x100 is the second); bench/scale.sh lists the knobs.
bench-scale: test-deps control-plane ## ours vs Flux's controller (Badger and FluxStorage) on the real control plane, 1,000 ImageRepositories x 1,000 tags (LOAD=10000x100): time to Ready, peak RSS, writes per rescan, registry requests after restart, as ratios
	CARGO=$(CARGO) ./bench/scale.sh
