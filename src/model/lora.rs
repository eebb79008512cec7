//! LoRA parameters as ggml tensors: for a frozen weight `W` with `ne = [n_in, n_out]`, `A` has
//! `ne = [n_in, r]` and `B` has `ne = [r, n_out]`, and the layer computes
//! `W x + scale · B (A x)` with `scale = alpha / r`: llama.cpp's `build_lora_mm` and GGUF LoRA
//! layout, so trained tensors are written out as they are.

use crate::ggml::{Context, Tensor};
use crate::gguf::GgmlType;
use crate::names::TensorKind;

use super::{HParams, ModelError};

/// The projections LoRA can adapt, by the names users write (`--targets q,k,v,o,gate,up,down`).
pub const TARGETS: [(&str, TensorKind); 7] = [
    ("q", TensorKind::AttnQ),
    ("k", TensorKind::AttnK),
    ("v", TensorKind::AttnV),
    ("o", TensorKind::AttnOutput),
    ("gate", TensorKind::FfnGate),
    ("up", TensorKind::FfnUp),
    ("down", TensorKind::FfnDown),
];

/// Rank, alpha and the adapted projections.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraConfig {
    pub rank: u64,
    pub alpha: f32,
    pub targets: Vec<TensorKind>,
}

/// One adapted projection: its `A` and `B` and the accumulators of their gradients.
#[derive(Clone, Copy, Debug)]
pub struct LoraPair<'c> {
    pub kind: TensorKind,
    pub layer: u32,
    pub a: Tensor<'c>,
    pub b: Tensor<'c>,
    pub grad_a: Tensor<'c>,
    pub grad_b: Tensor<'c>,
}

/// Every LoRA pair of a model, in one context (allocate it with `ggml::ParamBuffer`).
#[derive(Clone, Debug)]
pub struct LoraParams<'c> {
    pub pairs: Vec<LoraPair<'c>>,
    pub scale: f32,
}

impl<'c> LoraParams<'c> {
    /// Creates `A`, `B` (trainable, f32) and their gradient accumulators for every target of
    /// every layer.
    pub fn new(ctx: &'c Context, h: &HParams, cfg: &LoraConfig) -> Result<LoraParams<'c>, ModelError> {
        if cfg.rank == 0 {
            return Err(ModelError::Inconsistent { what: "LoRA rank must be at least 1".into() });
        }
        let (e, f) = (h.n_embd, h.n_ff);
        let (q, kv) = (h.n_head * h.head_dim, h.n_head_kv * h.head_dim);
        let mut pairs = Vec::new();
        for layer in 0..u32::try_from(h.n_layer).unwrap_or(0) {
            for &kind in &cfg.targets {
                let (n_in, n_out) = match kind {
                    TensorKind::AttnQ => (e, q),
                    TensorKind::AttnK | TensorKind::AttnV => (e, kv),
                    TensorKind::AttnOutput => (q, e),
                    TensorKind::FfnGate | TensorKind::FfnUp => (e, f),
                    TensorKind::FfnDown => (f, e),
                    other => return Err(ModelError::Unsupported { what: format!("LoRA on {}", other.gguf_base()) }),
                };
                let name = |part: &str| format!("blk.{layer}.{}.weight.lora_{part}", kind.gguf_base());
                let a = ctx.new_tensor(GgmlType::F32, &[n_in, cfg.rank])?.set_name(&name("a")).set_param()?;
                let b = ctx.new_tensor(GgmlType::F32, &[cfg.rank, n_out])?.set_name(&name("b")).set_param()?;
                let grad_a = ctx.new_tensor(GgmlType::F32, &[n_in, cfg.rank])?;
                let grad_b = ctx.new_tensor(GgmlType::F32, &[cfg.rank, n_out])?;
                pairs.push(LoraPair { kind, layer, a, b, grad_a, grad_b });
            }
        }
        Ok(LoraParams { pairs, scale: cfg.alpha / cfg.rank as f32 })
    }

    /// The pair adapting `kind` in `layer`, if any.
    pub fn get(&self, layer: u32, kind: TensorKind) -> Option<&LoraPair<'c>> {
        self.pairs.iter().find(|p| p.layer == layer && p.kind == kind)
    }

    /// (parameter, gradient accumulator) for every trainable tensor.
    pub fn grad_accs(&self) -> Vec<(Tensor<'c>, Tensor<'c>)> {
        self.pairs.iter().flat_map(|p| [(p.a, p.grad_a), (p.b, p.grad_b)]).collect()
    }
}
