//! LoRA training: initialisation, AdamW, and the loop over examples.
//!
//! This first loop rebuilds the ggml graph for each example and applies AdamW on the host; the
//! gradients come from ggml's backward pass (`Model::lora_loss_and_grads`). A static graph with
//! ggml's own optimizer step replaces both for speed without changing the results.

mod examples;
mod schedule;

use crate::model::{lora_layout, LoraConfig, Model, ModelError};

pub use examples::{build_examples, ExampleError, ExampleStats};
pub use schedule::{clip_grad_norm, Schedule};

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

/// AdamW state: first and second moments per parameter, and the step count.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamW {
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    t: u32,
}

impl AdamW {
    /// Zero state for parameters shaped like `params`.
    pub fn new(params: &[Vec<f32>]) -> AdamW {
        let zeros = || params.iter().map(|p| vec![0.0; p.len()]).collect();
        AdamW { m: zeros(), v: zeros(), t: 0 }
    }

    /// One AdamW step (decoupled weight decay, bias-corrected moments) with learning rate `lr`.
    pub fn step(&mut self, cfg: &AdamWConfig, lr: f32, params: &mut [Vec<f32>], grads: &[Vec<f32>]) {
        self.t += 1;
        let bc1 = 1.0 - cfg.beta1.powi(self.t as i32);
        let bc2 = 1.0 - cfg.beta2.powi(self.t as i32);
        for (((p, g), m), v) in params.iter_mut().zip(grads).zip(&mut self.m).zip(&mut self.v) {
            for i in 0..p.len() {
                m[i] = cfg.beta1 * m[i] + (1.0 - cfg.beta1) * g[i];
                v[i] = cfg.beta2 * v[i] + (1.0 - cfg.beta2) * g[i] * g[i];
                let update = (m[i] / bc1) / ((v[i] / bc2).sqrt() + cfg.eps);
                p[i] -= lr * (update + cfg.weight_decay * p[i]);
            }
        }
    }
}

/// PEFT's initialisation: `A` uniform in ±1/sqrt(n_in) (kaiming-uniform with a = sqrt(5)), `B`
/// zero, so training starts from the base model's behaviour. Deterministic in `seed`.
pub fn init_lora(model: &Model, cfg: &LoraConfig, seed: u64) -> Result<Vec<Vec<f32>>, ModelError> {
    let mut state = seed;
    let mut uniform = move |bound: f32| {
        // splitmix64
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let unit = (z >> 40) as f32 / (1u64 << 24) as f32;
        (unit * 2.0 - 1.0) * bound
    };
    let mut values = Vec::new();
    for slot in lora_layout(model.hparams(), cfg)? {
        let bound = 1.0 / (slot.n_in as f32).sqrt();
        values.push((0..slot.n_in * cfg.rank).map(|_| uniform(bound)).collect());
        values.push(vec![0.0; (cfg.rank * slot.n_out) as usize]);
    }
    Ok(values)
}

/// What one optimizer step saw.
#[derive(Clone, Debug, PartialEq)]
pub struct StepReport {
    pub step: usize,
    /// Mean loss over the step's examples.
    pub loss: f32,
    /// Learning rate used.
    pub lr: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
}

/// What to train and how.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    pub lora: LoraConfig,
    pub adamw: AdamWConfig,
    /// Optimizer steps.
    pub steps: usize,
    /// Examples per step (gradients averaged over them).
    pub batch: usize,
    /// Learning-rate schedule after warmup.
    pub schedule: Schedule,
    /// Warmup steps (linear increase to `adamw.lr`).
    pub warmup_steps: usize,
    /// Clip the global gradient norm to this (0: no clipping).
    pub max_grad_norm: f32,
    /// CPU threads.
    pub threads: usize,
}

/// Trains `values` (from [`init_lora`]) for `cfg.steps` optimizer steps, each over a batch of
/// `cfg.batch` examples taken in order (cycling), gradients averaged over the batch. Calls
/// `on_step` after every step.
pub fn train_lora(
    model: &Model,
    cfg: &TrainConfig,
    values: &mut [Vec<f32>],
    examples: &[Example],
    on_step: &mut dyn FnMut(&StepReport),
) -> Result<(), ModelError> {
    let (adamw, batch, threads) = (&cfg.adamw, cfg.batch, cfg.threads);
    if examples.is_empty() {
        return Err(ModelError::Inconsistent { what: "no training examples".into() });
    }
    let mut opt = AdamW::new(values);
    let mut next = 0;
    for step in 0..cfg.steps {
        let mut grads: Vec<Vec<f32>> = values.iter().map(|v| vec![0.0; v.len()]).collect();
        let mut loss_sum = 0.0;
        for _ in 0..batch.max(1) {
            let ex = &examples[next % examples.len()];
            next += 1;
            let (loss, g) = model.lora_loss_and_grads(&cfg.lora, values, &ex.tokens, &ex.targets, threads)?;
            loss_sum += loss;
            for (acc, g) in grads.iter_mut().zip(g) {
                acc.iter_mut().zip(g).for_each(|(a, g)| *a += g / batch.max(1) as f32);
            }
        }
        let grad_norm = clip_grad_norm(&mut grads, cfg.max_grad_norm);
        let lr = cfg.schedule.lr(adamw.lr, step, cfg.steps, cfg.warmup_steps);
        opt.step(adamw, lr, values, &grads);
        on_step(&StepReport { step, loss: loss_sum / batch.max(1) as f32, lr, grad_norm });
    }
    Ok(())
}
