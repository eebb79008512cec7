//! Makes the inputs of `scripts/demo.sh`, `scripts/bench-convert.sh` and `scripts/bench-finetune.sh`
//! in a folder: a random-weight Llama checkpoint in Hugging Face layout (BF16, two shards, a trained
//! tokenizer) and a training set. No downloads: everything is generated from a seed.
//!
//! Usage: cargo run --example demo_inputs -- OUT_DIR [tiny|bench|tinyllama|smollm [EXAMPLES [LAYERS]]]
//! - `tiny` (default): hidden 64, 2 layers, vocab 512: converts in milliseconds. 64 Alpaca examples.
//! - `bench`: hidden 2048, 4 layers, 32 heads / 4 KV heads, ffn 5632, vocab 32000 (a 1.1B Llama's
//!   layer shapes with fewer layers): about 0.6 GB of BF16. `EXAMPLES` (default 64) Alpaca
//!   examples; `LAYERS` (default 4; 22 is the 1.1B model's depth).
//! - `tinyllama`: the whole 1.1B Llama shape of `bench` (22 layers by default, about 2.2 GB of
//!   BF16) with a Llama-2-style SentencePiece tokenizer (BPE with byte fallback), which llama.cpp's
//!   own converter reads without its table of known pre-tokenizers: the input of the convert rows
//!   of `scripts/bench-peers.sh`.
//! - `smollm`: SmolLM-135M's shape: hidden 576, 30 layers, 9 heads / 3 KV heads, ffn 1536, vocab
//!   49152, tied embeddings, byte-level BPE tokenizer: about 270 MB of BF16. `EXAMPLES` (default 32)
//!   `{"text"}` examples of exactly [`SMOLLM_EXAMPLE_TOKENS`] tokens each once BOS and EOS are added,
//!   so that training at `--ctx 256` runs on full sequences. `LAYERS` (default 30) makes a shallower
//!   model of the same layer shape, for quick runs of the benchmark.

#[path = "../tests/it/common/fixtures.rs"]
mod fixtures;

use std::path::{Path, PathBuf};

use serde_json::json;
use tokenizers::Tokenizer;

/// Tokens of each `smollm` training example, BOS and EOS included (the benchmark's `--ctx`).
const SMOLLM_EXAMPLE_TOKENS: usize = 256;

/// Seed of the weights and of the training data.
const SEED: u64 = 42;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().unwrap_or_else(|| "demo".to_owned()));
    let shape = args.next().unwrap_or_else(|| "tiny".to_owned());
    let mut number = |name: &str, default: usize| match args.next() {
        None => default,
        Some(text) => text.parse().unwrap_or_else(|_| usage(&format!("{name} must be a number, not '{text}'"))),
    };
    let spec = match shape.as_str() {
        "tiny" => fixtures::TinyLlamaSpec::default(),
        "bench" => fixtures::TinyLlamaSpec {
            hidden: 2048,
            layers: 4,
            heads: 32,
            kv_heads: 4,
            ffn: 5632,
            ctx: 2048,
            tokenizer: fixtures::TinyTokenizer::Bpe,
            vocab_size: Some(32000),
            ..fixtures::TinyLlamaSpec::default()
        },
        "tinyllama" => fixtures::TinyLlamaSpec {
            hidden: 2048,
            layers: 22,
            heads: 32,
            kv_heads: 4,
            ffn: 5632,
            ctx: 2048,
            tokenizer: fixtures::TinyTokenizer::Spm,
            vocab_size: Some(32000),
            ..fixtures::TinyLlamaSpec::default()
        },
        "smollm" => fixtures::TinyLlamaSpec {
            hidden: 576,
            layers: 30,
            heads: 9,
            kv_heads: 3,
            ffn: 1536,
            ctx: 2048,
            tie_embeddings: true,
            tokenizer: fixtures::TinyTokenizer::Bpe,
            vocab_size: Some(49152),
            ..fixtures::TinyLlamaSpec::default()
        },
        other => usage(&format!("unknown shape '{other}' (expected tiny, bench, tinyllama or smollm)")),
    };
    let (examples, spec) = if shape == "tiny" {
        (64, spec)
    } else {
        let default_examples = if shape == "smollm" { 32 } else { 64 };
        let (examples, layers) = (number("EXAMPLES", default_examples), number("LAYERS", spec.layers));
        if examples == 0 || layers == 0 {
            usage("EXAMPLES and LAYERS must be at least 1");
        }
        (examples, fixtures::TinyLlamaSpec { layers, ..spec })
    };

    let model = out.join("hf-model");
    std::fs::create_dir_all(&model)?;
    let info = fixtures::tiny_llama(&model, &spec, fixtures::Dtype::BF16, fixtures::Shards::Two, SEED)?;
    let data = out.join("train.jsonl");
    if shape == "smollm" {
        write_fixed_length_texts(&data, &model.join("tokenizer.json"), examples)?;
    } else {
        fixtures::write_jsonl(&data, &fixtures::alpaca_rows(examples, SEED))?;
    }
    eprintln!(
        "inputs in {}: hf-model/ ({} layers, {} tensors, {} bytes, vocab {}), train.jsonl ({examples} examples)",
        out.display(),
        spec.layers,
        info.tensor_names.len(),
        info.total_size,
        info.vocab_size
    );
    Ok(())
}

