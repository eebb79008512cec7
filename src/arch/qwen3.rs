//! Qwen3 (dense): Qwen2's layout without biases, with an RMS norm over each query and key head
//! before the rope (`attn_q_norm`, `attn_k_norm`) and an explicit head size (llama.cpp's
//! `llm_build_qwen3`).

use super::{llama, Family};
use crate::ggml::Tensor;
use crate::hf::{ConfigError, ConfigReader, ModelConfig};
use crate::model::{Binder, LayerGraph, LayerWeights, ModelError};
use crate::names::TensorKind;

/// The Qwen3 family.
pub struct Qwen3;

impl Family for Qwen3 {
    fn name(&self) -> &'static str {
        "qwen3"
    }

    fn hf_classes(&self) -> &'static [(&'static str, &'static str)] {
        &[("Qwen3ForCausalLM", "qwen3")]
    }

    fn config(&self, r: &ConfigReader<'_>, hf_architecture: String) -> Result<ModelConfig, ConfigError> {
        r.llama_layout(super::Arch(&Qwen3), hf_architecture)
    }

    fn layer_tensors(&self, _c: &ModelConfig) -> Vec<(TensorKind, &'static str)> {
        let mut t = llama::weights(llama::LAYER);
        t.extend(llama::weights(&[TensorKind::AttnQNorm, TensorKind::AttnKNorm]));
        t
    }

    fn projections(&self) -> &'static [TensorKind] {
        llama::PROJECTIONS
    }

    fn peft_modules(&self) -> &'static str {
        "q/k/v/o_proj, gate/up/down_proj, lm_head"
    }

    fn fewer_targets(&self) -> &'static [&'static str] {
        &["q,k,v,o", "q,v"]
    }

    fn bind_layer<'c>(&self, b: &Binder<'_, 'c>) -> Result<LayerWeights<'c>, ModelError> {
        let mut l = llama::bind_layer(b)?;
        let head_dim = b.h.head_dim;
        l.attn_q_norm = Some(b.need(TensorKind::AttnQNorm, &[head_dim])?);
        l.attn_k_norm = Some(b.need(TensorKind::AttnKNorm, &[head_dim])?);
        Ok(l)
    }

    fn layer<'c>(&self, g: &LayerGraph<'_, 'c>, l: &LayerWeights<'c>, x: Tensor<'c>) -> Result<Tensor<'c>, ModelError> {
        llama::layer(g, l, x)
    }
}
