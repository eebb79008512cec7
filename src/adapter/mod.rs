//! LoRA adapters as GGUF files in llama.cpp's format (src/llama-adapter.cpp), which Ollama's
//! `ADAPTER` loads too: `general.type = "adapter"`, `general.architecture` = the base model's,
//! `adapter.type = "lora"`, `adapter.lora.alpha` (f32), and per adapted weight
//! `<weight name>.lora_a` (`ne = [n_in, r]`) and `<weight name>.lora_b` (`ne = [r, n_out]`), f32.
//!
//! - [`write_lora_gguf`] writes one; [`LoraAdapter`] reads and validates one (`read`).
//! - [`merge()`] folds adapters into their base model, as llama-export-lora does (`merge`).
//! - [`import_peft`] and [`export_peft`] convert to and from Hugging Face PEFT adapters (`peft`).

mod merge;
mod peft;
mod read;

use std::path::{Path, PathBuf};

pub use merge::{add_delta, merge, MergeError, MergeInput, MergeSummary};
pub use peft::{export_peft, import_peft, read_config, PeftConfig, PeftError, PeftSummary, CONFIG_FILE, WEIGHTS_FILE};
pub use read::{AdapterReadError, LoraAdapter, LoraPairInfo, LORA_A_SUFFIX, LORA_B_SUFFIX};

use crate::gguf::{GgmlType, GgufPlan, GgufWriteError, GgufWriter, MetaValue};

/// One adapted weight: its base tensor's name and the data of `A` and `B`.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraTensorPair {
    /// The base weight, e.g. `blk.3.attn_q.weight`.
    pub base: String,
    /// Input size of the base weight (its `ne[0]`).
    pub n_in: u64,
    /// Output size of the base weight (its `ne[1]`).
    pub n_out: u64,
    /// Rank.
    pub rank: u64,
    /// `A`, `n_in × rank` values (`ne = [n_in, rank]`).
    pub a: Vec<f32>,
    /// `B`, `rank × n_out` values (`ne = [rank, n_out]`).
    pub b: Vec<f32>,
}

/// Why an adapter cannot be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    #[error(transparent)]
    Write(#[from] GgufWriteError),
    #[error("adapter tensor for '{base}': expected {expected} values in {part}, found {found}")]
    WrongSize { base: String, part: &'static str, expected: u64, found: usize },
}

/// Writes a LoRA adapter for a base model of architecture `arch` (atomically).
pub fn write_lora_gguf(path: &Path, arch: &str, alpha: f32, pairs: &[LoraTensorPair]) -> Result<(), AdapterError> {
    let mut plan = GgufPlan::new();
    plan.add_kv("general.type", "adapter")?;
    plan.add_kv("general.architecture", arch)?;
    plan.add_kv("adapter.type", "lora")?;
    plan.add_kv("adapter.lora.alpha", MetaValue::F32(alpha))?;
    for p in pairs {
        for (part, data, expected) in [("A", &p.a, p.n_in * p.rank), ("B", &p.b, p.rank * p.n_out)] {
            if data.len() as u64 != expected {
                return Err(AdapterError::WrongSize { base: p.base.clone(), part, expected, found: data.len() });
            }
        }
        plan.add_tensor(&format!("{}.lora_a", p.base), GgmlType::F32, &[p.n_in, p.rank])?;
        plan.add_tensor(&format!("{}.lora_b", p.base), GgmlType::F32, &[p.rank, p.n_out])?;
    }
    let mut writer = GgufWriter::create(path, plan)?;
    for p in pairs {
        writer.write_tensor(&format!("{}.lora_a", p.base), &f32_bytes(&p.a))?;
        writer.write_tensor(&format!("{}.lora_b", p.base), &f32_bytes(&p.b))?;
    }
    writer.finish()?;
    Ok(())
}

/// `adapter.gguf` -> `adapter.<suffix>` in the same folder: where the files that go with an
/// adapter are written (its Modelfile, metrics, loss plot, checkpoints, the merged model).
pub fn sibling_path(adapter: &Path, suffix: &str) -> PathBuf {
    let stem = adapter.file_stem().map_or_else(|| "adapter".into(), |s| s.to_string_lossy().into_owned());
    adapter.with_file_name(format!("{stem}.{suffix}"))
}

/// `values` as little-endian f32 bytes, the layout of GGUF tensor data.
pub(crate) fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Pairs A and B from `values` (as [`crate::model::LoraParams`] orders them: per slot, `A` then
/// `B`) with the weights they adapt.
pub fn pairs_from_values(slots: &[crate::model::LoraSlot], rank: u64, values: &[Vec<f32>]) -> Vec<LoraTensorPair> {
    slots
        .iter()
        .zip(values.chunks(2))
        .map(|(s, ab)| LoraTensorPair {
            base: s.base.clone(),
            n_in: s.n_in,
            n_out: s.n_out,
            rank,
            a: ab.first().cloned().unwrap_or_default(),
            b: ab.get(1).cloned().unwrap_or_default(),
        })
        .collect()
}
