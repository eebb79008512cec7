//! The model's graph: the inputs, the skeleton every family shares (the token embeddings, each
//! layer as its family builds it from [`super::layer`]'s pieces, the output norm), the logits and
//! the masked training loss.

use crate::ggml::{Allocated, Context, Tensor};
use crate::gguf::GgmlType;

use super::batch::Batch;
use super::layer::{layer_norm, soft_cap_op, GraphPurpose, LayerGraph};
use super::lora::LoraParams;
use super::weights::Weights;
use super::{HParams, ModelError};

/// The graph's inputs for a [`Batch`] of `n_seq` rows of `seq_len` positions: token ids,
/// positions and the attention masks.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'c> {
    pub tokens: Tensor<'c>,
    pub positions: Tensor<'c>,
    pub mask: Tensor<'c>,
    /// The mask of the sliding-window layers, when the model has some, and their window.
    pub sliding_mask: Option<(Tensor<'c>, u64)>,
    seq_len: u64,
    n_seq: u64,
}

impl<'c> Inputs<'c> {
    /// Inputs for batches of `n_seq` rows of `seq_len` tokens of a model of shape `h`.
    pub fn new(ctx: &'c Context, h: &HParams, seq_len: u64, n_seq: u64) -> Result<Inputs<'c>, ModelError> {
        let n = seq_len * n_seq;
        let mask_shape = [seq_len, seq_len, 1, n_seq];
        let sliding_mask = match &h.sliding_window {
            Some(w) => Some((ctx.new_tensor(GgmlType::F32, &mask_shape)?.set_name("kq_mask_swa").set_input(), w.size)),
            None => None,
        };
        Ok(Inputs {
            tokens: ctx.new_tensor(GgmlType::I32, &[n])?.set_name("inp_tokens").set_input(),
            positions: ctx.new_tensor(GgmlType::I32, &[n])?.set_name("inp_pos").set_input(),
            mask: ctx.new_tensor(GgmlType::F32, &mask_shape)?.set_name("kq_mask").set_input(),
            sliding_mask,
            seq_len,
            n_seq,
        })
    }

    /// Positions per row.
    pub fn seq_len(&self) -> u64 {
        self.seq_len
    }

    /// Rows.
    pub fn n_seq(&self) -> u64 {
        self.n_seq
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
        graph.set_f32(self.mask, &batch.mask(None))?;
        if let Some((mask, window)) = self.sliding_mask {
            graph.set_f32(mask, &batch.mask(Some(window)))?;
        }
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
    purpose: GraphPurpose,
) -> Result<Tensor<'c>, ModelError> {
    let family = h.arch.family();
    // Llama 3's factors, or Phi-3's long or short ones by the context, as llama.cpp chooses them
    // by its context size (here: the graph's sequence length).
    let rope_freqs = match w.rope_factors {
        Some((long, short)) => Some(if inp.seq_len() > h.n_ctx_orig { long } else { short }),
        None => w.rope_freqs,
    };
    let mut x = ctx.get_rows(w.token_embd, inp.tokens)?;
    if let Some(scale) = h.embed_scale {
        x = ctx.scale(x, scale)?;
    }
    for (il, l) in (0u32..).zip(&w.layers) {
        layer_inputs.push(x);
        x = family.layer(&LayerGraph::new(ctx, h, lora, inp, rope_freqs, il, purpose), l, x)?;
    }
    layer_inputs.push(x);
    Ok(match w.output_norm_b {
        Some(bias) => layer_norm(ctx, x, w.output_norm, bias, h.norm_eps)?,
        None => ctx.mul(ctx.rms_norm(x, h.norm_eps)?, w.output_norm)?,
    })
}

/// The logits of the final hidden states `cur`, soft-capped when the model caps them (Gemma).
fn output_logits<'c>(
    ctx: &'c Context,
    h: &HParams,
    w: &Weights<'c>,
    cur: Tensor<'c>,
    differentiable: bool,
) -> Result<Tensor<'c>, ModelError> {
    let logits = ctx.mul_mat(w.output, cur)?;
    Ok(match h.final_softcap {
        Some(cap) => soft_cap_op(ctx, logits, cap, differentiable)?,
        None => logits,
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
    let cur = hidden(ctx, h, w, inp, lora, &mut Vec::new(), GraphPurpose::Run)?;
    Ok(output_logits(ctx, h, w, cur, false)?.set_name("result_output").set_output())
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
/// gradient. `purpose` says where the graph will be trained (a training purpose).
pub fn masked_loss<'c>(
    ctx: &'c Context,
    h: &HParams,
    w: &Weights<'c>,
    inp: &Inputs<'c>,
    loss_inputs: &LossInputs<'c>,
    lora: Option<&LoraParams<'c>>,
    purpose: GraphPurpose,
) -> Result<TrainingLoss<'c>, ModelError> {
    let mut layer_inputs = Vec::with_capacity(w.layers.len() + 1);
    let cur = hidden(ctx, h, w, inp, lora, &mut layer_inputs, purpose)?;
    let (n, chunk) = (cur.ne()[1], loss_inputs.chunk as i64);
    let n_vocab = i64::try_from(loss_inputs.n_vocab).unwrap_or(i64::MAX);
    let mut log_likelihood: Option<Tensor<'c>> = None;
    for (k, first) in (0..n).step_by(chunk as usize).enumerate() {
        let logits = output_logits(ctx, h, w, ctx.columns(cur, first, chunk)?, purpose.differentiable())?;
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
