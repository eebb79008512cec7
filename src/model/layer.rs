//! The shared pieces of a layer's graph, which each family's `layer` composes (llama.cpp's
//! `build_norm`, `build_attn`, `build_ffn`, `build_lora_mm`), written with ops that all have a
//! backward pass in ggml: attention is `mul_mat` + masked `soft_max_ext` + `mul_mat`, never
//! flash attention; the layer norm, which ggml cannot differentiate as one op, is composed of
//! ops it can, and GELU gets a backward pass from [`crate::ggml::Graph::build_backward_expand`].

use crate::ggml::{Context, RopeMode, RopeParams, Tensor};
use crate::names::TensorKind;

use super::graph::Inputs;
use super::lora::LoraParams;
use super::ops::{gelu_tanh, soft_cap};
use super::weights::LayerWeights;
use super::{HParams, ModelError};

/// Which adapter a projection reads: the pair adapting `kind`, and for a view of a fused weight
/// (the QKV of Falcon, GPT-NeoX and Phi-3; Phi-3's gate and up) the rows of the pair's output it
/// produces (`first`, `n`).
#[derive(Clone, Copy, Debug)]
pub struct AdapterSlot {
    pub kind: TensorKind,
    pub rows: Option<(i64, i64)>,
}

impl AdapterSlot {
    /// The slot of a projection with its own weight.
    pub fn own(kind: TensorKind) -> AdapterSlot {
        AdapterSlot { kind, rows: None }
    }
}

/// The activation of a gated MLP's gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// SiLU (Llama, Qwen, Phi-3).
    Silu,
    /// GELU's tanh approximation (Gemma): ggml's `ggml_gelu` in graphs that are only run, as
    /// llama.cpp computes it; composed of differentiable ops in graphs to be trained (see
    /// `model::ops`).
    Gelu,
}

/// What a graph is built for, which decides how it computes the functions ggml has no backward
/// pass for (tanh, GELU).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphPurpose {
    /// Only run: llama.cpp's own ops, so that it computes llama.cpp's values to the bit.
    Run,
    /// Trained on this machine's CPU: soft-caps and Gemma's GELU composed of differentiable ops;
    /// Falcon's and GPT-NeoX's GELU is ggml's, its backward pass the CPU's custom op.
    TrainOnCpu,
    /// Trained on any device: every such function composed of ops every ggml backend
    /// differentiates (see `model::ops`), no custom op.
    TrainAnywhere,
}

impl GraphPurpose {
    /// Whether the graph will be differentiated.
    pub fn differentiable(self) -> bool {
        self != GraphPurpose::Run
    }
}

/// What one layer's graph is built with: the context, the model's shape, the adapter, the inputs
/// and the layer's index.
pub struct LayerGraph<'a, 'c> {
    pub ctx: &'c Context,
    pub h: &'a HParams,
    lora: Option<&'a LoraParams<'c>>,
    inp: &'a Inputs<'c>,
    rope_freqs: Option<Tensor<'c>>,
    /// The layer's index.
    pub il: u32,
    /// What the graph is for: in a graph to be differentiated, ops without a backward pass in
    /// ggml are replaced by compositions of ops with one (see [`soft_cap_op`]).
    purpose: GraphPurpose,
}

impl<'a, 'c> LayerGraph<'a, 'c> {
    pub(super) fn new(
        ctx: &'c Context,
        h: &'a HParams,
        lora: Option<&'a LoraParams<'c>>,
        inp: &'a Inputs<'c>,
        rope_freqs: Option<Tensor<'c>>,
        il: u32,
        purpose: GraphPurpose,
    ) -> Self {
        LayerGraph { ctx, h, lora, inp, rope_freqs, il, purpose }
    }

