//! Which ggml type each tensor gets in an output file of a given [`FileType`].
//!
//! Two upstream programs decide this, and this module mirrors both, rule for rule, for the
//! llama.cpp revision that `llama-cpp-sys-2` 0.1.161 bundles:
//!
//! - **Float outputs** (`f32`, `f16`, `bf16`) mirror `convert_hf_to_gguf.py`
//!   (`ModelBase.prepare_tensors` in `conversion/base.py`): see [`convert_type`].
//! - **Quantized outputs** mirror `llama-quantize` run with its default parameters on the GGUF that
//!   `convert_hf_to_gguf.py --outtype f16` writes ([`QUANTIZE_SOURCE`]): `llama_model_quantize_impl`,
//!   `tensor_allows_quantization`, `llama_tensor_get_type(_impl)` and `tensor_type_fallback` in
//!   `src/llama-quant.cpp`. See [`QuantState`].
//!
//! llama-quantize's choice is *stateful*: the `attn_v` and `ffn_down` rules depend on a counter of
//! such tensors seen so far, and llama-quantize visits tensors in the order of its loader's
//! `weights_map` (non-layer tensors first, then by layer number, then by name), not in file order.
//! [`plan_types`] takes care of that order; [`QuantState`] and [`TypeChooser`] leave it to the caller
//! ([`llama_quantize_order`]).
//!
//! Deliberately not mirrored: importance matrices, `--pure`, `--tensor-type`, `--output-tensor-type`,
//! `--token-embedding-type`, `--leave-output-tensor`, `--prune-layers`, and the file types that need
//! them or that we cannot produce (IQ*, TQ*, Q2_K_S, MXFP4_MOE, NVFP4, Q1_0, Q2_0). Their branches in
//! `llama_tensor_get_type_impl` are unreachable from [`FileType`] and are left out below.
//!
//! Tensor names are matched as plain strings here, not through [`crate::names`]: llama-quant.cpp
//! classifies by *substring* on any name (`"ffn_down"` also matches `ffn_down_exps`), and mirroring that
//! exactly is the point of this module.

use std::fmt;
use std::str::FromStr;

use crate::gguf::GgmlType;

/// The type a whole output file is "mostly" in: `llama_ftype` in llama.cpp's `include/llama.h`, and
/// the `--type` of `gguftune convert` (spelled as llama-quantize's, in lower case).
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileType {
    /// `LLAMA_FTYPE_ALL_F32`.
    F32,
    /// `LLAMA_FTYPE_MOSTLY_F16`.
    F16,
    /// `LLAMA_FTYPE_MOSTLY_BF16`.
    BF16,
    /// `LLAMA_FTYPE_MOSTLY_Q8_0`.
    Q8_0,
    /// `LLAMA_FTYPE_MOSTLY_Q4_0`.
    Q4_0,
    /// `LLAMA_FTYPE_MOSTLY_Q4_1`.
    Q4_1,
    /// `LLAMA_FTYPE_MOSTLY_Q5_0`.
    Q5_0,
    /// `LLAMA_FTYPE_MOSTLY_Q5_1`.
    Q5_1,
    /// `LLAMA_FTYPE_MOSTLY_Q2_K`.
    Q2_K,
    /// `LLAMA_FTYPE_MOSTLY_Q3_K_S`.
    Q3_K_S,
    /// `LLAMA_FTYPE_MOSTLY_Q3_K_M`.
    Q3_K_M,
    /// `LLAMA_FTYPE_MOSTLY_Q3_K_L`.
    Q3_K_L,
    /// `LLAMA_FTYPE_MOSTLY_Q4_K_S`.
    Q4_K_S,
    /// `LLAMA_FTYPE_MOSTLY_Q4_K_M`.
    Q4_K_M,
    /// `LLAMA_FTYPE_MOSTLY_Q5_K_S`.
    Q5_K_S,
    /// `LLAMA_FTYPE_MOSTLY_Q5_K_M`.
    Q5_K_M,
    /// `LLAMA_FTYPE_MOSTLY_Q6_K`.
    Q6_K,
}

