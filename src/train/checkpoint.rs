//! Checkpoints: everything a run needs to continue exactly where it stopped, in a folder that
//! appears complete or not at all (assembled under a temporary name, then renamed).
//!
//! `step-000120/`
//! - `adapter.gguf`: the LoRA adapter after that step, loadable by llama.cpp like the final one;
//! - `optimizer.gguf`: AdamW's moments (`<base>.lora_a.adam_m`, `.adam_v`, same for `lora_b`),
//!   the step count (`training.steps`) and the run's settings (`training.settings`, JSON) that a
//!   resumed run must share;
//! - `metrics.jsonl`: the metrics lines up to that step.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::adapter::{f32_bytes, pairs_from_values, write_lora_gguf, AdapterError};
use crate::gguf::{GgmlType, GgufFile, GgufFileError, GgufPlan, GgufWriteError, GgufWriter, MetaValue};
use crate::model::LoraSlot;
use crate::quant::decode_to_f32;

use super::OptimizerState;

const ADAPTER: &str = "adapter.gguf";
const OPTIMIZER: &str = "optimizer.gguf";
const METRICS: &str = "metrics.jsonl";
const KEY_STEPS: &str = "training.steps";
const KEY_SETTINGS: &str = "training.settings";

/// Why a checkpoint cannot be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    File(#[from] GgufFileError),
    #[error(transparent)]
    Write(#[from] GgufWriteError),
    #[error(transparent)]
    Adapter(#[from] AdapterError),
    #[error("{}: {what}", path.display())]
    Invalid { path: PathBuf, what: String },
    #[error("{}: this checkpoint was made with other settings ({differences}); resume with the settings it was made with", path.display())]
    SettingsDiffer { path: PathBuf, differences: String },
}

/// A checkpoint read back: the optimizer state, the settings it was made with, and its metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub state: OptimizerState,
    pub settings: serde_json::Value,
    pub metrics: Vec<u8>,
}

/// The folder of the checkpoint after `steps` steps inside `root`.
pub fn checkpoint_dir(root: &Path, steps: u64) -> PathBuf {
    root.join(format!("step-{steps:06}"))
}

/// Writes the checkpoint of `state` into `root` (see the module docs) and keeps only the newest
/// `keep` checkpoints there. Returns its folder.
#[allow(clippy::too_many_arguments)]
pub fn write_checkpoint(
    root: &Path,
    keep: usize,
    arch: &str,
    alpha: f32,
    slots: &[LoraSlot],
    rank: u64,
    state: &OptimizerState,
    settings: &serde_json::Value,
    metrics: &[u8],
) -> Result<PathBuf, CheckpointError> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| CheckpointError::Io { path, source }
    };
    fs::create_dir_all(root).map_err(io_err(root))?;
    let dest = checkpoint_dir(root, state.steps);
    let temp = root.join(format!(".step-{:06}.tmp-{}", state.steps, std::process::id()));
    if temp.exists() {
        fs::remove_dir_all(&temp).map_err(io_err(&temp))?;
    }
    fs::create_dir(&temp).map_err(io_err(&temp))?;
    let assembled = (|| {
        write_lora_gguf(&temp.join(ADAPTER), arch, alpha, &pairs_from_values(slots, rank, &state.params))?;
        write_optimizer(&temp.join(OPTIMIZER), slots, state, settings)?;
        crate::io::write_atomic(&temp.join(METRICS), metrics).map_err(io_err(&temp.join(METRICS)))
    })();
    if let Err(e) = assembled {
        // A full disk, say: leave nothing behind, not even an empty checkpoint folder.
        let _ = fs::remove_dir_all(&temp);
        let _ = fs::remove_dir(root);
        return Err(e);
    }
    if dest.exists() {
        remove_checkpoint(root, &dest).map_err(io_err(&dest))?;
    }
    fs::rename(&temp, &dest).map_err(io_err(&dest))?;
    if let Ok(d) = fs::File::open(root) {
        let _ = d.sync_all();
    }
    prune(root, keep).map_err(io_err(root))?;
    Ok(dest)
}

fn moment_names(slot: &LoraSlot) -> [String; 4] {
    let (a, b) = (format!("{}.lora_a", slot.base), format!("{}.lora_b", slot.base));
    [format!("{a}.adam_m"), format!("{a}.adam_v"), format!("{b}.adam_m"), format!("{b}.adam_v")]
}

fn write_optimizer(
    path: &Path,
    slots: &[LoraSlot],
    state: &OptimizerState,
    settings: &serde_json::Value,
) -> Result<(), CheckpointError> {
    let mut plan = GgufPlan::new();
    plan.add_kv("general.type", "training_state")?;
    plan.add_kv(KEY_STEPS, MetaValue::U64(state.steps))?;
    plan.add_kv(KEY_SETTINGS, settings.to_string().as_str())?;
    let mut data = Vec::new();
    for (i, slot) in slots.iter().enumerate() {
        let names = moment_names(slot);
        let shapes = [&state.m[2 * i], &state.v[2 * i], &state.m[2 * i + 1], &state.v[2 * i + 1]];
        for (name, values) in names.iter().zip(shapes) {
            plan.add_tensor(name, GgmlType::F32, &[values.len() as u64])?;
            data.push((name.clone(), values));
        }
    }
    let mut writer = GgufWriter::create(path, plan)?;
    for (name, values) in data {
        writer.write_tensor(&name, &f32_bytes(values))?;
    }
    writer.finish()?;
    Ok(())
}

