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
//!
//! On this machine's CPU alone, the graphs run on the CPU backend with the CPU's rewrites of the
//! backward pass ([`Graph::with_fast_backward`]). On devices ([`with_session_on`]), every graph
//! is placed by ggml's backend scheduler: the frozen weights go to their layer's device once, in
//! their stored type; the LoRA tensors, their gradients and AdamW's moments live with their
//! layer; the backward pass through a quantized weight uses ops every backend has
//! ([`Graph::with_portable_backward`]); a micro-batch uploads only its inputs (token ids,
//! positions, masks, targets).

use crate::ggml::{
    self, Allocated, Allocator, Backend, Context, Device, DeviceType, Graph, ParamBuffer, Placement, Runtime,
    Scheduler, Tensor,
};
use crate::gguf::GgmlType;
use crate::model::{
    lora_layout, Batch, DeviceBackends, Devices, GraphPurpose, Inputs, LayerSplit, LoraConfig, LoraParams, LossInputs,
    Model, ModelError, WeightsPlacement,
};

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
#[derive(Clone, Debug, Default, PartialEq, Eq)]
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
    /// The same buffers (the scratch buffer aside), backend by backend: in ggml's scheduler's
    /// order on devices (each device's other than the CPU, in the list's order, then this
    /// machine's CPU), the CPU's alone on the CPU.
    pub backends: Vec<BackendMemory>,
}

/// One backend's share of a training session's ggml buffers, in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendMemory {
    /// The backend's device (`None` only for a backend ggml gives no device).
    pub device: Option<Device>,
    /// Its part of the model graphs' buffers (activations, gradients, logits; on the CPU also
    /// the inputs that every micro-batch uploads).
    pub compute_bytes: usize,
    /// Its part of the optimizer graphs' buffers.
    pub optimizer_bytes: usize,
    /// The LoRA tensors, gradients and AdamW moments of the layers it holds (the last device's
    /// also the optimizer's inputs).
    pub param_bytes: usize,
}

impl BackendMemory {
    /// Whether it is this machine's CPU backend.
    pub fn is_cpu(&self) -> bool {
        self.device.is_some_and(|d| d.kind() == DeviceType::Cpu)
    }
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

/// As [`measure_session`], on `devices` as [`with_session_on`] would train there: each device's
/// weight buffer is allocated there but not filled (nothing read from the file), and ggml's
/// scheduler sizes the compute buffers without allocating them.
pub fn measure_session_on(
    devices: &Devices,
    model: &Model,
    lora: &LoraConfig,
    shape: BatchShape,
    activations: Activations,
    threads: usize,
) -> Result<SessionMemory, TrainError> {
    build_session(devices, model, lora, shape, activations, threads, false, |session| session.planned_memory())
}

/// One training run's ggml objects; see the module docs. Made by [`with_session`].
pub struct Session<'c> {
    runner: Runner<'c>,
    /// Every trainable tensor with its gradient accumulator and AdamW moments.
    tensors: Vec<TrainableTensor<'c>>,
    inputs: Inputs<'c>,
    loss_inputs: LossInputs<'c>,
    loss: Tensor<'c>,
    /// The gradient of the loss (1), where the backward pass starts.
    loss_grad: Tensor<'c>,
    train_graph: Graph<'c>,
    eval_graph: Graph<'c>,
    adamw_hparams: Tensor<'c>,
    grad_scale: Tensor<'c>,
    grad_norm_sq: Tensor<'c>,
    norm_graph: Graph<'c>,
    opt_graph: Graph<'c>,
    shape: BatchShape,
    /// Where the training graph's nodes ran (on devices, after the first micro-batch).
    placement: Option<Placement>,
    /// Where the AdamW step's nodes ran (on devices, after the first step).
    optimizer_placement: Option<Placement>,
    /// The devices of the backends, in the order of [`SessionMemory::backends`].
    backend_devices: Vec<Option<Device>>,
    /// The memory of the parameters on each backend, in that order.
    param_bytes: Vec<usize>,
}