/// `(file type, llama_ftype id, CLI name, default tensor type)`. Ids: `enum llama_ftype` in
/// `include/llama.h`; default types: `llama_ftype_get_default_type` in `src/llama-quant.cpp`. Keep in
/// sync with llama-cpp-sys-2's llama.cpp.
const FILE_TYPES: &[(FileType, u32, &str, GgmlType)] = &[
    (FileType::F32, 0, "f32", GgmlType::F32),
    (FileType::F16, 1, "f16", GgmlType::F16),
    (FileType::BF16, 32, "bf16", GgmlType::BF16),
    (FileType::Q8_0, 7, "q8_0", GgmlType::Q8_0),
    (FileType::Q4_0, 2, "q4_0", GgmlType::Q4_0),
    (FileType::Q4_1, 3, "q4_1", GgmlType::Q4_1),
    (FileType::Q5_0, 8, "q5_0", GgmlType::Q5_0),
    (FileType::Q5_1, 9, "q5_1", GgmlType::Q5_1),
    (FileType::Q2_K, 10, "q2_k", GgmlType::Q2_K),
    (FileType::Q3_K_S, 11, "q3_k_s", GgmlType::Q3_K),
    (FileType::Q3_K_M, 12, "q3_k_m", GgmlType::Q3_K),
    (FileType::Q3_K_L, 13, "q3_k_l", GgmlType::Q3_K),
    (FileType::Q4_K_S, 14, "q4_k_s", GgmlType::Q4_K),
    (FileType::Q4_K_M, 15, "q4_k_m", GgmlType::Q4_K),
    (FileType::Q5_K_S, 16, "q5_k_s", GgmlType::Q5_K),
    (FileType::Q5_K_M, 17, "q5_k_m", GgmlType::Q5_K),
    (FileType::Q6_K, 18, "q6_k", GgmlType::Q6_K),
];

/// Aliases llama-quantize accepts (`QUANT_OPTIONS` in `tools/quantize/quantize.cpp`).
const FILE_TYPE_ALIASES: &[(&str, FileType)] =
    &[("q3_k", FileType::Q3_K_M), ("q4_k", FileType::Q4_K_M), ("q5_k", FileType::Q5_K_M)];

impl FileType {
    fn row(self) -> &'static (FileType, u32, &'static str, GgmlType) {
        FILE_TYPES.iter().find(|r| r.0 == self).expect("FILE_TYPES has one row per FileType (unit test)")
    }

    /// Every file type, floats first.
    pub fn all() -> &'static [FileType] {
        use FileType::*;
        &[
            F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M,
            Q6_K,
        ]
    }

    /// The `general.file_type` value (`enum llama_ftype`).
    pub fn llama_ftype(self) -> u32 {
        self.row().1
    }

    /// The file type with `general.file_type` id `id`, if we support it.
    pub fn from_llama_ftype(id: u32) -> Option<Self> {
        FILE_TYPES.iter().find(|r| r.1 == id).map(|r| r.0)
    }

    /// The CLI spelling, lower case (`q4_k_m`).
    pub fn name(self) -> &'static str {
        self.row().2
    }

    /// Looks a file type up by name, ignoring case (`q4_k_m`, `Q4_K_M`, `f16`), including
    /// llama-quantize's aliases `q3_k`, `q4_k` and `q5_k` (for the `_M` variants).
    pub fn from_name(name: &str) -> Option<Self> {
        FILE_TYPES
            .iter()
            .find(|r| r.2.eq_ignore_ascii_case(name))
            .map(|r| r.0)
            .or_else(|| FILE_TYPE_ALIASES.iter().find(|a| a.0.eq_ignore_ascii_case(name)).map(|a| a.1))
    }

    /// The type most tensors get (`llama_ftype_get_default_type`).
    pub fn default_type(self) -> GgmlType {
        self.row().3
    }

    /// Whether llama-quantize produces this file type (as opposed to convert_hf_to_gguf's float
    /// outputs): its default type is block-quantized.
    pub fn is_quantized(self) -> bool {
        self.default_type().is_quantized()
    }
}

impl fmt::Display for FileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FileType {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FileType::from_name(s).ok_or_else(|| PolicyError::UnknownFileType { name: s.to_owned() })
    }
}