/// Prints `message` and the usage line, and exits with status 2.
fn usage(message: &str) -> ! {
    eprintln!("{message}\nusage: demo_inputs OUT_DIR [tiny|bench|tinyllama|smollm [EXAMPLES [LAYERS]]]");
    std::process::exit(2);
}

/// Writes `n` `{"text"}` rows whose text is [`SMOLLM_EXAMPLE_TOKENS`] − 2 tokens long under the
/// tokenizer at `tokenizer_path` (training adds BOS before and EOS after a text row). The texts are
/// sentences of the fixture corpus and synthetic reviews in a seeded random order.
fn write_fixed_length_texts(path: &Path, tokenizer_path: &Path, n: usize) -> std::io::Result<()> {
    let tokenizer = Tokenizer::from_file(tokenizer_path).map_err(std::io::Error::other)?;
    let count = |text: &str| tokenizer.encode(text, false).map(|e| e.get_ids().len()).map_err(std::io::Error::other);
    let target = SMOLLM_EXAMPLE_TOKENS - 2;
    let mut sentences = fixtures::tokenizer_corpus();
    sentences.extend(fixtures::sentiment_examples(200, SEED).into_iter().map(|e| e.review));
    let mut rng = fixtures::Rng::new(SEED ^ 0x7E47);
    let mut rows = Vec::with_capacity(n);
    let mut lengths = Vec::with_capacity(n);
    for _ in 0..n {
        let mut text = String::new();
        let mut tokens = 0;
        // Whole sentences while they fit, then words of the next one, then one-token fillers.
        loop {
            let next = format!("{text} {}", rng.pick(&sentences));
            let next = next.trim_start();
            let next_tokens = count(next)?;
            if next_tokens > target {
                break;
            }
            (text, tokens) = (next.to_owned(), next_tokens);
        }
        for word in rng.pick(&sentences).split(' ').chain(std::iter::repeat_n("a", target)) {
            if tokens == target {
                break;
            }
            let next = format!("{text} {word}");
            let next_tokens = count(&next)?;
            if next_tokens <= target {
                (text, tokens) = (next, next_tokens);
            }
        }
        lengths.push(tokens + 2);
        rows.push(json!({ "text": text }));
    }
    fixtures::write_jsonl(path, &rows)?;
    let (min, max) = (lengths.iter().min().unwrap_or(&0), lengths.iter().max().unwrap_or(&0));
    eprintln!("train.jsonl: {n} texts of {min}..={max} tokens with BOS and EOS");
    Ok(())
}
