//! Hugging Face PEFT LoRA adapters (`adapter_config.json` + `adapter_model.safetensors`) to and
//! from llama.cpp's LoRA GGUF, with the facts of llama.cpp's `convert_lora_to_gguf.py`:
//!
//! - Names: `base_model.model.<module>.lora_A[.<adapter name>].weight`, `<module>` a Llama-family
//!   module (`model.layers.3.self_attn.q_proj`) or a Falcon one
//!   (`transformer.h.3.self_attention.query_key_value`), becomes `<GGUF weight name>.lora_a`
//!   (`blk.3.attn_q.weight.lora_a`); likewise `lora_B` → `.lora_b`.
//! - Layout: PEFT's `lora_A` has shape `[r, in]` and `lora_B` `[out, r]`, row-major, which are the
//!   same bytes as GGUF `ne = [in, r]` and `ne = [r, out]`.
//! - Scale: PEFT scales by `lora_alpha / r` (`lora_alpha / sqrt(r)` with `use_rslora`); llama.cpp by
//!   `adapter.lora.alpha / r`, so rsLoRA is stored as `lora_alpha · sqrt(r)`.
//! - Permutation: for architecture `llama` our converter (like llama.cpp's) permutes the rows of Q and
//!   K (`W_gguf = P·W_hf`), so `P·(W + s·B·A) = P·W + s·(P·B)·A`: the rows of `lora_B` for `q_proj`
//!   and `k_proj` are permuted the same way (head counts from the base), `lora_A` is not. Export
//!   undoes it. Qwen2 is not permuted. Falcon's fused QKV rows are reordered as the converter
//!   reorders them, the same way for `lora_B` ([`RowOrder`]).
//! - Data: F32, F16 and BF16 in; the GGUF stores f32 (exact for all three, and what llama.cpp
//!   computes adapters in), and export writes F32 safetensors.
//!
//! Refused, with the reason: `rank_pattern` / `alpha_pattern` (llama.cpp's GGUF has one alpha and
//! we want one rank), `use_dora`, biases (`bias`, `lora_bias`), `fan_in_fan_out` (Conv1D models,
//! neither Llama-family nor Falcon ones), and `modules_to_save` (those modules' full weights cannot live in a LoRA
//! GGUF).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};

use super::read::{AdapterReadError, LoraAdapter};
use super::{write_lora_gguf, AdapterError, LoraTensorPair};
use crate::arch::Arch;
use crate::convert::{Heads, RowOrder};
use crate::gguf::{GgmlType, Gguf, GgufFile, GgufFileError};
use crate::hf::{HfError, SafetensorsFile};
use crate::names::{TensorKind, TensorName};
use crate::quant::{decode_to_f32, DecodeError};

/// PEFT's adapter configuration file.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// PEFT's adapter weights file.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// The prefix PEFT's `PeftModel` puts before the base model's module names.
const PEFT_PREFIX: &str = "base_model.model.";

