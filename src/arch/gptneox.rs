//! GPT-NeoX: Pythia, Dolly v2. A fused QKV projection with biases (heads interleaved in the
//! checkpoint), layer norms, a GELU MLP with biases, rope on part of each head, attention and MLP
//! in parallel or one after the other (llama.cpp's `llm_build_gptneox`).

use serde_json::Value;

use super::{falcon, Arch, Family};
use crate::convert::{Heads, RowOrder};
use crate::ggml::Tensor;
use crate::gguf::{Gguf, MetaValue};
use crate::hf::{ConfigError, ConfigReader, ModelConfig};
use crate::model::{Binder, LayerGraph, LayerWeights, ModelError};
use crate::names::TensorKind;

/// The GPT-NeoX family.
pub struct GptNeox;

const ARCH: Arch = Arch(&GptNeox);

impl Family for GptNeox {
    fn name(&self) -> &'static str {
        "gptneox"
    }

    fn hf_classes(&self) -> &'static [(&'static str, &'static str)] {
        &[("GPTNeoXForCausalLM", "gpt_neox")]
    }

    fn config(&self, r: &ConfigReader<'_>, hf_architecture: String) -> Result<ModelConfig, ConfigError> {
        config(r, hf_architecture)
    }

    fn hf_prefixes(&self) -> (&'static str, &'static str) {
        ("gpt_neox.layers.", "gpt_neox.")
    }

    fn hf_names(&self, kind: TensorKind) -> &'static [&'static str] {
        use TensorKind::*;
        match kind {
            TokenEmbd => &["embed_in"],
            OutputNorm => &["final_layer_norm"],
            Output => &["embed_out"],
            AttnNorm => &["input_layernorm"],
            AttnQkv => &["attention.query_key_value"],
            AttnOutput => &["attention.dense"],
            FfnNorm => &["post_attention_layernorm"],
            FfnUp => &["mlp.dense_h_to_4h"],
            FfnDown => &["mlp.dense_4h_to_h"],
            AttnNorm2 | AttnQ | AttnK | AttnV | AttnQNorm | AttnKNorm | FfnGate | AttnPostNorm | FfnPostNorm
            | RopeFreqs | RopeFactorsLong | RopeFactorsShort => &[],
        }
    }

    fn layer_tensors(&self, _c: &ModelConfig) -> Vec<(TensorKind, &'static str)> {
        use TensorKind::*;
        [AttnNorm, AttnQkv, AttnOutput, FfnNorm, FfnUp, FfnDown]
            .into_iter()
            .flat_map(|k| [(k, "weight"), (k, "bias")])
            .collect()
    }

    fn reordered_rows(&self) -> &'static [TensorKind] {
        falcon::Falcon.reordered_rows()
    }

    fn row_order(&self, heads: &Heads, kind: TensorKind) -> RowOrder {
        // Whole heads interleaved (query, key, value per head): Falcon's layout with a key/value
        // head per query head, as llama.cpp's converter treats both.
        falcon::Falcon.row_order(heads, kind)
    }

    fn metadata(&self, c: &ModelConfig, kv: &mut Vec<(String, MetaValue)>) {
        kv.push(("gptneox.use_parallel_residual".into(), MetaValue::Bool(c.parallel_residual)));
    }

    fn layer_norms(&self) -> bool {
        true
    }

    fn parallel_residual(&self, g: &Gguf<'_>) -> bool {
        // True when absent, as in llama.cpp.
        g.get("gptneox.use_parallel_residual").and_then(|v| v.as_bool()).unwrap_or(true)
    }

    fn projections(&self) -> &'static [TensorKind] {
        use TensorKind::*;
        &[AttnQkv, AttnOutput, FfnUp, FfnDown]
    }

    fn peft_modules(&self) -> &'static str {
        "query_key_value, dense, dense_h_to_4h, dense_4h_to_h, embed_out"
    }

    fn fewer_targets(&self) -> &'static [&'static str] {
        &["qkv,o", "qkv"]
    }

    fn bind_layer<'c>(&self, b: &Binder<'_, 'c>) -> Result<LayerWeights<'c>, ModelError> {
        falcon::bind_layer_norm_layer(b)
    }

    /// Parallel: the MLP on its own norm of the layer input beside attention; sequential: the MLP
    /// on the norm of attention's sum.
    fn layer<'c>(&self, g: &LayerGraph<'_, 'c>, l: &LayerWeights<'c>, x: Tensor<'c>) -> Result<Tensor<'c>, ModelError> {
        let ctx = g.ctx;
        let missing = |what: &str| ModelError::Inconsistent { what: format!("a GPT-NeoX layer without {what}") };
        let attn_bias = l.attn_norm_b.ok_or_else(|| missing("attn_norm.bias"))?;
        let ffn_norm = l.ffn_norm.ok_or_else(|| missing("ffn_norm"))?;
        let ffn_bias = l.ffn_norm_b.ok_or_else(|| missing("ffn_norm.bias"))?;
        let attn_out = g.attention(l, g.layer_norm(x, l.attn_norm, attn_bias)?)?;
        if g.h.parallel_residual {
            let mlp = g.gelu_mlp(l, g.layer_norm(x, ffn_norm, ffn_bias)?)?;
            Ok(ctx.add(ctx.add(mlp, x)?, attn_out)?)
        } else {
            let ffn_in = ctx.add(attn_out, x)?;
            Ok(ctx.add(g.gelu_mlp(l, g.layer_norm(ffn_in, ffn_norm, ffn_bias)?)?, ffn_in)?)
        }
    }
}

