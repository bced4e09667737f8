#!/usr/bin/env bash
# Reviews shaped to cost the webhook the most per byte (BENCHMARKS.md, "Reviews that cost the
# most per byte"): for each, a fresh `serve` process on loopback gets one review over HTTPS,
# and the script prints the status, the time, the answer's size and the server's peak RSS
# (VmHWM, with its idle VmHWM). The webhook's own bound is asserted by
# webhook/tests/hostile.rs; this prints the figures.
#
#   bash webhook/benches/costly-reviews.sh [OTHER_BINARY]
#
# With OTHER_BINARY (e.g. a build of an older commit), each review also goes to it, side by
# side. A review that gets no answer within 100 s is reported as such.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
cargo build --release -q --locked -p rds-iam-webhook
BINS=("$CARGO_TARGET_DIR/release/rds-iam-webhook")
[[ $# -ge 1 ]] && BINS+=("$1")
SHAPES="$(mktemp -d)"
trap 'rm -rf "$SHAPES"' EXIT
python3 - "$SHAPES" <<'PY'
import copy, json, sys
out = sys.argv[1]
base = json.load(open("webhook/tests/fixtures/irsa-pod.json"))
def shape(name, edit):
    r = copy.deepcopy(base)
    edit(r["request"]["object"])
    open(f"{out}/{name}.json", "w").write(json.dumps(r))
def migrate(o):
    return o["spec"]["initContainers"][0]
def nested(o):
    migrate(o)["env"] = [{"name": "V0", "value": "x" * 13}] + [
        {"name": f"V{n}", "value": f"$(V{n-1})" * 20} for n in range(1, 6)] + migrate(o)["env"]
def unclosed(o):
    migrate(o)["env"].insert(0, {"name": "PAD", "value": "$(" * 1_400_000})
def unresolved(o):
    for e in migrate(o)["env"]:
        if e["name"] == "AWS_ROLE_ARN":
            e["value"] = "".join(f"$(U{i % 1000})" for i in range(400_000))
def containers(o):
    o["metadata"]["annotations"].pop("rds-iam/containers")
    o["spec"]["containers"] = [{"name": f"a{i}", "env": [{"name": "X", "value": "1"}]} for i in range(40_000)]
def volumes(o):
    o["spec"]["volumes"] += [{"name": f"v{i}", "emptyDir": {}} for i in range(65_000)]
def mounts(o):
    migrate(o)["volumeMounts"] += [{"name": "aws-iam-token", "mountPath": f"/m/{i}"} for i in range(48_000)]
def names_list(o):
    o["metadata"]["annotations"]["rds-iam/containers"] = ",".join(["api"] * 725_000)
def databases(o):
    for i in range(48_000):
        o["metadata"]["annotations"][f"rds-iam/d{i}.host"] = f"h{i}.example.com"
def long_key(o):
    o["metadata"]["annotations"]["rds-iam/" + "x" * 500_000] = "v"
def long_value(o):
    o["metadata"]["annotations"]["rds-iam/host"] = "a" * 960_000
for name, edit in [("nested-env", nested), ("unclosed-env", unclosed), ("unresolved-aws-env", unresolved),
                   ("40000-containers", containers),
                   ("65000-volumes", volumes), ("48000-token-mounts", mounts),
                   ("containers-list-725000-names", names_list), ("48000-databases", databases),
                   ("500KB-unknown-key", long_key), ("960KB-host", long_value)]:
    shape(name, edit)
PY
for f in "$SHAPES"/*.json; do
  for BIN in "${BINS[@]}"; do
    (
      # shellcheck source=webhook/benches/serve.sh
      source webhook/benches/serve.sh
      idle=$(awk '/^VmHWM/ {print $2}' "/proc/$PID/status")
      answer=$(curl -s -o "$TMP/answer" -w '%{http_code} %{time_total}s' --max-time 100 \
        --cacert "$TMP/certs/ca.crt" --connect-to "$HOST:$PORT:127.0.0.1:$PORT" \
        -H 'content-type: application/json' --data-binary @"$f" "https://$HOST:$PORT/mutate" || true)
      [[ $answer == 000* ]] && answer="no answer within 100 s"
      size=$(stat -c %s "$TMP/answer" 2>/dev/null || echo 0)
      printf 'figure: %s (%s bytes), %s: %s, answer %s bytes, peak RSS %s KiB (idle %s KiB)\n' \
        "$(basename "$f" .json)" "$(stat -c %s "$f")" "$BIN" "$answer" "$size" \
        "$(awk '/^VmHWM/ {print $2}' "/proc/$PID/status")" "$idle"
    )
  done
done
