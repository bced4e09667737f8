#!/usr/bin/env bash
# `make demo`: the local end-to-end demo. Installs what is missing (as root),
# builds the binaries and runs the narrated chain (tests/src/bin/demo.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== installing what the demo needs (testenv/setup.sh)"
bash testenv/setup.sh
echo "== 1. building the binaries"
cargo build --workspace --bins --locked
exec "${CARGO_TARGET_DIR:-target}/debug/rds-iam-demo"
