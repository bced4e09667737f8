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

step "cargo fmt --check (the workspace, and the fuzz crate, which has its own workspace)"
cargo fmt --all --check
cargo fmt --manifest-path fuzz/Cargo.toml --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "building the binaries the end-to-end tests run"
cargo build --workspace --bins --locked

step "make images: static binaries, buildah, OCI archives in target/images (the e2e runs the agent image with runc)"
bash scripts/images.sh

step "cargo test (unit, integration, end to end)"
cargo test --workspace --locked --no-run
# The proxy's run across token refreshes keeps a session open for 3+ minutes,
# mostly asleep: it runs beside the others instead of after them, and its
# output follows theirs.
slow_test=a_session_outlives_three_refreshes
slow_log="$(mktemp)"
cargo test --workspace --locked --test proxy_pg_expiry >"$slow_log" 2>&1 &
slow_pid=$!
status=0
cargo test --workspace --locked --no-fail-fast -- --skip "$slow_test" || status=$?
step "cargo test --test proxy_pg_expiry (ran beside the others)"
wait "$slow_pid" || status=$?
cat "$slow_log"
rm -f "$slow_log"
[ "$status" -eq 0 ] || exit "$status"

step "manifests: kubectl kustomize + kubernetes-validate --strict (1.30, 1.33)"
bash testenv/validate-manifests.sh

step "Helm chart: helm lint, helm template, kubernetes-validate, parity with kustomize, schema"
bash testenv/validate-chart.sh

step "all tests passed"
