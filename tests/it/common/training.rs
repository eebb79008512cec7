//! LoRA training through the library for tests that need a trained adapter: the loop of
//! tests/it/train.rs, with its step losses collected.

use std::ops::ControlFlow;

use gguftune::adapter::{pairs_from_values, LoraTensorPair};
use gguftune::model::{lora_layout, LoraConfig, Model};
use gguftune::train::{
    init_lora, pack_examples, train, Activations, AdamWConfig, BatchShape, EvalReport, Example, OptimizerState,
    Schedule, StepReport, TrainConfig, TrainData, TrainError, TrainObserver,
};

/// Trains `cfg` on every example (unpacked, `n_seq` per step, constant learning rate `lr`, no
/// clipping) for `epochs`, from seed 42; returns the adapter's values and each step's loss.
///
/// On one thread: the result does not depend on the thread count, and ggml's workers spin while
/// they wait for each other, so on a machine whose cores are busy (tests run in parallel, next
/// to other builds) two threads take many times longer than one (seen: 76 s against 3 s).
pub fn train_lora(
    model: &Model,
    cfg: &LoraConfig,
    examples: &[Example],
    n_seq: usize,
    epochs: usize,
    lr: f32,
) -> (Vec<Vec<f32>>, Vec<f32>) {
    let config = TrainConfig {
        lora: cfg.clone(),
        adamw: AdamWConfig { lr, ..AdamWConfig::default() },
        shape: BatchShape { seq_len: examples.iter().map(|e| e.tokens.len()).max().unwrap(), n_seq },
        activations: Activations::Keep,
        grad_accum: 1,
        epochs,
        max_steps: None,
        schedule: Schedule::Constant,
        warmup_steps: 0,
        max_grad_norm: 0.0,
        seed: 1,
        eval_every: None,
        checkpoint_every: None,
        threads: 1,
        devices: gguftune::model::Devices::cpu(),
    };
    let all: Vec<usize> = (0..examples.len()).collect();
    let data = TrainData { examples, train: pack_examples(examples, &all, 1 << 16, false), validation: vec![] };
    let mut state = OptimizerState::new(init_lora(model, cfg, 42).unwrap());
    let mut losses = Losses(Vec::new());
    train(model, &config, &data, &mut state, &mut losses).unwrap();
    (state.params, losses.0)
}

/// Collects the loss of every step.
struct Losses(Vec<f32>);

impl TrainObserver for Losses {
    fn step(&mut self, r: &StepReport) -> Result<ControlFlow<()>, TrainError> {
        self.0.push(r.loss);
        Ok(ControlFlow::Continue(()))
    }
    fn validation(&mut self, _: &EvalReport) -> Result<(), TrainError> {
        Ok(())
    }
    fn checkpoint(&mut self, _: &OptimizerState) -> Result<(), TrainError> {
        Ok(())
    }
}

/// An adapter of `cfg`'s shape on `model` with every value of A and B uniform in ±`scale` from
/// `seed` (B not zero, as PEFT starts it, so that the adapter changes the model).
pub fn random_lora_pairs(model: &Model, cfg: &LoraConfig, seed: u64, scale: f32) -> Vec<LoraTensorPair> {
    let slots = lora_layout(model.hparams(), cfg).unwrap();
    let mut rng = super::fixtures::Rng::new(seed);
    let values: Vec<Vec<f32>> = slots
        .iter()
        .flat_map(|s| [s.n_in * cfg.rank, cfg.rank * s.n_out])
        .map(|n| (0..n).map(|_| rng.uniform(scale)).collect())
        .collect();
    pairs_from_values(&slots, cfg.rank, &values)
}
