#!/usr/bin/env bash
# Writes the seed corpora of the fuzz targets (fuzz/corpus/TARGET/, gitignored) from our own
# fixtures: the tiny checkpoint of `examples/demo_inputs.rs`, its GGUF conversions, its training
# set, the configs of tests/fixtures, JSONL rows of every dataset format, and
# the chat templates of tests/it.
#
#   scripts/fuzz-seeds.sh [CORPUS_DIR]     default: fuzz/corpus
#
# Targets that take two files read them from one input split at a 0xFF byte (see fuzz/fuzz_targets).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CORPUS=${1:-$ROOT/fuzz/corpus}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

cd "$ROOT"
# The test build makes both binaries (with the features the test build unifies, so no second build).
cargo test --quiet --locked --no-run
BIN=$ROOT/target/debug
"$BIN/examples/demo_inputs" "$WORK" tiny >/dev/null
HF=$WORK/hf-model

mkdir -p "$CORPUS"/{gguf_parse,safetensors_checkpoint,hf_config_tokenizer,jsonl_dataset,chat_template}

# GGUF: the tiny checkpoint converted to several types (tokenizer arrays, every quant family).
for type in f32 f16 q8_0 q4_k_m; do
    "$BIN/gguftune" convert "$HF" -o "$CORPUS/gguf_parse/tiny-$type.gguf" --type "$type" >/dev/null
done

# Safetensors: each shard alone, and the index followed by 0xFF and the shard it names; plus a
# small single-tensor file built here (8-byte header length, JSON header, data).
sep() { printf '\377'; }
for shard in "$HF"/model-*.safetensors; do cp "$shard" "$CORPUS/safetensors_checkpoint/$(basename "$shard")"; done
first=$(ls "$HF"/model-*.safetensors | head -1)
{ sed "s/$(basename "$first" | sed 's/[.]/[.]/g')/model-00001-of-00001.safetensors/g; s/model-00002-of-00002[.]safetensors/model-00001-of-00001.safetensors/g" \
    "$HF/model.safetensors.index.json"; sep; cat "$first"; } >"$CORPUS/safetensors_checkpoint/index-and-shard"
header='{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"__metadata__":{"format":"pt"}}'
{ printf "$(printf '\\x%02x' $(( ${#header} & 255 )) $(( ${#header} >> 8 )) 0 0 0 0 0 0)"; printf '%s' "$header"; head -c 16 /dev/zero; } \
    >"$CORPUS/safetensors_checkpoint/small.safetensors"

# config.json + tokenizer.json, and config.json alone.
{ cat "$HF/config.json"; sep; cat "$HF/tokenizer.json"; } >"$CORPUS/hf_config_tokenizer/tiny"
cp "$HF/config.json" "$CORPUS/hf_config_tokenizer/config-only"
# The configs transformers wrote (tests/fixtures: Falcon, GPT-NeoX, Llama 3, Qwen3), each with the tiny
# tokenizer.
for config in tests/fixtures/{falcon,gptneox,llama3,qwen3}/*/config.json; do
    name=$(basename "$(dirname "$(dirname "$config")")")-$(basename "$(dirname "$config")")
    { cat "$config"; sep; cat "$HF/tokenizer.json"; } >"$CORPUS/hf_config_tokenizer/$name"
done

# JSONL: the first byte picks the format (0 auto, then Format::ALL order: chat, alpaca, dolly,
# prompt-completion, text); each file is tried auto and forced.
rows() {
    case $1 in
        chat) printf '%s\n' '{"messages":[{"role":"system","content":"Be terse."},{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello."}]}' ;;
        alpaca) head -3 "$WORK/train.jsonl" ;;
        dolly) printf '%s\n' '{"instruction":"Name a colour.","context":"","response":"Blue."}' '{"instruction":"Sum","context":"2 and 3","response":"5","category":"math"}' ;;
        prompt-completion) printf '%s\n' '{"prompt":"2+2=","completion":"4"}' '{"prompt":"Capital of France?","completion":" Paris"}' ;;
        text) printf '%s\n' '{"text":"Once upon a time."}' '{"text":"\u00e9t\u00e9 \ud83d\ude00"}' ;;
    esac
}
i=1
for format in chat alpaca dolly prompt-completion text; do
    { printf "\\x00"; rows "$format"; } >"$CORPUS/jsonl_dataset/$format-auto"
    { printf "\\x0$i"; rows "$format"; } >"$CORPUS/jsonl_dataset/$format-forced"
    i=$((i + 1))
done

# Chat templates: every `..._TEMPLATE: &str = r#"..."#` constant in tests/it, followed by 0xFF and
# a conversation (`role<TAB>content` lines).
n=0
grep -rhoP 'TEMPLATE: &str =\s*r#"\K.*(?="#;)' tests/it | while IFS= read -r template; do
    n=$((n + 1))
    { printf '%s' "$template"; sep; printf 'system\tBe terse.\nuser\tHi\nassistant\tHello.\nuser\tBye'; } \
        >"$CORPUS/chat_template/template-$n"
    { printf '%s' "$template"; sep; printf 'user\tHi\nassistant\tHello.'; } >"$CORPUS/chat_template/template-$n-short"
done

for dir in "$CORPUS"/*/; do echo "$(basename "$dir"): $(ls "$dir" | wc -l) seeds"; done
