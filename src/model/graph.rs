//! The forward graph of the Llama family, Falcon, GPT-NeoX and Phi-3 (llama.cpp's
//! `llm_build_llama`, `llm_build_qwen2`, `llm_build_falcon`, `llm_build_gptneox`,
//! `llama_model_phi3::graph`), written with ops that all have a backward pass in ggml: attention is `mul_mat` + masked `soft_max_ext` + `mul_mat`, never flash
//! attention; the layer norm of Falcon and GPT-NeoX, which ggml cannot differentiate as one op,
//! is composed of ops it can, and their GELU gets a backward pass from
//! [`crate::ggml::Graph::build_backward_expand`].

use crate::ggml::{Allocated, Context, MappedBuffer, RopeMode, RopeParams, Tensor};
use crate::gguf::{GgmlType, Gguf};
use crate::names::{TensorKind, TensorName};

use super::batch::Batch;
use super::lora::LoraParams;
use super::{HParams, ModelError};

/// One layer's weights. The fused QKV weight of Falcon, GPT-NeoX and Phi-3 is bound as three row
/// views, one per projection (its bias likewise), so attention reads the same `wq`, `wk`, `wv` in
/// every family; Phi-3's fused gate and up weight likewise as `ffn_gate` and `ffn_up`.
#[derive(Clone, Copy, Debug)]
pub struct LayerWeights<'c> {
    pub attn_norm: Tensor<'c>,
    /// The layer-norm bias (Falcon, GPT-NeoX).
    pub attn_norm_b: Option<Tensor<'c>>,
    /// Falcon-40B's second norm (weight, bias), the one attention reads.
    pub attn_norm_2: Option<(Tensor<'c>, Tensor<'c>)>,
    pub wq: Tensor<'c>,
    pub wk: Tensor<'c>,
    pub wv: Tensor<'c>,
    /// Whether `wq`, `wk`, `wv` are views of one `attn_qkv` weight (Falcon, GPT-NeoX, Phi-3).
    pub fused_qkv: bool,
    pub wo: Tensor<'c>,
    pub bq: Option<Tensor<'c>>,
    pub bk: Option<Tensor<'c>>,
    pub bv: Option<Tensor<'c>>,
    /// GPT-NeoX's attention output bias.
    pub bo: Option<Tensor<'c>>,
    /// Qwen3's RMS-norm weights of each query and key head (`[head_dim]`), applied before the rope.
    pub attn_q_norm: Option<Tensor<'c>>,
    pub attn_k_norm: Option<Tensor<'c>>,
    /// The norm before the MLP (Llama family: RMS; GPT-NeoX: a layer norm with `ffn_norm_b`).
    /// Falcon's MLP reads `attn_norm`.
    pub ffn_norm: Option<Tensor<'c>>,
    pub ffn_norm_b: Option<Tensor<'c>>,
    /// The Llama family's gate projection (Falcon's and GPT-NeoX's MLPs are ungated).
    pub ffn_gate: Option<Tensor<'c>>,
    pub ffn_up: Tensor<'c>,
    /// Whether `ffn_gate` and `ffn_up` are the first and second halves of the rows of one
    /// `ffn_up` weight (Phi-3).
    pub fused_gate_up: bool,
    pub ffn_down: Tensor<'c>,
    /// GPT-NeoX's MLP biases.
    pub ffn_up_b: Option<Tensor<'c>>,
    pub ffn_down_b: Option<Tensor<'c>>,
}

/// All weights, bound to the memory-mapped file.
#[derive(Clone, Debug)]
pub struct Weights<'c> {
    pub token_embd: Tensor<'c>,
    pub output_norm: Tensor<'c>,
    /// The output norm's bias (Falcon, GPT-NeoX).
    pub output_norm_b: Option<Tensor<'c>>,
    /// `output.weight`, or `token_embd` when the embeddings are tied.
    pub output: Tensor<'c>,
    /// Llama 3's per-pair rope frequency factors (`rope_freqs.weight`), which llama.cpp passes to
    /// every rope of every layer.
    pub rope_freqs: Option<Tensor<'c>>,
    pub layers: Vec<LayerWeights<'c>>,
}