/// Why no type could be chosen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A `--type` that is not one of [`FileType::all`].
    #[error("unknown file type '{name}' (expected one of: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k_s, q3_k_m, q3_k_l, q4_k_s, q4_k_m, q5_k_s, q5_k_m, q6_k)")]
    UnknownFileType {
        /// What was asked for.
        name: String,
    },
    /// [`convert_type`] was asked for a quantized file type; convert_hf_to_gguf's rule is only
    /// mirrored for f32, f16 and bf16.
    #[error("file type {ftype} is not a float type (f32, f16 or bf16)")]
    NotAFloatType {
        /// What was asked for.
        ftype: FileType,
    },
    /// In a mixture-of-experts model, an FFN tensor's layer is read from its name, and this name has
    /// none (llama-quant.cpp: "Failed to determine layer for tensor").
    #[error("tensor '{tensor}': cannot determine its layer (expected a name starting with 'blk.N.')")]
    NoLayer {
        /// The tensor's name.
        tensor: String,
    },
    /// In a mixture-of-experts model, an FFN tensor's layer is outside `[0, n_layer)`
    /// (llama-quant.cpp: "Bad layer").
    #[error("tensor '{tensor}': layer {layer} is out of range [0, {n_layer})")]
    LayerOutOfRange {
        /// The tensor's name.
        tensor: String,
        /// The layer its name gives.
        layer: i64,
        /// The model's `block_count`.
        n_layer: u32,
    },
    /// `ne[0]` is not a multiple of the chosen type's block size and llama.cpp defines no fallback
    /// for that type (llama-quant.cpp: "no tensor type fallback is defined").
    #[error("tensor '{tensor}': ne[0] = {ncols} is not a multiple of {block_size} (required by {ty}) and {ty} has no fallback type")]
    NoFallback {
        /// The tensor's name.
        tensor: String,
        /// Its row length.
        ncols: u64,
        /// The type that does not fit.
        ty: GgmlType,
        /// That type's block size.
        block_size: u64,
    },
}

/// The file type of the GGUF that quantized outputs are derived from, as if by
/// `convert_hf_to_gguf.py --outtype f16` followed by `llama-quantize`. It only matters for tensors
/// llama-quantize leaves alone, which keep their type from that file (for llama and qwen2: all of them
/// are 1-D, norms or biases, hence F32 whatever the outtype).
pub const QUANTIZE_SOURCE: FileType = FileType::F16;

/// The model facts llama-quantize reads from the GGUF's metadata (`llama_hparams`, layer 0 for the
/// per-layer arrays).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuantHParams {
    /// `{arch}.block_count` (`n_layer_all`).
    pub n_layer: u32,
    /// `{arch}.expert_count`, 0 for dense models.
    pub n_expert: u32,
    /// `{arch}.attention.head_count`.
    pub n_head: u32,
    /// `{arch}.attention.head_count_kv` (equal to `n_head` when the model has no such key).
    pub n_head_kv: u32,
}

/// What llama-quantize knows about a model before choosing any type: its architecture, hyper-parameters
/// and what `init_quantize_state_counters` counts over the tensor names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorContext {
    /// `general.architecture` (`llama`, `qwen2`).
    pub arch: String,
    /// `block_count`.
    pub n_layer: u32,
    /// `expert_count` (0 for dense models).
    pub n_expert: u32,
    /// Attention heads of layer 0.
    pub n_head: u32,
    /// KV heads of layer 0.
    pub n_head_kv: u32,
    /// Tensors whose name contains `attn_v.weight`, `attn_qkv.weight` or `attn_kv_b.weight`.
    pub n_attention_wv: u32,
    /// llama-quant.cpp sets this to `n_layer`, not to a count of tensors.
    pub n_ffn_down: u32,
    /// Whether a tensor is named exactly `output.weight`; if not, llama-quantize treats the
    /// embeddings as tied and `token_embd.weight` gets the output tensor's rule.
    pub has_output: bool,
}

impl TensorContext {
    /// Counts over `names` (every tensor of the file, in any order) as `init_quantize_state_counters`
    /// does.
    pub fn from_tensor_names<'n>(arch: &str, hparams: QuantHParams, names: impl IntoIterator<Item = &'n str>) -> Self {
        let mut n_attention_wv = 0;
        let mut has_output = false;
        for name in names {
            let category = Category::of(name);
            n_attention_wv += u32::from(category.is_attn_v());
            has_output |= category == Category::Output;
        }
        TensorContext {
            arch: arch.to_owned(),
            n_layer: hparams.n_layer,
            n_expert: hparams.n_expert,
            n_head: hparams.n_head,
            n_head_kv: hparams.n_head_kv,
            n_attention_wv,
            n_ffn_down: hparams.n_layer,
            has_output,
        }
    }

    /// No `output.weight`: the output projection reuses `token_embd.weight`.
    pub fn has_tied_embeddings(&self) -> bool {
        !self.has_output
    }

    /// `llama_hparams::n_gqa(0)`: query heads per KV head, 0 when there are no KV heads.
    pub fn n_gqa(&self) -> u32 {
        self.n_head.checked_div(self.n_head_kv).unwrap_or(0)
    }

    /// Whether llama.cpp sizes this model as `LLM_TYPE_70B` (which earns `attn_v` more bits). Mirrors
    /// the `load_arch_hparams` of the architectures that can return it (`src/models/*.cpp`).
    pub fn is_70b(&self) -> bool {
        match self.arch.as_str() {
            // models/llama.cpp: the size table is only consulted when n_expert != 8.
            "llama" => self.n_expert != 8 && self.n_layer == 80 && self.n_head != self.n_head_kv,
            "qwen2" | "deci" | "olmo" => self.n_layer == 80,
            "jais2" => self.n_layer == 68,
            _ => false,
        }
    }
}

