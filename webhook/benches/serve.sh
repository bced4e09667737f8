# Sourced by load.sh and hostile.sh (with BIN set, from the repository root): makes a
# temporary directory (TMP, removed on exit), a certificate with `certs`, and starts
# `"$BIN" serve` on loopback, logging to /dev/null as in production; returns once it answers.
# Sets PORT, MPORT, HOST and PID.
TMP="$(mktemp -d)"
PID=""
cleanup() { [[ -n "$PID" ]] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
"$BIN" certs --out "$TMP/certs" --base . >/dev/null
PORT=18443; MPORT=19090
HOST=rds-iam-webhook.rds-iam-system.svc
"$BIN" serve --listen 127.0.0.1:$PORT --metrics-listen 127.0.0.1:$MPORT \
  --tls-cert "$TMP/certs/tls.crt" --tls-key "$TMP/certs/tls.key" >/dev/null 2>"$TMP/stderr" &
PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$MPORT/metrics" >/dev/null && break; sleep 0.1; done