/// A GPT-NeoX config (transformers' `GPTNeoXConfig`): `rotary_pct` / `rotary_emb_base` at the top
/// level (older files) or `partial_rotary_factor` / `rope_theta` in `rope_parameters`
/// (transformers 5), with its defaults (a quarter of each head rotated, base 10000, parallel
/// residual, biases, untied embeddings).
fn config(r: &ConfigReader<'_>, hf_architecture: String) -> Result<ModelConfig, ConfigError> {
    let unsupported = |key, found: &str, expected| r.unsupported(ARCH, key, found, expected);
    if r.bool_opt("attention_bias")? == Some(false) {
        return Err(unsupported("attention_bias", "false", "true (llama.cpp's GPT-NeoX has QKV and output biases)"));
    }
    if r.bool_opt("tie_word_embeddings")? == Some(true) {
        return Err(unsupported("tie_word_embeddings", "true", "false (llama.cpp's GPT-NeoX reads embed_out)"));
    }
    if let Some(act) =
        r.get("hidden_act").and_then(Value::as_str).filter(|a| !matches!(*a, "gelu" | "gelu_new" | "gelu_fast"))
    {
        return Err(unsupported("hidden_act", act, "gelu (llama.cpp applies GELU's tanh approximation)"));
    }
    let hidden_size = r.u64("hidden_size")?;
    let num_heads = r.u64("num_attention_heads")?;
    let head_dim = r.head_dim(hidden_size, num_heads, num_heads)?;
    let fraction = r.rotary_fraction(&["rotary_pct", "partial_rotary_factor"], 0.25)?;
    let rope_dims = (fraction * head_dim as f32) as u64;
    r.check_rope_dims("rotary fraction", fraction, head_dim, rope_dims)?;
    let (rope_theta, rope_scaling) = r.rope()?;
    let rope_theta = r.f32_opt("rotary_emb_base")?.unwrap_or(rope_theta);
    Ok(ModelConfig {
        arch: ARCH,
        hf_architecture,
        hidden_size,
        intermediate_size: r.u64("intermediate_size")?,
        num_layers: r.u64("num_hidden_layers")?,
        num_heads,
        num_kv_heads: num_heads,
        head_dim,
        rope_dims,
        parallel_residual: r.bool_opt("use_parallel_residual")?.unwrap_or(true),
        context_length: r.u64_opt("max_position_embeddings")?.unwrap_or(2048),
        norm_eps: r.f32_opt("layer_norm_eps")?.unwrap_or(1e-5),
        rope_theta,
        rope_scaling,
        vocab_size: r.u64("vocab_size")?,
        tie_word_embeddings: false,
        attn_norm_2: false,
        dtype: r.dtype(),
        original_context_length: None,
        sliding_window: None,
        rope_theta_local: None,
        attn_logit_softcapping: None,
        final_logit_softcapping: None,
    })
}
