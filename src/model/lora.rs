//! LoRA parameters as ggml tensors: for a frozen weight `W` with `ne = [n_in, n_out]`, `A` has
//! `ne = [n_in, r]` and `B` has `ne = [r, n_out]`, and the layer computes
//! `W x + scale · B (A x)` with `scale = alpha / r`: llama.cpp's `build_lora_mm` and GGUF LoRA
//! layout, so trained tensors are written out as they are.

use crate::ggml::{Context, Tensor};
use crate::gguf::GgmlType;
use crate::names::TensorKind;

use super::{HParams, ModelError};

/// The projections LoRA can adapt, by the names users write (`--targets q,k,v,o,gate,up,down`
/// for the Llama family, `qkv,o,up,down` for Falcon, GPT-NeoX and Phi-3, whose `up` is its fused
/// gate and up projection).
pub const TARGETS: [(&str, TensorKind); 8] = [
    ("q", TensorKind::AttnQ),
    ("k", TensorKind::AttnK),
    ("v", TensorKind::AttnV),
    ("o", TensorKind::AttnOutput),
    ("gate", TensorKind::FfnGate),
    ("up", TensorKind::FfnUp),
    ("down", TensorKind::FfnDown),
    ("qkv", TensorKind::AttnQkv),
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

/// One adapted weight of a model: where it is and its size.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraSlot {
    pub layer: u32,
    pub kind: TensorKind,
    /// The base weight's GGUF name (`blk.3.attn_q.weight`).
    pub base: String,
    /// `ne[0]` of the base weight.
    pub n_in: u64,
    /// `ne[1]` of the base weight.
    pub n_out: u64,
}

/// Every weight `cfg` adapts in a model of shape `h`, layer by layer, in the order of
/// `cfg.targets`: the order of [`LoraParams::pairs`] and of adapter files.
pub fn lora_layout(h: &HParams, cfg: &LoraConfig) -> Result<Vec<LoraSlot>, ModelError> {
    if cfg.rank == 0 {
        return Err(ModelError::Inconsistent { what: "LoRA rank must be at least 1".into() });
    }
    let (e, f) = (h.n_embd, h.n_ff);
    let (q, kv) = (h.n_head * h.head_dim, h.n_head_kv * h.head_dim);
    if let Some(missing) = cfg.targets.iter().find(|k| !h.arch.projections().contains(k)) {
        return Err(ModelError::Unsupported {
            what: format!(
                "LoRA on {}: {} models have no such projection (they have {})",
                missing.gguf_base(),
                h.arch.name(),
                h.arch.projections().iter().map(|k| k.gguf_base()).collect::<Vec<_>>().join(", ")
            ),
        });
    }
    let mut slots = Vec::new();
    for layer in 0..u32::try_from(h.n_layer).unwrap_or(0) {
        for &kind in &cfg.targets {
            let (n_in, n_out) = match kind {
                TensorKind::AttnQkv => (e, q + 2 * kv),
                TensorKind::AttnQ => (e, q),
                TensorKind::AttnK | TensorKind::AttnV => (e, kv),
                TensorKind::AttnOutput => (q, e),
                TensorKind::FfnUp if h.arch.fused_gate_up() => (e, 2 * f),
                TensorKind::FfnGate | TensorKind::FfnUp => (e, f),
                TensorKind::FfnDown => (f, e),
                other => return Err(ModelError::Unsupported { what: format!("LoRA on {}", other.gguf_base()) }),
            };
            let base = crate::names::TensorName { kind, layer: Some(layer), suffix: "weight".into() }.to_string();
            slots.push(LoraSlot { layer, kind, base, n_in, n_out });
        }
    }
    Ok(slots)
}

impl<'c> LoraParams<'c> {
    /// Creates `A`, `B` (trainable, f32) and their gradient accumulators for every slot of
    /// [`lora_layout`].
    pub fn new(ctx: &'c Context, h: &HParams, cfg: &LoraConfig) -> Result<LoraParams<'c>, ModelError> {
        let mut pairs = Vec::new();
        for slot in lora_layout(h, cfg)? {
            let (n_in, n_out, r) = (slot.n_in, slot.n_out, cfg.rank);
            let a =
                ctx.new_tensor(GgmlType::F32, &[n_in, r])?.set_name(&format!("{}.lora_a", slot.base)).set_param()?;
            let b =
                ctx.new_tensor(GgmlType::F32, &[r, n_out])?.set_name(&format!("{}.lora_b", slot.base)).set_param()?;
            let grad_a = ctx.new_tensor(GgmlType::F32, &[n_in, r])?;
            let grad_b = ctx.new_tensor(GgmlType::F32, &[r, n_out])?;
            pairs.push(LoraPair { kind: slot.kind, layer: slot.layer, a, b, grad_a, grad_b });
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
