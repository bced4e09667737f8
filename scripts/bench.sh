#!/usr/bin/env bash
# Every figure of BENCHMARKS.md, one after the other (about 17 minutes; run on an
# otherwise idle machine). Installs what the HTTPS runs need when it is missing:
# oha from crates.io (the webhook load test), Debian's wrk (the rotation test) and
# valgrind (instruction counts).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
command -v oha >/dev/null || cargo install --locked oha --version 1.16.0
echo "#### token agent"; bash scripts/bench-agent.sh
echo "#### webhook handler instructions per review (callgrind)"
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind; }
bash webhook/benches/instructions.sh deployment-pod.json
bash webhook/benches/instructions.sh irsa-pod.json
echo "#### webhook handler (criterion)"
cargo bench --locked -p rds-iam-webhook --bench handler -- --warm-up-time 2 --measurement-time 6 2>&1 | grep -E '^(handler|parts)|time:'
echo "#### webhook over HTTPS"; bash webhook/benches/load.sh 30
echo "#### webhook under load with 10 certificate rotations"; bash scripts/load-rotation.sh 60
echo "#### webhook under hostile clients"; bash webhook/benches/hostile.sh
echo "#### proxy mode (PostgreSQL): pgbench through the socket and direct, agent memory"
bash tokenagent/benches/proxy-pg.sh
echo "#### binary sizes"
stat -c '%s bytes  %n' "${CARGO_TARGET_DIR:-target}/release/rds-iam-tokenagent" "${CARGO_TARGET_DIR:-target}/release/rds-iam-webhook"
