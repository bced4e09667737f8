#!/usr/bin/env bash
# The long fuzz runs recorded in BENCHMARKS.md: each target (all of them, or
# those named) for RUNS executions (default 10 million), one at a time, with
# its dictionary, then its corpus minimized with `cargo fuzz cmin`.
# Needs cargo-fuzz (`cargo install cargo-fuzz`); `-s none` works on stable Rust.
set -euo pipefail
cd "$(dirname "$0")"
runs=${RUNS:-10000000}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(pg_startup mysql_handshake pgpass db_spec credentials annotations admission)
fi
mkdir -p target
for t in "${targets[@]}"; do
    dict=()
    if [ -f "dict/$t.dict" ]; then dict=("-dict=dict/$t.dict"); fi
    start=$(date +%s)
    # -timeout: an input that takes 10 s is a hang; -rss_limit_mb: 2 GiB is a leak.
    cargo fuzz run -s none "$t" -- -runs="$runs" -timeout=10 -rss_limit_mb=2048 \
        "${dict[@]}" -print_final_stats=1 >"target/fuzz-$t.log" 2>&1 || {
        grep -E "panicked|SUMMARY|Test unit written" -A5 "target/fuzz-$t.log" >&2
        exit 1
    }
    echo "$t: $(($(date +%s) - start)) s wall"
    grep -E "^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)" "target/fuzz-$t.log"
    cargo fuzz cmin -s none "$t" >"target/cmin-$t.log" 2>&1
    echo "$t: $(find "corpus/$t" -type f | wc -l) corpus files after cmin"
done
