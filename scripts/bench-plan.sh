#!/usr/bin/env bash
# Checks `plan` against reality on this machine:
# - file size: `plan` of a config.json alone (hidden 2048, 22 layers, 32/4 heads, ffn 5632,
#   vocab 32000: a 1.1B Llama's shape) against the GGUF `convert` writes, f16, q8_0 and q4_k_m
#   (bound: 0.5%);
# - peak memory: `plan --data` against the peak RSS /usr/bin/time measures for the same finetune
#   run (2 steps), on two shapes (SmolLM-135M's, 30 layers; the 1.1B shape with 4 layers) x q8_0
#   and q4_k_m x two --ctx, and SmolLM's with --recompute (bound: 15%);
# - time: `plan --calibrate` against the wall time of a short finetune run (bound: 25%).
# Prints one line per check and exits 1 if any is out of bounds.
#
# Usage: scripts/bench-plan.sh [WORKDIR]   (default target/bench-plan; about 7 GB of disk)
# Environment: BENCH_THREADS (default 2) CPU threads.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh time
work="${1:-target/bench-plan}"
threads="${BENCH_THREADS:-2}"
cargo build --release --locked --bin gguftune --example demo_inputs
bin=./target/release/gguftune
mkdir -p "$work"
fail=0
json() { python3 -c "import json, sys; j = json.loads(sys.stdin.read().strip().splitlines()[-1]); print($1)"; }
check() { # name predicted measured bound
  python3 - "$@" <<'PY' || fail=1
import sys
name, predicted, measured, bound = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
diff = abs(predicted - measured) / measured
ok = diff <= bound
print(f"{name:<44} {predicted:>14.0f} {measured:>14.0f} {100 * diff:>7.2f}%  {'ok' if ok else 'OUT OF BOUNDS'} (bound {100 * bound:.1f}%)")
sys.exit(0 if ok else 1)
PY
}
printf '%-44s %14s %14s %8s\n' check predicted measured diff

# File size at the 1.1B shape, planned from config.json alone.
big="$work/llama-1.1b"
[ -f "$big/hf-model/config.json" ] || ./target/release/examples/demo_inputs "$big" bench 8 22
mkdir -p "$big/config-only" && cp "$big/hf-model/config.json" "$big/config-only/"
for ty in f16 q8_0 q4_k_m; do
  [ -f "$big/model-$ty.gguf" ] || "$bin" convert "$big/hf-model" -o "$big/model-$ty.gguf" --type "$ty" 2>/dev/null
  planned=$("$bin" plan "$big/config-only/config.json" --type "$ty" --ctx 64 --batch 1 --json | json 'j["file_bytes"]')
  check "file bytes, 1.1B shape, $ty" "$planned" "$(stat -c %s "$big/model-$ty.gguf")" 0.005
  rm -f "$big/model-$ty.gguf"
done

# Peak memory of finetune runs.
smollm="$work/smollm"
[ -f "$smollm/hf-model/config.json" ] || ./target/release/examples/demo_inputs "$smollm" smollm 16
small="$work/llama-4l"
[ -f "$small/hf-model/config.json" ] || ./target/release/examples/demo_inputs "$small" bench 16 4
for model in smollm llama-4l; do
  for ty in q8_0 q4_k_m; do
    dir="$work/$model"
    [ -f "$dir/model-$ty.gguf" ] || "$bin" convert "$dir/hf-model" -o "$dir/model-$ty.gguf" --type "$ty" 2>/dev/null
    # SmolLM's shape at ctx 256 also with --recompute, whose memory is a different graph's.
    runs=("64" "256")
    [ "$model" != smollm ] || runs+=("256 --recompute")
    for run in "${runs[@]}"; do
      read -r ctx recompute <<< "$run"
      args=(--data "$dir/train.jsonl" --ctx "$ctx" --batch 4 --rank 16 --threads "$threads" --val-split 0 $recompute)
      planned=$("$bin" plan "$dir/model-$ty.gguf" "${args[@]}" --json | json 'j["peak_memory_bytes"]')
      /usr/bin/time -f %M -o "$dir/rss" "$bin" finetune "$dir/model-$ty.gguf" "${args[@]}" --max-steps 2 \
        -o "$dir/adapter.gguf" --json > "$dir/summary.json" 2> "$dir/finetune.log"
      check "peak RSS, $model $ty ctx $run" "$planned" "$(( $(tail -n 1 "$dir/rss") * 1024 ))" 0.15
    done
  done
done

# Time: --calibrate against a short run (8 steps of SmolLM's shape at ctx 256).
args=(--data "$smollm/train.jsonl" --ctx 256 --batch 2 --rank 16 --threads "$threads" --val-split 0)
predicted=$("$bin" plan "$smollm/model-q8_0.gguf" "${args[@]}" --calibrate --json 2>/dev/null | json 'j["time"]["seconds"]')
start=$(date +%s.%N)
"$bin" finetune "$smollm/model-q8_0.gguf" "${args[@]}" -o "$smollm/adapter.gguf" > /dev/null 2>&1
measured=$(python3 -c "print($(date +%s.%N) - $start)")
check "seconds, 8 steps, SmolLM shape q8_0 (calibrated)" "$predicted" "$measured" 0.25
exit "$fail"
