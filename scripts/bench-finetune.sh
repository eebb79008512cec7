#!/usr/bin/env bash
# LoRA training throughput on SmolLM-135M's shape (hidden 576, 30 layers, 9/3 heads, ffn 1536,
# vocab 49152, tied embeddings; random BF16 weights converted to q8_0, q4_k_m and f16), rank 16 on
# every projection, --ctx 256 --batch 4 over examples of exactly 256 tokens, on 2 CPU threads.
# Prints, per base type: optimizer steps, tokens trained, seconds (the whole command, loading
# included), tokens/s (finetune's own figure: training time only) and peak RSS.
#
# Usage: scripts/bench-finetune.sh [WORKDIR]   (default target/bench-finetune)
# Environment: BENCH_STEPS (default 8) optimizer steps per run; the data holds exactly
#   BENCH_STEPS x 4 examples and is read once (--epochs 1).
#   SMOLLM_LAYERS (default 30) builds a shallower model of the same layer shape, for quick checks.
#   BENCH_THREADS (default 2) CPU threads.
# Inputs are made and converted once per layer count, and reused by later runs.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh time
work="${1:-target/bench-finetune}"
steps="${BENCH_STEPS:-8}"
layers="${SMOLLM_LAYERS:-30}"
threads="${BENCH_THREADS:-2}"
batch=4
ctx=256
for v in steps layers threads; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "bench-finetune: $v must be a positive integer, not '${!v}'" >&2; exit 2; }
done
cargo build --release --locked --bin gguftune --example demo_inputs
inputs="$work/smollm-${layers}l"
need=$((steps * batch))
rows() { if [ -f "$1" ]; then wc -l < "$1"; else echo 0; fi; }
if [ ! -f "$inputs/hf-model/config.json" ] || [ "$(rows "$inputs/train.jsonl")" -lt "$need" ]; then
  # The same seed gives the same weights, so models converted earlier stay valid.
  ./target/release/examples/demo_inputs "$inputs" smollm "$need" "$layers"
fi
data="$inputs/train-$need.jsonl"
head -n "$need" "$inputs/train.jsonl" > "$data"
for ty in q8_0 q4_k_m f16; do
  [ -f "$inputs/model-$ty.gguf" ] || ./target/release/gguftune convert "$inputs/hf-model" -o "$inputs/model-$ty.gguf" --type "$ty"
done

echo "smollm shape, $layers layers; rank 16 on q,k,v,o,gate,up,down; --ctx $ctx --batch $batch; $threads threads"
printf '%-8s %6s %8s %10s %10s %12s\n' base steps tokens seconds tokens/s peak_RSS_MB
for ty in q8_0 q4_k_m f16; do
  log="$inputs/finetune-$ty.log"
  if ! /usr/bin/time -f %M -o "$inputs/rss-$ty" ./target/release/gguftune finetune "$inputs/model-$ty.gguf" \
      --data "$data" -o "$inputs/adapter-$ty.gguf" --ctx "$ctx" --batch "$batch" --epochs 1 --rank 16 --alpha 32 \
      --targets q,k,v,o,gate,up,down --threads "$threads" --val-split 0 --json > "$inputs/summary-$ty.json" 2> "$log"; then
    echo "bench-finetune: finetune on $ty failed; the end of $log:" >&2
    tail -n 20 "$log" >&2
    exit 1
  fi
  # steps tokens seconds tokens/s from the --json summary (the last line of stdout).
  read -r s tokens seconds tps < <(tail -n 1 "$inputs/summary-$ty.json" | python3 -c \
    'import json, sys; j = json.load(sys.stdin); print(j["steps"], j["tokens"], j["seconds"], j["tokens_per_second"])') ||
    { echo "bench-finetune: no --json summary in $inputs/summary-$ty.json" >&2; exit 1; }
  if [ "$s" != "$steps" ]; then
    echo "bench-finetune: $ty ran $s steps, expected $steps (see $inputs/summary-$ty.json)" >&2
    exit 1
  fi
  rss_kb=$(tail -n 1 "$inputs/rss-$ty")
  printf '%-8s %6d %8d %10.1f %10.1f %12.0f\n' "$ty" "$s" "$tokens" "$seconds" "$tps" "$((rss_kb / 1024))"
done
