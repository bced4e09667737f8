#!/usr/bin/env bash
# The proxy mode's figures for BENCHMARKS.md ("Proxy mode (PostgreSQL)"):
# pgbench select-only throughput through the socket against direct TLS, the
# connect latency pgbench -C adds, and the agent's memory idle and with 1,000
# idle proxied sessions. Builds the release agent, then runs the ignored
# benchmarks of tests/tests/proxy_pg_bench.rs against it, one at a time (they
# print their figures and check the targets). About 8 minutes with the
# defaults; run on an otherwise idle machine, after testenv/setup.sh.
#
#   RDS_IAM_BENCH_PAIRS=5 RDS_IAM_BENCH_SECONDS=20 bash tokenagent/benches/proxy-pg.sh [FILTER]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --locked -p rds-iam-tokenagent
export RDS_IAM_AGENT_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/rds-iam-tokenagent"
cargo test --workspace --locked --test proxy_pg_bench -- --ignored --nocapture --test-threads 1 "$@"