/// Where a session's graphs are allocated and run.
enum Runner<'b> {
    /// This machine's CPU alone: ggml's graph allocator and the CPU backend.
    Cpu { backend: &'b Backend, compute: Allocator, optimizer: Allocator },
    /// Devices: each graph placed by ggml's backend scheduler (the model graphs by one, the
    /// optimizer graphs by another, so neither is placed again for the other).
    Devices { compute: Box<Scheduler<'b, 'b>>, optimizer: Box<Scheduler<'b, 'b>> },
}

/// Which of a runner's two allocators a graph uses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pool {
    Compute,
    Optimizer,
}

impl<'b> Runner<'b> {
    /// Allocates `graph`, sets its inputs with `set`, runs it and reads its outputs with `get`
    /// (given what `set` returned); with `placement`, also says where the scheduler placed it.
    fn run<S, R>(
        &mut self,
        pool: Pool,
        graph: &Graph<'b>,
        set: impl FnOnce(&Allocated<'_, 'b>) -> Result<S, TrainError>,
        get: impl FnOnce(&Allocated<'_, 'b>, S) -> Result<R, TrainError>,
        placement: bool,
    ) -> Result<(R, Option<Placement>), TrainError> {
        match self {
            Runner::Cpu { backend, compute, optimizer } => {
                let allocator = if pool == Pool::Compute { compute } else { optimizer };
                let allocated = allocator.alloc_graph(graph)?;
                let given = set(&allocated)?;
                backend.compute(&allocated)?;
                Ok((get(&allocated, given)?, None))
            }
            Runner::Devices { compute, optimizer } => {
                let scheduler = if pool == Pool::Compute { compute } else { optimizer };
                let mut scheduled = scheduler.alloc_graph(graph)?;
                let given = set(scheduled.tensors())?;
                scheduled.compute()?;
                let placed = placement.then(|| scheduled.placement());
                Ok((get(scheduled.tensors(), given)?, placed))
            }
        }
    }
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
    with_session_on(&Devices::cpu(), model, lora, shape, activations, threads, f)
}

