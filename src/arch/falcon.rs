//! Falcon 7B/40B/180B and Falcon2 11B: one fused QKV projection (heads grouped per key/value
//! head in the checkpoint, regrouped by the converter), layer norms with biases, attention and
//! MLP in parallel on the same input, a GELU MLP, NEOX-style rope (llama.cpp's
//! `llm_build_falcon`).

use serde_json::Value;

use super::{Arch, Family};
use crate::convert::{Heads, RowOrder};
use crate::ggml::Tensor;
use crate::gguf::Gguf;
use crate::hf::{ConfigError, ConfigReader, ModelConfig};
use crate::model::{Binder, LayerGraph, LayerWeights, ModelError};
use crate::names::TensorKind;

/// The Falcon family.
pub struct Falcon;

const ARCH: Arch = Arch(&Falcon);

impl Family for Falcon {
    fn name(&self) -> &'static str {
        "falcon"
    }

    fn hf_classes(&self) -> &'static [(&'static str, &'static str)] {
        // RW: the name of Falcon's remote code before transformers had the model.
        &[("FalconForCausalLM", "falcon"), ("RWForCausalLM", "RefinedWebModel")]
    }

    fn config(&self, r: &ConfigReader<'_>, hf_architecture: String) -> Result<ModelConfig, ConfigError> {
        config(r, hf_architecture)
    }

    fn hf_prefixes(&self) -> (&'static str, &'static str) {
        ("transformer.h.", "transformer.")
    }

    fn hf_names(&self, kind: TensorKind) -> &'static [&'static str] {
        use TensorKind::*;
        match kind {
            TokenEmbd => &["word_embeddings"],
            OutputNorm => &["ln_f"],
            Output => &["lm_head"],
            // Falcon-40B's MLP norm is llama.cpp's attn_norm and its attention norm attn_norm_2.
            AttnNorm => &["input_layernorm", "ln_mlp"],
            AttnNorm2 => &["ln_attn"],
            AttnQkv => &["self_attention.query_key_value"],
            AttnOutput => &["self_attention.dense"],
            FfnUp => &["mlp.dense_h_to_4h"],
            FfnDown => &["mlp.dense_4h_to_h"],
            AttnQ | AttnK | AttnV | AttnQNorm | AttnKNorm | FfnNorm | FfnGate | AttnPostNorm | FfnPostNorm
            | RopeFreqs | RopeFactorsLong | RopeFactorsShort => &[],
        }
    }

    fn layer_tensors(&self, c: &ModelConfig) -> Vec<(TensorKind, &'static str)> {
        use TensorKind::*;
        let mut t = vec![(AttnNorm, "weight"), (AttnNorm, "bias")];
        if c.attn_norm_2 {
            t.extend([(AttnNorm2, "weight"), (AttnNorm2, "bias")]);
        }
        t.extend([(AttnQkv, "weight"), (AttnOutput, "weight"), (FfnUp, "weight"), (FfnDown, "weight")]);
        t
    }

    fn requires_output(&self) -> bool {
        false
    }

    fn reordered_rows(&self) -> &'static [TensorKind] {
        &[TensorKind::AttnQkv]
    }

    fn row_order(&self, heads: &Heads, kind: TensorKind) -> RowOrder {
        match kind {
            TensorKind::AttnQkv => {
                RowOrder::FalconQkv { n_head: heads.n_head, n_head_kv: heads.n_head_kv, head_dim: heads.head_dim }
            }
            _ => RowOrder::AsIs,
        }
    }

    fn layer_norms(&self) -> bool {
        true
    }

    fn parallel_residual(&self, _g: &Gguf<'_>) -> bool {
        true
    }

    fn projections(&self) -> &'static [TensorKind] {
        use TensorKind::*;
        &[AttnQkv, AttnOutput, FfnUp, FfnDown]
    }

    fn peft_modules(&self) -> &'static str {
        "query_key_value, dense, dense_h_to_4h, dense_4h_to_h, lm_head"
    }

    fn fewer_targets(&self) -> &'static [&'static str] {
        &["qkv,o", "qkv"]
    }

    fn bind_layer<'c>(&self, b: &Binder<'_, 'c>) -> Result<LayerWeights<'c>, ModelError> {
        bind_layer_norm_layer(b)
    }

    /// The MLP beside attention, on attention's normed input (Falcon-40B: attention reads its own
    /// norm, the MLP `attn_norm`).
    fn layer<'c>(&self, g: &LayerGraph<'_, 'c>, l: &LayerWeights<'c>, x: Tensor<'c>) -> Result<Tensor<'c>, ModelError> {
        let ctx = g.ctx;
        let bias =
            l.attn_norm_b.ok_or(ModelError::Inconsistent { what: "a Falcon layer without attn_norm.bias".into() })?;
        let normed = g.layer_norm(x, l.attn_norm, bias)?;
        let attn_in = match l.attn_norm_2 {
            Some((weight, bias)) => g.layer_norm(x, weight, bias)?,
            None => normed,
        };
        let attn_out = g.attention(l, attn_in)?;
        Ok(ctx.add(ctx.add(g.gelu_mlp(l, normed)?, attn_out)?, x)?)
    }
}

