#!/usr/bin/env bash
# Issue 5 "webhook under load": ~2,000 reviews/s over HTTPS keep-alive (wrk) for
# SECONDS (default 60) while the serving certificate is rotated 10 times the way
# the kubelet updates a Secret volume (new hidden dir + atomic `..data` symlink
# swap). A second client opens a NEW TLS connection every 50 ms, verifying the
# certificate against the CA and the service name, so every rotation is seen by
# fresh handshakes. Prints wrk's totals, p50/p99, and the new-connection errors.
# Loopback only. Needs wrk, openssl, curl (testenv/setup.sh does not install wrk:
# apt-get install wrk).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
SECS="${1:-60}"
ROTATIONS=10
for c in wrk openssl curl; do command -v "$c" >/dev/null || { echo "load-rotation: $c is missing" >&2; exit 2; }; done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
cargo build --release -q --locked -p rds-iam-webhook
BIN="$CARGO_TARGET_DIR/release/rds-iam-webhook"
TMP="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
SVC=rds-iam-webhook.rds-iam-system.svc

# One CA for the whole run (as cert-manager keeps its CA); a new leaf per rotation.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=load-ca \
  -keyout "$TMP/ca.key" -out "$TMP/ca.crt" 2>/dev/null
leaf() { # $1 = dir
  mkdir -p "$1"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$SVC" \
    -keyout "$1/tls.key" -out "$1/req.csr" 2>/dev/null
  openssl x509 -req -in "$1/req.csr" -CA "$TMP/ca.crt" -CAkey "$TMP/ca.key" -CAcreateserial -days 1 \
    -extfile <(printf 'subjectAltName=DNS:%s\n' "$SVC") -out "$1/tls.crt" 2>/dev/null
  rm -f "$1/req.csr"
}
SECRET="$TMP/secret"
mkdir -p "$SECRET"
leaf "$SECRET/..2026_gen0"
ln -s ..2026_gen0 "$SECRET/..data"
ln -s ..data/tls.crt "$SECRET/tls.crt"
ln -s ..data/tls.key "$SECRET/tls.key"

PORT=28443; MPORT=29090
"$BIN" serve --listen 127.0.0.1:$PORT --metrics-listen 127.0.0.1:$MPORT \
  --tls-cert "$SECRET/tls.crt" --tls-key "$SECRET/tls.key" >/dev/null 2>"$TMP/stderr" &
PIDS+=($!)
WPID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$MPORT/metrics" >/dev/null && break; sleep 0.1; done

# New-connection client: every request is a fresh TLS handshake, verified.
( ok=0; fail=0; end=$((SECONDS + SECS))
  while ((SECONDS < end)); do
    if curl -sf --max-time 2 --cacert "$TMP/ca.crt" --resolve "$SVC:$PORT:127.0.0.1" \
         -o /dev/null "https://$SVC:$PORT/healthz"; then ok=$((ok + 1)); else fail=$((fail + 1)); fi
    sleep 0.05
  done
  echo "NEWCONN ok=$ok failed=$fail" ) >"$TMP/newconn" &
PIDS+=($!)
NPID=$!

# Rotations, evenly spread.
( for i in $(seq "$ROTATIONS"); do
    sleep "$(awk -v s="$SECS" -v r="$ROTATIONS" 'BEGIN{printf "%.2f", s/(r+1)}')"
    leaf "$SECRET/..2026_gen$i"
    ln -s "..2026_gen$i" "$SECRET/..data_tmp"
    mv -T "$SECRET/..data_tmp" "$SECRET/..data"
    rm -rf "$SECRET/..2026_gen$((i - 1))"
  done ) &
PIDS+=($!)

DELAY_MS=10 wrk -t1 -c21 -d"${SECS}s" -s webhook/benches/wrk-mutate.lua "https://127.0.0.1:$PORT/mutate" \
  | grep -E '^(SUMMARY|LATENCY_MS)'
wait "$NPID" || true
cat "$TMP/newconn"
curl -s "http://127.0.0.1:$MPORT/metrics" | grep -E '^rds_iam_webhook_(cert_reloads_total|reviews_total)'
awk '/^(VmRSS|VmHWM)/ {printf "%s %d MiB  ", $1, $2/1024} END {print ""}' "/proc/$WPID/status"
