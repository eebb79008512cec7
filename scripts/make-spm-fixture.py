#!/usr/bin/env python3
"""Makes the SentencePiece fixture of tests/it/spm_tokenizer.rs with the real tool.

Rerun from the repository root (needs the `sentencepiece` Python package, `pip install
sentencepiece`; 0.2.x was used):

    python3 scripts/make-spm-fixture.py

It trains a tiny BPE SentencePiece model, Llama-2 style (byte fallback, identity normalization,
whitespace kept, a dummy prefix, split digits), on the small corpus below and writes:

- tests/data/spm/tokenizer.model: the model (a serialized `ModelProto`, a few KB);
- tests/data/spm/reference.json: for each sample string, the ids `sp.encode(s)` gives (no BOS or
  EOS), and the model's special ids and piece count.

Training runs on one thread over a fixed corpus in a fixed order, so the files come out the same
on every run. The samples include every string of `TOKENIZER_SAMPLES` in
tests/it/common/fixtures.rs (the Rust test checks that none is missing), so change both together.
"""
import io
import json
import sys
from pathlib import Path

import sentencepiece as spm

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "spm"

# The training parameters, Llama-2's where they matter for encoding. vocab_size: 3 special
# pieces, 256 byte pieces and the corpus's 142 characters need 401; 480 leaves 79 merged pieces.
TRAINING = dict(
    model_type="bpe",
    vocab_size=480,
    byte_fallback=True,
    normalization_rule_name="identity",
    remove_extra_whitespaces=False,
    add_dummy_prefix=True,
    split_digits=True,
    allow_whitespace_only_pieces=True,
    character_coverage=0.99995,
    max_sentencepiece_length=16,
    num_threads=1,
    shuffle_input_sentence=False,
    input_sentence_size=0,
    unk_id=0,
    bos_id=1,
    eos_id=2,
    pad_id=-1,
    minloglevel=2,
)
SEED = 17

# English, code and some accented, CJK and Cyrillic text. No emoji, so those fall back to bytes.
CORPUS = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps in the sun.",
    "Once upon a time there was a little model that wanted to learn how to talk.",
    "It read many books, and every day it got a little better at guessing the next word.",
    "Fine-tuning adapts a pretrained model to a new task with a small learning rate.",
    "We train low-rank adapters on quantized weights and then merge them back.",
    "Hello world! Hello there. This is a test of the tokenizer, and it is a small one.",
    "Numbers like 0, 1, 2, 3, 42, 100, 2024 and 3.14159 appear in text too.",
    "fn main() {\n    let x: u32 = 42;\n    println!(\"x = {}\", x);\n}\n",
    "def add(a, b):\n\treturn a + b\n\nprint(add(1, 2))\n",
    "for (int i = 0; i < n; i++) { sum += values[i]; }",
    "if let Some(value) = map.get(&key) { return Ok(value.clone()); }",
    "    indented code;\n        more indented code;\n",
    "{\"name\": \"tiny\", \"layers\": 2, \"tags\": [\"test\", \"json\"]}",
    "Le café est très bon, et la crème brûlée aussi. C'est naïve, non?",
    "Über den Wolken muss die Freiheit wohl grenzenlos sein. Straße, Größe, Fuß.",
    "日本語のテキストも少し含めます。東京は日本の首都です。",
    "Привет, мир! Это маленький тест.",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz 0123456789",
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ Hello World",
    "I'm sure you'll like it; they've said it's what we'd wanted. You're right.",
    "Question: what is two plus two?\nAnswer: four.\n\nQuestion: and the sky?\nAnswer: blue.",
    "The movie was great. The food was awful. The service was lovely. The book was boring.",
]

# TOKENIZER_SAMPLES of tests/it/common/fixtures.rs, in its order.
FIXTURE_SAMPLES = [
    "Hello world! This is a tiny tokenizer test.",
    "1234567 89",
    "a    b",
    "\tindented\twith\ttabs",
    "line one\n\nline two\n",
    "fn main() { println!(\"hi\"); }",
    "naïve café 日本語 🤗",
    " Mixed: x=42; y = \"ünïcödé\" // 3.14 it's DONE\r\n  end ",
    "The movie was great.",
]

# More shapes: leading spaces, only spaces, emoji, mixed scripts, nothing at all.
EXTRA_SAMPLES = [
    "   three leading spaces",
    " one leading space",
    "    ",
    " ",
    "",
    "🦀 crabs and 🚀 rockets 👩‍💻",
    "Ελληνικά, Русский, עברית, العربية, 中文, 한국어 and English",
    "trailing spaces   ",
    "x\n   y\n\n\n   z",
]


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    spm.set_random_generator_seed(SEED)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_writer=model, **TRAINING)
    model_bytes = model.getvalue()
    (OUT / "tokenizer.model").write_bytes(model_bytes)

    sp = spm.SentencePieceProcessor(model_proto=model_bytes)
    samples = FIXTURE_SAMPLES + EXTRA_SAMPLES
    reference = {
        "generator": "scripts/make-spm-fixture.py",
        "sentencepiece_version": spm.__version__,
        "training": TRAINING,
        "seed": SEED,
        "piece_count": sp.get_piece_size(),
        "unk_id": sp.unk_id(),
        "bos_id": sp.bos_id(),
        "eos_id": sp.eos_id(),
        "pad_id": sp.pad_id(),
        "samples": [{"text": s, "ids": sp.encode(s)} for s in samples],
    }
    # One line per sample, so that a change shows as a readable diff.
    text = json.dumps(reference, ensure_ascii=False, indent=1)
    for sample in reference["samples"]:
        spread = json.dumps(sample, ensure_ascii=False, indent=1).replace("\n", "\n  ")
        text = text.replace(spread, json.dumps(sample, ensure_ascii=False), 1)
    (OUT / "reference.json").write_text(text + "\n", encoding="utf-8")
    print(f"wrote {OUT / 'tokenizer.model'} ({len(model_bytes)} bytes, {sp.get_piece_size()} pieces) "
          f"and {OUT / 'reference.json'} ({len(samples)} samples)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
