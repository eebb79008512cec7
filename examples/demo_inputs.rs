//! Makes the inputs of `scripts/demo.sh`, `scripts/bench-convert.sh`, `scripts/bench-finetune.sh`
//! and `scripts/bench-split.sh` in a folder: a random-weight Llama checkpoint in Hugging Face layout (BF16, two shards, a trained
//! tokenizer) and a training set. No downloads: everything is generated from a seed.
//!
//! Usage: cargo run --example demo_inputs -- OUT_DIR [demo|tiny|bench|tinyllama|smollm|split [EXAMPLES [LAYERS]]]
//! - `demo` (default): hidden 256, 2 layers, vocab 512 (about 1.4 M parameters), and the
//!   sentiment task of `scripts/demo.sh`: [`DEMO_TRAIN`] Alpaca examples in `train.jsonl` and
//!   [`DEMO_EVAL`] held-out ones in `eval.jsonl`, reviews that never occur in the training set,
//!   half positive and half negative; the first of them also as `heldout-prompt.txt` (the user's
//!   message) and `heldout-answer.txt` (its label), for `generate`. Hidden 256 rather than 64: the
//!   final RMSNorm fixes the length of the last hidden state at about sqrt(hidden), and the LoRA
//!   adapter cannot change the output matrix, so the largest logit it can give the right answer
//!   grows with sqrt(hidden): at 64 a trained adapter's loss stays near 2, at 256 it can near 0.
//! - `tiny`: hidden 64, 2 layers, vocab 512: converts in milliseconds. 64 Alpaca examples.
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
//! - `split`: hidden 512, 8 layers, 8 heads / 4 KV heads, ffn 1408, vocab 4096, byte-level BPE
//!   tokenizer: about 46 MB of BF16, layers that cost more than the output (a step of 64 tokens
//!   takes a fraction of a second on one core), for splitting the layers among devices.
//!   `EXAMPLES` (default 32) `{"text"}` examples as `smollm`'s; `LAYERS` (default 8).

#[path = "../tests/it/common/fixtures.rs"]
mod fixtures;

use std::path::{Path, PathBuf};

use serde_json::json;
use tokenizers::Tokenizer;

/// Tokens of each `smollm` and `split` training example, BOS and EOS included (the benchmark's `--ctx`).
const SMOLLM_EXAMPLE_TOKENS: usize = 256;

/// Seed of the weights and of the training data.
const SEED: u64 = 42;

/// Training examples of the `demo` shape.
const DEMO_TRAIN: usize = 400;
/// Held-out examples of the `demo` shape (even: as many positive as negative).
const DEMO_EVAL: usize = 40;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().unwrap_or_else(|| "demo".to_owned()));
    let shape = args.next().unwrap_or_else(|| "demo".to_owned());
    let mut number = |name: &str, default: usize| match args.next() {
        None => default,
        Some(text) => text.parse().unwrap_or_else(|_| usage(&format!("{name} must be a number, not '{text}'"))),
    };
    let spec = match shape.as_str() {
        "demo" => fixtures::TinyLlamaSpec { hidden: 256, ffn: 512, ..fixtures::TinyLlamaSpec::default() },
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
        "split" => fixtures::TinyLlamaSpec {
            hidden: 512,
            layers: 8,
            heads: 8,
            kv_heads: 4,
            ffn: 1408,
            ctx: 2048,
            tokenizer: fixtures::TinyTokenizer::Bpe,
            vocab_size: Some(4096),
            ..fixtures::TinyLlamaSpec::default()
        },
        other => usage(&format!("unknown shape '{other}' (expected demo, tiny, bench, tinyllama, smollm or split)")),
    };
    let (examples, spec) = if shape == "demo" {
        (DEMO_TRAIN, spec)
    } else if shape == "tiny" {
        (64, spec)
    } else {
        let default_examples = if shape == "smollm" || shape == "split" { 32 } else { 64 };
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
    let examples = match shape.as_str() {
        "demo" => {
            write_sentiment_task(&out)?;
            DEMO_TRAIN
        }
        "smollm" | "split" => {
            write_fixed_length_texts(&data, &model.join("tokenizer.json"), examples)?;
            examples
        }
        _ => {
            fixtures::write_jsonl(&data, &fixtures::alpaca_rows(examples, SEED))?;
            examples
        }
    };
    let held_out =
        if shape == "demo" { format!(", eval.jsonl ({DEMO_EVAL} held-out examples)") } else { String::new() };
    eprintln!(
        "inputs in {}: hf-model/ ({} layers, {} tensors, {} bytes, vocab {}), train.jsonl ({examples} examples){held_out}",
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
    eprintln!("{message}\nusage: demo_inputs OUT_DIR [demo|tiny|bench|tinyllama|smollm|split [EXAMPLES [LAYERS]]]");
    std::process::exit(2);
}

/// Writes the sentiment task of the demo into `out`: every review the fixture word lists make
/// (template × subject × adjective), shuffled; [`DEMO_EVAL`] of them, alternately positive and
/// negative, go to `eval.jsonl`, and [`DEMO_TRAIN`] of the others to `train.jsonl`, all as Alpaca
/// records. Every adjective occurs in training, so the held-out reviews are new sentences made of
/// known words: the adapter has to learn which words are positive, not remember sentences. The
/// first held-out record is also written as `heldout-prompt.txt` (the user's message, instruction
/// and review on two lines, as finetune renders an Alpaca record with a chat template) and
/// `heldout-answer.txt` (its label).
fn write_sentiment_task(out: &Path) -> std::io::Result<()> {
    let labelled = [(fixtures::POSITIVE_WORDS, "positive"), (fixtures::NEGATIVE_WORDS, "negative")];
    let mut reviews: Vec<(String, &str, &str)> = Vec::new();
    for template in fixtures::REVIEW_TEMPLATES {
        for subject in fixtures::SUBJECTS {
            for (words, label) in labelled {
                for adjective in words {
                    let review = template.replace("{s}", subject).replace("{a}", adjective);
                    reviews.push((review, adjective, label));
                }
            }
        }
    }
    let mut rng = fixtures::Rng::new(SEED ^ 0xDE30);
    for i in (1..reviews.len()).rev() {
        reviews.swap(i, rng.below(i + 1));
    }
    let mut held_out = Vec::with_capacity(DEMO_EVAL);
    for i in 0..DEMO_EVAL {
        let label = labelled[i % 2].1;
        let at = reviews.iter().position(|r| r.2 == label).expect("more reviews than held out");
        held_out.push(reviews.remove(at));
    }
    let train = &reviews[..DEMO_TRAIN];
    for adjective in fixtures::POSITIVE_WORDS.iter().chain(fixtures::NEGATIVE_WORDS) {
        assert!(train.iter().any(|r| r.1 == *adjective), "'{adjective}' occurs in no training review");
    }
    let instruction = fixtures::SENTIMENT_INSTRUCTION;
    let row = |r: &(String, &str, &str)| json!({ "instruction": instruction, "input": r.0, "output": r.2 });
    fixtures::write_jsonl(&out.join("train.jsonl"), &train.iter().map(row).collect::<Vec<_>>())?;
    fixtures::write_jsonl(&out.join("eval.jsonl"), &held_out.iter().map(row).collect::<Vec<_>>())?;
    let (review, _, label) = &held_out[0];
    std::fs::write(out.join("heldout-prompt.txt"), format!("{instruction}\n{review}"))?;
    std::fs::write(out.join("heldout-answer.txt"), label)?;
    Ok(())
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