impl<'c> Weights<'c> {
    /// Creates a tensor for each weight the graph uses and points it into `buffer` (the whole
    /// file), checking each one's `ne` against the hyper-parameters. A tensor of the file that
    /// the graph would not use is refused by name: whatever a model carries changes its math.
    pub fn bind(
        ctx: &'c Context,
        buffer: &MappedBuffer<'_>,
        g: &Gguf<'_>,
        h: &HParams,
    ) -> Result<Weights<'c>, ModelError> {
        let bound = std::cell::RefCell::new(std::collections::HashSet::new());
        let get = |name: &TensorName, expected: &[u64]| -> Result<Option<Tensor<'c>>, ModelError> {
            let full = name.to_string();
            let Some(info) = g.tensor(&full) else { return Ok(None) };
            bound.borrow_mut().insert(info.name);
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
        let top = |kind, suffix: &str| TensorName { kind, layer: None, suffix: suffix.into() };
        let (e, v, f) = (h.n_embd, h.n_vocab, h.n_ff);
        let (q, kv) = (h.n_head * h.head_dim, h.n_head_kv * h.head_dim);
        let layer_norms = h.arch.layer_norms();
        let token_embd = need(top(TensorKind::TokenEmbd, "weight"), &[e, v])?;
        let output_norm = need(top(TensorKind::OutputNorm, "weight"), &[e])?;
        let output_norm_b = if layer_norms { Some(need(top(TensorKind::OutputNorm, "bias"), &[e])?) } else { None };
        let output = get(&top(TensorKind::Output, "weight"), &[e, v])?.unwrap_or(token_embd);
        let rope_freqs = get(&top(TensorKind::RopeFreqs, "weight"), &[h.rope_dims / 2])?;
        if let Some(t) = rope_freqs {
            if t.ty() != Some(GgmlType::F32) {
                return Err(ModelError::Unsupported {
                    what: "rope_freqs.weight stored in another type than F32".into(),
                });
            }
        }
        let mut layers = Vec::new();
        for il in 0..u32::try_from(h.n_layer).unwrap_or(0) {
            let w = |kind| TensorName { kind, layer: Some(il), suffix: "weight".into() };
            let b = |kind| TensorName { kind, layer: Some(il), suffix: "bias".into() };
            let attn_norm = need(w(TensorKind::AttnNorm), &[e])?;
            let wo = need(w(TensorKind::AttnOutput), &[q, e])?;
            let ffn_down = need(w(TensorKind::FfnDown), &[f, e])?;
            let qk_norm = |kind| if h.arch.qk_norms() { need(w(kind), &[h.head_dim]).map(Some) } else { Ok(None) };
            // Rows `first..first + n` of a fused weight, the part one projection reads, as a view.
            let rows = |t: Tensor<'c>, first: u64, n: u64| ctx.columns(t, first as i64, n as i64);
            // The fused QKV weight (Falcon, GPT-NeoX, Phi-3) as its query, key and value views.
            let fused_qkv = || -> Result<[Tensor<'c>; 3], ModelError> {
                let wqkv = need(w(TensorKind::AttnQkv), &[e, q + 2 * kv])?;
                Ok([rows(wqkv, 0, q)?, rows(wqkv, q, kv)?, rows(wqkv, q + kv, kv)?])
            };
            layers.push(if layer_norms {
                let ffn_up = need(w(TensorKind::FfnUp), &[e, f])?;
                let [wq, wk, wv] = fused_qkv()?;
                let bqkv = get(&b(TensorKind::AttnQkv), &[q + 2 * kv])?;
                let attn_norm_2 = match get(&w(TensorKind::AttnNorm2), &[e])? {
                    Some(weight) => Some((weight, need(b(TensorKind::AttnNorm2), &[e])?)),
                    None => None,
                };
                let ffn_norm = get(&w(TensorKind::FfnNorm), &[e])?;
                let ffn_norm_b = match ffn_norm {
                    Some(_) => Some(need(b(TensorKind::FfnNorm), &[e])?),
                    None => None,
                };
                let (q, kv) = (q as i64, kv as i64);
                let part = |first, n| bqkv.map(|bias| ctx.elements(bias, first, n)).transpose();
                LayerWeights {
                    attn_norm,
                    attn_norm_b: Some(need(b(TensorKind::AttnNorm), &[e])?),
                    attn_norm_2,
                    wq,
                    wk,
                    wv,
                    fused_qkv: true,
                    wo,
                    bq: part(0, q)?,
                    bk: part(q, kv)?,
                    bv: part(q + kv, kv)?,
                    bo: get(&b(TensorKind::AttnOutput), &[e])?,
                    attn_q_norm: None,
                    attn_k_norm: None,
                    ffn_norm,
                    ffn_norm_b,
                    ffn_gate: None,
                    ffn_up,
                    fused_gate_up: false,
                    ffn_down,
                    ffn_up_b: get(&b(TensorKind::FfnUp), &[f])?,
                    ffn_down_b: get(&b(TensorKind::FfnDown), &[e])?,
                }
            } else {
                let [wq, wk, wv] = if h.arch.fused_qkv() {
                    fused_qkv()?
                } else {
                    [
                        need(w(TensorKind::AttnQ), &[e, q])?,
                        need(w(TensorKind::AttnK), &[e, kv])?,
                        need(w(TensorKind::AttnV), &[e, kv])?,
                    ]
                };
                let (ffn_gate, ffn_up) = if h.arch.fused_gate_up() {
                    let gate_up = need(w(TensorKind::FfnUp), &[e, 2 * f])?;
                    (rows(gate_up, 0, f)?, rows(gate_up, f, f)?)
                } else {
                    (need(w(TensorKind::FfnGate), &[e, f])?, need(w(TensorKind::FfnUp), &[e, f])?)
                };
                LayerWeights {
                    attn_norm,
                    attn_norm_b: None,
                    attn_norm_2: None,
                    wq,
                    wk,
                    wv,
                    fused_qkv: h.arch.fused_qkv(),
                    wo,
                    bq: get(&b(TensorKind::AttnQ), &[q])?,
                    bk: get(&b(TensorKind::AttnK), &[kv])?,
                    bv: get(&b(TensorKind::AttnV), &[kv])?,
                    bo: None,
                    attn_q_norm: qk_norm(TensorKind::AttnQNorm)?,
                    attn_k_norm: qk_norm(TensorKind::AttnKNorm)?,
                    ffn_norm: Some(need(w(TensorKind::FfnNorm), &[e])?),
                    ffn_norm_b: None,
                    ffn_gate: Some(ffn_gate),
                    ffn_up,
                    fused_gate_up: h.arch.fused_gate_up(),
                    ffn_down,
                    ffn_up_b: None,
                    ffn_down_b: None,
                }
            });
        }
        let bound = bound.into_inner();
        if let Some(unused) = g.tensors.iter().find(|t| !bound.contains(t.name)) {
            return Err(ModelError::UnusedTensor { name: unused.name.to_owned(), arch: h.arch.name() });
        }
        Ok(Weights { token_embd, output_norm, output_norm_b, output, rope_freqs, layers })
    }
}

