//! Makes the inputs of `scripts/demo.sh` and `scripts/bench-convert.sh` in a folder: a random-weight
//! Llama checkpoint in Hugging Face layout (BF16, two shards, a trained tokenizer) and a small
//! training set. No downloads: everything is generated from a seed.
//!
//! Usage: cargo run --example demo_inputs -- OUT_DIR [tiny|bench]
//! - `tiny` (default): hidden 64, 2 layers, vocab 512: converts in milliseconds.
//! - `bench`: hidden 2048, 4 layers, 32 heads / 4 KV heads, ffn 5632, vocab 32000 (a 1.1B Llama's
//!   layer shapes with fewer layers): about 0.6 GB of BF16.

#[path = "../tests/it/common/fixtures.rs"]
mod fixtures;

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().unwrap_or_else(|| "demo".to_owned()));
    let spec = match args.next().as_deref() {
        None | Some("tiny") => fixtures::TinyLlamaSpec::default(),
        Some("bench") => fixtures::TinyLlamaSpec {
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
        Some(other) => {
            eprintln!("unknown shape '{other}' (expected tiny or bench)");
            std::process::exit(2);
        }
    };
    let model = out.join("hf-model");
    std::fs::create_dir_all(&model)?;
    let info = fixtures::tiny_llama(&model, &spec, fixtures::Dtype::BF16, fixtures::Shards::Two, 42)?;
    fixtures::write_jsonl(&out.join("train.jsonl"), &fixtures::alpaca_rows(64, 42))?;
    eprintln!(
        "inputs in {}: hf-model/ ({} tensors, {} bytes, vocab {}), train.jsonl (64 examples)",
        out.display(),
        info.tensor_names.len(),
        info.total_size,
        info.vocab_size
    );
    Ok(())
}
