//! `config.json` + `tokenizer.json` loading as `convert` does it (`ModelConfig::load`, then
//! `load_tokenizer` with the config's vocabulary size). The input is split at the first `0xFF`
//! byte (never valid UTF-8) into the two files; without one, only `config.json` is fuzzed and the
//! tokenizer is loaded with no vocabulary size.
#![no_main]

use gguftune::hf::{load_tokenizer, ModelConfig, TOKENIZER_FILE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (config, tokenizer) = match data.iter().position(|&b| b == 0xFF) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b"{}"[..]),
    };
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("config.json"), config).expect("write config.json");
    std::fs::write(dir.path().join(TOKENIZER_FILE), tokenizer).expect("write tokenizer.json");
    let vocab = ModelConfig::load(dir.path()).ok().and_then(|c| usize::try_from(c.vocab_size).ok());
    if let Ok(tokenizer) = load_tokenizer(dir.path(), vocab) {
        std::hint::black_box(tokenizer.to_metadata());
    }
});
