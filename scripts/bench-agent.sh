#!/usr/bin/env bash
# The token agent's figures for BENCHMARKS.md: signing (criterion), --once wall
# time and peak RSS, idle RSS and CPU of the long-running agent, binary size.
# Static env credentials, files on tmpfs (like the pod's memory-backed emptyDir).
set -euo pipefail
cd "$(dirname "$0")/.."
IDLE_SECONDS="${IDLE_SECONDS:-60}"

cargo build --release --locked -p rds-iam-tokenagent
BIN="${CARGO_TARGET_DIR:-target}/release/rds-iam-tokenagent"
WORK="$(mktemp -d /dev/shm/rds-iam-bench.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
agent_env=(env -i PATH="$PATH" HOME="$WORK" AWS_EC2_METADATA_DISABLED=true
  AWS_ACCESS_KEY_ID=AKIDEXAMPLE AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY
  RDS_IAM_HOST=mydb.c9akciq32.us-east-1.rds.amazonaws.com RDS_IAM_USER=app_user RDS_IAM_DIR="$WORK/dir")

echo "== binary size"
stat -c '%s bytes  %n' "$BIN"

echo "== --once: wall time over 200 runs (files on tmpfs)"
"${agent_env[@]}" "$BIN" --once 2>/dev/null
start=$(date +%s%N)
for _ in $(seq 200); do "${agent_env[@]}" "$BIN" --once 2>/dev/null; done
end=$(date +%s%N)
echo "mean wall per --once: $(( (end - start) / 200000 )) us"

echo "== --once: peak RSS (/usr/bin/time -v)"
"${agent_env[@]}" /usr/bin/time -v "$BIN" --once 2>&1 >/dev/null | grep -E 'Maximum resident|Elapsed'

echo "== long-running agent: idle RSS and CPU over ${IDLE_SECONDS}s"
"${agent_env[@]}" "$BIN" --health-addr 127.0.0.1:0 2>/dev/null &
pid=$!
sleep "$IDLE_SECONDS"
hz=$(getconf CLK_TCK)
read -r utime stime < <(awk '{print $14, $15}' "/proc/$pid/stat")
grep -E 'VmRSS|VmHWM' "/proc/$pid/status"
echo "CPU: $(( (utime + stime) * 1000 / hz )) ms in ${IDLE_SECONDS}s"
kill -TERM "$pid"; wait "$pid" || true

echo "== signing one token (criterion)"
cargo bench --locked -p rds-iam-tokenagent --bench sign -- --warm-up-time 1 --measurement-time 5 2>&1 | grep -E '^sign|time:'
