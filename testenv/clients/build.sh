#!/usr/bin/env bash
# Builds the compiled client probes into target/clients/ (git-ignored):
#  - Go (GOPATH mode, Debian's Go and driver packages, no module proxy):
#    target/clients/bin/connect_pgx, connect_pq, connect_gomysql
#  - Rust (testenv/clients/rust, its own Cargo.lock, --locked):
#    target/clients/rust/release/connect_tokio_postgres, connect_sqlx
# Incremental: a second run with nothing changed takes about a second and
# rewrites no binary. Run by testenv/setup.sh and, once per test process, by
# the tests' client runner. Any failure is fatal and names the fix.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="$ROOT/target/clients"
HINT="run testenv/setup.sh (as root) to install the client toolchains and drivers"

fail() { echo "build.sh: $*" >&2; exit 1; }
command -v go >/dev/null 2>&1 || fail "go not found on PATH (Debian golang-go); $HINT"
command -v cargo >/dev/null 2>&1 || fail "cargo not found on PATH; $HINT"
for pkg in github.com/jackc/pgx/v4 github.com/lib/pq github.com/go-sql-driver/mysql; do
  [[ -d /usr/share/gocode/src/$pkg ]] || fail "Go package $pkg missing under /usr/share/gocode; $HINT"
done

mkdir -p "$OUT/bin"
# One build at a time (several test processes may call this at once).
exec 9>"$OUT/.build.lock"
flock 9

for probe in connect_pgx connect_pq connect_gomysql; do
  GO111MODULE=off GOPROXY=off GOFLAGS= GOPATH="$ROOT/testenv/clients/go:/usr/share/gocode" \
    GOCACHE="$OUT/go-cache" go build -o "$OUT/bin/$probe" "rdsiamprobe/$probe" \
    || fail "building the Go probe $probe failed; $HINT"
done

# A nested build must not pick up the outer cargo's or a coverage run's settings.
(
  unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_TARGET LLVM_PROFILE_FILE CARGO_MANIFEST_DIR
  cd "$ROOT/testenv/clients/rust"
  CARGO_TARGET_DIR="$OUT/rust" cargo build --release --locked --quiet
) || fail "building the Rust probes (testenv/clients/rust) failed; $HINT"
