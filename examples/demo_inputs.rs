//! Makes the inputs of `scripts/demo.sh` in a folder: a tiny random-weight Llama checkpoint in
//! Hugging Face layout (BF16, two shards, a trained tokenizer), a small training set, and a tiny
//! GGUF model. No downloads: everything is generated from a seed.
//!
//! Usage: cargo run --example demo_inputs -- OUT_DIR

#[path = "../tests/it/common/fixtures.rs"]
mod fixtures;
#[allow(dead_code)]
#[path = "../tests/it/common/tiny_gguf.rs"]
mod tiny_gguf;

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "demo".to_owned()));
    let model = out.join("hf-model");
    std::fs::create_dir_all(&model)?;
    let spec = fixtures::TinyLlamaSpec::default();
    let info = fixtures::tiny_llama(&model, &spec, fixtures::Dtype::BF16, fixtures::Shards::Two, 42)?;
    fixtures::write_jsonl(&out.join("train.jsonl"), &fixtures::alpaca_rows(64, 42))?;
    tiny_gguf::write_tiny_llama(&out.join("tiny.gguf"), &tiny_gguf::TinyLlamaGguf::default(), 42);
    eprintln!(
        "demo inputs in {}: hf-model/ ({} tensors, vocab {}), train.jsonl (64 examples), tiny.gguf",
        out.display(),
        info.tensor_names.len(),
        info.vocab_size
    );
    Ok(())
}