/// Why a PEFT adapter cannot be imported or exported. Every variant names the file (and the tensor
/// or field) at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeftError {
    #[error("{}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {message}", path.display())]
    Json { path: PathBuf, message: String },
    #[error("{}: {field} = {found} is not supported: {reason}", path.display())]
    Unsupported { path: PathBuf, field: &'static str, found: String, reason: &'static str },
    #[error(transparent)]
    Hf(#[from] HfError),
    #[error(transparent)]
    Base(#[from] GgufFileError),
    #[error(transparent)]
    Adapter(#[from] AdapterReadError),
    #[error(transparent)]
    Write(#[from] AdapterError),
    #[error("{}: tensor '{tensor}' is not the lora_A or lora_B of a known {arch} module ({modules})", path.display())]
    UnknownTensor { path: PathBuf, tensor: String, arch: &'static str, modules: &'static str },
    #[error("{}: tensor '{found}' has no partner '{missing}'", path.display())]
    Unpaired { path: PathBuf, found: String, missing: String },
    #[error("{}: tensor '{tensor}' is {dtype}, expected F32, F16 or BF16", path.display())]
    UnsupportedDtype { path: PathBuf, tensor: String, dtype: String },
    #[error("{}: tensor '{tensor}' has shape {found:?}, expected {expected:?} (for base weight '{base_tensor}' and r = {rank})", path.display())]
    ShapeMismatch { path: PathBuf, tensor: String, base_tensor: String, rank: u64, expected: [u64; 2], found: Vec<u64> },
    #[error("{}: tensor '{tensor}' adapts '{weight}', which the base {} does not have (hint: wrong base model?)", path.display(), base.display())]
    MissingBaseTensor { path: PathBuf, base: PathBuf, tensor: String, weight: String },
    #[error("{}: missing key '{key}'", path.display())]
    MissingKey { path: PathBuf, key: String },
    #[error("{}: '{tensor}' has rank {found} but '{first}' has rank {expected}; PEFT's adapter_config.json has one r", path.display())]
    MixedRanks { path: PathBuf, first: String, expected: u64, tensor: String, found: u64 },
    #[error("{}: adapts '{tensor}', whose rows llama.cpp's layout permutes by attention head: pass --base to give the head counts", path.display())]
    NeedsBase { path: PathBuf, tensor: String },
    #[error("{}: the adapter has no LoRA tensors", path.display())]
    Empty { path: PathBuf },
    #[error("{}: already exists and is not an empty folder", path.display())]
    OutputExists { path: PathBuf },
    #[error("{}: tensor '{tensor}'", path.display())]
    Decode { path: PathBuf, tensor: String, source: DecodeError },
}

/// `adapter_config.json` as PEFT writes it (only the fields we read or refuse).
#[derive(Debug, Deserialize)]
struct RawConfig {
    r: u64,
    lora_alpha: f64,
    #[serde(default)]
    peft_type: Option<String>,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default)]
    use_dora: bool,
    #[serde(default)]
    fan_in_fan_out: bool,
    #[serde(default)]
    lora_bias: bool,
    #[serde(default)]
    bias: Option<String>,
    #[serde(default)]
    rank_pattern: Option<HashMap<String, Value>>,
    #[serde(default)]
    alpha_pattern: Option<HashMap<String, Value>>,
    #[serde(default)]
    modules_to_save: Option<Vec<String>>,
}

/// The resolved configuration of a PEFT LoRA adapter.
#[derive(Clone, Debug, PartialEq)]
pub struct PeftConfig {
    /// `r`.
    pub rank: u64,
    /// `lora_alpha`.
    pub lora_alpha: f64,
    /// `use_rslora`: scale by `lora_alpha / sqrt(r)` instead of `lora_alpha / r`.
    pub use_rslora: bool,
}

impl PeftConfig {
    /// The `adapter.lora.alpha` that gives llama.cpp (`alpha / r`) PEFT's scale.
    pub fn gguf_alpha(&self) -> f32 {
        if self.use_rslora {
            (self.lora_alpha * (self.rank as f64).sqrt()) as f32
        } else {
            self.lora_alpha as f32
        }
    }
}

/// Reads and validates `<dir>/adapter_config.json`.
pub fn read_config(dir: &Path) -> Result<PeftConfig, PeftError> {
    let path = dir.join(CONFIG_FILE);
    let text = fs::read_to_string(&path).map_err(|source| PeftError::Io { path: path.clone(), source })?;
    let raw: RawConfig =
        serde_json::from_str(&text).map_err(|e| PeftError::Json { path: path.clone(), message: e.to_string() })?;
    let refuse =
        |field, found: String, reason| Err(PeftError::Unsupported { path: path.clone(), field, found, reason });
    if let Some(t) = raw.peft_type.as_deref().filter(|t| *t != "LORA") {
        return refuse("peft_type", format!("'{t}'"), "only LoRA adapters exist in llama.cpp's format");
    }
    for (field, pattern) in [("rank_pattern", &raw.rank_pattern), ("alpha_pattern", &raw.alpha_pattern)] {
        if let Some(p) = pattern.as_ref().filter(|p| !p.is_empty()) {
            let mut keys: Vec<&str> = p.keys().map(String::as_str).collect();
            keys.sort_unstable();
            return refuse(
                field,
                format!("{keys:?}"),
                "per-module ranks or alphas; llama.cpp's LoRA GGUF has one alpha",
            );
        }
    }
    if raw.use_dora {
        return refuse("use_dora", "true".into(), "DoRA's magnitude vectors have no place in llama.cpp's format");
    }
    if let Some(b) = raw.bias.as_deref().filter(|b| *b != "none") {
        return refuse("bias", format!("'{b}'"), "llama.cpp's LoRA format has no bias terms");
    }
    if raw.lora_bias {
        return refuse("lora_bias", "true".into(), "llama.cpp's LoRA format has no bias on lora_B");
    }
    if raw.fan_in_fan_out {
        return refuse("fan_in_fan_out", "true".into(), "transposed (Conv1D) weights are not Llama-family ones");
    }
    if let Some(m) = raw.modules_to_save.as_ref().filter(|m| !m.is_empty()) {
        return refuse(
            "modules_to_save",
            format!("{m:?}"),
            "those modules are saved as full trained weights, which a LoRA GGUF cannot hold (merge them into the base in PyTorch first)",
        );
    }
    if raw.r == 0 {
        return refuse("r", "0".into(), "the rank must be at least 1");
    }
    Ok(PeftConfig { rank: raw.r, lora_alpha: raw.lora_alpha, use_rslora: raw.use_rslora })
}

/// What an import or export wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PeftSummary {
    /// Adapted weights.
    pub pairs: usize,
    /// Rank.
    pub rank: u64,
    /// `adapter.lora.alpha` of the GGUF side.
    pub alpha: f32,
    /// Whether rows of attention weights were reordered for llama.cpp's layout (Llama's Q and K,
    /// Falcon's fused QKV), or back.
    pub permuted: bool,
}

