//! A model's hyper-parameters, read from its GGUF metadata with llama.cpp's keys.

use crate::arch::Arch;
use crate::gguf::Gguf;

use super::ModelError;

/// Hyper-parameters of a model.
#[derive(Clone, Debug, PartialEq)]
pub struct HParams {
    pub arch: Arch,
    pub n_embd: u64,
    pub n_layer: u64,
    pub n_head: u64,
    pub n_head_kv: u64,
    pub head_dim: u64,
    pub n_ff: u64,
    pub n_vocab: u64,
    pub n_ctx_train: u64,
    /// Epsilon of the RMS norms (Llama, Qwen2) or layer norms (Falcon, GPT-NeoX).
    pub norm_eps: f32,
    pub rope_freq_base: f32,
    /// 1 / linear rope scaling factor.
    pub rope_freq_scale: f32,
    /// The factor of the rope's cos and sin (Phi-3's longrope `rope.scaling.attn_factor`), 1
    /// elsewhere.
    pub rope_attn_factor: f32,
    /// The context the rope was trained at before any extension
    /// (`rope.scaling.original_context_length`, else the training context): Phi-3's long rope
    /// factors apply to contexts beyond it.
    pub n_ctx_orig: u64,
    pub rope_dims: u64,
    /// Whether attention and the MLP read the same layer input (Falcon; GPT-NeoX's
    /// `use_parallel_residual`, true when absent as in llama.cpp).
    pub parallel_residual: bool,
    /// The factor of the token embeddings (Gemma: `sqrt(n_embd)`).
    pub embed_scale: Option<f32>,
    /// The factor of the attention scores: `1 / sqrt(head_dim)` unless the family says otherwise.
    pub attn_scale: f32,
    /// Whether llama.cpp applies `attn_scale` to the queries (Gemma) rather than to the scores in
    /// the softmax: the same value, another rounding.
    pub scale_queries: bool,
    /// Soft-capping of the attention scores, `c · tanh(s / c)` (Gemma 2's `attn_logit_softcapping`).
    pub attn_softcap: Option<f32>,
    /// Soft-capping of the output logits (Gemma 2's and Gemma 3's `final_logit_softcapping`).
    pub final_softcap: Option<f32>,
    /// Sliding-window attention in some layers (Gemma 2 and 3).
    pub sliding_window: Option<SlidingWindow>,
}

/// Sliding-window attention: the layers that use it see only the last `size` positions, and
/// rotate with their own rope base.
#[derive(Clone, Debug, PartialEq)]
pub struct SlidingWindow {
    /// Positions a query sees, its own included.
    pub size: u64,
    /// Whether each layer uses the window.
    pub layers: Vec<bool>,
    /// The rope base of the windowed layers.
    pub rope_freq_base: f32,
    /// The rope's position scale in the windowed layers (1 / linear scaling factor).
    pub rope_freq_scale: f32,
}

impl HParams {
    /// Whether layer `il` attends through the sliding window.
    pub fn is_sliding(&self, il: u32) -> bool {
        self.sliding_window.as_ref().is_some_and(|w| w.layers.get(il as usize) == Some(&true))
    }
}

/// The keys of a model's own namespace (`llama.`, `qwen2.`, ...) that gguftune's graph reads, or
/// that cannot change its math (`tensor_data_layout` names Falcon's fused QKV layout, which the
/// converter already resolved; `rope.scaling.finetuned` is informative). Any other key there
/// (soft-capping, sliding windows, logit or embedding scales, experts, ...) changes what llama.cpp
/// computes, so a model carrying one is refused by name instead of trained as a different model.
const KNOWN_KEYS: &[&str] = &[
    "vocab_size",
    "context_length",
    "embedding_length",
    "block_count",
    "feed_forward_length",
    "attention.head_count",
    "attention.head_count_kv",
    "attention.key_length",
    "attention.value_length",
    "attention.layer_norm_rms_epsilon",
    "attention.layer_norm_epsilon",
    "rope.freq_base",
    "rope.dimension_count",
    "rope.scaling.type",
    "rope.scaling.factor",
    "rope.scaling.original_context_length",
    "rope.scaling.finetuned",
    "use_parallel_residual",
    "tensor_data_layout",
];

/// Keys outside [`KNOWN_KEYS`] that are harmless at one value: llama.cpp's converter writes
/// `expert_count` 0 or `attention.sliding_window` 0 for dense models with full attention.
const NEUTRAL_VALUES: &[(&str, f64)] = &[
    ("expert_count", 0.0),
    ("expert_used_count", 0.0),
    ("attention.sliding_window", 0.0),
    ("rope.scaling.attn_factor", 1.0),
];