/// As [`with_session`], on `devices` (the layers shared among them, see [`LayerSplit`]; the CPU
/// backend, with `threads` threads, runs what no device does).
pub fn with_session_on<R>(
    devices: &Devices,
    model: &Model,
    lora: &LoraConfig,
    shape: BatchShape,
    activations: Activations,
    threads: usize,
    f: impl FnOnce(&mut Session<'_>) -> Result<R, TrainError>,
) -> Result<R, TrainError> {
    build_session(devices, model, lora, shape, activations, threads, true, f)
}

/// [`with_session_on`], with the devices' weights filled from the file or (`fill_weights`
/// false, for measuring) only allocated.
#[allow(clippy::too_many_arguments)]
fn build_session<R>(
    devices: &Devices,
    model: &Model,
    lora: &LoraConfig,
    shape: BatchShape,
    activations: Activations,
    threads: usize,
    fill_weights: bool,
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
    let on_cpu = devices.is_cpu_only();
    let backends = DeviceBackends::start(devices, threads)?;
    let split = LayerSplit::new(devices, backends.per_device(), usize::try_from(h.n_layer).unwrap_or(0))?;
    let n_trainable = 2 * lora_layout(h, lora)?.len();

    let param_ctx = Context::new(rt, 4 * n_trainable + 8, 0)?;
    let lora_params = LoraParams::new(&param_ctx, h, lora)?;
    let mut tensors = Vec::new();
    let mut placed = Vec::new();
    for pair in &lora_params.pairs {
        for (param, grad) in [(pair.a, pair.grad_a), (pair.b, pair.grad_b)] {
            let ne: Vec<u64> = param.ne().iter().map(|&d| d as u64).collect();
            let m = param_ctx.new_tensor(GgmlType::F32, &ne)?;
            let v = param_ctx.new_tensor(GgmlType::F32, &ne)?;
            tensors.push(TrainableTensor { param, grad, m, v });
            placed.extend([param, grad, m, v].map(|t| (Some(pair.layer), t)));
        }
    }
    let loss_grad = param_ctx.new_tensor(GgmlType::F32, &[1])?;
    let adamw_hparams = param_ctx.new_tensor(GgmlType::F32, &[7])?;
    let grad_scale = param_ctx.new_tensor(GgmlType::F32, &[1])?;
    placed.extend([loss_grad, adamw_hparams, grad_scale].map(|t| (None, t)));
    // Off the CPU, the row ids that dequantize a frozen weight (all its rows) in the backward
    // pass: as many as the longest weight has rows.
    let rows = [h.n_vocab, h.n_embd, 2 * h.n_ff, h.n_q() + 2 * h.n_kv()].into_iter().max().unwrap_or(1);
    let row_ids = match on_cpu {
        true => None,
        false => {
            let t = param_ctx.new_tensor(GgmlType::I32, &[rows])?;
            placed.push((None, t));
            Some(t)
        }
    };
    let param_buffers = split.place_params(&placed)?;
    if let Some(ids) = row_ids {
        let ids_data: Vec<i32> = (0..rows).map(|i| i32::try_from(i).unwrap_or(i32::MAX)).collect();
        ggml::ParamBuffer::write_i32(ids, &ids_data)?;
    }
    let scheduled = backends.for_scheduler();
    let backend_devices: Vec<Option<Device>> = scheduled.iter().map(|b| b.device()).collect();
    let mut param_bytes = vec![0usize; scheduled.len()];
    for (i, buffer) in &param_buffers {
        if let Some(at) = scheduled.iter().position(|b| std::ptr::eq(*b, split.backends[*i])) {
            param_bytes[at] += buffer.size();
        }
    }

    let graph_size = model.graph_size();
    // Room for the graphs: validation, training with gradients (twice the size), and its two
    // rewrites (twice the size each).
    let placement = match fill_weights {
        true => WeightsPlacement::Split(&split),
        false => WeightsPlacement::Unfilled(&split),
    };
    model.with_weights(8, placement, |ctx, weights| {
        let inputs = Inputs::new(ctx, h, shape.seq_len as u64, shape.n_seq as u64)?;
        let loss_inputs = LossInputs::new(ctx, h.n_vocab, n_tokens)?;
        let purpose = if on_cpu { GraphPurpose::TrainOnCpu } else { GraphPurpose::TrainAnywhere };
        let training = crate::model::masked_loss(ctx, h, weights, &inputs, &loss_inputs, Some(&lora_params), purpose)?;
        let loss = training.loss;
        let mut eval_graph = Graph::new(ctx, graph_size)?;
        eval_graph.build_forward_expand(loss)?;
        let mut differentiated = Graph::with_grads(ctx, graph_size)?;
        differentiated.build_forward_expand(loss)?;
        let mut accs = lora_params.grad_accs();
        accs.push((loss, loss_grad));
        differentiated.build_backward_expand(ctx, &accs)?;
        let train_graph = match row_ids {
            None => differentiated.with_fast_backward(ctx, 2 * graph_size)?,
            Some(ids) => differentiated.with_portable_backward(ctx, 2 * graph_size, ids)?,
        };
        let train_graph = match activations {
            Activations::Keep => train_graph,
            Activations::Recompute => train_graph.with_recomputation(ctx, &training.layer_inputs, 2 * graph_size)?,
        };
        if let (Some(node), false) = (ggml::custom_op_nodes(&train_graph).first(), on_cpu) {
            return Err(TrainError::NotOnDevice {
                what: format!("{}'s backward pass (its custom op '{node}' runs only on the CPU)", h.arch.name()),
                device: devices.list.iter().map(|d| d.name()).collect::<Vec<_>>().join(","),
            });
        }

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

        let runner = match on_cpu {
            true => Runner::Cpu {
                backend: backends.cpu(),
                compute: Allocator::new(backends.cpu())?,
                optimizer: Allocator::new(backends.cpu())?,
            },
            false => {
                let placed_on = backends.for_scheduler();
                Runner::Devices {
                    compute: Box::new(Scheduler::new(&placed_on, 2 * graph_size)?),
                    optimizer: Box::new(Scheduler::new(&placed_on, opt_nodes)?),
                }
            }
        };
        let mut session = Session {
            runner,
            tensors,
            inputs,
            loss_inputs,
            loss,
            train_graph,
            eval_graph,
            loss_grad,
            adamw_hparams,
            grad_scale,
            grad_norm_sq,
            norm_graph,
            opt_graph,
            shape,
            placement: None,
            optimizer_placement: None,
            backend_devices,
            param_bytes,
        };
        f(&mut session)
    })
}

impl<'c> Session<'c> {
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
            ParamBuffer::write_f32(t.param, &state.params[i])?;
            ParamBuffer::write_f32(t.m, &state.m[i])?;
            ParamBuffer::write_f32(t.v, &state.v[i])?;
        }
        Ok(())
    }

    /// Reads the LoRA tensors and AdamW moments back into `state`.
    pub fn get_state(&self, state: &mut OptimizerState) -> Result<(), TrainError> {
        state.params = self.tensors.iter().map(|t| ParamBuffer::read_f32(t.param)).collect::<Result<_, _>>()?;
        state.m = self.tensors.iter().map(|t| ParamBuffer::read_f32(t.m)).collect::<Result<_, _>>()?;
        state.v = self.tensors.iter().map(|t| ParamBuffer::read_f32(t.v)).collect::<Result<_, _>>()?;
        Ok(())
    }

    /// The accumulated gradients (in [`LoraParams::pairs`] order, `A` then `B`).
    pub fn grads(&self) -> Result<Vec<Vec<f32>>, TrainError> {
        Ok(self.tensors.iter().map(|t| ParamBuffer::read_f32(t.grad)).collect::<Result<_, _>>()?)
    }

    /// Runs forward and backward on `batch`, adding its gradients to the accumulators (cleared
    /// first when `first`). Returns the mean loss over the batch's positions with loss, and how
    /// many there are.
    pub fn accumulate(&mut self, batch: &Batch, first: bool) -> Result<(f32, usize), TrainError> {
        if first {
            for t in &self.tensors {
                ParamBuffer::write_zeros(t.grad)?;
            }
            ParamBuffer::write_f32(self.loss_grad, &[1.0])?;
        }
        let (inputs, loss_inputs, loss) = (&self.inputs, &self.loss_inputs, self.loss);
        let ((loss, n), placed) = self.runner.run(
            Pool::Compute,
            &self.train_graph,
            |graph| {
                inputs.set(graph, batch)?;
                Ok(loss_inputs.set(graph, batch)?)
            },
            |graph, n_targets| Ok((graph.get_f32(loss)?.first().copied().unwrap_or(f32::NAN), n_targets)),
            self.placement.is_none(),
        )?;
        if placed.is_some() {
            self.placement = placed;
        }
        Ok((loss, n))
    }

    /// The mean loss over `batch`'s positions with loss, and how many there are (no gradients).
    pub fn evaluate(&mut self, batch: &Batch) -> Result<(f32, usize), TrainError> {
        let (inputs, loss_inputs, loss) = (&self.inputs, &self.loss_inputs, self.loss);
        let (out, _) = self.runner.run(
            Pool::Compute,
            &self.eval_graph,
            |graph| {
                inputs.set(graph, batch)?;
                Ok(loss_inputs.set(graph, batch)?)
            },
            |graph, n_targets| Ok((graph.get_f32(loss)?.first().copied().unwrap_or(f32::NAN), n_targets)),
            false,
        )?;
        Ok(out)
    }

    /// The global L2 norm of the accumulated gradients times `scale`.
    pub fn grad_norm(&mut self, scale: f32) -> Result<f32, TrainError> {
        let norm_sq = self.grad_norm_sq;
        let (sq, _) = self.runner.run(
            Pool::Optimizer,
            &self.norm_graph,
            |_| Ok(()),
            |graph, ()| Ok(graph.get_f32(norm_sq)?.first().copied().unwrap_or(f32::NAN)),
            false,
        )?;
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
        ParamBuffer::write_f32(self.adamw_hparams, &hparams)?;
        ParamBuffer::write_f32(self.grad_scale, &[grad_scale])?;
        let first = self.optimizer_placement.is_none();
        let ((), placed) = self.runner.run(Pool::Optimizer, &self.opt_graph, |_| Ok(()), |_, ()| Ok(()), first)?;
        if placed.is_some() {
            self.optimizer_placement = placed;
        }
        Ok(())
    }

    /// Where ggml's scheduler placed the AdamW step's nodes: `None` on the CPU alone, and before
    /// the first step.
    pub fn optimizer_placement(&self) -> Option<&Placement> {
        self.optimizer_placement.as_ref()
    }

    /// Where ggml's scheduler placed the training graph's nodes: `None` on the CPU alone, and
    /// before the first micro-batch.
    pub fn placement(&self) -> Option<&Placement> {
        self.placement.as_ref()
    }

    /// The buffers as allocated so far (after training: what the run used).
    pub fn memory(&self) -> SessionMemory {
        let (compute, optimizer) = match &self.runner {
            Runner::Cpu { compute, optimizer, .. } => (vec![compute.buffer_size()], vec![optimizer.buffer_size()]),
            Runner::Devices { compute, optimizer } => (compute.buffer_sizes(), optimizer.buffer_sizes()),
        };
        self.session_memory(&compute, &optimizer, self.work_bytes())
    }

    /// The buffers as ggml's allocator plans them for this session's graphs (each backend's
    /// compute buffer the largest its training and validation graphs need, the optimizer's
    /// likewise), allocating nothing.
    pub fn planned_memory(&mut self) -> Result<SessionMemory, TrainError> {
        let work_bytes = self.work_bytes();
        let [train, eval, norm, opt] = [&self.train_graph, &self.eval_graph, &self.norm_graph, &self.opt_graph];
        let (compute, optimizer) = match &mut self.runner {
            Runner::Cpu { backend, .. } => {
                let largest = |graphs: [&Graph<'_>; 2]| -> Result<Vec<usize>, TrainError> {
                    let mut sizes = Vec::new();
                    for g in graphs {
                        sizes.push(Allocator::new(backend)?.measure(g));
                    }
                    Ok(vec![sizes.into_iter().max().unwrap_or(0)])
                };
                (largest([train, eval])?, largest([norm, opt])?)
            }
            Runner::Devices { compute, optimizer } => {
                let largest =
                    |scheduler: &mut Scheduler<'c, 'c>, graphs: [&Graph<'c>; 2]| -> Result<Vec<usize>, TrainError> {
                        let mut sizes: Vec<usize> = Vec::new();
                        for g in graphs {
                            let measured = scheduler.measure(g)?;
                            sizes.resize(measured.len(), 0);
                            for (size, m) in sizes.iter_mut().zip(measured) {
                                *size = (*size).max(m);
                            }
                        }
                        Ok(sizes)
                    };
                (largest(compute, [train, eval])?, largest(optimizer, [norm, opt])?)
            }
        };
        Ok(self.session_memory(&compute, &optimizer, work_bytes))
    }

    /// The session's memory from each backend's compute and optimizer buffers (in
    /// [`SessionMemory::backends`] order).
    fn session_memory(&self, compute: &[usize], optimizer: &[usize], work_bytes: usize) -> SessionMemory {
        let backends: Vec<BackendMemory> = self
            .backend_devices
            .iter()
            .enumerate()
            .map(|(i, &device)| BackendMemory {
                device,
                compute_bytes: compute.get(i).copied().unwrap_or(0),
                optimizer_bytes: optimizer.get(i).copied().unwrap_or(0),
                param_bytes: self.param_bytes.get(i).copied().unwrap_or(0),
            })
            .collect();
        SessionMemory {
            compute_bytes: compute.iter().sum(),
            optimizer_bytes: optimizer.iter().sum(),
            param_bytes: self.param_bytes.iter().sum(),
            work_bytes,
            backends,
        }
    }

    fn work_bytes(&self) -> usize {
        let Runner::Cpu { backend, .. } = &self.runner else { return 0 };
        [&self.train_graph, &self.eval_graph, &self.norm_graph, &self.opt_graph]
            .into_iter()
            .map(|g| backend.work_bytes(g))
            .max()
            .unwrap_or(0)
    }
}
