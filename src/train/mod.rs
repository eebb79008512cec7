//! LoRA training: initialisation, the order of the data, and the loop of optimizer steps.
//!
//! The ggml side ([`Session`], made by [`with_session`]) is built once for a fixed micro-batch
//! shape: the forward graph, its backward pass, and AdamW as ggml ops on the device. This module
//! decides what goes into each micro-batch (sequences of one or several packed examples, shuffled
//! per epoch from the seed), schedules the learning rate, clips gradients, validates and reports.
//! Everything is a function of the configuration and the optimizer state, so a run resumed from a
//! checkpoint continues exactly as the uninterrupted run.

mod batches;
pub mod checkpoint;
mod device;
mod examples;
mod schedule;
mod session;

use std::ops::ControlFlow;

use crate::model::{lora_layout, Devices, LoraConfig, Model, ModelError};

pub use batches::{pack_examples, split_validation, Sequence};
pub use device::{loss_and_grads_on, DeviceGrads};
pub use examples::{build_example, build_examples, BuiltExample, ExampleError, ExampleStats};
pub use schedule::Schedule;
pub use session::{
    measure_session, measure_session_on, with_session, with_session_on, Activations, BackendMemory, BatchShape,
    OptimizerState, Session, SessionMemory,
};

/// One tokenized training example: the tokens, and for each position the token it must predict
/// (`None` where no loss is taken: prompt positions and the last one).
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub tokens: Vec<i32>,
    pub targets: Vec<Option<i32>>,
}

impl Example {
    /// An example whose loss covers only `completion`, predicted after `prompt`.
    pub fn from_prompt_completion(prompt: &[i32], completion: &[i32]) -> Example {
        let tokens: Vec<i32> = prompt.iter().chain(completion).copied().collect();
        let targets =
            (0..tokens.len()).map(|i| (i + 1 >= prompt.len() && i + 1 < tokens.len()).then(|| tokens[i + 1])).collect();
        Example { tokens, targets }
    }
}

/// Why training stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Ggml(#[from] crate::ggml::Error),
    #[error("training diverged at step {step}: the {what} is {value}")]
    Diverged { step: u64, what: &'static str, value: f32 },
    #[error("no training data: {what}")]
    NoData { what: String },
    #[error("{what} does not run on device '{device}' yet, only on the CPU")]
    NotOnDevice { what: String, device: String },
    #[error(transparent)]
    Observer(Box<dyn std::error::Error + Send + Sync>),
}

/// AdamW hyper-parameters (PyTorch's defaults except the learning rate).
#[derive(Clone, Debug, PartialEq)]
pub struct AdamWConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { lr: 2e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// A deterministic stream of pseudo-random numbers (splitmix64): the same seed gives the same
/// adapter initialisation and data order on every machine.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A stream from `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[-bound, bound)`.
    pub fn uniform(&mut self, bound: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        (unit * 2.0 - 1.0) * bound
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// PEFT's initialisation: `A` uniform in ±1/sqrt(n_in) (kaiming-uniform with a = sqrt(5)), `B`
/// zero, so training starts from the base model's behaviour. Deterministic in `seed`.
pub fn init_lora(model: &Model, cfg: &LoraConfig, seed: u64) -> Result<Vec<Vec<f32>>, ModelError> {
    let mut rng = SplitMix64::new(seed);
    let mut values = Vec::new();
    for slot in lora_layout(model.hparams(), cfg)? {
        let bound = 1.0 / (slot.n_in as f32).sqrt();
        values.push((0..slot.n_in * cfg.rank).map(|_| rng.uniform(bound)).collect());
        values.push(vec![0.0; (cfg.rank * slot.n_out) as usize]);
    }
    Ok(values)
}

/// What to train and how (resolved: every count is final).
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    pub lora: LoraConfig,
    pub adamw: AdamWConfig,
    /// Every micro-batch: `n_seq` sequences of `seq_len` tokens.
    pub shape: BatchShape,
    /// Whether the backward pass keeps or recomputes the layers' activations.
    pub activations: Activations,
    /// Micro-batches per optimizer step (gradients averaged over them).
    pub grad_accum: usize,
    /// Passes over the training sequences.
    pub epochs: usize,
    /// Stop after this many optimizer steps (before the epochs are done).
    pub max_steps: Option<u64>,
    /// Learning-rate schedule after warmup.
    pub schedule: Schedule,
    /// Warmup steps (linear increase to `adamw.lr`).
    pub warmup_steps: u64,
    /// Clip the global gradient norm to this (0: no clipping).
    pub max_grad_norm: f32,
    /// Seed of the data order (each epoch shuffles the training sequences).
    pub seed: u64,
    /// Validate every this many steps (also at the end); `None`: at the end of every epoch.
    pub eval_every: Option<u64>,
    /// Save a checkpoint every this many steps.
    pub checkpoint_every: Option<u64>,
    /// CPU threads.
    pub threads: usize,
    /// The devices, sharing the layers (empty: this machine's CPU).
    pub devices: Devices,
}

impl TrainConfig {
    /// Optimizer steps per epoch over `n_sequences` training sequences.
    pub fn steps_per_epoch(&self, n_sequences: usize) -> u64 {
        n_sequences.div_ceil((self.shape.n_seq * self.grad_accum).max(1)) as u64
    }