/// The architecture named by `general.architecture`, if PEFT adapters of it are supported.
fn peft_arch(path: &Path, name: &str) -> Result<Arch, PeftError> {
    Arch::from_name(name).ok_or_else(|| PeftError::Unsupported {
        path: path.to_owned(),
        field: "general.architecture",
        found: name.to_owned(),
        reason: "PEFT adapters are supported for the families gguftune runs (see `gguftune inspect`)",
    })
}

/// How the base's conversion reordered the rows of its attention weights, which an adapter's
/// `lora_B` (one row per output) must follow: its family's reorder, sized by its head counts.
#[derive(Clone, Copy, Debug)]
struct RowLayout {
    arch: Arch,
    heads: Heads,
}

impl RowLayout {
    /// The layout of the base's family, from its head counts; `None` when its conversion keeps
    /// Hugging Face's rows (Qwen2, Qwen3, Gemma, Phi-3: NEOX rope, and Phi-3's fused QKV already
    /// all queries, all keys, all values).
    fn of_base(path: &Path, g: &Gguf<'_>) -> Result<Option<RowLayout>, PeftError> {
        let name = g.get_str("general.architecture").unwrap_or("");
        let Some(arch) = Arch::from_name(name).filter(|a| !a.family().reordered_rows().is_empty()) else {
            return Ok(None);
        };
        let key = |k: &str| format!("{name}.{k}");
        let get = |k: &str| g.get(&key(k)).and_then(|v| v.as_u64()).filter(|&n| n > 0);
        let missing = |k: &str| PeftError::MissingKey { path: path.to_owned(), key: key(k) };
        let n_head = get("attention.head_count").ok_or_else(|| missing("attention.head_count"))?;
        let n_head_kv = get("attention.head_count_kv").unwrap_or(n_head);
        let n_embd = get("embedding_length").ok_or_else(|| missing("embedding_length"))?;
        let head_dim = get("attention.key_length").unwrap_or(n_embd / n_head);
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let heads = Heads { n_head: size(n_head), n_head_kv: size(n_head_kv), head_dim: size(head_dim) };
        Ok(Some(RowLayout { arch, heads }))
    }