/// The graph's inputs for a [`Batch`] of `n_seq` rows of `seq_len` positions: token ids,
/// positions and the attention mask.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'c> {
    pub tokens: Tensor<'c>,
    pub positions: Tensor<'c>,
    pub mask: Tensor<'c>,
    seq_len: u64,
    n_seq: u64,
}

impl<'c> Inputs<'c> {
    /// Inputs for batches of `n_seq` rows of `seq_len` tokens.
    pub fn new(ctx: &'c Context, seq_len: u64, n_seq: u64) -> Result<Inputs<'c>, ModelError> {
        let n = seq_len * n_seq;
        Ok(Inputs {
            tokens: ctx.new_tensor(GgmlType::I32, &[n])?.set_name("inp_tokens").set_input(),
            positions: ctx.new_tensor(GgmlType::I32, &[n])?.set_name("inp_pos").set_input(),
            mask: ctx.new_tensor(GgmlType::F32, &[seq_len, seq_len, 1, n_seq])?.set_name("kq_mask").set_input(),
            seq_len,
            n_seq,
        })
    }

    /// Fills the inputs from `batch`, which must have this shape.
    pub fn set(&self, graph: &Allocated<'_, '_>, batch: &Batch) -> Result<(), ModelError> {
        if (batch.seq_len() as u64, batch.n_seq() as u64) != (self.seq_len, self.n_seq) {
            return Err(ModelError::Inconsistent {
                what: format!(
                    "a batch of {} x {} tokens for a graph of {} x {}",
                    batch.n_seq(),
                    batch.seq_len(),
                    self.n_seq,
                    self.seq_len
                ),
            });
        }
        graph.set_i32(self.tokens, &batch.tokens)?;
        graph.set_i32(self.positions, &batch.positions)?;
        graph.set_f32(self.mask, &batch.mask())?;
        Ok(())
    }
}

/// The inputs of the masked loss: for each position, where its target token's probability is
/// in its chunk's flattened probabilities, and the weight of its loss (`1 / n_targets` for the
/// positions with a target, 0 for the others).
#[derive(Clone, Copy, Debug)]
pub struct LossInputs<'c> {
    /// I32 `[chunk, n / chunk]`: column `k` indexes chunk `k`'s `[1, n_vocab × chunk]` view.
    target_index: Tensor<'c>,
    /// F32 `[1, n]`.
    weights: Tensor<'c>,
    n_vocab: u64,
    /// Positions per loss chunk ([`loss_chunk`]).
    chunk: u64,
}

