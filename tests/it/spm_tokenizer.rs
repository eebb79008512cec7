//! Checkpoints whose tokenizer is a SentencePiece `tokenizer.model` (Llama 1/2, Mistral v0.1,
//! Code Llama): converted, then tokenized by llama.cpp exactly as the `sentencepiece` library
//! does. The model and the reference ids come from the real tool: scripts/make-spm-fixture.py
//! trained tests/data/spm/tokenizer.model and recorded `sp.encode(s)` in reference.json.

use std::fs;
use std::path::{Path, PathBuf};

use gguftune::convert;
use gguftune::ggml::{LlamaModel, Runtime};
use gguftune::gguf::GgufFile;
use gguftune::hf::Checkpoint;
use gguftune::quant::FileType;
use serde_json::Value;

use crate::common::fixtures::{tiny_llama, Dtype, Shards, TinyLlamaSpec, TOKENIZER_SAMPLES};
use crate::common::{repo_root, temp_dir};

/// What scripts/make-spm-fixture.py recorded.
struct Reference {
    piece_count: usize,
    bos_id: i32,
    eos_id: i32,
    /// (text, `sp.encode(text)`).
    samples: Vec<(String, Vec<i32>)>,
}

fn fixture_dir() -> PathBuf {
    repo_root().join("tests/data/spm")
}

fn reference() -> Reference {
    let text = fs::read_to_string(fixture_dir().join("reference.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let int = |key: &str| v[key].as_i64().unwrap_or_else(|| panic!("reference.json: {key}"));
    let samples = v["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let ids = s["ids"].as_array().unwrap().iter().map(|id| i32::try_from(id.as_i64().unwrap()).unwrap());
            (s["text"].as_str().unwrap().to_owned(), ids.collect())
        })
        .collect();
    Reference {
        piece_count: usize::try_from(int("piece_count")).unwrap(),
        bos_id: i32::try_from(int("bos_id")).unwrap(),
        eos_id: i32::try_from(int("eos_id")).unwrap(),
        samples,
    }
}

/// A tiny Llama checkpoint whose tokenizer is the fixture's `tokenizer.model` alone: the
/// fixture's `tokenizer.json` is deleted. Its `tokenizer_config.json` (`<s>`, `</s>`, `<unk>` at
/// ids 1, 2, 0 with `add_bos_token`) and `config.json` agree with the model's trainer spec, and
/// `vocab_size` (512) is above the model's 480 pieces, so the vocabulary is padded as well.
fn spm_checkpoint(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    let info = tiny_llama(&dir, &TinyLlamaSpec::default(), Dtype::F32, Shards::One, 5).unwrap();
    fs::remove_file(dir.join("tokenizer.json")).unwrap();
    fs::copy(fixture_dir().join("tokenizer.model"), dir.join("tokenizer.model")).unwrap();
    let r = reference();
    assert!(info.vocab_size >= r.piece_count, "the model's vocab_size must hold every piece");
    assert_eq!((info.bos_id, info.eos_id), (r.bos_id as u32, r.eos_id as u32), "fixture and model disagree on BOS/EOS");
    dir
}

fn convert_f32(dir: &Path, out: &Path) {
    crate::common::convert_to(dir, FileType::F32, out).unwrap();
}

/// llama.cpp's tokens for every sample are BOS followed by SentencePiece's.
fn assert_tokenizes_like_sentencepiece(gguf: &Path, case: &str) {
    let r = reference();
    let model = LlamaModel::load(Runtime::get(), gguf).unwrap();
    let mut failures = Vec::new();
    for (text, ids) in &r.samples {
        let mut want = vec![r.bos_id];
        want.extend(ids);
        let got = model.tokenize(text, true, false).unwrap();
        if got != want {
            failures.push(format!("{text:?}:\n  llama.cpp     {got:?}\n  sentencepiece {want:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{case}: {} of {} samples differ:\n{}",
        failures.len(),
        r.samples.len(),
        failures.join("\n")
    );
}

#[test]
fn reference_covers_every_tokenizer_sample() {
    let r = reference();
    for sample in TOKENIZER_SAMPLES {
        assert!(
            r.samples.iter().any(|(text, _)| text == sample),
            "{sample:?} missing: rerun scripts/make-spm-fixture.py"
        );
    }
}

#[test]
fn llama_cpp_tokenizes_a_converted_tokenizer_model_like_sentencepiece() {
    let root = temp_dir();
    let dir = spm_checkpoint(root.path(), "spm");
    let out = root.path().join("spm.gguf");
    convert_f32(&dir, &out);

    let r = reference();
    let file = GgufFile::open(&out).unwrap();
    let g = file.gguf().unwrap();
    assert_eq!(g.get_str("tokenizer.ggml.model"), Some("llama"));
    let tokens: Vec<&str> =
        g.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()).unwrap().strings().unwrap().collect();
    assert_eq!(tokens.len(), 512);
    assert_eq!(&tokens[..4], ["<unk>", "<s>", "</s>", "<0x00>"]);
    assert_eq!(tokens[r.piece_count], format!("[PAD{}]", r.piece_count));
    let id = |key: &str| g.get(key).and_then(|v| v.as_u64());
    assert_eq!(id("tokenizer.ggml.bos_token_id"), Some(r.bos_id as u64));
    assert_eq!(id("tokenizer.ggml.eos_token_id"), Some(r.eos_id as u64));
    assert_eq!(g.get("tokenizer.ggml.add_space_prefix").and_then(|v| v.as_bool()), Some(true));
    assert!(g.get_str("tokenizer.chat_template").is_some(), "tokenizer_config.json's template is kept");
    drop(file);

    assert_tokenizes_like_sentencepiece(&out, "with tokenizer_config.json");
}

#[test]
fn the_trainer_spec_alone_gives_the_special_tokens() {
    // No tokenizer_config.json or generation_config.json, and no ids in config.json: BOS, EOS
    // and UNK come from the model's trainer spec, and BOS is added by default.
    let root = temp_dir();
    let dir = spm_checkpoint(root.path(), "bare");
    fs::remove_file(dir.join("tokenizer_config.json")).unwrap();
    fs::remove_file(dir.join("generation_config.json")).unwrap();
    let config_path = dir.join("config.json");
    let mut config: Value = serde_json::from_str(&fs::read_to_string(&config_path).unwrap()).unwrap();
    let obj = config.as_object_mut().unwrap();
    obj.remove("bos_token_id");
    obj.remove("eos_token_id");
    fs::write(&config_path, config.to_string()).unwrap();
    let out = root.path().join("bare.gguf");
    convert_f32(&dir, &out);
    assert_tokenizes_like_sentencepiece(&out, "trainer spec only");
}

#[test]
fn a_folder_without_any_tokenizer_names_both_files() {
    let root = temp_dir();
    let dir = spm_checkpoint(root.path(), "none");
    fs::remove_file(dir.join("tokenizer.model")).unwrap();
    let ckpt = Checkpoint::open(&dir).unwrap();
    let err = convert::plan(&ckpt, FileType::F32).unwrap_err().to_string();
    assert!(
        err.contains("no tokenizer found: expected 'tokenizer.json' or a SentencePiece 'tokenizer.model'"),
        "{err}"
    );
}
