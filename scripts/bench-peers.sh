#!/usr/bin/env bash
# gguftune beside the tools people use today, on this machine, in one run: each row runs us and the
# peer back to back on the same random-weight model of a real shape (made here, no downloads of
# models), and prints both wall times, both peak RSS (/usr/bin/time %M), the ratios and whether the
# target of the row holds.
#
#   convert-f16     HF bf16 -> f16 GGUF, 1.1B Llama shape     vs llama.cpp's convert_hf_to_gguf.py
#   convert-q4_k_m  HF bf16 -> q4_k_m in one pass             vs convert_hf_to_gguf.py to f16, then
#                                                                llama-quantize Q4_K_M (both timed)
#   train-*         LoRA r16/alpha 32 on q,k,v,o,gate,up,down, SmolLM-135M shape, ctx 256, batch 4,
#                   on q4_k_m, q8_0 and f16 bases             vs Hugging Face PEFT, fp32 on the CPU
#
# Usage: scripts/bench-peers.sh [ROW...]   rows: convert, train (default: both)
# Environment:
#   BENCH_THREADS (default 2)   threads for every tool (torch.set_num_threads, --threads, nthread)
#   BENCH_STEPS (default 8)     optimizer steps of each training run (the first is warm-up and
#                               excluded from tokens/s on both sides)
#   BENCH_REPEAT (default 1)   runs of each command; the fastest counts (on a shared machine the
#                               slowest runs measure the neighbours)
#   BENCH_OUTPUT_DIR (default target/bench-peers)   where the convert rows write their GGUF files;
#                               a tmpfs (/dev/shm) takes the disk out of the comparison (both sides
#                               sync their output inside the timing, so a slow disk adds the same
#                               seconds to both and pulls the ratio towards 1)
#   TINYLLAMA_LAYERS (22), SMOLLM_LAYERS (30)   shallower models of the same layer shapes, for quick
#                               runs of the script itself (the targets are for the full depths)
#
# What it installs, all under target/peers (never committed):
#   - a Python venv with torch, transformers, peft and the converter's needs, pinned below (PyPI);
#   - llama.cpp's sources from the llama-cpp-python source package on PyPI (checked against its
#     sha256): its converter (convert_hf_to_gguf.py, conversion/ and gguf-py), and llama-quantize
#     built from them with CMake, with the CPU flags ours is built with (GGML_NATIVE, as
#     .cargo/config.toml's target-cpu=native makes llama-cpp-sys-2 build our ggml).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh time bc

TORCH=2.15.0 TRANSFORMERS=5.24.0 PEFT=0.21.2 NUMPY=2.4.6 SENTENCEPIECE=0.2.1 PROTOBUF=4.25.8
LLAMA_CPP_PYTHON=0.3.36
LLAMA_CPP_PYTHON_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e

threads="${BENCH_THREADS:-2}"
steps="${BENCH_STEPS:-8}"
repeat="${BENCH_REPEAT:-1}"
tinyllama_layers="${TINYLLAMA_LAYERS:-22}"
smollm_layers="${SMOLLM_LAYERS:-30}"
for v in threads steps repeat tinyllama_layers smollm_layers; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "bench-peers: $v must be a positive integer, not '${!v}'" >&2; exit 2; }
done
[ "$steps" -ge 2 ] || { echo "bench-peers: BENCH_STEPS must be at least 2 (the first step is warm-up)" >&2; exit 2; }
rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=(convert train)
for row in "${rows[@]}"; do
  case "$row" in convert|train) ;; *) echo "bench-peers: unknown row '$row' (expected convert or train)" >&2; exit 2 ;; esac
done

peers=target/peers
work=target/bench-peers
out="${BENCH_OUTPUT_DIR:-$work}"
mkdir -p "$peers" "$work" "$out"
py="$peers/py/bin/python"

# --- the peers ---------------------------------------------------------------------------------
if ! "$py" -c "import torch, transformers, peft, sentencepiece, google.protobuf; assert torch.__version__.startswith('$TORCH')" 2>/dev/null; then
  echo "bench-peers: installing torch $TORCH, transformers $TRANSFORMERS, peft $PEFT into $peers/py" >&2
  python3 -m venv "$peers/py"
  "$peers/py/bin/pip" install --quiet --disable-pip-version-check "torch==$TORCH" "transformers==$TRANSFORMERS" \
    "peft==$PEFT" "numpy==$NUMPY" "sentencepiece==$SENTENCEPIECE" "protobuf==$PROTOBUF" safetensors tqdm pyyaml requests
fi

