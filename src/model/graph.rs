//! The forward graph of the Llama family (llama.cpp's `llm_build_llama` / `llm_build_qwen2`),
//! written with ops that all have a backward pass in ggml: attention is `mul_mat` + masked
//! `soft_max_ext` + `mul_mat`, never flash attention.

use crate::ggml::{Allocated, Context, MappedBuffer, RopeMode, RopeParams, Tensor};
use crate::gguf::{GgmlType, Gguf};
use crate::names::{TensorKind, TensorName};

use super::lora::LoraParams;
use super::{Arch, HParams, ModelError};

/// One layer's weights.
#[derive(Clone, Copy, Debug)]
pub struct LayerWeights<'c> {
    pub attn_norm: Tensor<'c>,
    pub wq: Tensor<'c>,
    pub wk: Tensor<'c>,
    pub wv: Tensor<'c>,
    pub wo: Tensor<'c>,
    pub bq: Option<Tensor<'c>>,
    pub bk: Option<Tensor<'c>>,
    pub bv: Option<Tensor<'c>>,
    pub ffn_norm: Tensor<'c>,
    pub ffn_gate: Tensor<'c>,
    pub ffn_up: Tensor<'c>,
    pub ffn_down: Tensor<'c>,
}

/// All weights, bound to the memory-mapped file.
#[derive(Clone, Debug)]
pub struct Weights<'c> {
    pub token_embd: Tensor<'c>,
    pub output_norm: Tensor<'c>,
    /// `output.weight`, or `token_embd` when the embeddings are tied.
    pub output: Tensor<'c>,
    pub layers: Vec<LayerWeights<'c>>,
}

impl<'c> Weights<'c> {
    /// Creates a tensor for each weight the graph uses and points it into `buffer` (the whole
    /// file), checking each one's `ne` against the hyper-parameters.
    pub fn bind(
        ctx: &'c Context,
        buffer: &MappedBuffer<'_>,
        g: &Gguf<'_>,
        h: &HParams,
    ) -> Result<Weights<'c>, ModelError> {
        let get = |name: &TensorName, expected: &[u64]| -> Result<Option<Tensor<'c>>, ModelError> {
            let full = name.to_string();
            let Some(info) = g.tensor(&full) else { return Ok(None) };
            let mut found = info.ne.clone();
            while found.len() > expected.len() && found.last() == Some(&1) {
                found.pop();
            }
            if found != expected {
                return Err(ModelError::TensorShape {
                    name: full,
                    expected: expected.to_vec(),
                    found: info.ne.clone(),
                });
            }
            let t = ctx.new_tensor(info.ty, &info.ne)?.set_name(&full);
            let offset =
                usize::try_from(g.data_offset + info.offset).map_err(|_| ModelError::MissingTensor { name: full })?;
            buffer.bind(t, offset)?;
            Ok(Some(t))
        };
        let need = |name: TensorName, expected: &[u64]| -> Result<Tensor<'c>, ModelError> {
            let full = name.to_string();
            get(&name, expected)?.ok_or(ModelError::MissingTensor { name: full })
        };
        let top = |kind| TensorName { kind, layer: None, suffix: "weight".into() };
        let (e, v, f) = (h.n_embd, h.n_vocab, h.n_ff);
        let (q, kv) = (h.n_head * h.head_dim, h.n_head_kv * h.head_dim);
        let token_embd = need(top(TensorKind::TokenEmbd), &[e, v])?;
        let output_norm = need(top(TensorKind::OutputNorm), &[e])?;
        let output = get(&top(TensorKind::Output), &[e, v])?.unwrap_or(token_embd);
        let mut layers = Vec::new();
        for il in 0..u32::try_from(h.n_layer).unwrap_or(0) {
            let w = |kind| TensorName { kind, layer: Some(il), suffix: "weight".into() };
            let b = |kind| TensorName { kind, layer: Some(il), suffix: "bias".into() };
            layers.push(LayerWeights {
                attn_norm: need(w(TensorKind::AttnNorm), &[e])?,
                wq: need(w(TensorKind::AttnQ), &[e, q])?,
                wk: need(w(TensorKind::AttnK), &[e, kv])?,
                wv: need(w(TensorKind::AttnV), &[e, kv])?,
                wo: need(w(TensorKind::AttnOutput), &[q, e])?,
                bq: get(&b(TensorKind::AttnQ), &[q])?,
                bk: get(&b(TensorKind::AttnK), &[kv])?,
                bv: get(&b(TensorKind::AttnV), &[kv])?,
                ffn_norm: need(w(TensorKind::FfnNorm), &[e])?,
                ffn_gate: need(w(TensorKind::FfnGate), &[e, f])?,
                ffn_up: need(w(TensorKind::FfnUp), &[e, f])?,
                ffn_down: need(w(TensorKind::FfnDown), &[f, e])?,
            });
        }
        Ok(Weights { token_embd, output_norm, output, layers })
    }
}

/// The graph's inputs: token ids, positions and the causal mask.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'c> {
    pub tokens: Tensor<'c>,
    pub positions: Tensor<'c>,
    pub mask: Tensor<'c>,
    n: u64,
}