/// Reads the checkpoint in `dir` for an adapter of `slots` at `rank`, and checks that it was made
/// with `settings`.
pub fn read_checkpoint(
    dir: &Path,
    slots: &[LoraSlot],
    rank: u64,
    settings: &serde_json::Value,
) -> Result<Checkpoint, CheckpointError> {
    let adapter_path = dir.join(ADAPTER);
    let optimizer_path = dir.join(OPTIMIZER);
    let adapter = GgufFile::open(&adapter_path)?;
    let optimizer = GgufFile::open(&optimizer_path)?;
    let (ag, og) = (adapter.gguf()?, optimizer.gguf()?);
    let invalid = |path: &Path, what: String| CheckpointError::Invalid { path: path.to_owned(), what };

    let saved: serde_json::Value = og
        .get_str(KEY_SETTINGS)
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| invalid(&optimizer_path, format!("no readable '{KEY_SETTINGS}'")))?;
    let differences = differences(&saved, settings);
    if !differences.is_empty() {
        return Err(CheckpointError::SettingsDiffer { path: dir.to_owned(), differences: differences.join(", ") });
    }
    let steps = og
        .get(KEY_STEPS)
        .and_then(|v| v.as_u64())
        .ok_or_else(|| invalid(&optimizer_path, format!("no '{KEY_STEPS}'")))?;

    let read = |g: &crate::gguf::Gguf<'_>, path: &Path, name: &str, len: u64| -> Result<Vec<f32>, CheckpointError> {
        let info = g.tensor(name).ok_or_else(|| invalid(path, format!("no tensor '{name}'")))?;
        if info.ty != GgmlType::F32 || info.n_elements() != len {
            return Err(invalid(path, format!("tensor '{name}': expected {len} f32 values")));
        }
        let mut values = vec![0f32; len as usize];
        decode_to_f32(GgmlType::F32, g.tensor_data(info), &mut values)
            .map_err(|e| invalid(path, format!("tensor '{name}': {e}")))?;
        Ok(values)
    };
    let mut state = OptimizerState { params: Vec::new(), m: Vec::new(), v: Vec::new(), steps };
    for slot in slots {
        let [am, av, bm, bv] = moment_names(slot);
        let (a_len, b_len) = (slot.n_in * rank, rank * slot.n_out);
        state.params.push(read(&ag, &adapter_path, &format!("{}.lora_a", slot.base), a_len)?);
        state.params.push(read(&ag, &adapter_path, &format!("{}.lora_b", slot.base), b_len)?);
        state.m.push(read(&og, &optimizer_path, &am, a_len)?);
        state.v.push(read(&og, &optimizer_path, &av, a_len)?);
        state.m.push(read(&og, &optimizer_path, &bm, b_len)?);
        state.v.push(read(&og, &optimizer_path, &bv, b_len)?);
    }
    let metrics_path = dir.join(METRICS);
    let metrics = fs::read(&metrics_path).map_err(|source| CheckpointError::Io { path: metrics_path, source })?;
    Ok(Checkpoint { state, settings: saved, metrics })
}

/// `key: saved -> now` for every top-level key whose value differs.
fn differences(saved: &serde_json::Value, now: &serde_json::Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let (a, b) = (saved.as_object().unwrap_or(&empty), now.as_object().unwrap_or(&empty));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let show = |v: Option<&serde_json::Value>| v.map_or_else(|| "unset".to_owned(), |v| v.to_string());
            format!("{k}: {} -> {}", show(a.get(k)), show(b.get(k)))
        })
        .collect()
}

/// Removes all but the newest `keep` `step-*` folders (and leftovers of interrupted writes).
fn prune(root: &Path, keep: usize) -> io::Result<()> {
    let mut steps = Vec::new();
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(".step-") && name.contains(".tmp-") {
            fs::remove_dir_all(entry.path())?;
        } else if let Some(n) = name.strip_prefix("step-").and_then(|n| n.parse::<u64>().ok()) {
            steps.push((n, entry.path()));
        }
    }
    steps.sort();
    let excess = steps.len().saturating_sub(keep.max(1));
    for (_, path) in steps.into_iter().take(excess) {
        remove_checkpoint(root, &path)?;
    }
    Ok(())
}

/// Removes the checkpoint folder `path` in `root` as one step: it is first renamed to a
/// temporary name (which [`prune`] removes if the process dies meanwhile), so no run ever sees a
/// half-deleted checkpoint.
fn remove_checkpoint(root: &Path, path: &Path) -> io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let doomed = root.join(format!(".{name}.tmp-removing-{}", std::process::id()));
    fs::rename(path, &doomed)?;
    fs::remove_dir_all(&doomed)
}

/// The newest checkpoint folder inside `root`, if any.
pub fn latest_checkpoint(root: &Path) -> Option<PathBuf> {
    let entries = fs::read_dir(root).ok()?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().strip_prefix("step-")?.parse::<u64>().ok()?;
            Some((n, e.path()))
        })
        .max()
        .map(|(_, p)| p)
}