/// Refuses the first key of `arch`'s namespace that changes the math and that gguftune's graph
/// does not implement.
fn check_keys(g: &Gguf<'_>, arch: Arch) -> Result<(), ModelError> {
    let prefix = format!("{}.", arch.name());
    for (key, value) in &g.metadata {
        let Some(own) = key.strip_prefix(&prefix) else { continue };
        if KNOWN_KEYS.contains(&own) || arch.family().own_keys().contains(&own) {
            continue;
        }
        let number = value.as_f64().or_else(|| value.as_i64().map(|v| v as f64));
        let neutral = NEUTRAL_VALUES.iter().any(|(k, v)| *k == own && number == Some(*v));
        if !neutral {
            let shown = match (number, value.as_str(), value.as_bool()) {
                (Some(n), _, _) => n.to_string(),
                (_, Some(s), _) => format!("'{s}'"),
                (_, _, Some(b)) => b.to_string(),
                _ => format!("an {:?}", value.value_type()),
            };
            return Err(ModelError::UnsupportedKey { key: (*key).to_owned(), value: shown });
        }
    }
    Ok(())
}

impl HParams {
    /// Rows of the query projection: `n_head × head_dim`.
    pub fn n_q(&self) -> u64 {
        self.n_head * self.head_dim
    }

    /// Rows of the key and of the value projection: `n_head_kv × head_dim`.
    pub fn n_kv(&self) -> u64 {
        self.n_head_kv * self.head_dim
    }

    /// Reads the hyper-parameters; every missing key is reported at once, and a key that would
    /// change the math in a way gguftune does not implement is refused by name.
    pub fn from_gguf(g: &Gguf<'_>) -> Result<HParams, ModelError> {
        let arch_name = g.get_str("general.architecture").unwrap_or("");
        let arch =
            Arch::from_name(arch_name).ok_or_else(|| ModelError::UnsupportedArch { arch: arch_name.to_owned() })?;
        check_keys(g, arch)?;
        let mut missing = Vec::new();
        let mut int = |key: &str| -> u64 {
            let full = format!("{arch_name}.{key}");
            match g.get(&full).and_then(|v| v.as_u64()) {
                Some(v) => v,
                None => {
                    missing.push(full);
                    0
                }
            }
        };
        let n_embd = int("embedding_length");
        let n_layer = int("block_count");
        let n_head = int("attention.head_count");
        let n_ff = int("feed_forward_length");
        let n_ctx_train = int("context_length");
        let float = |key: &str| g.get(&format!("{arch_name}.{key}")).and_then(|v| v.as_f64());
        let eps_key =
            if arch.layer_norms() { "attention.layer_norm_epsilon" } else { "attention.layer_norm_rms_epsilon" };
        let norm_eps = float(eps_key);
        if norm_eps.is_none() {
            missing.push(format!("{arch_name}.{eps_key}"));
        }
        if !missing.is_empty() {
            return Err(ModelError::MissingKeys { keys: missing });
        }
        let opt_int = |key: &str| g.get(&format!("{arch_name}.{key}")).and_then(|v| v.as_u64());
        let n_head_kv = opt_int("attention.head_count_kv").unwrap_or(n_head);
        if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(ModelError::Inconsistent {
                what: format!("head_count {n_head} is not a multiple of head_count_kv {n_head_kv}"),
            });
        }
        let head_dim = opt_int("attention.key_length").unwrap_or(n_embd / n_head);
        if let Some(value_length) = opt_int("attention.value_length").filter(|&v| v != head_dim) {
            return Err(ModelError::Inconsistent {
                what: format!("attention.value_length {value_length} differs from the key length {head_dim}"),
            });
        }
        // Every layer has tensors, so a block count beyond the tensor count is not this file's.
        if n_layer > g.tensors.len() as u64 {
            return Err(ModelError::Inconsistent {
                what: format!("{arch_name}.block_count {n_layer} is more than the file's {} tensors", g.tensors.len()),
            });
        }
        let n_vocab = g
            .tensor("token_embd.weight")
            .map(|t| t.ne.get(1).copied().unwrap_or(0))
            .ok_or(ModelError::MissingTensor { name: "token_embd.weight".into() })?;
        let scaling = g.get_str(&format!("{arch_name}.rope.scaling.type"));
        let factor = float("rope.scaling.factor").unwrap_or(1.0) as f32;
        let rope_freq_scale = match scaling {
            None | Some("none") => 1.0,
            Some("linear") if factor > 0.0 => 1.0 / factor,
            Some(other) => return Err(ModelError::Unsupported { what: format!("rope scaling '{other}'") }),
        };
        let mut h = HParams {
            arch,
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            n_ff,
            n_vocab,
            n_ctx_train,
            norm_eps: norm_eps.unwrap_or(1e-5) as f32,
            rope_freq_base: float("rope.freq_base").unwrap_or(10_000.0) as f32,
            rope_freq_scale,
            rope_attn_factor: 1.0,
            n_ctx_orig: opt_int("rope.scaling.original_context_length").unwrap_or(n_ctx_train),
            rope_dims: opt_int("rope.dimension_count").unwrap_or(head_dim),
            parallel_residual: arch.family().parallel_residual(g),
            embed_scale: None,
            attn_scale: 1.0 / (head_dim as f32).sqrt(),
            scale_queries: false,
            attn_softcap: None,
            final_softcap: None,
            sliding_window: None,
        };
        arch.family().hparams(g, &mut h)?;
        Ok(h)
    }
}
