#!/usr/bin/env bash
# Conversion throughput on a realistic shape (hidden 2048, 4 layers, 32/4 heads, ffn 5632,
# vocab 32000, BF16, two shards, ~0.6 GB), against a plain sequential copy of the same bytes
# measured in the same run. Prints MB/s of each and the ratio. Page cache warm for both.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh bc time
work="${1:-target/bench-convert}"
cargo build --release --locked --bin gguftune --example demo_inputs
[ -d "$work/hf-model" ] || ./target/release/examples/demo_inputs "$work" bench
bytes=$(cat "$work"/hf-model/*.safetensors | wc -c)
cat "$work"/hf-model/*.safetensors > /dev/null   # warm the page cache
now() { date +%s.%N; }
t0=$(now); cat "$work"/hf-model/*.safetensors > "$work/copy.bin"; sync "$work/copy.bin"; t1=$(now)
copy_s=$(echo "$t1 - $t0" | bc -l); rm -f "$work/copy.bin"
printf '%-8s %10s %10s %8s %12s\n' type seconds MB/s ratio peak_RSS_MB
printf '%-8s %10.2f %10.0f %8s %12s\n' copy "$copy_s" "$(echo "$bytes / 1000000 / $copy_s" | bc -l)" 1.00 -
for ty in f16 q8_0 q4_k_m; do
  out="$work/model-$ty.gguf"
  t0=$(now)
  /usr/bin/time -f %M -o "$work/rss" ./target/release/gguftune convert "$work/hf-model" -o "$out" --type "$ty" 2>/dev/null
  sync "$out"; t1=$(now)
  s=$(echo "$t1 - $t0" | bc -l)
  printf '%-8s %10.2f %10.0f %8.2f %12.0f\n' "$ty" "$s" "$(echo "$bytes / 1000000 / $s" | bc -l)" "$(echo "$copy_s / $s" | bc -l)" "$(echo "$(cat "$work/rss") / 1024" | bc -l)"
  rm -f "$out"
done
echo "ratio = copy time / convert time (1.00 = as fast as copying the bytes)"