    /// Optimizer steps of the whole run.
    pub fn total_steps(&self, n_sequences: usize) -> u64 {
        let all = self.steps_per_epoch(n_sequences) * self.epochs as u64;
        self.max_steps.map_or(all, |m| m.min(all))
    }
}

/// The examples to train on and to validate with, grouped into sequences of at most
/// `shape.seq_len` tokens.
#[derive(Clone, Debug)]
pub struct TrainData<'a> {
    pub examples: &'a [Example],
    pub train: Vec<Sequence>,
    pub validation: Vec<Sequence>,
}

/// What one optimizer step saw.
#[derive(Clone, Debug, PartialEq)]
pub struct StepReport {
    /// Steps done, this one included (1-based).
    pub step: u64,
    pub total_steps: u64,
    /// 0-based epoch of this step.
    pub epoch: u64,
    /// Mean loss of the step's micro-batches (each the mean over its positions with loss).
    pub loss: f32,
    /// Learning rate used.
    pub lr: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    /// Tokens of examples (not padding) in the step.
    pub tokens: usize,
}

/// A validation pass.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalReport {
    /// Steps done when it ran.
    pub step: u64,
    /// Mean loss over every position with loss in the validation set.
    pub loss: f32,
    /// `exp(loss)`.
    pub perplexity: f32,
    /// Positions with loss.
    pub tokens: usize,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainOutcome {
    /// The last validation, if any ran.
    pub last_eval: Option<EvalReport>,
    /// ggml's buffers as the run allocated them.
    pub memory: SessionMemory,
    /// Where ggml's scheduler placed the training graph's nodes (`None` on the CPU alone).
    pub placement: Option<crate::ggml::Placement>,
    /// Where it placed the AdamW step's nodes (`None` on the CPU alone).
    pub optimizer_placement: Option<crate::ggml::Placement>,
}

/// Receives progress; each call may stop the run (`ControlFlow::Break`) or fail it.
pub trait TrainObserver {
    /// After every optimizer step.
    fn step(&mut self, report: &StepReport) -> Result<ControlFlow<()>, TrainError>;
    /// After every validation pass.
    fn validation(&mut self, report: &EvalReport) -> Result<(), TrainError>;
    /// When a checkpoint is due: `state` holds the state after `state.steps` steps.
    fn checkpoint(&mut self, state: &OptimizerState) -> Result<(), TrainError>;
}