    /// How the converter reordered the `n_out` rows of a weight of `kind`; as stored where it
    /// did not, or cannot have (rows that are not the whole heads the order moves).
    fn row_order(self, kind: TensorKind, n_out: u64) -> RowOrder {
        let order = self.arch.family().row_order(&self.heads, kind);
        let fits = match order {
            RowOrder::AsIs => true,
            RowOrder::RotaryHeads { head_dim } => head_dim >= 2 && head_dim % 2 == 0 && n_out % head_dim as u64 == 0,
            RowOrder::FalconQkv { n_head, n_head_kv, head_dim } => {
                n_head_kv > 0
                    && n_head % n_head_kv == 0
                    && u64::try_from((n_head + 2 * n_head_kv) * head_dim).is_ok_and(|rows| rows == n_out)
            }
        };
        if fits {
            order
        } else {
            RowOrder::AsIs
        }
    }
}

/// One PEFT tensor name of an `arch` adapter taken apart: the GGUF weight it adapts and whether it
/// is `A`.
fn parse_peft_name(name: &str, arch: Arch) -> Option<(TensorName, bool)> {
    let rest = name.strip_prefix(PEFT_PREFIX).unwrap_or(name);
    let (module, is_a, tail) = if let Some((m, t)) = rest.split_once(".lora_A.") {
        (m, true, t)
    } else {
        let (m, t) = rest.split_once(".lora_B.")?;
        (m, false, t)
    };
    // `weight`, or `<adapter name>.weight` (`default.weight`) in some PEFT versions.
    if tail != "weight" && !tail.strip_suffix(".weight").is_some_and(|a| !a.is_empty() && !a.contains('.')) {
        return None;
    }
    let gguf = TensorName::from_hf(&format!("{module}.weight"), arch)?;
    (gguf.kind != TensorKind::TokenEmbd).then_some((gguf, is_a))
}