    /// The one place where adapters enter the graph (llama.cpp's `build_lora_mm`):
    /// `W x + scale · B (A x) (+ bias)`, with `B` narrowed to the slot's rows.
    pub fn mm(
        &self,
        slot: AdapterSlot,
        w: Tensor<'c>,
        bias: Option<Tensor<'c>>,
        x: Tensor<'c>,
    ) -> Result<Tensor<'c>, ModelError> {
        let ctx = self.ctx;
        let mut y = ctx.mul_mat(w, x)?;
        if let Some((pair, scale)) = self.lora.and_then(|l| l.get(self.il, slot.kind).map(|p| (p, l.scale))) {
            let b = match slot.rows {
                Some((first, n)) => ctx.columns(pair.b, first, n)?,
                None => pair.b,
            };
            let ab = ctx.mul_mat(b, ctx.mul_mat(pair.a, x)?)?;
            y = ctx.add(y, ctx.scale(ab, scale)?)?;
        }
        Ok(match bias {
            Some(b) => ctx.add(y, b)?,
            None => y,
        })
    }

    /// llama.cpp's `LLM_NORM_RMS`: the RMS norm of each row of `x`, times `weight`.
    pub fn rms_norm(&self, x: Tensor<'c>, weight: Tensor<'c>) -> Result<Tensor<'c>, ModelError> {
        Ok(self.ctx.mul(self.ctx.rms_norm(x, self.h.norm_eps)?, weight)?)
    }

    /// llama.cpp's `LLM_NORM` (`ggml_norm`, then weight and bias) over the rows of `x`, composed
    /// of ops ggml can differentiate: the row mean subtracted, then `rms_norm` (the RMS of a
    /// centred row is its standard deviation).
    pub fn layer_norm(&self, x: Tensor<'c>, weight: Tensor<'c>, bias: Tensor<'c>) -> Result<Tensor<'c>, ModelError> {
        layer_norm(self.ctx, x, weight, bias, self.h.norm_eps)
    }

    /// Self-attention of the layer on its normed input `x` `[n_embd, n_tokens]`, through the
    /// output projection: the query, key and value projections (the views of a fused QKV weight
    /// reading their rows of its adapter), the per-head norms when the layer has them, the rope
    /// (with Llama 3's frequency factors when the model has them), the masked softmax and the
    /// output projection.
    pub fn attention(&self, l: &LayerWeights<'c>, x: Tensor<'c>) -> Result<Tensor<'c>, ModelError> {
        let (ctx, h, inp) = (self.ctx, self.h, self.inp);
        let (len, n_seq) = (inp.seq_len() as i64, inp.n_seq() as i64);
        let n = len * n_seq;
        let (hd, n_head, n_head_kv) = (h.head_dim as i64, h.n_head as i64, h.n_head_kv as i64);
        // A sliding-window layer sees through its own mask and rotates with its own base.
        let (mask, freq_base, freq_scale) = match (&h.sliding_window, inp.sliding_mask) {
            (Some(window), Some((mask, _))) if h.is_sliding(self.il) => {
                (mask, window.rope_freq_base, window.rope_freq_scale)
            }
            _ => (inp.mask, h.rope_freq_base, h.rope_freq_scale),
        };
        let rope = RopeParams {
            n_dims: h.rope_dims as i32,
            mode: if h.arch.neox_rope() { RopeMode::Neox } else { RopeMode::Normal },
            n_ctx_orig: h.n_ctx_train as i32,
            freq_base,
            freq_scale,
            attn_factor: h.rope_attn_factor,
        };
        let own = AdapterSlot::own;
        let [q_slot, k_slot, v_slot] = if l.fused_qkv {
            let (q, kv) = (n_head * hd, n_head_kv * hd);
            let part = |first, n| AdapterSlot { kind: TensorKind::AttnQkv, rows: Some((first, n)) };
            [part(0, q), part(q, kv), part(q + kv, kv)]
        } else {
            [own(TensorKind::AttnQ), own(TensorKind::AttnK), own(TensorKind::AttnV)]
        };
        // Attention runs on 3-d tensors with the heads of every row side by side
        // ([.., heads · n_seq]): ggml's backward of a broadcasting mul_mat (grouped-query
        // attention) needs ne3 = 1. Query head h of row s then reads key head
        // (h + n_head·s) / group = h / group + n_head_kv·s: its own row's key head h / group.
        // [head_dim, heads, seq_len · n_seq] -> [head_dim, seq_len, heads · n_seq]
        let heads = |t: Tensor<'c>, n_heads: i64, norm: Option<Tensor<'c>>| -> Result<Tensor<'c>, ModelError> {
            let t = ctx.reshape(t, &[hd, n_heads, n])?;
            let t = match norm {
                Some(weight) => self.rms_norm(t, weight)?,
                None => t,
            };
            let t = ctx.rope_ext(t, inp.positions, self.rope_freqs, rope)?;
            let t = ctx.cont(ctx.permute(ctx.reshape(t, &[hd, n_heads, len, n_seq])?, [0, 2, 1, 3])?)?;
            Ok(ctx.reshape(t, &[hd, len, n_heads * n_seq])?)
        };
        let q = heads(self.mm(q_slot, l.wq, l.bq, x)?, n_head, l.attn_q_norm)?;
        // Gemma's llama.cpp graph scales the queries, not the scores: the same order keeps the
        // rounding (and quantized activations downstream) llama.cpp's.
        let (q, kq_scale) = if h.scale_queries { (ctx.scale(q, h.attn_scale)?, 1.0) } else { (q, h.attn_scale) };
        let k = heads(self.mm(k_slot, l.wk, l.bk, x)?, n_head_kv, l.attn_k_norm)?;
        let v = ctx.reshape(self.mm(v_slot, l.wv, l.bv, x)?, &[hd, n_head_kv, len, n_seq])?;
        // [keys, queries, heads · n_seq], masked per row as [keys, queries, heads, n_seq].
        let kq = ctx.reshape(ctx.mul_mat(k, q)?, &[len, len, n_head, n_seq])?;
        let kq = match h.attn_softcap {
            Some(cap) => soft_cap_op(ctx, kq, cap, self.purpose.differentiable())?,
            None => kq,
        };
        let kq = ctx.reshape(ctx.soft_max_ext(kq, Some(mask), kq_scale)?, &[len, len, n_head * n_seq])?;
        // [keys, head_dim, kv heads · n_seq]
        let v = ctx.reshape(ctx.cont(ctx.permute(v, [1, 2, 0, 3])?)?, &[len, hd, n_head_kv * n_seq])?;
        // [head_dim, queries, heads, n_seq] -> [head_dim, heads, queries, n_seq]
        let kqv = ctx.reshape(ctx.mul_mat(v, kq)?, &[hd, len, n_head, n_seq])?;
        let attn = ctx.reshape(ctx.cont(ctx.permute(kqv, [0, 2, 1, 3])?)?, &[hd * n_head, n])?;
        self.mm(own(TensorKind::AttnOutput), l.wo, l.bo, attn)
    }

    /// The gated MLP on its normed input, `down(act(gate x) · up x)`, with SiLU (llama.cpp's
    /// `LLM_FFN_SILU, LLM_FFN_PAR`) or GELU's tanh form (Gemma's `LLM_FFN_GELU, LLM_FFN_PAR`,
    /// `ggml_geglu_split`, which is ggml's GELU times the up projection; see [`Activation`]). Phi-3's gate and up are
    /// the halves of one `ffn_up`, whose adapter each half reads its rows of.
    pub fn gated_mlp(&self, l: &LayerWeights<'c>, x: Tensor<'c>, act: Activation) -> Result<Tensor<'c>, ModelError> {
        let gate_weight = l.ffn_gate.ok_or(ModelError::Inconsistent { what: "a gated MLP without a gate".into() })?;
        let (gate_slot, up_slot) = if l.fused_gate_up {
            let f = self.h.n_ff as i64;
            let half = |first| AdapterSlot { kind: TensorKind::FfnUp, rows: Some((first, f)) };
            (half(0), half(f))
        } else {
            (AdapterSlot::own(TensorKind::FfnGate), AdapterSlot::own(TensorKind::FfnUp))
        };
        let gate = self.mm(gate_slot, gate_weight, None, x)?;
        let gate = match act {
            Activation::Silu => self.ctx.silu(gate)?,
            Activation::Gelu if self.purpose.differentiable() => gelu_tanh(self.ctx, gate)?,
            Activation::Gelu => self.ctx.gelu(gate)?,
        };
        let up = self.mm(up_slot, l.ffn_up, None, x)?;
        self.mm(AdapterSlot::own(TensorKind::FfnDown), l.ffn_down, None, self.ctx.mul(gate, up)?)
    }

    /// The ungated GELU MLP of Falcon and GPT-NeoX (with biases when the layer has them):
    /// ggml's GELU, except in a graph trained off the CPU, where it is composed.
    pub fn gelu_mlp(&self, l: &LayerWeights<'c>, x: Tensor<'c>) -> Result<Tensor<'c>, ModelError> {
        let up = self.mm(AdapterSlot::own(TensorKind::FfnUp), l.ffn_up, l.ffn_up_b, x)?;
        let up = match self.purpose {
            GraphPurpose::TrainAnywhere => gelu_tanh(self.ctx, up)?,
            GraphPurpose::Run | GraphPurpose::TrainOnCpu => self.ctx.gelu(up)?,
        };
        self.mm(AdapterSlot::own(TensorKind::FfnDown), l.ffn_down, l.ffn_down_b, up)
    }
}

