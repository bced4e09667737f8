#!/usr/bin/env bash
# HTTPS load test of `rds-iam-webhook serve` with wrk (Debian package `wrk`), keep-alive,
# on loopback only. Prints idle RSS, then for each run wrk's summary and the webhook's RSS.
#
#   bash webhook/benches/load.sh [SECONDS]        # default 30 s per run
#
# Runs: (1) about 2,000 reviews/s (23 connections, each pausing 10 ms between requests),
#       (2) saturation (1 wrk thread, 32 connections, no pause).
# The webhook logs JSON to /dev/null as in production (one line per review).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
SECS="${1:-30}"
command -v wrk >/dev/null || { echo "load.sh: wrk is missing: apt-get install wrk" >&2; exit 2; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
cargo build --release -q -p rds-iam-webhook
BIN="$CARGO_TARGET_DIR/release/rds-iam-webhook"
TMP="$(mktemp -d)"
PID=""
cleanup() { [[ -n "$PID" ]] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
"$BIN" certs --out "$TMP/certs" --base . >/dev/null
PORT=18443; MPORT=19090
"$BIN" serve --listen 127.0.0.1:$PORT --metrics-listen 127.0.0.1:$MPORT \
  --tls-cert "$TMP/certs/tls.crt" --tls-key "$TMP/certs/tls.key" >/dev/null 2>"$TMP/stderr" &
PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$MPORT/metrics" >/dev/null && break; sleep 0.1; done
rss() { awk '/^(VmRSS|VmHWM)/ {printf "%s %d MiB  ", $1, $2/1024} END {print ""}' "/proc/$PID/status"; }
echo "idle: $(rss)"
URL="https://127.0.0.1:$PORT/mutate"
run() {
  local label="$1"; shift
  local peak=0
  ( while sleep 1; do awk '/^VmRSS/ {print $2}' "/proc/$PID/status"; done ) >"$TMP/rss.$label" &
  local sampler=$!
  "$@" "$URL" | grep -E '^(SUMMARY|LATENCY_MS)'
  kill "$sampler" 2>/dev/null || true
  peak=$(sort -n "$TMP/rss.$label" | tail -1)
  echo "$label: peak VmRSS during run $((peak / 1024)) MiB; after: $(rss)"
  # Server-side handler time (body read to response built), cumulative since start.
  curl -s "http://127.0.0.1:$MPORT/metrics" | awk -F'[{}" ]+' '
    /^rds_iam_webhook_review_duration_seconds_bucket/ {b[$3] = $4; order[n++] = $3}
    /^rds_iam_webhook_review_duration_seconds_count/ {total = $2}
    END {printf "handler time (cumulative):"; for (i = 0; i < n; i++) if (order[i] + 0 <= 0.001) printf " <=%gs %.1f%%", order[i], 100 * b[order[i]] / total; print ""}'
}
echo "== about 2,000 reviews/s for ${SECS}s"
DELAY_MS=10 run rated wrk -t1 -c23 -d"${SECS}s" -s webhook/benches/wrk-mutate.lua
echo "== saturation for ${SECS}s"
run saturation wrk -t1 -c32 -d"${SECS}s" -s webhook/benches/wrk-mutate.lua
echo "== webhook counters"
curl -s "http://127.0.0.1:$MPORT/metrics" | grep -E '^rds_iam_webhook_reviews_total'
