#!/usr/bin/env bash
# Builds the libFuzzer targets under fuzz/ and runs each for a bounded time.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]    default: 30 seconds each, every target
#
# Runs on a stable toolchain: libfuzzer-sys compiles libFuzzer itself, and the coverage
# instrumentation cargo-fuzz would add is passed here as plain codegen flags (only sanitizers
# such as ASan need nightly, and safe Rust does not need them to find panics, overflows, hangs
# and memory blow-ups). Seeds come from scripts/fuzz-seeds.sh (run first when a corpus is
# missing). Prints one line per target: executions, crashes, and where the run's log is.
set -euo pipefail

SECONDS_EACH=${1:-30}
shift || true
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FUZZ="$ROOT/fuzz"
ALL_TARGETS=(gguf_parse safetensors_checkpoint hf_config_tokenizer jsonl_dataset chat_template)
TARGETS=("${@:-${ALL_TARGETS[@]}}")
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
# Per-input limits: a parser that takes a second on one input, or 2 GiB, is a bug.
TIMEOUT_S=${FUZZ_TIMEOUT_S:-5}
RSS_MB=${FUZZ_RSS_MB:-2048}

FUZZ_RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# --target keeps the flags off build scripts and proc macros, as cargo-fuzz does.
# Only this build gets the flags: the seed script builds the main crate as the tests do.
(cd "$FUZZ" && RUSTFLAGS="$FUZZ_RUSTFLAGS" cargo build --release --locked --target "$TRIPLE" --bins)

[ -d "$FUZZ/corpus/${TARGETS[0]}" ] || "$ROOT/scripts/fuzz-seeds.sh"

# hf_config_tokenizer writes each input into a temporary folder, as convert reads one: on a tmpfs
# it runs about five times faster than on a disk.
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then export TMPDIR=/dev/shm; fi

mkdir -p "$FUZZ/artifacts" "$FUZZ/logs"
status=0
printf '%-24s %12s %8s  %s\n' target executions crashes log
for target in "${TARGETS[@]}"; do
    mkdir -p "$FUZZ/corpus/$target" "$FUZZ/artifacts/$target"
    log="$FUZZ/logs/$target.log"
    rc=0
    "$FUZZ/target/$TRIPLE/release/$target" -max_total_time="$SECONDS_EACH" -timeout="$TIMEOUT_S" \
        -rss_limit_mb="$RSS_MB" -malloc_limit_mb="$RSS_MB" -print_final_stats=1 \
        -artifact_prefix="$FUZZ/artifacts/$target/" "$FUZZ/corpus/$target" >"$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    [ -n "$execs" ] || execs=$(sed -n 's/^#\([0-9]*\)[[:space:]]*DONE.*/\1/p' "$log" | tail -1)
    crashes=$(find "$FUZZ/artifacts/$target" -type f | wc -l)
    printf '%-24s %12s %8s  %s\n' "$target" "${execs:-?}" "$crashes" "${log#"$ROOT/"}"
    if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then status=1; fi
done
exit "$status"
