//! Reading a LoRA adapter GGUF, validated as llama.cpp's `llama_adapter_lora_init_impl`
//! (src/llama-adapter.cpp) validates one: `general.type = "adapter"`, `adapter.type = "lora"`,
//! `adapter.lora.alpha` an f32 (absent means 0, as there), every `.lora_a` with its `.lora_b`, both
//! two-dimensional with `a.ne[1] == b.ne[0]` (the rank), and, against a base model, the same
//! architecture and `W.ne[0] == a.ne[0]`, `W.ne[1] == b.ne[1]` for the weight `W` each pair adapts.
//!
//! Data must be F32, F16 or BF16 (what we and PEFT write, and what llama-export-lora reads):
//! quantized adapters are refused rather than dequantized.

use std::path::{Path, PathBuf};

use super::LoraTensorPair;
use crate::gguf::{GgmlType, Gguf, GgufFile, GgufFileError, ValueType};
use crate::quant::{decode_to_f32, DecodeError};

/// Suffix of the `A` half of a pair (`blk.0.attn_q.weight.lora_a`).
pub const LORA_A_SUFFIX: &str = ".lora_a";
/// Suffix of the `B` half of a pair.
pub const LORA_B_SUFFIX: &str = ".lora_b";

/// Why an adapter file cannot be used. Every variant names the adapter file, and the tensor or
/// key at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterReadError {
    #[error(transparent)]
    File(#[from] GgufFileError),
    #[error("{}: not a LoRA adapter: '{key}' is {}, expected '{expected}'", path.display(), found.as_deref().map_or("absent".to_owned(), |f| format!("'{f}'")))]
    NotLora { path: PathBuf, key: &'static str, expected: &'static str, found: Option<String> },
    #[error("{}: key '{key}' has type {found}, expected {expected}", path.display())]
    WrongKeyType { path: PathBuf, key: &'static str, expected: ValueType, found: ValueType },
    #[error("{}: missing key '{key}'", path.display())]
    MissingKey { path: PathBuf, key: &'static str },
    #[error("{}: tensor '{tensor}' is neither a '{LORA_A_SUFFIX}' nor a '{LORA_B_SUFFIX}' tensor", path.display())]
    UnexpectedTensor { path: PathBuf, tensor: String },
    #[error("{}: tensor '{found}' has no partner '{missing}'", path.display())]
    Unpaired { path: PathBuf, found: String, missing: String },
    #[error("{}: tensor '{tensor}' is {ty}, expected F32, F16 or BF16 (hint: quantized adapters cannot be merged or exported)", path.display())]
    UnsupportedType { path: PathBuf, tensor: String, ty: GgmlType },
    #[error("{}: tensor '{tensor}' has ne {}, expected {expected}", path.display(), fmt_ne(found))]
    BadShape { path: PathBuf, tensor: String, expected: String, found: Vec<u64> },
    #[error("{}: adapter is for architecture '{adapter_arch}' but the base {} is '{base_arch}' (hint: an adapter only fits the model it was trained on)", path.display(), base.display())]
    ArchMismatch { path: PathBuf, base: PathBuf, adapter_arch: String, base_arch: String },
    #[error("{}: adapts '{tensor}', which the base {} does not have (hint: wrong base model?)", path.display(), base.display())]
    MissingBaseTensor { path: PathBuf, base: PathBuf, tensor: String },
    #[error("{}: tensor '{tensor}' has ne {}, expected {} to fit the base {} (hint: wrong base model?)", path.display(), fmt_ne(found), fmt_ne(expected), base.display())]
    ShapeMismatch { path: PathBuf, base: PathBuf, tensor: String, expected: Vec<u64>, found: Vec<u64> },
    #[error("{}: adapts '{tensor}', the token embedding, whose LoRA layout (A and B swapped) is not supported here", path.display())]
    TokenEmbedding { path: PathBuf, tensor: String },
    #[error("{}: tensor '{tensor}'", path.display())]
    Decode { path: PathBuf, tensor: String, source: DecodeError },
}

/// `[64, 4]`, the way ggml prints `ne`.
pub(crate) fn fmt_ne(ne: &[u64]) -> String {
    let dims: Vec<String> = ne.iter().map(u64::to_string).collect();
    format!("[{}]", dims.join(", "))
}

/// One adapted weight of an adapter file: names, sizes and storage types of its `A` and `B`.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraPairInfo {
    /// The base weight, e.g. `blk.3.attn_q.weight`.
    pub base: String,
    /// Input size of the base weight (`a.ne[0]`).
    pub n_in: u64,
    /// Output size of the base weight (`b.ne[1]`).
    pub n_out: u64,
    /// Rank (`b.ne[0]`, which llama.cpp divides alpha by).
    pub rank: u64,
    /// Storage type of `A`.
    pub a_ty: GgmlType,
    /// Storage type of `B`.
    pub b_ty: GgmlType,
}

/// A LoRA adapter GGUF, mapped and validated; tensor data is decoded on demand, one pair at a time.
#[derive(Debug)]
pub struct LoraAdapter {
    file: GgufFile,
    arch: String,
    alpha: f32,
    pairs: Vec<LoraPairInfo>,
}

impl LoraAdapter {
    /// Opens and validates the adapter at `path` (everything that does not need the base model).
    pub fn open(path: &Path) -> Result<LoraAdapter, AdapterReadError> {
        let file = GgufFile::open(path)?;
        let g = file.gguf()?;
        let p = || path.to_owned();
        for (key, expected) in [("general.type", "adapter"), ("adapter.type", "lora")] {
            let found = g.get_str(key);
            if found != Some(expected) {
                return Err(AdapterReadError::NotLora { path: p(), key, expected, found: found.map(str::to_owned) });
            }
        }
        let arch = g
            .get_str("general.architecture")
            .ok_or(AdapterReadError::MissingKey { path: p(), key: "general.architecture" })?
            .to_owned();
        let alpha = match g.get("adapter.lora.alpha") {
            None => 0.0,
            Some(crate::gguf::Value::F32(a)) => a,
            Some(v) => {
                let (expected, found) = (ValueType::F32, v.value_type());
                return Err(AdapterReadError::WrongKeyType { path: p(), key: "adapter.lora.alpha", expected, found });
            }
        };
        let pairs = pairs_of(path, &g)?;
        drop(g);
        Ok(LoraAdapter { file, arch, alpha, pairs })
    }

    /// The adapter file's path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// `general.architecture`: the base model's architecture.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// `adapter.lora.alpha` (0 when absent: llama.cpp then scales by the user's scale alone).
    pub fn alpha(&self) -> f32 {
        self.alpha
    }

    /// The adapted weights, in file order of their `A` tensors.
    pub fn pairs(&self) -> &[LoraPairInfo] {
        &self.pairs
    }

    /// The factor llama.cpp multiplies `B·A` by for `pair` at user scale `scale`
    /// (`llama_adapter_lora_weight::get_scale`): `scale · alpha / rank`, or `scale` when alpha is 0.
    pub fn scale(&self, pair: &LoraPairInfo, scale: f32) -> f32 {
        if self.alpha == 0.0 {
            scale
        } else {
            scale * self.alpha / pair.rank as f32
        }
    }

    /// Checks the adapter against the base model `base` (mapped from `base_path`): the same
    /// architecture, and every adapted weight present with the shape the pair needs.
    pub fn check_base(&self, base_path: &Path, base: &Gguf<'_>) -> Result<(), AdapterReadError> {
        let path = || self.path().to_owned();
        let base_arch = base.get_str("general.architecture").unwrap_or("");
        if base_arch != self.arch {
            return Err(AdapterReadError::ArchMismatch {
                path: path(),
                base: base_path.to_owned(),
                adapter_arch: self.arch.clone(),
                base_arch: base_arch.to_owned(),
            });
        }
        for pair in &self.pairs {
            if pair.base.starts_with("token_embd.") {
                return Err(AdapterReadError::TokenEmbedding { path: path(), tensor: pair.base.clone() });
            }
            let w = base.tensor(&pair.base).ok_or_else(|| AdapterReadError::MissingBaseTensor {
                path: path(),
                base: base_path.to_owned(),
                tensor: pair.base.clone(),
            })?;
            // Mirrors llama-adapter.cpp: W.ne[0] == a.ne[0] and W.ne[1] == b.ne[1].
            let checks = [
                (LORA_A_SUFFIX, w.ne.first().copied(), [pair.n_in, pair.rank], 0),
                (LORA_B_SUFFIX, w.ne.get(1).copied(), [pair.rank, pair.n_out], 1),
            ];
            for (suffix, w_dim, found, i) in checks {
                if w.ne.len() != 2 || w_dim != Some(found[i]) {
                    let mut expected = found;
                    expected[i] = w_dim.unwrap_or(0);
                    return Err(AdapterReadError::ShapeMismatch {
                        path: path(),
                        base: base_path.to_owned(),
                        tensor: format!("{}{suffix}", pair.base),
                        expected: expected.to_vec(),
                        found: found.to_vec(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Decodes the `A` and `B` of `pair` (one of [`LoraAdapter::pairs`]) to f32.
    pub fn read_pair(&self, pair: &LoraPairInfo) -> Result<LoraTensorPair, AdapterReadError> {
        let g = self.file.gguf()?;
        let mut values = [Vec::new(), Vec::new()];
        for (suffix, out) in [LORA_A_SUFFIX, LORA_B_SUFFIX].into_iter().zip(&mut values) {
            let name = format!("{}{suffix}", pair.base);
            let decode_err =
                |source| AdapterReadError::Decode { path: self.path().to_owned(), tensor: name.clone(), source };
            // The pair came from this file's validated index, so the tensor is there.
            let Some(info) = g.tensor(&name) else {
                return Err(AdapterReadError::Unpaired {
                    path: self.path().to_owned(),
                    found: pair.base.clone(),
                    missing: name,
                });
            };
            let n = usize::try_from(info.n_elements()).map_err(|_| {
                decode_err(DecodeError::SizeMismatch { expected: usize::MAX, found: info.n_bytes as usize })
            })?;
            out.resize(n, 0.0);
            decode_to_f32(info.ty, g.tensor_data(info), out).map_err(decode_err)?;
        }
        let [a, b] = values;
        Ok(LoraTensorPair { base: pair.base.clone(), n_in: pair.n_in, n_out: pair.n_out, rank: pair.rank, a, b })
    }
}

/// Pairs every `.lora_a` of `g` with its `.lora_b`, checking names, dimensions and types.
fn pairs_of(path: &Path, g: &Gguf<'_>) -> Result<Vec<LoraPairInfo>, AdapterReadError> {
    let p = || path.to_owned();
    let mut pairs = Vec::new();
    for t in &g.tensors {
        if !matches!(t.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
            return Err(AdapterReadError::UnsupportedType { path: p(), tensor: t.name.to_owned(), ty: t.ty });
        }
        if let Some(base) = t.name.strip_suffix(LORA_B_SUFFIX) {
            if g.tensor(&format!("{base}{LORA_A_SUFFIX}")).is_none() {
                let missing = format!("{base}{LORA_A_SUFFIX}");
                return Err(AdapterReadError::Unpaired { path: p(), found: t.name.to_owned(), missing });
            }
            continue;
        }
        let Some(base) = t.name.strip_suffix(LORA_A_SUFFIX) else {
            return Err(AdapterReadError::UnexpectedTensor { path: p(), tensor: t.name.to_owned() });
        };
        let b_name = format!("{base}{LORA_B_SUFFIX}");
        let Some(b) = g.tensor(&b_name) else {
            return Err(AdapterReadError::Unpaired { path: p(), found: t.name.to_owned(), missing: b_name });
        };
        let (&[n_in, rank], &[b_rank, n_out]) = (t.ne.as_slice(), b.ne.as_slice()) else {
            let (tensor, found) = if t.ne.len() != 2 { (t.name, &t.ne) } else { (b.name, &b.ne) };
            let expected = "two dimensions".to_owned();
            return Err(AdapterReadError::BadShape {
                path: p(),
                tensor: tensor.to_owned(),
                expected,
                found: found.clone(),
            });
        };
        if b_rank != rank {
            let expected = format!("ne[0] = {rank}, the rank of '{}'", t.name);
            return Err(AdapterReadError::BadShape { path: p(), tensor: b_name, expected, found: b.ne.clone() });
        }
        pairs.push(LoraPairInfo { base: base.to_owned(), n_in, n_out, rank, a_ty: t.ty, b_ty: b.ty });
    }
    Ok(pairs)
}
