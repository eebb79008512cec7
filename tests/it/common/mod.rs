//! Helpers shared by the integration tests: fixtures made in code, handcrafted GGUF bytes.

pub mod fixtures;
#[allow(dead_code)]
pub mod gguf_bytes;
pub mod hub_server;
pub mod ollama_store;
pub mod peak_alloc;
#[allow(dead_code)]
pub mod reference;
#[allow(dead_code)]
pub mod tiny_gguf;
pub mod training;

use std::path::PathBuf;
use std::process::{Command, Output};

/// Runs the built `gguftune` binary with `args` in `dir`.
pub fn gguftune(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gguftune"))
        .args(args)
        .current_dir(dir)
        .output()
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
