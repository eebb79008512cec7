//! The ggml side of a training run, built once for a fixed batch shape and reused for every step
//! (graph reuse: no per-step graph building or allocation planning).
//!
//! - Persistent memory (one backend buffer): the LoRA `A`/`B`, their gradient accumulators,
//!   AdamW's moments, and the optimizer's inputs.
//! - The model graph: forward + masked loss, differentiated by `ggml_build_backward_expand`
//!   into the gradient accumulators. It is evaluated once per micro-batch; gradients add up
//!   across the micro-batches of a step. The same loss without the backward pass serves
//!   validation.
//! - The optimizer graphs: the squared global gradient norm, then `ggml_opt_step_adamw` on every
//!   tensor with the gradients scaled (averaging over micro-batches and clipping).

use crate::ggml::{Allocator, Backend, Context, Graph, ParamBuffer, Runtime, Tensor};
use crate::gguf::GgmlType;
use crate::model::{lora_layout, Batch, Inputs, LoraConfig, LoraParams, LossInputs, Model, ModelError};

use super::{AdamWConfig, TrainError};

/// What the backward pass keeps of the forward pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Activations {
    /// Every value the backward pass reads: the fastest, and the compute buffer grows with
    /// layers × tokens.
    #[default]
    Keep,
    /// Only each layer's input: the backward pass of a layer first computes the layer's forward
    /// pass again ([`crate::ggml::Graph::with_recomputation`]). One layer's activations are in
    /// memory at a time, for a second forward pass per step. The gradients are the same.
    Recompute,
}

/// The fixed shape of every micro-batch: `n_seq` rows of `seq_len` tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchShape {
    pub seq_len: usize,
    pub n_seq: usize,
}

/// Optimizer state on the host: the LoRA tensors and AdamW's moments (each in
/// [`LoraParams::pairs`] order, `A` then `B`), and the number of optimizer steps taken.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerState {
    pub params: Vec<Vec<f32>>,
    pub m: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
    pub steps: u64,
}

impl OptimizerState {
    /// The state before the first step: `params` and zero moments.
    pub fn new(params: Vec<Vec<f32>>) -> OptimizerState {
        let zeros: Vec<Vec<f32>> = params.iter().map(|p| vec![0.0; p.len()]).collect();
        OptimizerState { params, m: zeros.clone(), v: zeros, steps: 0 }
    }
}

/// The memory of a training session's ggml buffers, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionMemory {
    /// The model graph's buffer: activations kept for the backward pass, gradients of
    /// intermediate tensors, logits and loss (the larger of the training and validation graphs).
    pub compute_bytes: usize,
    /// The optimizer graphs' buffer (gradient norm, scaled gradients).
    pub optimizer_bytes: usize,
    /// The persistent tensors: LoRA `A`/`B`, their gradient accumulators, AdamW's moments.
    pub param_bytes: usize,
    /// The CPU backend's scratch buffer for the largest graph.
    pub work_bytes: usize,
}

impl SessionMemory {
    /// All of it.
    pub fn total(&self) -> usize {
        self.compute_bytes + self.optimizer_bytes + self.param_bytes + self.work_bytes
    }
}

/// The memory a training session of `model` with `lora` and micro-batches of `shape` on `threads`
/// CPU threads will use: the session is built exactly as [`with_session`] builds it for training,
/// then ggml's allocator sizes its buffers without allocating them. On a
/// [`Model::planned`] model, nothing of the model's size is allocated either.
pub fn measure_session(
    model: &Model,
    lora: &LoraConfig,
    shape: BatchShape,
    activations: Activations,
    threads: usize,
) -> Result<SessionMemory, TrainError> {
    with_session(model, lora, shape, activations, threads, |session| session.planned_memory())
}