/// Imports the PEFT adapter in `dir` as a llama.cpp LoRA GGUF at `output` (atomically), for the
/// base model `base` (our or llama.cpp's conversion of the model PEFT trained on).
pub fn import_peft(dir: &Path, base: &Path, output: &Path) -> Result<PeftSummary, PeftError> {
    let config = read_config(dir)?;
    let base_file = GgufFile::open(base)?;
    let g = base_file.gguf()?;
    let arch = g.get_str("general.architecture").unwrap_or("").to_owned();
    let family = peft_arch(base, &arch)?;
    let layout = RowLayout::of_base(base, &g)?;
    let weights_path = dir.join(WEIGHTS_FILE);
    let st = SafetensorsFile::open(&weights_path)?;
    let view = st.view()?;
    let p = || weights_path.clone();

    // GGUF base name -> (A, B) PEFT tensor names.
    let mut found: HashMap<String, (Option<String>, Option<String>)> = HashMap::new();
    for name in view.names() {
        let (gguf, is_a) = parse_peft_name(name, family).ok_or_else(|| PeftError::UnknownTensor {
            path: p(),
            tensor: name.clone(),
            arch: family.name(),
            modules: family.family().peft_modules(),
        })?;
        let entry = found.entry(gguf.to_string()).or_default();
        *(if is_a { &mut entry.0 } else { &mut entry.1 }) = Some(name.clone());
    }
    if found.is_empty() {
        return Err(PeftError::Empty { path: p() });
    }
    let mut pairs = Vec::with_capacity(found.len());
    // In the base's tensor order, so the output does not depend on hash order.
    for w in &g.tensors {
        let Some((a_name, b_name)) = found.remove(w.name) else { continue };
        let (a_name, b_name) = match (a_name, b_name) {
            (Some(a), Some(b)) => (a, b),
            (Some(a), None) => {
                let missing = a.replace(".lora_A.", ".lora_B.");
                return Err(PeftError::Unpaired { path: p(), found: a, missing });
            }
            (None, Some(b)) => {
                let missing = b.replace(".lora_B.", ".lora_A.");
                return Err(PeftError::Unpaired { path: p(), found: b, missing });
            }
            (None, None) => continue,
        };
        let (n_in, n_out) = match w.ne.as_slice() {
            &[n_in, n_out] => (n_in, n_out),
            _ => (0, 0),
        };
        let r = config.rank;
        let mut values = Vec::with_capacity(2);
        for (name, expected) in [(&a_name, [r, n_in]), (&b_name, [n_out, r])] {
            let t = view.tensor(name).map_err(|source| HfError::Safetensors { path: p(), source })?;
            let shape: Vec<u64> = t.shape().iter().map(|&d| d as u64).collect();
            if shape != expected || w.ne.len() != 2 {
                return Err(PeftError::ShapeMismatch {
                    path: p(),
                    tensor: name.clone(),
                    base_tensor: w.name.to_owned(),
                    rank: r,
                    expected,
                    found: shape,
                });
            }
            let ty = match t.dtype() {
                safetensors::Dtype::F32 => GgmlType::F32,
                safetensors::Dtype::F16 => GgmlType::F16,
                safetensors::Dtype::BF16 => GgmlType::BF16,
                other => {
                    let dtype = format!("{other:?}");
                    return Err(PeftError::UnsupportedDtype { path: p(), tensor: name.clone(), dtype });
                }
            };
            let mut out = vec![0.0f32; t.shape().iter().product()];
            decode_to_f32(ty, t.data(), &mut out).map_err(|source| PeftError::Decode {
                path: p(),
                tensor: name.clone(),
                source,
            })?;
            values.push(out);
        }
        let (Some(mut b), Some(a)) = (values.pop(), values.pop()) else { continue };
        if let (Some(layout), Some(name)) = (layout, TensorName::from_gguf(w.name)) {
            b = layout.row_order(name.kind, n_out).reorder(&b, r as usize, true);
        }
        pairs.push(LoraTensorPair { base: w.name.to_owned(), n_in, n_out, rank: r, a, b });
    }
    // Report the first leftover by name, so the message does not depend on hash order.
    if let Some((weight, (a, b))) = found.into_iter().min_by(|x, y| x.0.cmp(&y.0)) {
        let tensor = a.or(b).unwrap_or_default();
        return Err(PeftError::MissingBaseTensor { path: p(), base: base.to_owned(), tensor, weight });
    }
    let alpha = config.gguf_alpha();
    write_lora_gguf(output, &arch, alpha, &pairs)?;
    Ok(PeftSummary { pairs: pairs.len(), rank: config.rank, alpha, permuted: layout.is_some() })
}

