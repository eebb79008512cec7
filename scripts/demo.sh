#!/usr/bin/env bash
# The main job on a built-in default, end to end, with no downloads: makes a tiny random-weight
# Llama checkpoint (Hugging Face layout) and an Alpaca dataset, converts it to GGUF, quantizes it,
# and trains a LoRA adapter on the quantized model. Output goes to ./demo (or $1).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
out="${1:-demo}"
cargo build --release --locked --bin gguftune --example demo_inputs
./target/release/examples/demo_inputs "$out"
bin=./target/release/gguftune
echo "== 1. look at the Hugging Face checkpoint"
"$bin" inspect "$out/hf-model"
echo "== 2. convert it to GGUF (f16), and straight to q8_0"
"$bin" convert "$out/hf-model" -o "$out/model-f16.gguf"
"$bin" convert "$out/hf-model" -o "$out/model-q8_0.gguf" --type q8_0
echo "== 3. requantize the f16 GGUF to q4_k_m, as llama-quantize would"
"$bin" quantize "$out/model-f16.gguf" "$out/model-q4_k_m.gguf" q4_k_m
echo "== 4. look at the result"
"$bin" inspect "$out/model-q4_k_m.gguf" --tensors
echo "== 5. train a LoRA adapter on the q8_0 model (Alpaca records, loss on the answers only)"
"$bin" finetune "$out/model-q8_0.gguf" --data "$out/train.jsonl" -o "$out/adapter.gguf" --epochs 3 --lr 1e-3
"$bin" inspect "$out/adapter.gguf"
echo "demo: done; run it in llama.cpp with: llama-cli -m $out/model-q8_0.gguf --lora $out/adapter.gguf"
echo "      or in Ollama with: ollama create demo -f $out/adapter.Modelfile && ollama run demo"