/// Binds a layer of the layer-norm families (Falcon, GPT-NeoX): the fused QKV weight and bias as
/// views, the layer norms with their biases, the ungated MLP with its biases where present.
pub(super) fn bind_layer_norm_layer<'c>(b: &Binder<'_, 'c>) -> Result<LayerWeights<'c>, ModelError> {
    use TensorKind::*;
    let h = b.h;
    let (e, f, q) = (h.n_embd, h.n_ff, h.n_q());
    let mut l = LayerWeights::new(
        b.need(AttnNorm, &[e])?,
        b.fused_qkv()?,
        b.need(AttnOutput, &[q, e])?,
        b.need(FfnUp, &[e, f])?,
        b.need(FfnDown, &[f, e])?,
    );
    l.fused_qkv = true;
    [l.bq, l.bk, l.bv] = b.fused_qkv_bias()?;
    l.attn_norm_b = Some(b.need_bias(AttnNorm, &[e])?);
    l.attn_norm_2 = match b.get(AttnNorm2, &[e])? {
        Some(weight) => Some((weight, b.need_bias(AttnNorm2, &[e])?)),
        None => None,
    };
    l.ffn_norm = b.get(FfnNorm, &[e])?;
    if l.ffn_norm.is_some() {
        l.ffn_norm_b = Some(b.need_bias(FfnNorm, &[e])?);
    }
    l.bo = b.get_bias(AttnOutput, &[e])?;
    l.ffn_up_b = b.get_bias(FfnUp, &[f])?;
    l.ffn_down_b = b.get_bias(FfnDown, &[e])?;
    Ok(l)
}

/// A Falcon config (transformers' `FalconConfig`, or the older `RWConfig` key names), with
/// transformers' defaults: `multi_query` true, `parallel_attn` true, `num_kv_heads` the head count
/// (used only with `new_decoder_architecture` or without `multi_query`), `ffn_hidden_size` four
/// times the hidden size, and two layer norms per layer with the new architecture
/// (`num_ln_in_parallel_attn`, Falcon2 11B has one).
fn config(r: &ConfigReader<'_>, hf_architecture: String) -> Result<ModelConfig, ConfigError> {
    let unsupported = |key, found: &str, expected| r.unsupported(ARCH, key, found, expected);
    // The layouts llama.cpp's Falcon graph runs: no ALiBi, no linear biases, attention and MLP in
    // parallel (Falcon-RW's sequential blocks with ALiBi are another architecture there).
    if r.bool_opt("alibi")? == Some(true) {
        return Err(unsupported("alibi", "true", "false (rotary position embeddings)"));
    }
    if r.bool_opt("bias")? == Some(true) {
        return Err(unsupported("bias", "true", "false (projections without biases)"));
    }
    if r.bool_opt("parallel_attn")? == Some(false) {
        return Err(unsupported("parallel_attn", "false", "true (attention and MLP in parallel)"));
    }
    if let Some(activation) = r.get("activation").and_then(Value::as_str).filter(|a| *a != "gelu") {
        return Err(unsupported("activation", activation, "gelu"));
    }
    let new_architecture = r.bool_opt("new_decoder_architecture")?.unwrap_or(false);
    let hidden_size = r.u64("hidden_size")?;
    let num_heads = r.u64_any(&["num_attention_heads", "n_head"])?;
    let multi_query = r.bool_opt("multi_query")?.unwrap_or(true);
    let num_kv_heads = if new_architecture || !multi_query {
        match r.u64_opt("num_kv_heads")? {
            Some(n) => n,
            None => r.u64_opt("n_head_kv")?.unwrap_or(num_heads),
        }
    } else {
        1
    };
    let head_dim = r.head_dim(hidden_size, num_heads, num_kv_heads)?;
    let (rope_theta, rope_scaling) = r.rope()?;
    let norms = if new_architecture { r.u64_opt("num_ln_in_parallel_attn")?.unwrap_or(2) } else { 1 };
    Ok(ModelConfig {
        arch: ARCH,
        hf_architecture,
        hidden_size,
        intermediate_size: r.u64_opt("ffn_hidden_size")?.unwrap_or(hidden_size.saturating_mul(4)),
        num_layers: r.u64_any(&["num_hidden_layers", "n_layer"])?,
        num_heads,
        num_kv_heads,
        head_dim,
        rope_dims: head_dim,
        parallel_residual: true,
        context_length: r.u64_opt("max_position_embeddings")?.unwrap_or(2048),
        norm_eps: r.f32_opt("layer_norm_epsilon")?.unwrap_or(1e-5),
        rope_theta,
        rope_scaling,
        vocab_size: r.u64_opt("vocab_size")?.unwrap_or(65024),
        tie_word_embeddings: r.bool_opt("tie_word_embeddings")?.unwrap_or(false),
        attn_norm_2: norms == 2,
        dtype: r.dtype(),
        original_context_length: None,
        sliding_window: None,
        rope_theta_local: None,
        attn_logit_softcapping: None,
        final_logit_softcapping: None,
    })
}
