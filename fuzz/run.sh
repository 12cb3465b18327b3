#!/usr/bin/env bash
# Runs every fuzz target (or those named) for RUNS executions each (default 200000), starting
# from its committed seeds, and prints libFuzzer's final stats. Needs cargo-fuzz and a nightly
# toolchain (see ../FUZZING.md). A crash or an allocation above MALLOC_LIMIT_MB (default 32)
# stops the target and leaves the input under artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
RUNS="${RUNS:-200000}"
MALLOC_LIMIT_MB="${MALLOC_LIMIT_MB:-32}"
TOOLCHAIN="${TOOLCHAIN:-+nightly}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo "$TOOLCHAIN" fuzz list)
fi
cargo "$TOOLCHAIN" fuzz build
mkdir -p target
status=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    echo "=== $t: $RUNS runs"
    start=$(date +%s)
    if cargo "$TOOLCHAIN" fuzz run "$t" -- -runs="$RUNS" -malloc_limit_mb="$MALLOC_LIMIT_MB" \
        -rss_limit_mb=2048 -print_final_stats=1 >"target/fuzz-$t.log" 2>&1; then
        result=ok
    else
        result=FAILED
        status=1
    fi
    grep -E "stat::number_of_executed_units|stat::peak_rss_mb|^#[0-9]+[[:space:]]+DONE|^Done [0-9]+ runs" "target/fuzz-$t.log" || true
    echo "=== $t: $result in $(( $(date +%s) - start )) s (log: fuzz/target/fuzz-$t.log)"
done
exit $status
