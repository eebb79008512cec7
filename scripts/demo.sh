#!/usr/bin/env bash
# The main job on a built-in default, end to end, with no downloads: makes a tiny random-weight
# Llama checkpoint and dataset, then runs gguftune on them. Output goes to ./demo (or $1).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
out="${1:-demo}"
cargo build --release --locked --bin gguftune --example demo_inputs
./target/release/examples/demo_inputs "$out"
bin=./target/release/gguftune
echo "== inspect the Hugging Face checkpoint"
"$bin" inspect "$out/hf-model"
echo "== inspect a GGUF model"
"$bin" inspect "$out/tiny.gguf" --tensors
echo "== the same as JSON, for scripts"
"$bin" inspect "$out/tiny.gguf" --json | head -n 20
echo "demo: done (convert and finetune join this script as they land)"