/// `tensor_category` in llama-quant.cpp: broad classes by substring, in its order of precedence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Category {
    TokenEmbd,
    AttnQ,
    AttnV,
    AttnK,
    AttnQkv,
    AttnKvB,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Output,
    Other,
}

impl Category {
    /// Mirrors `tensor_get_category`.
    fn of(name: &str) -> Category {
        if name == "output.weight" {
            return Category::Output;
        }
        if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
            return Category::TokenEmbd;
        }
        const BY_SUBSTRING: &[(&str, Category)] = &[
            ("attn_qkv.weight", Category::AttnQkv),
            ("attn_kv_b.weight", Category::AttnKvB),
            ("attn_v.weight", Category::AttnV),
            ("attn_k.weight", Category::AttnK),
            ("attn_q.weight", Category::AttnQ),
            ("attn_output.weight", Category::AttnOutput),
            ("ffn_up", Category::FfnUp),
            ("ffn_gate", Category::FfnGate),
            ("ffn_down", Category::FfnDown),
        ];
        BY_SUBSTRING.iter().find(|(s, _)| name.contains(s)).map_or(Category::Other, |&(_, c)| c)
    }

    /// Mirrors `category_is_attn_v`.
    fn is_attn_v(self) -> bool {
        matches!(self, Category::AttnV | Category::AttnQkv | Category::AttnKvB)
    }
}

/// `ggml_n_dims`: dimensions up to the last one larger than 1 (at least 1).
fn ggml_n_dims(ne: &[u64]) -> usize {
    (1..ne.len()).rev().find(|&i| ne[i] > 1).map_or(1, |i| i + 1)
}

/// Substrings that keep a tensor out of quantization (`tensor_allows_quantization`), in its order.
const NEVER_QUANTIZED: &[&str] = &[
    "_norm.weight",
    "ffn_gate_inp.weight",
    "ffn_gate_tid2eid.weight",
    "altup",
    "laurel",
    "per_layer_model_proj",
    "ssm_conv1d",
    "shortconv.conv.weight",
    "indexer.k_proj.weight",
    "indexer.q_proj.weight",
    "time_mix_first.weight",
    "time_mix_w0.weight",
    "time_mix_w1.weight",
    "time_mix_w2.weight",
    "time_mix_v0.weight",
    "time_mix_v1.weight",
    "time_mix_v2.weight",
    "time_mix_a0.weight",
    "time_mix_a1.weight",
    "time_mix_a2.weight",
    "time_mix_g1.weight",
    "time_mix_g2.weight",
    "time_mix_decay_w1.weight",
    "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight",
    "attn_rel_b.weight",
    ".position_embd",
    "sam.pos_embd",
    "sam.neck.",
    "sam.net_",
    ".rel_pos",
    ".patch_embd",
    ".patch_merger",
    "a.rvq.codebook",
    "mm.a.code_embd",
];

/// Further substrings kept out of quantization for `glm5-next` only.
const NEVER_QUANTIZED_GLM5_NEXT: &[&str] = &[
    "hc_",
    "indexer.attn_q_b",
    "indexer.attn_k",
    "indexer.proj",
    "indexer_compressor_gate",
    "indexer_compressor_ape",
    "ssm_f_a.weight",
    "ssm_f_b.weight",
    "ssm_g_a.weight",
    "ssm_g_b.weight",
    "ssm_beta.weight",
    "attn_kv_a_mqa.weight",
    "attn_k_b.weight",
    "attn_v_b.weight",
];

/// Whether llama-quantize may change this tensor's type at all (`tensor_allows_quantization`, with
/// default parameters: not `only_copy`, `quantize_output_tensor` set).
pub fn allows_quantization(arch: &str, name: &str, ne: &[u64]) -> bool {
    if ggml_n_dims(ne) < 2 {
        return false;
    }
    // `name.rfind("weight") == name.size() - 6`: also true for any 5-byte name, where both sides are
    // npos (size_t wrap-around). Mirrored, odd as it is.
    let ends_with_weight = name.ends_with("weight") || name.len() == 5;
    ends_with_weight
        && !NEVER_QUANTIZED.iter().any(|s| name.contains(s))
        && !(arch == "glm5-next" && NEVER_QUANTIZED_GLM5_NEXT.iter().any(|s| name.contains(s)))
        // LLM_TN(arch)(LLM_TENSOR_POS_EMBD / LLM_TENSOR_TOKEN_TYPES, "weight"): arch-independent names.
        && name != "position_embd.weight"
        && name != "token_types.weight"
}