/// Exports the LoRA GGUF `adapter` as a PEFT adapter folder `out_dir` (`adapter_config.json` and
/// an F32 `adapter_model.safetensors`), assembled in a temporary folder next to it and renamed
/// into place. `base` checks the adapter and gives the head counts that undo the Q/K permutation
/// of `llama` models (needed when the adapter touches `attn_q` or `attn_k`) and
/// `base_model_name_or_path`. An alpha of 0 (llama.cpp: scale 1) is written as `lora_alpha = r`.
pub fn export_peft(adapter: &Path, out_dir: &Path, base: Option<&Path>) -> Result<PeftSummary, PeftError> {
    let adapter = LoraAdapter::open(adapter)?;
    let path = || adapter.path().to_owned();
    let family = peft_arch(adapter.path(), adapter.arch())?;
    let base_file = base.map(GgufFile::open).transpose()?;
    let base_gguf = base_file.as_ref().map(GgufFile::gguf).transpose()?;
    let (mut layout, mut base_name) = (None, None);
    if let (Some(base), Some(g)) = (base, &base_gguf) {
        adapter.check_base(base, g)?;
        layout = RowLayout::of_base(base, g)?;
        let stem = base.file_stem().map(|s| s.to_string_lossy().into_owned());
        base_name = g.get_str("general.name").map(str::to_owned).or(stem);
    }
    let first = adapter.pairs().first().ok_or_else(|| PeftError::Empty { path: path() })?;
    let rank = first.rank;
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut modules: Vec<TensorKind> = Vec::new();
    for info in adapter.pairs() {
        if info.rank != rank {
            return Err(PeftError::MixedRanks {
                path: path(),
                first: first.base.clone(),
                expected: rank,
                tensor: info.base.clone(),
                found: info.rank,
            });
        }
        let unknown = || PeftError::UnknownTensor {
            path: path(),
            tensor: info.base.clone(),
            arch: family.name(),
            modules: family.family().peft_modules(),
        };
        let name = TensorName::from_gguf(&info.base)
            .filter(|n| n.suffix == "weight" && n.kind != TensorKind::TokenEmbd)
            .ok_or_else(unknown)?;
        let pair = adapter.read_pair(info)?;
        let mut b = pair.b;
        if family.family().reordered_rows().contains(&name.kind) {
            let layout = layout.ok_or_else(|| PeftError::NeedsBase { path: path(), tensor: info.base.clone() })?;
            b = layout.row_order(name.kind, info.n_out).reorder(&b, rank as usize, false);
        }
        let module = name.to_hf(family).ok_or_else(unknown)?;
        let module = module.strip_suffix(".weight").unwrap_or(&module);
        let (n_in, n_out, r) = (info.n_in as usize, info.n_out as usize, rank as usize);
        tensors.push((format!("{PEFT_PREFIX}{module}.lora_A.weight"), vec![r, n_in], super::f32_bytes(&pair.a)));
        tensors.push((format!("{PEFT_PREFIX}{module}.lora_B.weight"), vec![n_out, r], super::f32_bytes(&b)));
        if !modules.contains(&name.kind) {
            modules.push(name.kind);
        }
    }
    let lora_alpha = if adapter.alpha() == 0.0 { rank as f32 } else { adapter.alpha() };
    // The short module names (`q_proj`, `lm_head`), as PEFT's target_modules lists them.
    let target_modules: Vec<String> = TensorKind::PER_LAYER
        .iter()
        .chain(&[TensorKind::Output])
        .filter(|k| modules.contains(k))
        .filter_map(|&kind| {
            let hf = TensorName { kind, layer: None, suffix: "weight".into() }.to_hf(family)?;
            let module = hf.strip_suffix(".weight").unwrap_or(&hf);
            Some(module.rsplit('.').next().unwrap_or(module).to_owned())
        })
        .collect();
    let config = json!({
        "alpha_pattern": {},
        "base_model_name_or_path": base_name,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "lora_alpha": lora_alpha,
        "lora_dropout": 0.0,
        "modules_to_save": null,
        "peft_type": "LORA",
        "r": rank,
        "rank_pattern": {},
        "target_modules": target_modules,
        "task_type": "CAUSAL_LM",
        "use_dora": false,
        "use_rslora": false,
    });
    write_folder(out_dir, &config, &tensors)?;
    Ok(PeftSummary { pairs: adapter.pairs().len(), rank, alpha: lora_alpha, permuted: layout.is_some() })
}

