#!/usr/bin/env bash
# Instructions per admission review (parse, mutate, serialize), counted by valgrind's
# callgrind: unlike wall-clock time, this does not move with the machine's load.
#
#   bash webhook/benches/instructions.sh [FIXTURE]    # default deployment-pod.json
#
# Runs webhook/examples/handler_loop.rs once with 1 review and once with 201 under
# callgrind; the difference divided by 200 is the cost of one review without the
# process's start-up.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
FIXTURE="${1:-deployment-pod.json}"
command -v valgrind >/dev/null || { echo "instructions.sh: valgrind is missing: apt-get install valgrind" >&2; exit 2; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
cargo build --release -q --locked -p rds-iam-webhook --example handler_loop
BIN="$CARGO_TARGET_DIR/release/examples/handler_loop"
count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$BIN" "$1" "$FIXTURE" 2>&1 >/dev/null \
    | awk '/Collected :/ {gsub(",", "", $NF); print $NF}'
}
one=$(count 1)
many=$(count 201)
[[ -n "$one" && -n "$many" ]] || { echo "instructions.sh: callgrind printed no count" >&2; exit 1; }
echo "$FIXTURE: $(( (many - one) / 200 )) instructions per review (callgrind)"
