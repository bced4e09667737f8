#!/usr/bin/env bash
# The long fuzz runs recorded in BENCHMARKS.md, then the committed seeds.
# For each target (all, or those named):
#   1. RUNS executions (default 10 million), no sanitizer, debug assertions
#      on (so arithmetic overflow panics), with the target's dictionary; the
#      run starts from seeds/TARGET and grows corpus/TARGET (not committed);
#   2. corpus/TARGET minimized with `cargo fuzz cmin`;
#   3. seeds/TARGET replaced by the MAX_SEEDS files (default 40) of that
#      corpus that cover the most features (pick_seeds.py); the inputs of
#      fixed crashes there (crash-*) stay.
# Logs go to target/fuzz-TARGET.log. Needs cargo-fuzz (`cargo install
# cargo-fuzz --locked`); `-s none` works on stable Rust. SEEDS=0 skips 2-3.
set -euo pipefail
cd "$(dirname "$0")"
runs=${RUNS:-10000000}
max_seeds=${MAX_SEEDS:-40}
flags=(-s none -a)
bin_dir=target/x86_64-unknown-linux-gnu/release
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(admission annotations credentials db_spec mysql_handshake pg_startup pgpass)
fi
cargo fuzz build "${flags[@]}"
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "seeds/$t"
    dict=()
    if [ -f "dict/$t.dict" ]; then dict=("-dict=dict/$t.dict"); fi
    log="target/fuzz-$t.log"
    start=$(date +%s)
    # -timeout: an input that takes 10 s is a hang; -rss_limit_mb: 2 GiB is a leak.
    cargo fuzz run "${flags[@]}" "$t" "corpus/$t" "seeds/$t" -- -runs="$runs" \
        -timeout=10 -rss_limit_mb=2048 "${dict[@]}" -print_final_stats=1 >"$log" 2>&1 || {
        grep -E "panicked|SUMMARY|Test unit written" -A5 "$log" >&2
        exit 1
    }
    echo "$t: $(($(date +%s) - start)) s wall"
    grep -E "^Done |^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)" "$log"
    [ "${SEEDS:-1}" = 0 ] && continue
    cargo fuzz cmin "${flags[@]}" "$t" "corpus/$t" >"target/cmin-$t.log" 2>&1
    # A merge into an empty directory records every file's features.
    rm -rf "target/merge-$t" && mkdir -p "target/merge-$t/out"
    "$bin_dir/$t" -merge=1 -merge_control_file="target/merge-$t/control" \
        "target/merge-$t/out" "corpus/$t" >"target/merge-$t/log" 2>&1
    python3 pick_seeds.py "target/merge-$t/control" "$max_seeds" "seeds/$t"
    echo "$t: $(find "corpus/$t" -type f | wc -l) corpus files after cmin," \
        "$(find "seeds/$t" -type f | wc -l) seeds"
done