# llama.cpp's sources as llama-cpp-python's source package vendors them (our pinned crate bundles
# the library but neither the converter's conversion/ package nor tools/quantize).
llama="$peers/llama.cpp"
if [ ! -f "$llama/convert_hf_to_gguf.py" ] || [ ! -f "$llama/tools/quantize/quantize.cpp" ]; then
  echo "bench-peers: fetching llama.cpp's sources from llama-cpp-python $LLAMA_CPP_PYTHON (PyPI)" >&2
  sdist="$peers/llama_cpp_python-$LLAMA_CPP_PYTHON.tar.gz"
  # The index pip reads (PEP 691 JSON), for the source package's address.
  url=$(python3 -c '
import json, sys, urllib.request
name = "llama_cpp_python-" + sys.argv[1] + ".tar.gz"
request = urllib.request.Request("https://pypi.org/simple/llama-cpp-python/",
                                 headers={"Accept": "application/vnd.pypi.simple.v1+json"})
with urllib.request.urlopen(request) as r:
    print(next(f["url"] for f in json.load(r)["files"] if f["filename"] == name))' "$LLAMA_CPP_PYTHON")
  curl -fsSL -o "$sdist.part" "$url"
  echo "$LLAMA_CPP_PYTHON_SHA256  $sdist.part" | sha256sum -c --quiet -
  mv "$sdist.part" "$sdist"
  top="llama_cpp_python-$LLAMA_CPP_PYTHON/vendor/llama.cpp"
  rm -rf "$llama.part" && mkdir -p "$llama.part"
  tar -xzf "$sdist" -C "$llama.part" --strip-components=3 --exclude "$top/models" --exclude "$top/docs" "$top"
  rm -f "$sdist"
  rm -rf "$llama" && mv "$llama.part" "$llama"
fi
converter="$llama/convert_hf_to_gguf.py"

quantize="$peers/llama-build/bin/llama-quantize"
if [ ! -x "$quantize" ]; then
  echo "bench-peers: building llama-quantize (log: $peers/llama-build.log)" >&2
  cmake -S "$llama" -B "$peers/llama-build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_BUILD_TOOLS=ON -DBUILD_SHARED_LIBS=OFF > "$peers/llama-build.log" 2>&1
  cmake --build "$peers/llama-build" --target llama-quantize -j "$(nproc)" >> "$peers/llama-build.log" 2>&1
fi

cargo build --release --locked --bin gguftune --example demo_inputs
gguftune=./target/release/gguftune
gguftune=./target/release/gguftune

now() { date +%s.%N; }
# timed OUTPUT CMD...: runs CMD under /usr/bin/time and syncs OUTPUT (when not empty) inside the
# timing, since gguftune fsyncs what it writes and the Python writer does not; BENCH_REPEAT times,
# keeping the fastest run and the largest peak RSS. Sets run_s, run_kb.
timed() {
  local output="$1" t0 t1 s kb i
  shift
  run_s='' run_kb=0
  for ((i = 0; i < repeat; i++)); do
    t0=$(now)
    if ! /usr/bin/time -f %M -o "$work/rss" "$@" > "$work/last.log" 2>&1; then
      echo "bench-peers: failed: $*; the end of its output:" >&2
      tail -n 20 "$work/last.log" >&2
      exit 1
    fi
    [ -z "$output" ] || sync "$output"
    t1=$(now)
    s=$(echo "$t1 - $t0" | bc -l)
    kb=$(tail -n 1 "$work/rss")
    if [ -z "$run_s" ] || [ "$(echo "$s < $run_s" | bc -l)" = 1 ]; then run_s=$s; fi
    if [ "$kb" -gt "$run_kb" ]; then run_kb=$kb; fi
  done
}
mb() { echo "$1 / 1024" | bc; }
ratio() { echo "scale=3; $1 / $2" | bc -l | sed 's/^\./0./'; }
holds() { if [ "$(echo "$1" | bc -l)" = 1 ]; then echo yes; else echo NO; fi; }
header() {
  printf '%-15s %9s %9s %7s %9s %9s %7s  %s\n' row ours peer ratio "ours_MB" "peer_MB" ratio "target: holds?"
}

if [[ " ${rows[*]} " == *" convert "* ]]; then
  inputs="$work/tinyllama-${tinyllama_layers}l"
  [ -f "$inputs/hf-model/config.json" ] || ./target/release/examples/demo_inputs "$inputs" tinyllama 1 "$tinyllama_layers"
  echo
  echo "convert: 1.1B Llama shape (hidden 2048, $tinyllama_layers layers, 32/4 heads, ffn 5632, vocab 32000), BF16 in two shards;"
  echo "         $threads threads; times in seconds (page cache warm, the output synced, written to $out), peak RSS in MB"
  header
  cat "$inputs"/hf-model/*.safetensors > /dev/null
  export OMP_NUM_THREADS="$threads"
  timed "$out/ours-f16.gguf" env RAYON_NUM_THREADS="$threads" "$gguftune" convert "$inputs/hf-model" -o "$out/ours-f16.gguf" --type f16
  ours_s=$run_s ours_kb=$run_kb
  timed "$out/peer-f16.gguf" "$py" "$converter" "$inputs/hf-model" --outfile "$out/peer-f16.gguf" --outtype f16
  peer_f16_s=$run_s peer_f16_kb=$run_kb
  t=$(ratio "$ours_s" "$peer_f16_s")
  printf '%-15s %9.1f %9.1f %7s %9d %9d %7s  time <= 0.33x: %s, RSS <= 0.3 GB: %s\n' convert-f16 "$ours_s" "$peer_f16_s" "$t" \
    "$(mb "$ours_kb")" "$(mb "$peer_f16_kb")" "$(ratio "$ours_kb" "$peer_f16_kb")" \
    "$(holds "$t <= 0.33")" "$(holds "$ours_kb * 1024 <= 300000000")"
  rm -f "$out/ours-f16.gguf"

  timed "$out/ours-q4_k_m.gguf" env RAYON_NUM_THREADS="$threads" "$gguftune" convert "$inputs/hf-model" -o "$out/ours-q4_k_m.gguf" --type q4_k_m
  ours_s=$run_s ours_kb=$run_kb
  timed "$out/peer-q4_k_m.gguf" "$quantize" "$out/peer-f16.gguf" "$out/peer-q4_k_m.gguf" Q4_K_M "$threads"
  peer_s=$(echo "$peer_f16_s + $run_s" | bc -l)
  peer_kb=$(( run_kb > peer_f16_kb ? run_kb : peer_f16_kb ))
  t=$(ratio "$ours_s" "$peer_s")
  printf '%-15s %9.1f %9.1f %7s %9d %9d %7s  time <= 0.75x: %s (peer: convert %.1f + quantize %.1f)\n' convert-q4_k_m \
    "$ours_s" "$peer_s" "$t" "$(mb "$ours_kb")" "$(mb "$peer_kb")" "$(ratio "$ours_kb" "$peer_kb")" \
    "$(holds "$t <= 0.75")" "$peer_f16_s" "$run_s"
  rm -f "$out/ours-q4_k_m.gguf" "$out/peer-q4_k_m.gguf" "$out/peer-f16.gguf"
fi

if [[ " ${rows[*]} " == *" train "* ]]; then
  batch=4 ctx=256
  need=$((steps * batch))
  inputs="$work/smollm-${smollm_layers}l"
  if [ ! -f "$inputs/hf-model/config.json" ] || [ "$(wc -l < "$inputs/train.jsonl")" -lt "$need" ]; then
    ./target/release/examples/demo_inputs "$inputs" smollm "$need" "$smollm_layers"
  fi
  data="$inputs/train-$need.jsonl"
  head -n "$need" "$inputs/train.jsonl" > "$data"
  for ty in q4_k_m q8_0 f16; do
    [ -f "$inputs/model-$ty.gguf" ] || "$gguftune" convert "$inputs/hf-model" -o "$inputs/model-$ty.gguf" --type "$ty" 2>/dev/null
  done
  echo
  echo "train: LoRA r16 alpha 32 on q,k,v,o,gate,up,down; SmolLM-135M shape ($smollm_layers layers), ctx $ctx, batch $batch,"
  echo "       $steps steps, $threads threads; tokens/s over the steps after the first; peak RSS in MB;"
  echo "       the peer is PEFT $PEFT on transformers $TRANSFORMERS, torch $TORCH, fp32"
  timed "" env OMP_NUM_THREADS="$threads" "$py" scripts/peft_train.py "$inputs/hf-model" "$data" --steps "$steps" \
    --batch "$batch" --ctx "$ctx" --threads "$threads"
  peer_tps=$(tail -n 1 "$work/last.log" | python3 -c 'import json, sys; print(json.load(sys.stdin)["tokens_per_second"])')
  peer_kb=$run_kb
  printf '%-23s %9s %9s %7s %9s %9s %7s  %s\n' row ours_tok/s peer_tok/s ratio "ours_MB" "peer_MB" ratio "target: holds?"
  # Each base as finetune runs by default (every activation kept for the backward pass), and
  # q4_k_m with --recompute (each layer's input kept, the rest computed again).
  for run in q4_k_m q4_k_m+recompute q8_0 f16; do
    ty=${run%+recompute}
    flags=()
    [ "$run" = "$ty" ] || flags=(--recompute)
    adapter="$work/adapter-$run.gguf"
    timed "" "$gguftune" finetune "$inputs/model-$ty.gguf" --data "$data" -o "$adapter" --ctx "$ctx" --batch "$batch" \
      --epochs 1 --rank 16 --alpha 32 --targets q,k,v,o,gate,up,down --threads "$threads" --val-split 0 "${flags[@]}"
    ours_tps=$(python3 -c '
import json, sys
steps = [json.loads(l) for l in open(sys.argv[1]) if "tokens_per_second" in l][1:]
print(sum(s["tokens"] for s in steps) / sum(s["tokens"] / s["tokens_per_second"] for s in steps))' "${adapter%.gguf}.metrics.jsonl")
    t=$(ratio "$ours_tps" "$peer_tps") m=$(ratio "$run_kb" "$peer_kb")
    target="report"
    [ "$ty" != q4_k_m ] || target="tokens/s >= 2x: $(holds "$t >= 2"), RSS <= 0.3x: $(holds "$m <= 0.3")"
    printf '%-23s %9.1f %9.1f %7s %9d %9d %7s  %s\n' "train-$run" "$ours_tps" "$peer_tps" "$t" "$(mb "$run_kb")" \
      "$(mb "$peer_kb")" "$m" "$target"
  done
fi
echo
echo "bench-peers: $(date -u +%Y-%m-%d), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
