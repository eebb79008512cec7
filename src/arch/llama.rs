//! Llama 1/2/3, Code Llama, Vicuna, TinyLlama, SmolLM, and Mistral (which llama.cpp loads as
//! llama): RMS norms, a gated SiLU MLP, the rope over adjacent pairs (llama.cpp's converter
//! permutes the checkpoint's Q and K rows for it), Llama 3's rope frequency factors. Its layout
//! and layer graph are shared by Qwen2, Qwen3 and Phi-3 (llama.cpp's `llm_build_llama`).

use super::Family;
use crate::convert::{Heads, RowOrder};
use crate::ggml::Tensor;
use crate::hf::{ConfigError, ConfigReader, ModelConfig};
use crate::model::{Activation, Binder, LayerGraph, LayerWeights, ModelError};
use crate::names::TensorKind;

/// The Llama family.
pub struct Llama;

/// The seven projections of a Llama-layout layer.
pub(super) const PROJECTIONS: &[TensorKind] = {
    use TensorKind::*;
    &[AttnQ, AttnK, AttnV, AttnOutput, FfnGate, FfnUp, FfnDown]
};

impl Family for Llama {
    fn name(&self) -> &'static str {
        "llama"
    }

    fn hf_classes(&self) -> &'static [(&'static str, &'static str)] {
        &[("LlamaForCausalLM", "llama"), ("MistralForCausalLM", "mistral")]
    }

    fn config(&self, r: &ConfigReader<'_>, hf_architecture: String) -> Result<ModelConfig, ConfigError> {
        r.llama_layout(super::Arch(&Llama), hf_architecture)
    }

    fn layer_tensors(&self, _c: &ModelConfig) -> Vec<(TensorKind, &'static str)> {
        weights(LAYER)
    }

    fn reordered_rows(&self) -> &'static [TensorKind] {
        &[TensorKind::AttnQ, TensorKind::AttnK]
    }

    fn row_order(&self, heads: &Heads, kind: TensorKind) -> RowOrder {
        match kind {
            TensorKind::AttnQ | TensorKind::AttnK => RowOrder::RotaryHeads { head_dim: heads.head_dim },
            _ => RowOrder::AsIs,
        }
    }

    fn neox_rope(&self) -> bool {
        false
    }

    fn projections(&self) -> &'static [TensorKind] {
        PROJECTIONS
    }

    fn peft_modules(&self) -> &'static str {
        "q/k/v/o_proj, gate/up/down_proj, lm_head"
    }

    fn fewer_targets(&self) -> &'static [&'static str] {
        &["q,k,v,o", "q,v"]
    }

    fn bind_layer<'c>(&self, b: &Binder<'_, 'c>) -> Result<LayerWeights<'c>, ModelError> {
        bind_layer(b)
    }

    fn layer<'c>(&self, g: &LayerGraph<'_, 'c>, l: &LayerWeights<'c>, x: Tensor<'c>) -> Result<Tensor<'c>, ModelError> {
        layer(g, l, x)
    }
}

/// The weights of a Llama-layout layer.
pub(super) const LAYER: &[TensorKind] = {
    use TensorKind::*;
    &[AttnNorm, AttnQ, AttnK, AttnV, AttnOutput, FfnNorm, FfnGate, FfnUp, FfnDown]
};

/// `kinds` as weights.
pub(super) fn weights(kinds: &[TensorKind]) -> Vec<(TensorKind, &'static str)> {
    kinds.iter().map(|&k| (k, "weight")).collect()
}

/// The Hugging Face names of the Llama layout (after `model.` or `model.layers.N.`).
pub(super) fn hf_names(kind: TensorKind) -> &'static [&'static str] {
    use TensorKind::*;
    match kind {
        TokenEmbd => &["embed_tokens"],
        OutputNorm => &["norm"],
        Output => &["lm_head"],
        AttnNorm => &["input_layernorm"],
        AttnQ => &["self_attn.q_proj"],
        AttnK => &["self_attn.k_proj"],
        AttnV => &["self_attn.v_proj"],
        AttnOutput => &["self_attn.o_proj"],
        AttnQNorm => &["self_attn.q_norm"],
        AttnKNorm => &["self_attn.k_norm"],
        FfnNorm => &["post_attention_layernorm"],
        FfnGate => &["mlp.gate_proj"],
        FfnUp => &["mlp.up_proj"],
        FfnDown => &["mlp.down_proj"],
        AttnNorm2 | AttnQkv | AttnPostNorm | FfnPostNorm | RopeFreqs | RopeFactorsLong | RopeFactorsShort => &[],
    }
}

/// Binds a Llama-layout layer: separate Q, K, V with their biases where the file has them
/// (Qwen2's), the per-head norms where it has them (Qwen3's), the norms and the gated MLP.
pub(super) fn bind_layer<'c>(b: &Binder<'_, 'c>) -> Result<LayerWeights<'c>, ModelError> {
    use TensorKind::*;
    let h = b.h;
    let (e, f, q, kv) = (h.n_embd, h.n_ff, h.n_q(), h.n_kv());
    let qkv = [b.need(AttnQ, &[e, q])?, b.need(AttnK, &[e, kv])?, b.need(AttnV, &[e, kv])?];
    let mut l = LayerWeights::new(
        b.need(AttnNorm, &[e])?,
        qkv,
        b.need(AttnOutput, &[q, e])?,
        b.need(FfnUp, &[e, f])?,
        b.need(FfnDown, &[f, e])?,
    );
    l.bq = b.get_bias(AttnQ, &[q])?;
    l.bk = b.get_bias(AttnK, &[kv])?;
    l.bv = b.get_bias(AttnV, &[kv])?;
    l.ffn_norm = Some(b.need(FfnNorm, &[e])?);
    l.ffn_gate = Some(b.need(FfnGate, &[e, f])?);
    Ok(l)
}

/// A Llama-layout layer: attention on the RMS-normed input, added to it; the gated SiLU MLP on
/// the RMS-normed sum, added to it (the sums in llama.cpp's order, so that f32 rounding agrees).
pub(super) fn layer<'c>(g: &LayerGraph<'_, 'c>, l: &LayerWeights<'c>, x: Tensor<'c>) -> Result<Tensor<'c>, ModelError> {
    let ctx = g.ctx;
    let attn_out = g.attention(l, g.rms_norm(x, l.attn_norm)?)?;
    let ffn_in = ctx.add(attn_out, x)?;
    let ffn_norm = l.ffn_norm.ok_or(ModelError::Inconsistent { what: "a Llama layer without ffn_norm".into() })?;
    Ok(ctx.add(g.gated_mlp(l, g.rms_norm(ffn_in, ffn_norm)?, Activation::Silu)?, ffn_in)?)
}
