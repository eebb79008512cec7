//! Phi-3 (mini 4k) and Phi-4-mini: the Llama layout with one fused QKV projection (rows q; k; v
//! as in the checkpoint), one fused gate and up projection (`ffn_up`, rows gate; up), a
//! NEOX-style rope (Phi-4-mini's on three quarters of each head); llama.cpp's
//! `llama_model_phi3::graph`. The long-context variants' rope (`rope_factors_short` up to the
//! original context, `rope_factors_long` beyond, and an attention factor on cos and sin) is
//! applied as llama.cpp applies it, choosing by the context (the training sequence length, as
//! llama.cpp chooses by its context size).

use serde_json::Value;

use super::{llama, Arch, Family};
use crate::ggml::Tensor;
use crate::gguf::{Gguf, MetaValue};
use crate::hf::{ConfigError, ConfigReader, ModelConfig, RopeScaling};
use crate::model::{Binder, HParams, LayerGraph, LayerWeights, ModelError};
use crate::names::TensorKind;

/// The Phi-3 family.
pub struct Phi3;

const ARCH: Arch = Arch(&Phi3);

impl Family for Phi3 {
    fn name(&self) -> &'static str {
        "phi3"
    }

    fn hf_classes(&self) -> &'static [(&'static str, &'static str)] {
        &[("Phi3ForCausalLM", "phi3")]
    }

    fn config(&self, r: &ConfigReader<'_>, hf_architecture: String) -> Result<ModelConfig, ConfigError> {
        config(r, hf_architecture)
    }

    fn hf_names(&self, kind: TensorKind) -> &'static [&'static str] {
        match kind {
            TensorKind::AttnQkv => &["self_attn.qkv_proj"],
            // The gate's rows, then the up projection's: llama.cpp's ffn_up.
            TensorKind::FfnUp => &["mlp.gate_up_proj"],
            TensorKind::AttnQ | TensorKind::AttnK | TensorKind::AttnV | TensorKind::FfnGate => &[],
            TensorKind::AttnQNorm | TensorKind::AttnKNorm => &[],
            other => llama::hf_names(other),
        }
    }

    fn layer_tensors(&self, _c: &ModelConfig) -> Vec<(TensorKind, &'static str)> {
        use TensorKind::*;
        llama::weights(&[AttnNorm, AttnQkv, AttnOutput, FfnNorm, FfnUp, FfnDown])
    }

    fn metadata(&self, c: &ModelConfig, kv: &mut Vec<(String, MetaValue)>) {
        // As llama.cpp's converter writes them; llama.cpp's phi3 ignores the window.
        let u32_of = |v: u64| MetaValue::U32(u32::try_from(v).unwrap_or(u32::MAX));
        if let Some(n) = c.original_context_length {
            kv.push(("phi3.rope.scaling.original_context_length".into(), u32_of(n)));
        }
        if let Some(n) = c.sliding_window {
            kv.push(("phi3.attention.sliding_window".into(), u32_of(n)));
        }
        if let (Some(RopeScaling::LongRope { .. }), Some(original)) = (&c.rope_scaling, c.original_context_length) {
            kv.push((
                "phi3.rope.scaling.attn_factor".into(),
                MetaValue::F32(longrope_attn_factor(c.context_length, original)),
            ));
        }
    }

    fn fused_gate_up(&self) -> bool {
        true
    }

    fn own_keys(&self) -> &'static [&'static str] {
        // llama.cpp's phi3 (src/models/phi3.cpp, load_arch_hparams) reads the sliding window and
        // then disables it (n_swa = 0, full attention in every layer); its converter writes the
        // key for every Phi-3 (Phi-3-mini-4k: 2047; 0 when config.json has none). The attention
        // factor scales the rope's cos and sin (see `hparams`).
        &["attention.sliding_window", "rope.scaling.attn_factor"]
    }

    fn hparams(&self, g: &Gguf<'_>, h: &mut HParams) -> Result<(), ModelError> {
        if let Some(factor) = g.get("phi3.rope.scaling.attn_factor").and_then(|v| v.as_f64()) {
            if !(factor.is_finite() && factor > 0.0) {
                return Err(ModelError::UnsupportedKey {
                    key: "phi3.rope.scaling.attn_factor".into(),
                    value: factor.to_string(),
                });
            }
            h.rope_attn_factor = factor as f32;
        }
        Ok(())
    }

    fn projections(&self) -> &'static [TensorKind] {
        use TensorKind::*;
        &[AttnQkv, AttnOutput, FfnUp, FfnDown]
    }

    fn peft_modules(&self) -> &'static str {
        "qkv_proj, o_proj, gate_up_proj, down_proj, lm_head"
    }

    fn fewer_targets(&self) -> &'static [&'static str] {
        &["qkv,o", "qkv"]
    }

    fn bind_layer<'c>(&self, b: &Binder<'_, 'c>) -> Result<LayerWeights<'c>, ModelError> {
        use TensorKind::*;
        let h = b.h;
        let (e, f, q) = (h.n_embd, h.n_ff, h.n_q());
        let gate_up = b.need(FfnUp, &[e, 2 * f])?;
        let mut l = LayerWeights::new(
            b.need(AttnNorm, &[e])?,
            b.fused_qkv()?,
            b.need(AttnOutput, &[q, e])?,
            b.rows(gate_up, f, f)?,
            b.need(FfnDown, &[f, e])?,
        );
        l.fused_qkv = true;
        l.ffn_gate = Some(b.rows(gate_up, 0, f)?);
        l.fused_gate_up = true;
        l.ffn_norm = Some(b.need(FfnNorm, &[e])?);
        Ok(l)
    }

    fn layer<'c>(&self, g: &LayerGraph<'_, 'c>, l: &LayerWeights<'c>, x: Tensor<'c>) -> Result<Tensor<'c>, ModelError> {
        llama::layer(g, l, x)
    }
}

