#!/usr/bin/env bash
# Every test of the project. Installs what is missing first (testenv/setup.sh);
# a missing dependency is an error, never a skipped test. Needs root (apt, the
# test PostgreSQL runs as `postgres`, a PAM service file in /etc/pam.d).
set -euo pipefail
cd "$(dirname "$0")/.."
# A clean build does not need incremental caches (several GB on disk).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

step() { printf '\n==> %s\n' "$*"; }

step "installing test dependencies (testenv/setup.sh)"
bash testenv/setup.sh

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "building the binaries the end-to-end tests run"
cargo build --workspace --bins --locked

step "make images: static binaries, buildah, OCI archives in target/images (the e2e runs the agent image with runc)"
bash scripts/images.sh

step "cargo test (unit, integration, end to end)"
cargo test --workspace --locked --no-fail-fast

step "manifests: kubectl kustomize + kubernetes-validate --strict (1.30, 1.33)"
bash testenv/validate-manifests.sh

step "Helm chart: helm lint, helm template, kubernetes-validate, parity with kustomize, schema"
bash testenv/validate-chart.sh

step "all tests passed"
