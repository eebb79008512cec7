//! A Falcon-style tokenizer.json (tiiuae/falcon-7b's pre-tokenizer sequence) read by our
//! converter, written as GGUF tokenizer metadata with `tokenizer.ggml.pre = "falcon"`, and
//! tokenized by llama.cpp as the `tokenizers` crate tokenizes it.

use std::fs;
use std::path::{Path, PathBuf};

use gguftune::ggml::{LlamaModel, Runtime};
use gguftune::gguf::{GgufPlan, GgufWriter};
use gguftune::hf::{load_tokenizer, TOKENIZER_FILE};
use serde_json::json;
use tokenizers::Tokenizer;

use crate::common::fixtures::{tiny_falcon_tokenizer, FALCON_SPECIAL_TOKENS};
use crate::common::temp_dir;

/// Texts without digits: punctuation runs, ASCII symbols, Unicode punctuation, whitespace runs
/// and added tokens.
const SAMPLES: &[&str] = &[
    "Hello, world! (a+b)=c; x|y ~z",
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ Hello World",
    "I'm sure you'll like it; they've said it's what we'd wanted. You're right.",
    "fn main() { println!(\"hi\"); }",
    "if let Some(value) = map.get(&key) { return Ok(value.clone()); }",
    "«Bonjour»… — dit-il. ¿Qué? ¡Sí!",
    "naïve café 日本語 🤗",
    "a    b\tindented\twith\ttabs\n\nline two  !?  \n",
    ">>TITLE<< Falcon flies<|endoftext|>",
];

/// Texts with digits. llama.cpp's falcon pre-tokenizer has no `Digits` step, so some of its pieces
/// differ from tokenizers' here: " 7" and " 42" stay one piece instead of "Ġ" + "7", and "ü" (the
/// byte-level "Ã¼", '¼' being numeric) is not split in two. The tokens agree all the same, since a
/// BPE trained with Falcon's pre-tokenizer never learns a merge across those splits (`Ġ 7`,
/// `Ã ¼`); a vocabulary that had one would tokenize these texts differently in llama.cpp (see
/// `FALCON` in src/hf/tokenizer.rs).
const DIGIT_SAMPLES: &[&str] = &["1234567 89", "x=42; y = 3.14", "Call 555-0123 before 10:30", " 7 apples", "ü² ½"];

/// `root/falcon/`: `tok` as its `tokenizer.json`, with Falcon's `tokenizer_config.json`.
fn falcon_folder(root: &Path, tok: &Tokenizer) -> PathBuf {
    let dir = root.join("falcon");
    fs::create_dir(&dir).unwrap();
    tok.save(dir.join(TOKENIZER_FILE), false).unwrap();
    let config = json!({ "add_prefix_space": false, "eos_token": "<|endoftext|>", "model_max_length": 2048,
                         "tokenizer_class": "PreTrainedTokenizerFast" });
    fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    dir
}

#[test]
fn llama_cpp_tokenizes_a_falcon_tokenizer_like_the_hugging_face_tokenizer() {
    let root = temp_dir();
    let tok = tiny_falcon_tokenizer();
    let vocab = load_tokenizer(&falcon_folder(root.path(), &tok), None).unwrap();
    assert_eq!(vocab.pre.as_deref(), Some("falcon"));
    assert_eq!(&vocab.tokens[..12], FALCON_SPECIAL_TOKENS);
    assert_eq!(vocab.eos_id, Some(11));

    // A vocabulary-only GGUF: llama.cpp reads only the architecture and the tokenizer keys.
    let out = root.path().join("falcon.gguf");
    let mut plan = GgufPlan::new();
    plan.add_kv("general.architecture", "falcon").unwrap();
    for (key, value) in vocab.to_metadata() {
        plan.add_kv(&key, value).unwrap();
    }
    GgufWriter::create(&out, plan).unwrap().finish().unwrap();
    let llama = LlamaModel::load_vocab(Runtime::get(), &out).unwrap();
    assert_eq!(llama.meta_val_str("tokenizer.ggml.pre").as_deref(), Some("falcon"));

    let hf =
        |text: &str| -> Vec<i32> { tok.encode(text, false).unwrap().get_ids().iter().map(|&i| i as i32).collect() };
    for text in SAMPLES.iter().chain(DIGIT_SAMPLES) {
        assert_eq!(llama.tokenize(text, false, true).unwrap(), hf(text), "{text:?}");
    }
}
