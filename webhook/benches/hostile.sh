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

# A 3 MiB review (the API server's largest) over HTTP/1.1 and HTTP/2, one at a time: the cost
# of the 64 KiB HTTP/2 flow-control windows and the byte budget for the largest legal body.
BIN="$RDS_IAM_WEBHOOK_TEST_BIN"
command -v oha >/dev/null || { echo "hostile.sh: oha is missing (cargo install oha --locked)" >&2; exit 2; }
# shellcheck source=webhook/benches/serve.sh
source webhook/benches/serve.sh
python3 - "$TMP/big.json" <<'PY'
import json, sys
r = json.load(open("webhook/tests/fixtures/deployment-pod.json"))
r["request"]["object"]["metadata"]["annotations"]["example.com/blob"] = "x" * (3 * 1024 * 1024 - 10000)
open(sys.argv[1], "w").write(json.dumps(r))
PY
for proto in http1 http2; do
  flags=(); [[ $proto == http2 ]] && flags=(--http2)
  oha "${flags[@]}" -n 50 -c 1 --no-tui --output-format json -m POST -D "$TMP/big.json" -T application/json \
    --cacert "$TMP/certs/ca.crt" --connect-to "$HOST:$PORT:127.0.0.1:$PORT" "https://$HOST:$PORT/mutate" \
    | python3 -c "import json, sys; d = json.load(sys.stdin); p = d['latencyPercentiles']; \
print('figure: 3 MiB review over $proto, one at a time: ' + str(d['statusCodeDistribution']) \
      + ' p50 %.1f ms, p99 %.1f ms' % (1000 * p['p50'], 1000 * p['p99']))"
done
awk '/^VmHWM/ {printf "figure: 3 MiB reviews: peak RSS %.1f MiB\n", $2 / 1024}' "/proc/$PID/status"
