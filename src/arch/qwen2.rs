//! Qwen2 and Qwen2.5: the Llama layout with q/k/v biases and the NEOX-style rope
//! (llama.cpp's `llm_build_qwen2`).

use super::{llama, Family};
use crate::ggml::Tensor;
use crate::hf::{ConfigError, ConfigReader, ModelConfig};
use crate::model::{Binder, LayerGraph, LayerWeights, ModelError};
use crate::names::TensorKind;

/// The Qwen2 family.
pub struct Qwen2;

impl Family for Qwen2 {
    fn name(&self) -> &'static str {
        "qwen2"
    }

    fn hf_classes(&self) -> &'static [(&'static str, &'static str)] {
        &[("Qwen2ForCausalLM", "qwen2")]
    }

    fn config(&self, r: &ConfigReader<'_>, hf_architecture: String) -> Result<ModelConfig, ConfigError> {
        r.llama_layout(super::Arch(&Qwen2), hf_architecture)
    }

    fn layer_tensors(&self, _c: &ModelConfig) -> Vec<(TensorKind, &'static str)> {
        use TensorKind::*;
        let mut t = llama::weights(llama::LAYER);
        t.extend([(AttnQ, "bias"), (AttnK, "bias"), (AttnV, "bias")]);
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
        llama::bind_layer(b)
    }

    fn layer<'c>(&self, g: &LayerGraph<'_, 'c>, l: &LayerWeights<'c>, x: Tensor<'c>) -> Result<Tensor<'c>, ModelError> {
        llama::layer(g, l, x)
    }
}