impl<'c> Inputs<'c> {
    /// Inputs for one sequence of `n` tokens.
    pub fn new(ctx: &'c Context, n: u64) -> Result<Inputs<'c>, ModelError> {
        Ok(Inputs {
            tokens: ctx.new_tensor(GgmlType::I32, &[n])?.set_name("inp_tokens").set_input(),
            positions: ctx.new_tensor(GgmlType::I32, &[n])?.set_name("inp_pos").set_input(),
            mask: ctx.new_tensor(GgmlType::F32, &[n, n])?.set_name("kq_mask").set_input(),
            n,
        })
    }

    /// Fills the inputs for `tokens` (positions 0.., causal mask).
    pub fn set(&self, graph: &Allocated<'_, '_>, tokens: &[i32]) -> Result<(), ModelError> {
        let n = self.n as usize;
        graph.set_i32(self.tokens, tokens)?;
        let positions: Vec<i32> = (0..n as i32).collect();
        graph.set_i32(self.positions, &positions)?;
        // Row i (query) may see keys 0..=i.
        let mask: Vec<f32> = (0..n * n).map(|k| if k % n <= k / n { 0.0 } else { f32::NEG_INFINITY }).collect();
        graph.set_f32(self.mask, &mask)?;
        Ok(())
    }
}

/// The one place where adapters enter the graph (llama.cpp's `build_lora_mm`):
/// `W x + scale · B (A x) (+ bias)`.
fn lora_mm<'c>(
    ctx: &'c Context,
    lora: Option<&LoraParams<'c>>,
    layer: u32,
    kind: TensorKind,
    w: Tensor<'c>,
    bias: Option<Tensor<'c>>,
    x: Tensor<'c>,
) -> Result<Tensor<'c>, ModelError> {
    let mut y = ctx.mul_mat(w, x)?;
    if let Some((pair, scale)) = lora.and_then(|l| l.get(layer, kind).map(|p| (p, l.scale))) {
        let ab = ctx.mul_mat(pair.b, ctx.mul_mat(pair.a, x)?)?;
        y = ctx.add(y, ctx.scale(ab, scale)?)?;
    }
    Ok(match bias {
        Some(b) => ctx.add(y, b)?,
        None => y,
    })
}

/// Builds the logits `[n_vocab, n_tokens]` of the forward pass, with `lora` applied if given.
pub fn forward<'c>(
    ctx: &'c Context,
    h: &HParams,
    w: &Weights<'c>,
    inp: &Inputs<'c>,
    lora: Option<&LoraParams<'c>>,
) -> Result<Tensor<'c>, ModelError> {
    let n = inp.n as i64;
    let (hd, n_head, n_head_kv) = (h.head_dim as i64, h.n_head as i64, h.n_head_kv as i64);
    let rope = RopeParams {
        n_dims: h.rope_dims as i32,
        mode: match h.arch {
            Arch::Llama => RopeMode::Normal,
            Arch::Qwen2 => RopeMode::Neox,
        },
        n_ctx_orig: h.n_ctx_train as i32,
        freq_base: h.rope_freq_base,
        freq_scale: h.rope_freq_scale,
    };
    let kq_scale = 1.0 / (h.head_dim as f32).sqrt();
    let mut x = ctx.get_rows(w.token_embd, inp.tokens)?;
    for (il, l) in (0u32..).zip(&w.layers) {
        let mm = |kind, w, b, x| lora_mm(ctx, lora, il, kind, w, b, x);
        let cur = ctx.mul(ctx.rms_norm(x, h.rms_eps)?, l.attn_norm)?;
        let q = ctx.reshape(mm(TensorKind::AttnQ, l.wq, l.bq, cur)?, &[hd, n_head, n])?;
        let k = ctx.reshape(mm(TensorKind::AttnK, l.wk, l.bk, cur)?, &[hd, n_head_kv, n])?;
        let v = ctx.reshape(mm(TensorKind::AttnV, l.wv, l.bv, cur)?, &[hd, n_head_kv, n])?;
        let q = ctx.permute(ctx.rope_ext(q, inp.positions, rope)?, [0, 2, 1, 3])?;
        let k = ctx.permute(ctx.rope_ext(k, inp.positions, rope)?, [0, 2, 1, 3])?;
        // [n_kv, n_q, n_head]: each query head reads key head (head / (n_head / n_head_kv)).
        let kq = ctx.soft_max_ext(ctx.mul_mat(k, q)?, Some(inp.mask), kq_scale)?;
        let v = ctx.cont(ctx.permute(v, [1, 2, 0, 3])?)?;
        let kqv = ctx.permute(ctx.mul_mat(v, kq)?, [0, 2, 1, 3])?;
        let attn = ctx.reshape(ctx.cont(kqv)?, &[hd * n_head, n])?;
        let ffn_in = ctx.add(mm(TensorKind::AttnOutput, l.wo, None, attn)?, x)?;
        let cur = ctx.mul(ctx.rms_norm(ffn_in, h.rms_eps)?, l.ffn_norm)?;
        let gate = ctx.silu(mm(TensorKind::FfnGate, l.ffn_gate, None, cur)?)?;
        let up = mm(TensorKind::FfnUp, l.ffn_up, None, cur)?;
        x = ctx.add(mm(TensorKind::FfnDown, l.ffn_down, None, ctx.mul(gate, up)?)?, ffn_in)?;
    }
    let cur = ctx.mul(ctx.rms_norm(x, h.rms_eps)?, w.output_norm)?;
    Ok(ctx.mul_mat(w.output, cur)?.set_name("result_output").set_output())
}

/// Cross-entropy over the trainable positions only: `-Σ log softmax(logits) · weights`, where
/// `weights` (`[n_vocab, n_tokens]`, an input) holds `1 / n_targets` at each trainable position's
/// target token and 0 elsewhere, so prompt positions contribute neither loss nor gradient.
pub fn masked_cross_entropy<'c>(
    ctx: &'c Context,
    logits: Tensor<'c>,
    weights: Tensor<'c>,
) -> Result<Tensor<'c>, ModelError> {
    let log_probs = ctx.log(ctx.soft_max(logits)?)?;
    let loss = ctx.scale(ctx.sum(ctx.mul(log_probs, weights)?)?, -1.0)?;
    Ok(loss.set_name("loss").set_output().set_loss()?)
}