/// Writes the two files into a temporary folder next to `out_dir`, then renames it into place
/// (replacing an empty folder, refusing a non-empty one).
fn write_folder(out_dir: &Path, config: &Value, tensors: &[(String, Vec<usize>, Vec<u8>)]) -> Result<(), PeftError> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| PeftError::Io { path, source }
    };
    if out_dir.exists() {
        let empty = out_dir.is_dir() && fs::read_dir(out_dir).map_err(io_err(out_dir))?.next().is_none();
        if !empty {
            return Err(PeftError::OutputExists { path: out_dir.to_owned() });
        }
    }
    let name = out_dir.file_name().ok_or_else(|| PeftError::OutputExists { path: out_dir.to_owned() })?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".tmp-{}", std::process::id()));
    let temp = out_dir.with_file_name(temp_name);
    let result = (|| {
        fs::create_dir(&temp).map_err(io_err(&temp))?;
        let config_path = temp.join(CONFIG_FILE);
        let mut text = serde_json::to_string_pretty(config)
            .map_err(|e| PeftError::Json { path: config_path.clone(), message: e.to_string() })?;
        text.push('\n');
        crate::io::write_atomic(&config_path, text.as_bytes()).map_err(io_err(&config_path))?;
        let weights_path = temp.join(WEIGHTS_FILE);
        let mut views = Vec::with_capacity(tensors.len());
        for (name, shape, bytes) in tensors {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map_err(|source| HfError::Safetensors { path: weights_path.clone(), source })?;
            views.push((name.as_str(), view));
        }
        let metadata = Some(HashMap::from([("format".to_owned(), "pt".to_owned())]));
        let bytes = safetensors::serialize(views, &metadata)
            .map_err(|source| HfError::Safetensors { path: weights_path.clone(), source })?;
        crate::io::write_atomic(&weights_path, &bytes).map_err(io_err(&weights_path))?;
        if out_dir.exists() {
            fs::remove_dir(out_dir).map_err(io_err(out_dir))?;
        }
        fs::rename(&temp, out_dir).map_err(io_err(out_dir))
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peft_names_map_to_gguf_weights() {
        let cases = [
            ("base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight", Some(("blk.3.attn_q.weight", true))),
            (
                "base_model.model.model.layers.0.mlp.down_proj.lora_B.default.weight",
                Some(("blk.0.ffn_down.weight", false)),
            ),
            ("base_model.model.lm_head.lora_B.weight", Some(("output.weight", false))),
            ("base_model.model.model.layers.0.self_attn.q_proj.lora_A.a.b.weight", None),
            ("base_model.model.model.embed_tokens.lora_embedding_A", None),
            ("base_model.model.model.layers.0.self_attn.q_proj.weight", None),
        ];
        for (peft, want) in cases {
            let got = parse_peft_name(peft, Arch::from_name("llama").unwrap()).map(|(n, a)| (n.to_string(), a));
            assert_eq!(got.as_ref().map(|(n, a)| (n.as_str(), *a)), want, "{peft}");
        }
        let falcon = [
            (
                "base_model.model.transformer.h.1.self_attention.query_key_value.lora_B.weight",
                Some(("blk.1.attn_qkv.weight", false)),
            ),
            ("base_model.model.transformer.h.0.mlp.dense_4h_to_h.lora_A.weight", Some(("blk.0.ffn_down.weight", true))),
            ("base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight", None),
        ];
        for (peft, want) in falcon {
            let got = parse_peft_name(peft, Arch::from_name("falcon").unwrap()).map(|(n, a)| (n.to_string(), a));
            assert_eq!(got.as_ref().map(|(n, a)| (n.as_str(), *a)), want, "{peft}");
        }
    }

    #[test]
    fn rslora_alpha_keeps_peft_scale() {
        let c = PeftConfig { rank: 16, lora_alpha: 8.0, use_rslora: true };
        // llama.cpp: alpha / r = 32 / 16 = 2 = PEFT's 8 / sqrt(16).
        assert_eq!(c.gguf_alpha(), 32.0);
    }
}