/// Largest size of one chunk's logits, `[n_vocab, chunk]` f32: the loss is computed over chunks
/// of positions, so that with recomputed activations one chunk's logits (and their gradient)
/// exist at a time instead of the whole batch's, often the largest buffers of a step.
const LOGITS_CHUNK_BYTES: u64 = 64 << 20;

/// Positions per cross-entropy chunk for `n` positions over `n_vocab`: the largest divisor of `n`
/// whose logits fit `LOGITS_CHUNK_BYTES` (one position when none does).
pub fn loss_chunk(n: u64, n_vocab: u64) -> u64 {
    let fits = LOGITS_CHUNK_BYTES / (4 * n_vocab.max(1));
    (1..=n.min(fits)).rev().find(|c| n % c == 0).unwrap_or(1)
}

impl<'c> LossInputs<'c> {
    /// Loss inputs for `n` positions over a vocabulary of `n_vocab`.
    pub fn new(ctx: &'c Context, n_vocab: u64, n: u64) -> Result<LossInputs<'c>, ModelError> {
        let chunk = loss_chunk(n, n_vocab);
        Ok(LossInputs {
            target_index: ctx.new_tensor(GgmlType::I32, &[chunk, n / chunk])?.set_name("target_index").set_input(),
            weights: ctx.new_tensor(GgmlType::F32, &[1, n])?.set_name("loss_weights").set_input(),
            n_vocab,
            chunk,
        })
    }

    /// Fills the inputs from `batch`'s targets; returns how many positions carry loss.
    pub fn set(&self, graph: &Allocated<'_, '_>, batch: &Batch) -> Result<usize, ModelError> {
        let n_targets = batch.n_targets();
        let weight = 1.0 / n_targets.max(1) as f32;
        let mut index = vec![0i32; batch.targets.len()];
        let mut weights = vec![0f32; batch.targets.len()];
        for (i, target) in batch.targets.iter().enumerate() {
            // Positions without a target point at their first logit, with weight 0.
            let token = match *target {
                Some(t) => {
                    weights[i] = weight;
                    u64::try_from(t)
                        .ok()
                        .filter(|&t| t < self.n_vocab)
                        .ok_or(ModelError::TokenOutOfRange { token: t, n_vocab: self.n_vocab })?
                }
                None => 0,
            };
            // Below `chunk × n_vocab`, which `loss_chunk` keeps under 2^24.
            index[i] = ((i as u64 % self.chunk) * self.n_vocab + token) as i32;
        }
        graph.set_i32(self.target_index, &index)?;
        graph.set_f32(self.weights, &weights)?;
        Ok(n_targets)
    }
}

/// Smallest probability the loss takes the logarithm of: a target whose softmax probability
/// underflows to 0 adds ln(1e30) ≈ 69 to the loss instead of infinity.
const MIN_PROBABILITY: f32 = 1e-30;

/// Which adapter a projection reads: the pair adapting `kind`, and for a view of a fused weight
/// (the QKV of Falcon, GPT-NeoX and Phi-3; Phi-3's gate and up) the rows of the pair's output it
/// produces (`first`, `n`).
#[derive(Clone, Copy, Debug)]
struct AdapterSlot {
    kind: TensorKind,
    rows: Option<(i64, i64)>,
}

/// The one place where adapters enter the graph (llama.cpp's `build_lora_mm`):
/// `W x + scale · B (A x) (+ bias)`, with `B` narrowed to the slot's rows.
fn lora_mm<'c>(
    ctx: &'c Context,
    lora: Option<&LoraParams<'c>>,
    layer: u32,
    slot: AdapterSlot,
    w: Tensor<'c>,
    bias: Option<Tensor<'c>>,
    x: Tensor<'c>,
) -> Result<Tensor<'c>, ModelError> {
    let mut y = ctx.mul_mat(w, x)?;
    if let Some((pair, scale)) = lora.and_then(|l| l.get(layer, slot.kind).map(|p| (p, l.scale))) {
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

/// llama.cpp's `LLM_NORM` (`ggml_norm`, then weight and bias) over the rows of `x`, composed of
/// ops ggml can differentiate: the row mean subtracted, then `rms_norm` (the RMS of a centred row
/// is its standard deviation).
fn layer_norm<'c>(
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

/// The final hidden state `[n_embd, n_tokens]` (after the output norm) of the forward pass,
/// with `lora` applied if given. The residual stream entering each layer, and leaving the last
/// one, is appended to `layer_inputs`.
fn hidden<'c>(
    ctx: &'c Context,
    h: &HParams,
    w: &Weights<'c>,
    inp: &Inputs<'c>,
    lora: Option<&LoraParams<'c>>,
    layer_inputs: &mut Vec<Tensor<'c>>,
) -> Result<Tensor<'c>, ModelError> {
    let (len, n_seq) = (inp.seq_len as i64, inp.n_seq as i64);
    let n = len * n_seq;
    let (hd, n_head, n_head_kv) = (h.head_dim as i64, h.n_head as i64, h.n_head_kv as i64);
    let rope = RopeParams {
        n_dims: h.rope_dims as i32,
        mode: if h.arch.neox_rope() { RopeMode::Neox } else { RopeMode::Normal },
        n_ctx_orig: h.n_ctx_train as i32,
        freq_base: h.rope_freq_base,
        freq_scale: h.rope_freq_scale,
    };
    let kq_scale = 1.0 / (h.head_dim as f32).sqrt();
    let eps = h.norm_eps;
    let own = |kind| AdapterSlot { kind, rows: None };
    let mut x = ctx.get_rows(w.token_embd, inp.tokens)?;
    for (il, l) in (0u32..).zip(&w.layers) {
        layer_inputs.push(x);
        let mm = |slot, w, b, x| lora_mm(ctx, lora, il, slot, w, b, x);
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
        // Qwen3 normalises each head (RMS over head_dim) before the rope.
        let heads = |t: Tensor<'c>, n_heads: i64, norm: Option<Tensor<'c>>| -> Result<Tensor<'c>, ModelError> {
            let t = ctx.reshape(t, &[hd, n_heads, n])?;
            let t = match norm {
                Some(weight) => ctx.mul(ctx.rms_norm(t, eps)?, weight)?,
                None => t,
            };
            let t = ctx.rope_ext(t, inp.positions, w.rope_freqs, rope)?;
            let t = ctx.cont(ctx.permute(ctx.reshape(t, &[hd, n_heads, len, n_seq])?, [0, 2, 1, 3])?)?;
            Ok(ctx.reshape(t, &[hd, len, n_heads * n_seq])?)
        };
        // The normed input of attention, and (Falcon) of the MLP running beside it.
        let layer_norm = |x, weight, bias| layer_norm(ctx, x, weight, bias, eps);
        let (attn_in, mlp_in) = match l.attn_norm_b {
            Some(bias) => {
                let normed = layer_norm(x, l.attn_norm, bias)?;
                match l.attn_norm_2 {
                    Some((weight, bias)) => (layer_norm(x, weight, bias)?, normed),
                    None => (normed, normed),
                }
            }
            None => {
                let normed = ctx.mul(ctx.rms_norm(x, eps)?, l.attn_norm)?;
                (normed, normed)
            }
        };
        let q = heads(mm(q_slot, l.wq, l.bq, attn_in)?, n_head, l.attn_q_norm)?;
        let k = heads(mm(k_slot, l.wk, l.bk, attn_in)?, n_head_kv, l.attn_k_norm)?;
        let v = ctx.reshape(mm(v_slot, l.wv, l.bv, attn_in)?, &[hd, n_head_kv, len, n_seq])?;
        // [keys, queries, heads · n_seq], masked per row as [keys, queries, heads, n_seq].
        let kq = ctx.reshape(ctx.mul_mat(k, q)?, &[len, len, n_head, n_seq])?;
        let kq = ctx.reshape(ctx.soft_max_ext(kq, Some(inp.mask), kq_scale)?, &[len, len, n_head * n_seq])?;
        // [keys, head_dim, kv heads · n_seq]
        let v = ctx.reshape(ctx.cont(ctx.permute(v, [1, 2, 0, 3])?)?, &[len, hd, n_head_kv * n_seq])?;
        // [head_dim, queries, heads, n_seq] -> [head_dim, heads, queries, n_seq]
        let kqv = ctx.reshape(ctx.mul_mat(v, kq)?, &[hd, len, n_head, n_seq])?;
        let attn = ctx.reshape(ctx.cont(ctx.permute(kqv, [0, 2, 1, 3])?)?, &[hd * n_head, n])?;
        let attn_out = mm(own(TensorKind::AttnOutput), l.wo, l.bo, attn)?;
        // An ungated GELU MLP (Falcon, GPT-NeoX).
        let gelu_mlp = |input| -> Result<Tensor<'c>, ModelError> {
            let up = ctx.gelu(mm(own(TensorKind::FfnUp), l.ffn_up, l.ffn_up_b, input)?)?;
            mm(own(TensorKind::FfnDown), l.ffn_down, l.ffn_down_b, up)
        };
        // The sums in llama.cpp's order, so that f32 rounding agrees.
        x = match (l.ffn_norm, l.ffn_norm_b, l.ffn_gate) {
            // Llama: attention, then a gated SiLU MLP on the normed sum. Phi-3's gate and up
            // are the halves of one `ffn_up`, whose adapter each half reads its rows of.
            (Some(ffn_norm), None, Some(ffn_gate)) => {
                let ffn_in = ctx.add(attn_out, x)?;
                let cur = ctx.mul(ctx.rms_norm(ffn_in, eps)?, ffn_norm)?;
                let (gate_slot, up_slot) = if l.fused_gate_up {
                    let f = h.n_ff as i64;
                    let half = |first| AdapterSlot { kind: TensorKind::FfnUp, rows: Some((first, f)) };
                    (half(0), half(f))
                } else {
                    (own(TensorKind::FfnGate), own(TensorKind::FfnUp))
                };
                let gate = ctx.silu(mm(gate_slot, ffn_gate, None, cur)?)?;
                let up = mm(up_slot, l.ffn_up, None, cur)?;
                ctx.add(mm(own(TensorKind::FfnDown), l.ffn_down, None, ctx.mul(gate, up)?)?, ffn_in)?
            }
            // GPT-NeoX, parallel: the MLP on its own norm of the layer input beside attention.
            (Some(ffn_norm), Some(ffn_norm_b), None) if h.parallel_residual => {
                let mlp = gelu_mlp(layer_norm(x, ffn_norm, ffn_norm_b)?)?;
                ctx.add(ctx.add(mlp, x)?, attn_out)?
            }
            // GPT-NeoX, sequential: the MLP on the norm of attention's sum.
            (Some(ffn_norm), Some(ffn_norm_b), None) => {
                let ffn_in = ctx.add(attn_out, x)?;
                ctx.add(gelu_mlp(layer_norm(ffn_in, ffn_norm, ffn_norm_b)?)?, ffn_in)?
            }
            // Falcon: the MLP beside attention on attention's normed input.
            _ => ctx.add(ctx.add(gelu_mlp(mlp_in)?, attn_out)?, x)?,
        };
    }
    layer_inputs.push(x);
    Ok(match w.output_norm_b {
        Some(bias) => layer_norm(ctx, x, w.output_norm, bias, eps)?,
        None => ctx.mul(ctx.rms_norm(x, eps)?, w.output_norm)?,
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
    let cur = hidden(ctx, h, w, inp, lora, &mut Vec::new())?;
    Ok(ctx.mul_mat(w.output, cur)?.set_name("result_output").set_output())
}

/// A training graph's loss, and the values a backward pass with recomputation keeps.
#[derive(Clone, Debug)]
pub struct TrainingLoss<'c> {
    /// The scalar loss, marked as the graph's loss.
    pub loss: Tensor<'c>,
    /// The residual stream entering each layer and leaving the last: each layer can be computed
    /// again from its input (see [`crate::ggml::Graph::with_recomputation`]).
    pub layer_inputs: Vec<Tensor<'c>>,
}

