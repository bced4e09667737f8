#!/usr/bin/env bash
# The webhook under hostile clients (BENCHMARKS.md, "Webhook under hostile clients"): runs the
# hostile-client tests (webhook/tests/hostile.rs) against the release binary and prints each
# pattern's figures: the server's peak RSS (VmHWM), when the server closed each slow
# connection, and how long a normal review on a new connection took meanwhile. Then the
# everything-at-once run at the default limits (1,000 connections).
#
#   bash webhook/benches/hostile.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
cargo build --release -q -p rds-iam-webhook
export RDS_IAM_WEBHOOK_TEST_BIN="$CARGO_TARGET_DIR/release/rds-iam-webhook"
echo "binary: $RDS_IAM_WEBHOOK_TEST_BIN"
cargo test -p rds-iam-webhook --test hostile -- --include-ignored --test-threads 1 --nocapture 2>&1 \
  | grep -E '^figure:|^test |^test result|panicked'
