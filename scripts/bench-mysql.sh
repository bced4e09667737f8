#!/usr/bin/env bash
# The MySQL proxy's throughput against direct TLS, for BENCHMARKS.md: the
# RDS-like MariaDB (testenv/mariadbrds), the release agent in proxy mode
# (verify-full against the lab's CA), and mysqlslap (Debian mariadb-client)
# running the same workload ROUNDS times each way, in pairs, in one run:
#   direct: TCP + TLS to the server, the agent's token as the password;
#   proxy:  the agent's Unix socket, no password, TLS from the agent on.
# Each mysqlslap run: CONCURRENCY clients, QUERIES queries in all, one login
# per client (so the login's PAM/SigV4 check weighs little).
# Needs root and testenv/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${ROUNDS:-21}"
CONCURRENCY="${CONCURRENCY:-4}"
QUERIES="${QUERIES:-20000}"
QUERY="${QUERY:-SELECT 1}"

cargo build --release --locked -p rds-iam-tokenagent
BIN="$(pwd)/${CARGO_TARGET_DIR:-target}/release/rds-iam-tokenagent"
command -v mysqlslap >/dev/null || { echo "mysqlslap missing: run testenv/setup.sh" >&2; exit 1; }

WORK="$(mktemp -d /tmp/rds-iam-bench-mysql.XXXXXX)"
chmod 711 "$WORK"
LAB="$WORK/lab"
mkdir -m 711 "$LAB"
agent_pid=""
cleanup() {
  [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null || true
  testenv/mariadbrds/mariadb-rds stop --dir "$LAB" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
testenv/mariadbrds/mariadb-rds start --dir "$LAB" --port "$PORT" --endpoint "localhost:$PORT" \
  --region us-east-1 --keys "$LAB/keys.json" --users app_user --owner-pid $$ >/dev/null
AKID=AKIDBENCHMYSQL
SECRET=benchmark/secret+key
testenv/mariadbrds/mariadb-rds add-key --dir "$LAB" --akid "$AKID" --secret "$SECRET"

mkdir "$WORK/home" "$WORK/dir"
env -i PATH="$PATH" HOME="$WORK/home" AWS_EC2_METADATA_DISABLED=true RDS_IAM_LOG_FORMAT=text \
  AWS_ACCESS_KEY_ID="$AKID" AWS_SECRET_ACCESS_KEY="$SECRET" \
  RDS_IAM_DATABASES="default=mysql://app_user@localhost:$PORT/app_user?region=us-east-1&sslmode=verify-full&mode=proxy" \
  RDS_IAM_CA_FILE="$LAB/ca.crt" RDS_IAM_DIR="$WORK/dir" "$BIN" 2>"$WORK/agent.log" &
agent_pid=$!
for _ in $(seq 300); do [ -S "$WORK/dir/mysqld.sock" ] && [ -s "$WORK/dir/token" ] && break; sleep 0.1; done
[ -S "$WORK/dir/mysqld.sock" ] || { cat "$WORK/agent.log" >&2; exit 1; }

slap=(mysqlslap --no-defaults --user=app_user --create-schema=app_user
  --concurrency="$CONCURRENCY" --number-of-queries="$QUERIES" --iterations=1 --query="$QUERY")
direct() {
  MYSQL_PWD="$(cat "$WORK/dir/token")" "${slap[@]}" --protocol=TCP --host=localhost --port="$PORT" \
    --ssl-ca="$LAB/ca.crt" --ssl-verify-server-cert
}
proxy() {
  "${slap[@]}" --protocol=SOCKET --socket="$WORK/dir/mysqld.sock" --skip-ssl
}
seconds() { awk '/Average number of seconds to run all queries/ {print $(NF-1)}'; }

echo "== $QUERIES x '$QUERY', $CONCURRENCY clients, $ROUNDS rounds each way, in pairs"
echo "== TLS of the direct connection: $(MYSQL_PWD="$(cat "$WORK/dir/token")" mariadb --no-defaults --protocol=TCP \
  --host=localhost --port="$PORT" --user=app_user --ssl-ca="$LAB/ca.crt" --ssl-verify-server-cert -N -B \
  -e "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME IN ('Ssl_version','Ssl_cipher') ORDER BY VARIABLE_NAME DESC")" | tr '\n' ' '
echo
# The agent's CPU time (user + system clock ticks): only the proxy runs use it.
agent_ticks() { awk '{print $14 + $15}' "/proc/$agent_pid/stat"; }
ticks0=$(agent_ticks)
d_all=(); p_all=(); r_all=()
for r in $(seq "$ROUNDS"); do
  # Alternate which side goes first, so that a drift of the machine's load
  # favours neither.
  if (( r % 2 )); then d=$(direct | seconds); p=$(proxy | seconds)
  else p=$(proxy | seconds); d=$(direct | seconds); fi
  d_all+=("$d"); p_all+=("$p"); r_all+=("$(awk -v d="$d" -v p="$p" 'BEGIN {print 100*d/p}')")
  echo "round $r: direct ${d}s ($(awk -v q="$QUERIES" -v s="$d" 'BEGIN {printf "%.0f", q/s}') q/s), proxy ${p}s ($(awk -v q="$QUERIES" -v s="$p" 'BEGIN {printf "%.0f", q/s}') q/s), proxy/direct $(printf '%.1f' "${r_all[-1]}") %"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
dm=$(median "${d_all[@]}"); pm=$(median "${p_all[@]}"); ratio_m=$(median "${r_all[@]}")
awk -v q="$QUERIES" -v d="$dm" -v p="$pm" -v r="$ratio_m" 'BEGIN {
  printf "median: direct %.0f q/s, proxy %.0f q/s (%.1f %%); median of the rounds'"'"' proxy/direct: %.1f %%\n", q/d, q/p, 100*d/p, r }'
awk -v t="$(( $(agent_ticks) - ticks0 ))" -v hz="$(getconf CLK_TCK)" -v n="$(( ROUNDS * QUERIES ))" 'BEGIN {
  printf "agent CPU: %.1f s for %d proxied queries, %.1f us a query\n", t/hz, n, 1e6*t/hz/n }'
echo "== agent: $(grep -E 'VmHWM|VmRSS' /proc/$agent_pid/status | tr -s ' \n' ' ')"
echo "== load average: $(cut -d' ' -f1-3 /proc/loadavg)"