/// The mean cross-entropy over the positions with loss (a scalar marked as the graph's loss):
/// `-Σ w_i ln p_i(target_i)` with the weights of [`LossInputs`], over chunks of positions so that
/// the logits of one chunk need exist at a time. Positions of weight 0 add neither loss nor
/// gradient.
pub fn masked_loss<'c>(
    ctx: &'c Context,
    h: &HParams,
    w: &Weights<'c>,
    inp: &Inputs<'c>,
    loss_inputs: &LossInputs<'c>,
    lora: Option<&LoraParams<'c>>,
) -> Result<TrainingLoss<'c>, ModelError> {
    let mut layer_inputs = Vec::with_capacity(w.layers.len() + 1);
    let cur = hidden(ctx, h, w, inp, lora, &mut layer_inputs)?;
    let (n, chunk) = (cur.ne()[1], loss_inputs.chunk as i64);
    let n_vocab = i64::try_from(loss_inputs.n_vocab).unwrap_or(i64::MAX);
    let mut log_likelihood: Option<Tensor<'c>> = None;
    for (k, first) in (0..n).step_by(chunk as usize).enumerate() {
        let logits = ctx.mul_mat(w.output, ctx.columns(cur, first, chunk)?)?;
        // The target's probability picked out of the chunk's flattened softmax, then its log,
        // weighted: token ids instead of a one-hot `[n_vocab, n]` matrix of labels.
        let probabilities = ctx.reshape(ctx.soft_max(logits)?, &[1, n_vocab * chunk])?;
        let picked = ctx.get_rows(probabilities, ctx.columns(loss_inputs.target_index, k as i64, 1)?)?;
        let log_p = ctx.log(ctx.scale_bias(picked, 1.0, MIN_PROBABILITY)?)?;
        let weighted = ctx.sum(ctx.mul(log_p, ctx.columns(loss_inputs.weights, first, chunk)?)?)?;
        log_likelihood = Some(match log_likelihood {
            Some(sum) => ctx.add(sum, weighted)?,
            None => weighted,
        });
    }
    let log_likelihood = log_likelihood.ok_or(ModelError::Inconsistent { what: "a loss over no positions".into() })?;
    let loss = ctx.scale(log_likelihood, -1.0)?;
    Ok(TrainingLoss { loss: loss.set_name("loss").set_output().set_loss()?, layer_inputs })
}