/// Soft-capping `cap · tanh(x / cap)`: llama.cpp's ops (`ggml_tanh` between two scales) in a
/// graph that is only run, which then computes llama.cpp's values to the bit; the composition of
/// [`soft_cap`] in a graph to be differentiated (ggml's tanh has no backward pass), which agrees
/// with it to a few `cap · 2⁻²⁴`.
pub(super) fn soft_cap_op<'c>(
    ctx: &'c Context,
    x: Tensor<'c>,
    cap: f32,
    differentiable: bool,
) -> Result<Tensor<'c>, ModelError> {
    Ok(if differentiable { soft_cap(ctx, x, cap)? } else { ctx.scale(ctx.tanh(ctx.scale(x, 1.0 / cap)?)?, cap)? })
}

/// See [`LayerGraph::layer_norm`]; also the output norm of the layer-norm families.
pub(super) fn layer_norm<'c>(
    ctx: &'c Context,
    x: Tensor<'c>,
    weight: Tensor<'c>,
    bias: Tensor<'c>,
    eps: f32,
) -> Result<Tensor<'c>, ModelError> {
    let minus_mean = ctx.scale(ctx.sum_rows(x)?, -1.0 / x.ne()[0] as f32)?;
    let centred = ctx.add(x, minus_mean)?;
    Ok(ctx.add(ctx.mul(ctx.rms_norm(centred, eps)?, weight)?, bias)?)
}