/// llama.cpp's converter's attention factor of a longrope model: `sqrt(1 + ln(s) / ln(original))`
/// with `s` the context's extension (`max_position_embeddings / original`), 1 without one; the
/// rope multiplies cos and sin by it (transformers' `attention_factor` of longrope).
fn longrope_attn_factor(context: u64, original: u64) -> f32 {
    let scale = context as f64 / original as f64;
    if scale > 1.0 {
        (1.0 + scale.ln() / (original as f64).ln()).sqrt() as f32
    } else {
        1.0
    }
}

/// A Phi-3 config (transformers' `Phi3Config`): Phi-3-mini-4k's and Phi-4-mini's layout, with
/// `partial_rotary_factor` at the top level or in `rope_parameters` (1 when absent), rotating
/// `int(factor × hidden_size) / num_attention_heads` dimensions of each head as llama.cpp's
/// converter computes them. The long-context variants' `longrope` (or `su`) scaling gives the
/// short and long factors, one per rotary pair, with `original_max_position_embeddings`; other
/// scalings are refused, as llama.cpp's converter writes none for phi3.
fn config(r: &ConfigReader<'_>, hf_architecture: String) -> Result<ModelConfig, ConfigError> {
    let unsupported = |key, found: &str, expected| r.unsupported(ARCH, key, found, expected);
    for key in ["attention_bias", "mlp_bias"] {
        if r.bool_opt(key)? == Some(true) {
            return Err(unsupported(key, "true", "false (llama.cpp's phi3 has no projection biases)"));
        }
    }
    if let Some(act) = r.get("hidden_act").and_then(Value::as_str).filter(|a| *a != "silu") {
        return Err(unsupported("hidden_act", act, "silu (llama.cpp's phi3 runs a SwiGLU MLP)"));
    }
    let hidden_size = r.u64("hidden_size")?;
    let num_heads = r.u64("num_attention_heads")?;
    let num_kv_heads = r.u64_opt("num_key_value_heads")?.unwrap_or(num_heads);
    let head_dim = r.head_dim(hidden_size, num_heads, num_kv_heads)?;
    if head_dim * num_heads != hidden_size {
        return Err(r.inconsistent(format!(
            "head_dim {head_dim} times num_attention_heads {num_heads} is not hidden_size {hidden_size}, as llama.cpp's phi3 needs"
        )));
    }
    let (rope_theta, rope_scaling) = r.rope()?;
    let fraction = r.rotary_fraction(&["partial_rotary_factor"], 1.0)?;
    let rope_dims = (f64::from(fraction) * hidden_size as f64) as u64 / num_heads;
    r.check_rope_dims("partial_rotary_factor", fraction, head_dim, rope_dims)?;
    let original_context_length = match r.u64_opt("original_max_position_embeddings")? {
        Some(n) => Some(n),
        None => r.rope_parameters().u64_opt("original_max_position_embeddings")?,
    };
    match &rope_scaling {
        None => {}
        Some(RopeScaling::LongRope { short, long }) => {
            if short.len() as u64 != rope_dims / 2 || long.len() as u64 != rope_dims / 2 {
                return Err(r.inconsistent(format!(
                    "rope_scaling has {} short and {} long factors; {rope_dims} rotated dimensions need {} of each",
                    short.len(),
                    long.len(),
                    rope_dims / 2
                )));
            }
            if original_context_length.is_none_or(|n| n < 2) {
                return Err(unsupported(
                    "original_max_position_embeddings",
                    &format!("{original_context_length:?}"),
                    "the context before it was extended, at least 2 (longrope needs it)",
                ));
            }
        }
        Some(other) => {
            return Err(unsupported(
                "rope_scaling",
                &format!("{other:?}"),
                "null or longrope (llama.cpp's converter writes no other rope scaling for phi3)",
            ))
        }
    }
    Ok(ModelConfig {
        arch: ARCH,
        hf_architecture,
        hidden_size,
        intermediate_size: r.u64("intermediate_size")?,
        num_layers: r.u64("num_hidden_layers")?,
        num_heads,
        num_kv_heads,
        head_dim,
        rope_dims,
        parallel_residual: false,
        context_length: r.u64_opt("max_position_embeddings")?.unwrap_or(4096),
        norm_eps: r.f32_opt("rms_norm_eps")?.unwrap_or(1e-5),
        rope_theta,
        rope_scaling,
        vocab_size: r.u64("vocab_size")?,
        tie_word_embeddings: r.bool_opt("tie_word_embeddings")?.unwrap_or(false),
        attn_norm_2: false,
        dtype: r.dtype(),
        original_context_length,
        sliding_window: Some(r.u64_opt("sliding_window")?.unwrap_or(0)),
        rope_theta_local: None,
        attn_logit_softcapping: None,
        final_logit_softcapping: None,
    })
}