/// Trains from `state` (a fresh [`OptimizerState::new`] or one read from a checkpoint) until the
/// configured number of steps, leaving the final state in `state`.
pub fn train(
    model: &Model,
    cfg: &TrainConfig,
    data: &TrainData<'_>,
    state: &mut OptimizerState,
    observer: &mut dyn TrainObserver,
) -> Result<TrainOutcome, TrainError> {
    if data.train.is_empty() {
        return Err(TrainError::NoData { what: "no training sequences".into() });
    }
    let per_epoch = cfg.steps_per_epoch(data.train.len());
    let total = cfg.total_steps(data.train.len());
    let per_step = cfg.shape.n_seq * cfg.grad_accum.max(1);
    with_session_on(&cfg.devices, model, &cfg.lora, cfg.shape, cfg.activations, cfg.threads, |session| {
        session.set_state(state)?;
        let mut last_eval = None;
        let mut order: Option<(u64, Vec<usize>)> = None;
        while state.steps < total {
            let step = state.steps;
            let epoch = step / per_epoch;
            if order.as_ref().is_none_or(|(e, _)| *e != epoch) {
                order = Some((epoch, batches::epoch_order(data.train.len(), cfg.seed, epoch)));
            }
            let Some((_, seq_order)) = order.as_ref() else { break };
            let first = ((step % per_epoch) as usize) * per_step;
            let chosen = &seq_order[first..(first + per_step).min(seq_order.len())];
            let (mut loss_sum, mut micro, mut tokens) = (0.0f32, 0usize, 0usize);
            for group in chosen.chunks(cfg.shape.n_seq) {
                let batch = batches::make_batch(cfg.shape, data.examples, group.iter().map(|&i| &data.train[i]))?;
                let (loss, _) = session.accumulate(&batch, micro == 0)?;
                loss_sum += loss;
                micro += 1;
                tokens += batch.n_tokens();
            }
            let loss = loss_sum / micro.max(1) as f32;
            if !loss.is_finite() {
                return Err(TrainError::Diverged { step: step + 1, what: "loss", value: loss });
            }
            let mut grad_scale = 1.0 / micro.max(1) as f32;
            let grad_norm = session.grad_norm(grad_scale)?;
            if !grad_norm.is_finite() {
                return Err(TrainError::Diverged { step: step + 1, what: "gradient norm", value: grad_norm });
            }
            if cfg.max_grad_norm > 0.0 && grad_norm > cfg.max_grad_norm {
                grad_scale *= cfg.max_grad_norm / (grad_norm + 1e-6);
            }
            let lr = cfg.schedule.lr(cfg.adamw.lr, step, total, cfg.warmup_steps);
            session.adamw_step(&cfg.adamw, lr, step + 1, grad_scale)?;
            state.steps = step + 1;
            let report = StepReport { step: step + 1, total_steps: total, epoch, loss, lr, grad_norm, tokens };
            let flow = observer.step(&report)?;
            let done = state.steps == total || flow.is_break();
            let eval_due = match cfg.eval_every {
                Some(n) => state.steps % n.max(1) == 0,
                None => state.steps % per_epoch == 0,
            };
            if !data.validation.is_empty() && (eval_due || done) {
                let eval = validate(session, data)?;
                observer.validation(&eval)?;
                last_eval = Some(EvalReport { step: state.steps, ..eval });
            }
            if cfg.checkpoint_every.is_some_and(|n| state.steps % n.max(1) == 0) && !done {
                session.get_state(state)?;
                observer.checkpoint(state)?;
            }
            if flow.is_break() {
                break;
            }
        }
        session.get_state(state)?;
        Ok(TrainOutcome {
            last_eval,
            memory: session.memory(),
            placement: session.placement().cloned(),
            optimizer_placement: session.optimizer_placement().cloned(),
        })
    })
}

/// The loss over every validation sequence, weighted by positions with loss.
fn validate(session: &mut Session<'_>, data: &TrainData<'_>) -> Result<EvalReport, TrainError> {
    let shape = session.shape();
    let (mut weighted, mut count) = (0f64, 0usize);
    for group in data.validation.chunks(shape.n_seq) {
        let batch = batches::make_batch(shape, data.examples, group.iter())?;
        let (loss, n) = session.evaluate(&batch)?;
        weighted += f64::from(loss) * n as f64;
        count += n;
    }
    let loss = (weighted / count.max(1) as f64) as f32;
    Ok(EvalReport { step: 0, loss, perplexity: loss.exp(), tokens: count })
}

/// The masked loss of `tokens` (one sequence) with the LoRA tensors `values`, and its gradient
/// for each of them, from ggml's backward pass (keeping or recomputing `activations`): the
/// computation one training step starts with.
pub fn loss_and_grads(
    model: &Model,
    cfg: &LoraConfig,
    values: &[Vec<f32>],
    tokens: &[i32],
    targets: &[Option<i32>],
    activations: Activations,
    threads: usize,
) -> Result<(f32, Vec<Vec<f32>>), TrainError> {
    let on_cpu = loss_and_grads_on(&Devices::cpu(), model, cfg, values, tokens, targets, activations, threads)?;
    Ok((on_cpu.loss, on_cpu.grads))
}