/// The `N` of a name starting with `blk.N.`, read as `sscanf(name, "blk.%d.", &n) == 1` does
/// (leading white space and a sign allowed; what follows the digits is not checked).
fn blk_layer(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("blk.")?.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (negative, rest) = match rest.as_bytes().first() {
        Some(b'-') => (true, &rest[1..]),
        Some(b'+') => (false, &rest[1..]),
        _ => (false, rest),
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    // Overflow is undefined for sscanf; saturate to C `int`.
    let value = rest[..digits].parse::<i64>().unwrap_or(i64::MAX).min(i64::from(i32::MAX));
    Some(if negative { -value } else { value })
}

/// The order llama-quantize visits and writes tensors in: its loader's `weights_map` is a `std::map`
/// ordered by `weight_name_comparer` (layer from `blk.N.`, -1 for other tensors, then the name's
/// bytes). Returns indices into `names`.
pub fn llama_quantize_order<S: AsRef<str>>(names: &[S]) -> Vec<usize> {
    let key = |i: usize| {
        let name = names[i].as_ref();
        (blk_layer(name).unwrap_or(-1), name)
    };
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_by(|&a, &b| key(a).cmp(&key(b)));
    order
}

/// `use_more_bits` in `llama_tensor_get_type_impl`: the first and last eighth of the layers, and every
/// third layer in between. C integer division and remainder.
fn use_more_bits(i_layer: i64, n_layers: i64) -> bool {
    i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2
}

/// llama-quantize's per-file state (`quantize_state_impl`) and its per-tensor choice
/// (`llama_tensor_get_type`), for a quantized or float [`FileType`].
///
/// Call [`QuantState::choose`] once per tensor in [`llama_quantize_order`]: the `attn_v` and
/// `ffn_down` rules of dense models read a counter of such tensors seen so far, as llama.cpp does.
#[derive(Clone, Debug)]
pub struct QuantState {
    ctx: TensorContext,
    ftype: FileType,
    i_attention_wv: i64,
    i_ffn_down: i64,
    i_ffn_gate: i64,
    i_ffn_up: i64,
    n_fallback: u32,
}

impl QuantState {
    /// A fresh state for quantizing the model described by `ctx` to `ftype`.
    pub fn new(ctx: TensorContext, ftype: FileType) -> Self {
        QuantState { ctx, ftype, i_attention_wv: 0, i_ffn_down: 0, i_ffn_gate: 0, i_ffn_up: 0, n_fallback: 0 }
    }

    /// The model this state was built for.
    pub fn ctx(&self) -> &TensorContext {
        &self.ctx
    }

    /// Tensors so far whose row length did not fit the chosen type (llama-quantize's
    /// "N of M tensor(s) required fallback quantization").
    pub fn n_fallback(&self) -> u32 {
        self.n_fallback
    }

    /// The type llama-quantize writes for the tensor `name` of shape `ne` (ggml order, `ne[0]` the row
    /// length) whose type in the input file is `src_type`.
    ///
    /// Mirrors `llama_tensor_get_type`: a tensor llama-quantize may not quantize keeps `src_type`;
    /// for a float file type every other tensor becomes that float type; otherwise the mixture rules
    /// of `llama_tensor_get_type_impl` pick a type and `tensor_type_fallback` replaces it when `ne[0]`
    /// is not a multiple of its block size.
    pub fn choose(&mut self, name: &str, ne: &[u64], src_type: GgmlType) -> Result<GgmlType, PolicyError> {
        if !allows_quantization(&self.ctx.arch, name, ne) {
            return Ok(src_type);
        }
        let default_type = self.ftype.default_type();
        if !default_type.is_quantized() {
            return Ok(default_type);
        }
        let ty = self.mixture_type(default_type, name, ne)?;
        self.fallback(name, ne, ty)
    }

    /// `layer_info(counter, n, name)`: the counter for dense models, the `blk.N.` of the name for MoE
    /// models; and `n` (`n_ffn_down`, `n_ffn_gate` or `n_ffn_up`, all `block_count` upstream).
    fn layer_info(&self, counter: i64, n: u32, name: &str) -> Result<(i64, i64), PolicyError> {
        let n_layer = i64::from(n);
        if self.ctx.n_expert <= 1 {
            return Ok((counter, n_layer));
        }
        // Mixtral's experts are not stored in layer order, so the counter cannot be used.
        let layer = blk_layer(name).ok_or_else(|| PolicyError::NoLayer { tensor: name.to_owned() })?;
        if layer < 0 || layer >= n_layer {
            return Err(PolicyError::LayerOutOfRange { tensor: name.to_owned(), layer, n_layer: n });
        }
        Ok((layer, n_layer))
    }

    /// `llama_tensor_get_type_impl` for the file types of [`FileType`], branch for branch and in its
    /// order (the branches for IQ*, TQ*, Q2_K_S, MXFP4_MOE, IQ4_* and imatrix-only rules are left out:
    /// they cannot fire here).
    fn mixture_type(&mut self, mut new_type: GgmlType, name: &str, ne: &[u64]) -> Result<GgmlType, PolicyError> {
        use FileType as F;
        use GgmlType as T;
        let ftype = self.ftype;
        let falcon = self.ctx.arch == "falcon";
        let category = Category::of(name);

        // glm5-next keeps these at Q8_0 or better (new_type is quantized here).
        if self.ctx.arch == "glm5-next"
            && (name.contains("attn_q_a") || name.contains("attn_q_b") || name.contains("nextn.eh_proj"))
        {
            return Ok(T::Q8_0);
        }

        if category == Category::Output || (self.ctx.has_tied_embeddings() && category == Category::TokenEmbd) {
            let nx = ne.first().copied().unwrap_or(1);
            if falcon || nx % new_type.block_size() != 0 {
                new_type = T::Q8_0;
            } else if new_type != T::Q8_0 {
                new_type = T::Q6_K;
            }
        } else if category == Category::TokenEmbd {
            // Only IQ*/TQ* file types change untied token embeddings.
        } else if category.is_attn_v() {
            let (i, n) = (self.i_attention_wv, i64::from(self.ctx.n_attention_wv));
            if ftype == F::Q2_K {
                new_type = if self.ctx.n_gqa() >= 4 { T::Q4_K } else { T::Q3_K };
            } else if ftype == F::Q3_K_M {
                new_type = if i < 2 { T::Q5_K } else { T::Q4_K };
            } else if ftype == F::Q3_K_L {
                new_type = T::Q5_K;
            } else if matches!(ftype, F::Q4_K_M | F::Q5_K_M) && use_more_bits(i, n) {
                new_type = T::Q6_K;
            } else if ftype == F::Q4_K_S && i < 4 {
                new_type = T::Q5_K;
            }
            // 70B models share attn_v across 8 heads: it is 8x smaller than attn_q, so more bits are cheap.
            if self.ctx.is_70b() && matches!(new_type, T::Q3_K | T::Q4_K) {
                new_type = T::Q5_K;
            }
            if self.ctx.n_expert == 8 {
                new_type = T::Q8_0;
            }
            self.i_attention_wv += 1;
        } else if category == Category::AttnK {
            if self.ctx.n_expert == 8 {
                new_type = T::Q8_0;
            }
        } else if category == Category::AttnQ {
            // Only IQ3_XS / IQ3_XXS change attn_q.
        } else if category == Category::FfnDown {
            let (i, n) = self.layer_info(self.i_ffn_down, self.ctx.n_ffn_down, name)?;
            if ftype == F::Q2_K {
                new_type = T::Q3_K;
            } else if ftype == F::Q3_K_M {
                new_type = if i < n / 16 {
                    T::Q5_K
                } else if !falcon || use_more_bits(i, n) {
                    T::Q4_K
                } else {
                    T::Q3_K
                };
            } else if ftype == F::Q3_K_L {
                new_type = if falcon { T::Q4_K } else { T::Q5_K };
            } else if ftype == F::Q4_K_M {
                if falcon {
                    new_type = if i < n / 16 {
                        T::Q6_K
                    } else if use_more_bits(i, n) {
                        T::Q5_K
                    } else {
                        T::Q4_K
                    };
                } else if use_more_bits(i, n) {
                    new_type = T::Q6_K;
                }
            } else if ftype == F::Q5_K_M && use_more_bits(i, n) {
                new_type = T::Q6_K;
            } else if ftype == F::Q4_K_S && !falcon && i < n / 8 {
                new_type = T::Q5_K;
            }
            self.i_ffn_down += 1;
        } else if category == Category::AttnOutput {
            if !falcon {
                if self.ctx.n_expert == 8 {
                    if matches!(ftype, F::Q2_K | F::Q3_K_S | F::Q3_K_M | F::Q4_K_S | F::Q4_K_M) {
                        new_type = T::Q5_K;
                    }
                } else if ftype == F::Q2_K {
                    new_type = T::Q3_K;
                } else if ftype == F::Q3_K_M {
                    new_type = T::Q4_K;
                } else if ftype == F::Q3_K_L {
                    new_type = T::Q5_K;
                }
            } else if ftype == F::Q3_K_L {
                new_type = T::Q4_K;
            }
        }
        // The ATTENTION_QKV branch of llama.cpp comes after the attn_v one, which already takes
        // attn_qkv (category_is_attn_v), so it never fires; not mirrored.
        else if category == Category::FfnGate {
            // Only IQ3_XS changes ffn_gate, but layer_info can still fail, and the counter advances.
            self.layer_info(self.i_ffn_gate, self.ctx.n_layer, name)?;
            self.i_ffn_gate += 1;
        } else if category == Category::FfnUp {
            self.layer_info(self.i_ffn_up, self.ctx.n_layer, name)?;
            self.i_ffn_up += 1;
        }
        Ok(new_type)
    }

    /// `tensor_type_fallback`: a type whose block fits `ne[0]`, else F16.
    fn fallback(&mut self, name: &str, ne: &[u64], target: GgmlType) -> Result<GgmlType, PolicyError> {
        use GgmlType as T;
        let ncols = ne.first().copied().unwrap_or(1);
        let block_size = target.block_size();
        if ncols % block_size == 0 {
            return Ok(target);
        }
        self.n_fallback += 1;
        let mut ty = match target {
            T::IQ1_S | T::IQ1_M | T::IQ2_XXS | T::IQ2_XS | T::IQ2_S | T::IQ3_XXS | T::IQ3_S | T::IQ4_XS => T::IQ4_NL,
            T::Q2_0 | T::Q2_K | T::Q3_K | T::TQ1_0 | T::TQ2_0 => T::Q4_0,
            T::Q4_K => T::Q5_0,
            T::Q5_K => T::Q5_1,
            T::Q6_K => T::Q8_0,
            // A 32-block type has nothing smaller to demote to: the check below makes it F16.
            _ if block_size <= 32 => target,
            _ => return Err(PolicyError::NoFallback { tensor: name.to_owned(), ncols, ty: target, block_size }),
        };
        if ncols % ty.block_size() != 0 {
            ty = T::F16;
        }
        Ok(ty)
    }
}

/// Names (after `blk.N.` where the name is per layer, before `.weight`) that convert_hf_to_gguf
/// always writes as F32 ("Some tensor types are always in float32" in `prepare_tensors`). Keep in sync
/// with `conversion/base.py`; the mmproj-only keys (`V_ENC_EMBD_POS`, `A_ENC_EMBD_POS`) are left out.
const CONVERT_F32_LAYER: &[&str] = &[
    "ffn_gate_inp",
    "ffn_gate_inp_shexp",
    "ssm_conv1d",
    "shortconv.conv",
    "time_mix_first",
    "time_mix_w1",
    "time_mix_w2",
    "time_mix_decay_w1",
    "time_mix_decay_w2",
    "time_mix_lerp_fused",
    "altup_correct_coef",
    "altup_predict_coef",
    "ssm_conv1d_q",
    "ssm_conv1d_k",
    "ssm_conv1d_v",
];

/// The type `convert_hf_to_gguf.py --outtype {f32,f16,bf16}` writes for the tensor `name` with `ne`
/// (`ne.len()` is its number of dimensions, as PyTorch counts them).
///
/// Mirrors `ModelBase.prepare_tensors` (no model class we convert overrides `tensor_force_quant`):
/// 1-D tensors, `*_norm.weight`, biases (any name not ending in `.weight`, `.lora_a` or `.lora_b`) and
/// a few always-F32 kinds (`ffn_gate_inp`, `position_embd`, ...) are F32; everything else is the file
/// type, `token_embd` and `output` included.
pub fn convert_type(name: &str, ne: &[u64], ftype: FileType) -> Result<GgmlType, PolicyError> {
    if ftype.is_quantized() {
        return Err(PolicyError::NotAFloatType { ftype });
    }
    let always_f32 = || {
        if name == "position_embd.weight" || name == "token_types.weight" {
            return true;
        }
        let Some(base) = name.strip_suffix(".weight") else {
            return false;
        };
        let per_layer = |prefix: &str| {
            base.strip_prefix(prefix)
                .and_then(|rest| rest.split_once('.'))
                .filter(|(bid, _)| !bid.is_empty() && bid.bytes().all(|b| b.is_ascii_digit()))
                .map(|(_, rest)| rest)
        };
        per_layer("blk.").is_some_and(|rest| CONVERT_F32_LAYER.contains(&rest))
            || per_layer("posnet.").is_some_and(|rest| rest == "norm1" || rest == "norm2")
    };
    let suffix_ok = [".weight", ".lora_a", ".lora_b"].iter().any(|s| name.ends_with(s));
    if ne.len() <= 1 || name.ends_with("_norm.weight") || always_f32() || !suffix_ok {
        return Ok(GgmlType::F32);
    }
    Ok(ftype.default_type())
}

/// The type our converter writes for a tensor: [`convert_type`] for float file types,
/// [`QuantState::choose`] over the [`QUANTIZE_SOURCE`] type for quantized ones.
fn converter_type(state: &mut QuantState, name: &str, ne: &[u64]) -> Result<GgmlType, PolicyError> {
    if !state.ftype.is_quantized() {
        return convert_type(name, ne, state.ftype);
    }
    let src_type = convert_type(name, ne, QUANTIZE_SOURCE)?;
    state.choose(name, ne, src_type)
}

/// The type our converter writes for each tensor of a *dense* model, one call per tensor:
/// [`convert_type`] for float file types, llama-quantize's choice ([`QuantState::choose`]) over the
/// [`QUANTIZE_SOURCE`] types for quantized ones. For mixture-of-experts models use [`plan_types`].
///
/// Like llama-quantize, it counts `attn_v` and `ffn_down` tensors as they come, so feed it tensors in
/// [`llama_quantize_order`] (for a dense model, any order that visits layers in increasing order
/// gives the same types), or use [`plan_types`], which takes care of it.
#[derive(Clone, Debug)]
pub struct TypeChooser {
    state: QuantState,
}

impl TypeChooser {
    /// A chooser for a dense model of architecture `arch` (`general.architecture`) with `n_layer`
    /// layers, whose tensors are `names` (all of them, any order).
    ///
    /// Head counts are unknown until [`TypeChooser::with_heads`]; without them the two rules that
    /// read them never fire (Q2_K's `attn_v` rule for grouped-query attention, and the `attn_v` bump
    /// of 80-layer grouped-query llama models).
    pub fn new<'n>(ftype: FileType, arch: &str, n_layer: u64, names: impl IntoIterator<Item = &'n str>) -> Self {
        // llama.cpp caps block_count at LLAMA_MAX_LAYERS (512), far below u32::MAX.
        let n_layer = u32::try_from(n_layer).unwrap_or(u32::MAX);
        let hparams = QuantHParams { n_layer, n_expert: 0, n_head: 0, n_head_kv: 0 };
        TypeChooser { state: QuantState::new(TensorContext::from_tensor_names(arch, hparams, names), ftype) }
    }

    /// Sets the attention head counts (`num_attention_heads`, `num_key_value_heads`).
    pub fn with_heads(mut self, n_head: u64, n_head_kv: u64) -> Self {
        self.state.ctx.n_head = u32::try_from(n_head).unwrap_or(u32::MAX);
        self.state.ctx.n_head_kv = u32::try_from(n_head_kv).unwrap_or(u32::MAX);
        self
    }

    /// The type of the tensor `name` of shape `ne` (ggml order, `ne.len()` its number of dimensions).
    pub fn choose(&mut self, name: &str, ne: &[u64]) -> GgmlType {
        // Cannot fail: the context is dense (n_expert = 0), so no layer is read from a name;
        // QUANTIZE_SOURCE is a float type; and every type the mixture rules pick for a FileType has a
        // fallback or a 32-element block (see `QuantState::fallback`).
        converter_type(&mut self.state, name, ne).expect("type choice for a dense model cannot fail")
    }

    /// Tensors so far that needed a fallback type (see [`QuantState::n_fallback`]).
    pub fn n_fallback(&self) -> u32 {
        self.state.n_fallback()
    }
}

/// The type our converter writes for every tensor of a model (`(name, ne)` pairs, any order; `ctx`
/// built from the same names), returned in the order given. Tensors are visited in
/// [`llama_quantize_order`], so the result is llama-quantize's whatever order the caller keeps.
/// Unlike [`TypeChooser`], handles mixture-of-experts models, whose FFN rules can fail on names.
pub fn plan_types(
    ctx: &TensorContext,
    ftype: FileType,
    tensors: &[(&str, &[u64])],
) -> Result<Vec<GgmlType>, PolicyError> {
    let names: Vec<&str> = tensors.iter().map(|t| t.0).collect();
    let mut state = QuantState::new(ctx.clone(), ftype);
    let mut types = vec![GgmlType::F32; tensors.len()];
    for i in llama_quantize_order(&names) {
        let (name, ne) = tensors[i];
        types[i] = converter_type(&mut state, name, ne)?;
    }
    Ok(types)
}

#[cfg(test)]
mod tests;
