#!/usr/bin/env bash
# The token agent's figures for BENCHMARKS.md: signing (criterion), --once wall
# time and peak RSS, idle RSS and CPU of the long-running agent, binary size,
# and peak RSS against a 200 MB credential answer. Static env credentials
# (except for the last), files on tmpfs (like the pod's memory-backed emptyDir).
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

echo "== --once with 8 databases (8 tokens, token + 7 NAME.token, pgpass, pg_service.conf): wall time over 200 runs, peak RSS"
specs="default=postgres://app_user@mydb.c9akciq32.us-east-1.rds.amazonaws.com:5432/app?region=us-east-1&sslmode=require"
for i in 1 2 3 4 5 6 7; do
  specs+=$'\n'"db$i=postgres://user_$i@db$i.c9akciq32.us-east-1.rds.amazonaws.com:5432/app?region=us-east-1&sslmode=require"
done
multi_env=(env -i PATH="$PATH" HOME="$WORK" AWS_EC2_METADATA_DISABLED=true
  AWS_ACCESS_KEY_ID=AKIDEXAMPLE AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY
  RDS_IAM_DATABASES="$specs" RDS_IAM_DIR="$WORK/multi")
"${multi_env[@]}" "$BIN" --once 2>/dev/null
[[ "$(ls "$WORK/multi"/*.token "$WORK/multi/token" | wc -l)" == 8 ]] || { echo "bench-agent.sh: 8 databases did not give 8 token files" >&2; exit 1; }
start=$(date +%s%N)
for _ in $(seq 200); do "${multi_env[@]}" "$BIN" --once 2>/dev/null; done
end=$(date +%s%N)
echo "mean wall per --once, 8 databases: $(( (end - start) / 200000 )) us"
"${multi_env[@]}" /usr/bin/time -v "$BIN" --once 2>&1 >/dev/null | grep -E 'Maximum resident|Elapsed'

echo "== long-running agent: idle RSS and CPU over ${IDLE_SECONDS}s"
"${agent_env[@]}" "$BIN" --health-addr 127.0.0.1:0 2>/dev/null &
pid=$!
sleep "$IDLE_SECONDS"
hz=$(getconf CLK_TCK)
read -r utime stime < <(awk '{print $14, $15}' "/proc/$pid/stat")
grep -E 'VmRSS|VmHWM' "/proc/$pid/status"
echo "CPU: $(( (utime + stime) * 1000 / hz )) ms in ${IDLE_SECONDS}s"
kill -TERM "$pid"; wait "$pid" || true

echo "== --once against a Pod Identity endpoint answering 200 MB (chunked): peak RSS"
python3 - "$WORK/port" <<'PY' &
import http.server, json, socketserver, sys, time
creds = json.dumps({"Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": "ASIAEXAMPLE",
                    "SecretAccessKey": "secret", "Token": "token",
                    "Expiration": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))}).encode()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = b" " * 65536
        try:
            for _ in range(3200):  # 200 MiB of JSON whitespace, then the credentials
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(creds), creds))
        except (BrokenPipeError, ConnectionResetError):
            pass
    def log_message(self, *args):
        pass
server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), H)
open(sys.argv[1], "w").write(str(server.server_address[1]))
server.serve_forever()
PY
server=$!
while [ ! -s "$WORK/port" ]; do sleep 0.1; done
env -i PATH="$PATH" HOME="$WORK" AWS_EC2_METADATA_DISABLED=true \
  AWS_CONTAINER_CREDENTIALS_FULL_URI="http://127.0.0.1:$(cat "$WORK/port")/v1/credentials" \
  AWS_CONTAINER_AUTHORIZATION_TOKEN=jwt \
  RDS_IAM_HOST=mydb.c9akciq32.us-east-1.rds.amazonaws.com RDS_IAM_USER=app_user RDS_IAM_DIR="$WORK/dir2" \
  /usr/bin/time -v "$BIN" --once 2>&1 >/dev/null | grep -E 'larger than|Maximum resident|Elapsed|Exit status' || true
kill "$server"; wait "$server" 2>/dev/null || true

echo "== signing one token (criterion)"
cargo bench --locked -p rds-iam-tokenagent --bench sign -- --warm-up-time 1 --measurement-time 5 2>&1 | grep -E '^sign|time:'
