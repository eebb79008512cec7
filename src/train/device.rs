//! The loss and the LoRA gradients of one sequence on any ggml devices: one micro-batch of a
//! training session on them ([`super::with_session_on`]), with where its nodes ran.

use crate::ggml::Placement;
use crate::model::{Batch, Devices, LoraConfig, Model};

use super::{with_session_on, Activations, BatchShape, OptimizerState, TrainError};

/// The loss and the LoRA gradients computed on devices, and where the nodes ran.
#[derive(Clone, Debug)]
pub struct DeviceGrads {
    /// The masked loss of the sequence.
    pub loss: f32,
    /// The gradient of each LoRA tensor, in [`crate::model::LoraParams::pairs`] order, `A` then
    /// `B`.
    pub grads: Vec<Vec<f32>>,
    /// How ggml's scheduler placed the forward and backward graph (`None` on the CPU alone).
    pub placement: Option<Placement>,
}

/// As [`super::loss_and_grads`], on `devices` (the layers shared among them; this machine's CPU,
/// with `threads` threads, runs what no device does).
#[allow(clippy::too_many_arguments)]
pub fn loss_and_grads_on(
    devices: &Devices,
    model: &Model,
    cfg: &LoraConfig,
    values: &[Vec<f32>],
    tokens: &[i32],
    targets: &[Option<i32>],
    activations: Activations,
    threads: usize,
) -> Result<DeviceGrads, TrainError> {
    model.check_tokens(tokens)?;
    let shape = BatchShape { seq_len: tokens.len(), n_seq: 1 };
    with_session_on(devices, model, cfg, shape, activations, threads, |session| {
        session.set_state(&OptimizerState::new(values.to_vec()))?;
        let (loss, _) = session.accumulate(&Batch::single(tokens, targets), true)?;
        Ok(DeviceGrads { loss, grads: session.grads()?, placement: session.placement().cloned() })
    })
}