/// One training run's ggml objects; see the module docs. Made by [`with_session`].
pub struct Session<'c> {
    backend: &'c Backend,
    params: &'c ParamBuffer<'c>,
    /// Every trainable tensor with its gradient accumulator and AdamW moments.
    tensors: Vec<TrainableTensor<'c>>,
    inputs: Inputs<'c>,
    loss_inputs: LossInputs<'c>,
    loss: Tensor<'c>,
    /// The gradient of the loss (1), where the backward pass starts.
    loss_grad: Tensor<'c>,
    train_graph: Graph<'c>,
    eval_graph: Graph<'c>,
    compute: Allocator,
    adamw_hparams: Tensor<'c>,
    grad_scale: Tensor<'c>,
    grad_norm_sq: Tensor<'c>,
    norm_graph: Graph<'c>,
    opt_graph: Graph<'c>,
    optimizer: Allocator,
    shape: BatchShape,
}

#[derive(Clone, Copy)]
struct TrainableTensor<'c> {
    param: Tensor<'c>,
    grad: Tensor<'c>,
    m: Tensor<'c>,
    v: Tensor<'c>,
}

/// Builds the session for `model` with LoRA `lora`, micro-batches of `shape`, keeping or
/// recomputing `activations`, on the CPU with `threads` threads, and runs `f` with it.
pub fn with_session<R>(
    model: &Model,
    lora: &LoraConfig,
    shape: BatchShape,
    activations: Activations,
    threads: usize,
    f: impl FnOnce(&mut Session<'_>) -> Result<R, TrainError>,
) -> Result<R, TrainError> {
    let rt = Runtime::get();
    let h = model.hparams();
    if shape.seq_len == 0 || shape.n_seq == 0 {
        return Err(ModelError::Inconsistent { what: "a batch needs at least one row of one token".into() }.into());
    }
    let n_tokens = (shape.seq_len * shape.n_seq) as u64;
    // ggml's kernels index rows as i32: keep the logits well inside what every backend
    // addresses.
    if h.n_vocab.saturating_mul(n_tokens) > i32::MAX as u64 {
        return Err(ModelError::Unsupported {
            what: format!(
                "{} positions per micro-batch with a vocabulary of {} (logits of more than 2^31 values; lower --ctx or --batch)",
                n_tokens, h.n_vocab
            ),
        }
        .into());
    }
    let backend = Backend::cpu(rt, threads)?;
    let n_trainable = 2 * lora_layout(h, lora)?.len();

    let param_ctx = Context::new(rt, 4 * n_trainable + 8, 0)?;
    let lora_params = LoraParams::new(&param_ctx, h, lora)?;
    let mut tensors = Vec::new();
    for (param, grad) in lora_params.grad_accs() {
        let ne: Vec<u64> = param.ne().iter().map(|&d| d as u64).collect();
        let m = param_ctx.new_tensor(GgmlType::F32, &ne)?;
        let v = param_ctx.new_tensor(GgmlType::F32, &ne)?;
        tensors.push(TrainableTensor { param, grad, m, v });
    }
    let loss_grad = param_ctx.new_tensor(GgmlType::F32, &[1])?;
    let adamw_hparams = param_ctx.new_tensor(GgmlType::F32, &[7])?;
    let grad_scale = param_ctx.new_tensor(GgmlType::F32, &[1])?;
    let params = ParamBuffer::alloc(&param_ctx, &backend)?;

    let graph_size = model.graph_size();
    // Room for the graphs: validation, training with gradients (twice the size), and its two
    // rewrites (twice the size each).
    model.with_bound_weights(8, |ctx, weights| {
        let inputs = Inputs::new(ctx, h, shape.seq_len as u64, shape.n_seq as u64)?;
        let loss_inputs = LossInputs::new(ctx, h.n_vocab, n_tokens)?;
        let training = crate::model::masked_loss(ctx, h, weights, &inputs, &loss_inputs, Some(&lora_params))?;
        let loss = training.loss;
        let mut eval_graph = Graph::new(ctx, graph_size)?;
        eval_graph.build_forward_expand(loss)?;
        let mut differentiated = Graph::with_grads(ctx, graph_size)?;
        differentiated.build_forward_expand(loss)?;
        let mut accs = lora_params.grad_accs();
        accs.push((loss, loss_grad));
        differentiated.build_backward_expand(ctx, &accs)?;
        let train_graph = differentiated.with_fast_backward(ctx, 2 * graph_size)?;
        let train_graph = match activations {
            Activations::Keep => train_graph,
            Activations::Recompute => train_graph.with_recomputation(ctx, &training.layer_inputs, 2 * graph_size)?,
        };

        // Nodes: the norm graph has sqr, sum and add per tensor; the step graph the parameter, mul
        // and the AdamW step per tensor. Tensors: the five of them made here per trainable tensor.
        let opt_nodes = 3 * tensors.len() + 8;
        let opt_ctx = Context::new(rt, 5 * tensors.len() + 8, 3 * opt_nodes)?;
        let mut norm_graph = Graph::new(&opt_ctx, opt_nodes)?;
        let mut total: Option<Tensor<'_>> = None;
        for t in &tensors {
            let sq = opt_ctx.sum(opt_ctx.sqr(t.grad)?)?;
            total = Some(match total {
                Some(acc) => opt_ctx.add(acc, sq)?,
                None => sq,
            });
        }
        let grad_norm_sq = total
            .ok_or(ModelError::Inconsistent { what: "no trainable tensors".into() })?
            .set_name("grad_norm_sq")
            .set_output();
        norm_graph.build_forward_expand(grad_norm_sq)?;
        let mut opt_graph = Graph::new(&opt_ctx, opt_nodes)?;
        for t in &tensors {
            let grad = opt_ctx.mul(t.grad, grad_scale)?;
            opt_graph.build_forward_expand(opt_ctx.opt_step_adamw(t.param, grad, t.m, t.v, adamw_hparams)?)?;
        }

        let mut session = Session {
            backend: &backend,
            params: &params,
            tensors,
            inputs,
            loss_inputs,
            loss,
            train_graph,
            eval_graph,
            loss_grad,
            compute: Allocator::new(&backend)?,
            adamw_hparams,
            grad_scale,
            grad_norm_sq,
            norm_graph,
            opt_graph,
            optimizer: Allocator::new(&backend)?,
            shape,
        };
        f(&mut session)
    })
}

impl Session<'_> {
    /// The micro-batch shape.
    pub fn shape(&self) -> BatchShape {
        self.shape
    }

    /// Loads the LoRA tensors and AdamW moments of `state`.
    pub fn set_state(&self, state: &OptimizerState) -> Result<(), TrainError> {
        let n = self.tensors.len();
        if state.params.len() != n || state.m.len() != n || state.v.len() != n {
            return Err(ModelError::Inconsistent {
                what: format!("{n} LoRA tensors, {} value arrays in the optimizer state", state.params.len()),
            }
            .into());
        }
        for (i, t) in self.tensors.iter().enumerate() {
            self.params.set_f32(t.param, &state.params[i])?;
            self.params.set_f32(t.m, &state.m[i])?;
            self.params.set_f32(t.v, &state.v[i])?;
        }
        Ok(())
    }

    /// Reads the LoRA tensors and AdamW moments back into `state`.
    pub fn get_state(&self, state: &mut OptimizerState) -> Result<(), TrainError> {
        state.params = self.tensors.iter().map(|t| self.params.get_f32(t.param)).collect::<Result<_, _>>()?;
        state.m = self.tensors.iter().map(|t| self.params.get_f32(t.m)).collect::<Result<_, _>>()?;
        state.v = self.tensors.iter().map(|t| self.params.get_f32(t.v)).collect::<Result<_, _>>()?;
        Ok(())
    }

    /// The accumulated gradients (in [`LoraParams::pairs`] order, `A` then `B`).
    pub fn grads(&self) -> Result<Vec<Vec<f32>>, TrainError> {
        Ok(self.tensors.iter().map(|t| self.params.get_f32(t.grad)).collect::<Result<_, _>>()?)
    }

    /// Runs forward and backward on `batch`, adding its gradients to the accumulators (cleared
    /// first when `first`). Returns the mean loss over the batch's positions with loss, and how
    /// many there are.
    pub fn accumulate(&mut self, batch: &Batch, first: bool) -> Result<(f32, usize), TrainError> {
        let graph = self.compute.alloc_graph(&self.train_graph)?;
        self.inputs.set(&graph, batch)?;
        let n_targets = self.loss_inputs.set(&graph, batch)?;
        if first {
            for t in &self.tensors {
                self.params.fill_zero(t.grad)?;
            }
            self.params.set_f32(self.loss_grad, &[1.0])?;
        }
        self.backend.compute(&graph)?;
        let loss = graph.get_f32(self.loss)?.first().copied().unwrap_or(f32::NAN);
        Ok((loss, n_targets))
    }

    /// The mean loss over `batch`'s positions with loss, and how many there are (no gradients).
    pub fn evaluate(&mut self, batch: &Batch) -> Result<(f32, usize), TrainError> {
        let graph = self.compute.alloc_graph(&self.eval_graph)?;
        self.inputs.set(&graph, batch)?;
        let n_targets = self.loss_inputs.set(&graph, batch)?;
        self.backend.compute(&graph)?;
        let loss = graph.get_f32(self.loss)?.first().copied().unwrap_or(f32::NAN);
        Ok((loss, n_targets))
    }

    /// The global L2 norm of the accumulated gradients times `scale`.
    pub fn grad_norm(&mut self, scale: f32) -> Result<f32, TrainError> {
        let graph = self.optimizer.alloc_graph(&self.norm_graph)?;
        self.backend.compute(&graph)?;
        let sq = graph.get_f32(self.grad_norm_sq)?.first().copied().unwrap_or(f32::NAN);
        Ok(sq.sqrt() * scale)
    }

    /// One AdamW step (number `t`, from 1) at learning rate `lr` on the accumulated gradients
    /// times `grad_scale`.
    pub fn adamw_step(&mut self, cfg: &AdamWConfig, lr: f32, t: u64, grad_scale: f32) -> Result<(), TrainError> {
        let t = i32::try_from(t).unwrap_or(i32::MAX);
        let hparams = [
            lr,
            cfg.beta1,
            cfg.beta2,
            cfg.eps,
            cfg.weight_decay,
            1.0 / (1.0 - cfg.beta1.powi(t)),
            1.0 / (1.0 - cfg.beta2.powi(t)),
        ];
        self.params.set_f32(self.adamw_hparams, &hparams)?;
        self.params.set_f32(self.grad_scale, &[grad_scale])?;
        let graph = self.optimizer.alloc_graph(&self.opt_graph)?;
        self.backend.compute(&graph)?;
        Ok(())
    }

    /// The buffers as allocated so far (after training: what the run used).
    pub fn memory(&self) -> SessionMemory {
        SessionMemory {
            compute_bytes: self.compute.buffer_size(),
            optimizer_bytes: self.optimizer.buffer_size(),
            param_bytes: self.params.size(),
            work_bytes: self.work_bytes(),
        }
    }

    /// The buffers as ggml's allocator plans them for this session's graphs, allocating nothing.
    pub fn planned_memory(&self) -> Result<SessionMemory, TrainError> {
        let largest = |graphs: [&Graph<'_>; 2]| -> Result<usize, TrainError> {
            let mut sizes = Vec::new();
            for g in graphs {
                sizes.push(Allocator::new(self.backend)?.measure(g));
            }
            Ok(sizes.into_iter().max().unwrap_or(0))
        };
        Ok(SessionMemory {
            compute_bytes: largest([&self.train_graph, &self.eval_graph])?,
            optimizer_bytes: largest([&self.norm_graph, &self.opt_graph])?,
            param_bytes: self.params.size(),
            work_bytes: self.work_bytes(),
        })
    }

    fn work_bytes(&self) -> usize {
        [&self.train_graph, &self.eval_graph, &self.norm_graph, &self.opt_graph]
            .into_iter()
            .map(|g| self.backend.work_bytes(g))
            .max()
            .unwrap_or(0)
    }
}
