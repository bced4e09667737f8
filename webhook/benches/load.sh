#!/usr/bin/env bash
# HTTPS load test of `rds-iam-webhook serve` with oha (crates.io: cargo install oha --locked),
# keep-alive, on loopback only. Prints idle RSS, then for each run oha's figures, the CPU time
# the hypervisor stole from this VM during the run, and the webhook's RSS.
#
#   bash webhook/benches/load.sh [SECONDS]        # default 30 s per run
#
# Runs: (1) a constant 2,000 reviews/s (oha -q 2000, 16 connections, latency-corrected: a
#           request's latency counts from the moment it was due, so a stall is not hidden by
#           the generator waiting for it); a 3 s warm-up run at the same rate comes first.
#           Besides oha's figures it prints them without the first second, during which oha
#           opens its 16 connections (its connection setup is slow: CLIENT_CONNECT_MS);
#       (1b) the same over HTTP/2 (2 connections, up to 8 streams each), which is how the API
#           server talks to webhooks that offer h2;
#       (2) the same constant load on GET /healthz, which does no handler work: a control that
#           shows the latency this machine adds at that moment (a VM whose host is busy delays
#           every wake-up; the runs print the CPU time the hypervisor stole meanwhile);
#       (3) saturation (32 connections, no rate limit).
# The client verifies the server certificate against the CA of `rds-iam-webhook certs`, using
# the Service name the API server uses. The webhook logs JSON to /dev/null as in production
# (one line per review).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
SECS="${1:-30}"
for c in oha python3 curl; do
  command -v "$c" >/dev/null || { echo "load.sh: $c is missing (oha: cargo install oha --locked)" >&2; exit 2; }
done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
cargo build --release -q -p rds-iam-webhook
BIN="$CARGO_TARGET_DIR/release/rds-iam-webhook"
# shellcheck source=webhook/benches/serve.sh
source webhook/benches/serve.sh
rss() { awk '/^(VmRSS|VmHWM)/ {printf "%s %d MiB  ", $1, $2/1024} END {print ""}' "/proc/$PID/status"; }
# steal and busy jiffies of all CPUs, from /proc/stat
cpu() { awk '/^cpu / {print $9, $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
echo "idle: $(rss)"
# oha_ PATH [oha flags]: POST the review to /mutate, or GET any other path.
oha_() {
  local path="$1"; shift
  [[ "$path" == /mutate ]] && set -- "$@" -m POST -D webhook/tests/fixtures/deployment-pod.json -T application/json
  oha "$@" --no-tui -w --cacert "$TMP/certs/ca.crt" --connect-to "$HOST:$PORT:127.0.0.1:$PORT" \
    "https://$HOST:$PORT$path"
}
# run LABEL PATH [oha flags]
run() {
  local label="$1"; shift
  ( while sleep 1; do awk '/^VmRSS/ {print $2}' "/proc/$PID/status"; done ) >"$TMP/rss.$label" &
  local sampler=$! before after
  before=$(cpu)
  oha_ "$@" --output-format json --db-url "$TMP/$label.db" >"$TMP/$label.json" 2>"$TMP/$label.err" \
    || { cat "$TMP/$label.err" >&2; exit 1; }
  after=$(cpu)
  kill "$sampler" 2>/dev/null || true
  python3 - "$TMP/$label.json" "$before" "$after" "$TMP/$label.db" <<'EOF'
import json, sqlite3, sys
d = json.load(open(sys.argv[1]))
p = d["latencyPercentiles"]; s = d["summary"]
codes = d["statusCodeDistribution"]; errors = dict(d["errorDistribution"])
# Requests still in flight when the duration ends (oha -w waits for HTTP/1.1 ones, not
# always for HTTP/2 streams): cut off by the client, not failed by the server.
cut = errors.pop("aborted due to deadline", 0)
ok = codes.get("200", 0)
b = [int(x) for x in sys.argv[2].split()]; a = [int(x) for x in sys.argv[3].split()]
total = a[2] - b[2]
print(f"SUMMARY responses_200={ok} other_status={sum(codes.values()) - ok} errors={sum(errors.values())} "
      f"cut_at_deadline={cut} "
      f"seconds={s['total']:.1f} rate={ok / s['total']:.0f}/s "
      f"cpu_busy={100 * (a[1] - b[1]) / total:.0f}% steal={100 * (a[0] - b[0]) / total:.0f}%")
print("LATENCY_MS " + " ".join(f"{k}={1000 * p[k]:.3f}" for k in ("p50", "p90", "p99", "p99.9"))
      + f" max={1000 * s['slowest']:.3f}")
dial = d["details"]["DNSDialup"]
print(f"CLIENT_CONNECT_MS average={1000 * dial['average']:.1f} slowest={1000 * dial['slowest']:.1f}")
# The same latencies without the first second, when oha opens its connections (each request's
# latency counts from when it was due, with --latency-correction).
rows = sqlite3.connect(sys.argv[4]).execute(
    "select end - coalesce(start_latency_correction, start) from oha "
    "where coalesce(start_latency_correction, start) >= 1.0 order by 1").fetchall()
lat = [r[0] for r in rows]
q = lambda x: 1000 * lat[min(len(lat) - 1, int(len(lat) * x))]
print(f"AFTER_FIRST_SECOND_MS n={len(lat)} p50={q(0.5):.3f} p90={q(0.9):.3f} p99={q(0.99):.3f} "
      f"p99.9={q(0.999):.3f} max={1000 * lat[-1]:.3f}")
if errors:
    print("ERRORS", errors)
EOF
  echo "$label: peak VmRSS during run $(( $(sort -n "$TMP/rss.$label" | tail -1) / 1024 )) MiB; after: $(rss)"
  # Server-side handler time (body read to response built), cumulative since start.
  curl -s "http://127.0.0.1:$MPORT/metrics" | awk -F'[{}" ]+' '
    /^rds_iam_webhook_review_duration_seconds_bucket/ {b[$3] = $4; order[n++] = $3}
    /^rds_iam_webhook_review_duration_seconds_count/ {total = $2}
    END {printf "handler time (cumulative):"; for (i = 0; i < n; i++) if (order[i] + 0 <= 0.001) printf " <=%gs %.1f%%", order[i], 100 * b[order[i]] / total; print ""}'
}
echo "== warm-up: 2,000 reviews/s for 3s"
oha_ /mutate -z 3s -q 2000 -c 16 >/dev/null
echo "== constant 2,000 reviews/s for ${SECS}s (latency-corrected)"
run rated /mutate -z "${SECS}s" -q 2000 -c 16 --latency-correction
echo "== constant 2,000 reviews/s for ${SECS}s over HTTP/2 (2 connections, up to 8 streams each; the API server uses HTTP/2)"
run rated-h2 /mutate -z "${SECS}s" -q 2000 --http2 -c 2 -p 8 --latency-correction
echo "== control: GET /healthz (no handler work) at the same rate, to show what this machine adds"
run healthz /healthz -z "${SECS}s" -q 2000 -c 16 --latency-correction
echo "== saturation for ${SECS}s"
run saturation /mutate -z "${SECS}s" -c 32
echo "== webhook counters"
curl -s "http://127.0.0.1:$MPORT/metrics" | grep -E '^rds_iam_webhook_reviews_total'
