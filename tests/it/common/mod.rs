//! Helpers shared by the integration tests: fixtures made in code, handcrafted GGUF bytes.

pub mod fixtures;
#[allow(dead_code)]
pub mod gguf_bytes;
pub mod http_head;
pub mod hub_server;
pub mod ollama_server;
pub mod ollama_store;
pub mod peak_alloc;
#[allow(dead_code)]
pub mod reference;
pub mod rpc_server;
#[allow(dead_code)]
pub mod tiny_gguf;
pub mod training;
pub mod transformers_fixtures;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

/// Runs the built `gguftune` binary with `args` in `dir`.
pub fn gguftune(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gguftune"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the gguftune binary built by cargo runs")
}

/// Starts the built `gguftune` binary with `args` in `dir`, stdin empty, stdout and stderr piped:
/// a run a test watches, stops or kills while it works.
pub fn spawn_gguftune(dir: &std::path::Path, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_gguftune"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the gguftune binary built by cargo runs")
}

/// A fresh temporary folder for one test.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("gguftune-test-").tempdir().expect("a temp folder can be created")
}

/// A tiny Llama checkpoint of `spec` (f32 weights from `seed`) made in `root/m` and converted to
/// `root/m.gguf` as f32, opened. `root` must outlive the model (it maps the file).
pub fn tiny_f32_model(root: &std::path::Path, spec: &fixtures::TinyLlamaSpec, seed: u64) -> gguftune::model::Model {
    let dir = root.join("m");
    std::fs::create_dir(&dir).unwrap();
    fixtures::tiny_llama(&dir, spec, fixtures::Dtype::F32, fixtures::Shards::One, seed).unwrap();
    let path = root.join("m.gguf");
    convert_to(&dir, gguftune::quant::FileType::F32, &path).unwrap();
    gguftune::model::Model::open(&path).unwrap()
}

/// A checkpoint that transformers made: `family` `falcon` (scripts/make-falcon-fixture.py;
/// `variant` `mqa`, Falcon-7B's layout, or `gqa`, Falcon-40B's) or `gptneox`
/// (scripts/make-gptneox-fixture.py; `parallel`, Pythia's layout, or `sequential`), copied into
/// `root/<family>-<variant>` with the fixture tokenizer of the default
/// [`fixtures::TinyLlamaSpec`] (its vocabulary of 512 is the checkpoint's), once per `root`.
/// Returns the folder, the fixture's tokens and the logits transformers computed for them.
pub fn transformers_checkpoint(
    root: &std::path::Path,
    family: &str,
    variant: &str,
) -> (PathBuf, Vec<i32>, Vec<Vec<f32>>) {
    let fixture = fixture_dir(family, variant);
    // Named by its variant alone, which becomes general.name: llama.cpp sets token attributes
    // by the model's name, and one containing "phi3" must have Phi-3's special tokens
    // (`<|endoftext|>`), which the tiny tokenizer has not.
    let dir = root.join(family).join(variant);
    let scratch = root.join(format!("{family}-{variant}-tokenizer"));
    let spec = fixtures::TinyLlamaSpec::default();
    if !dir.exists() {
        fixtures::tiny_llama(&scratch, &spec, fixtures::Dtype::F32, fixtures::Shards::One, 1).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        for file in std::fs::read_dir(&scratch).unwrap() {
            let path = file.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("tokenizer") || name == "special_tokens_map.json" {
                std::fs::copy(&path, dir.join(&name)).unwrap();
            }
        }
        for name in ["config.json", "model.safetensors"] {
            std::fs::copy(fixture.join(name), dir.join(name)).unwrap();
        }
    }
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture.join("reference.json")).unwrap()).unwrap();
    let tokens: Vec<i32> = reference["tokens"].as_array().unwrap().iter().map(|t| t.as_i64().unwrap() as i32).collect();
    let vocab = reference["shape"][1].as_u64().unwrap() as usize;
    let tokenizer = gguftune::hf::load_tokenizer(&dir, None).unwrap();
    assert_eq!(tokenizer.tokens.len(), vocab, "the fixture tokenizer's vocabulary is the checkpoint's");
    let logits = reference::read_logits(&fixture.join("logits.bin"), tokens.len());
    assert_eq!(logits[0].len(), vocab);
    (dir, tokens, logits)
}

/// The folder of a transformers-made fixture: tests/fixtures/`family`/`variant`.
pub fn fixture_dir(family: &str, variant: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(family).join(variant)
}

/// The repository root (for tests that read the sources).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Converts the checkpoint folder `dir` to `out` with our converter, through the library.
pub fn convert_to(
    dir: &std::path::Path,
    ft: gguftune::quant::FileType,
    out: &std::path::Path,
) -> Result<gguftune::quant::ConversionSummary, gguftune::convert::ConvertError> {
    let ckpt = gguftune::hf::Checkpoint::open(dir)?;
    let plan = gguftune::convert::plan(&ckpt, ft)?;
    gguftune::convert::execute(&ckpt, plan, out, &mut |_, _| {})
}
