//! The loss and the LoRA gradients of one sequence on any ggml device: the training graph's
//! forward and backward pass placed by ggml's backend scheduler, the device's backend first and
//! the CPU's last (issue 19, step 3). The optimizer step still runs on the CPU ([`super::train`]).

use crate::ggml::{self, Backend, Context, Device, DeviceType, Graph, ParamBuffer, Placement, Runtime, Scheduler};
use crate::gguf::GgmlType;
use crate::model::{Batch, Inputs, LoraConfig, LoraParams, LossInputs, Model, ModelError, WeightsPlacement};

use super::{Activations, TrainError};

/// The loss and the LoRA gradients computed on a device, and where the nodes ran.
#[derive(Clone, Debug)]
pub struct DeviceGrads {
    /// The masked loss of the sequence.
    pub loss: f32,
    /// The gradient of each LoRA tensor, in [`LoraParams::pairs`] order, `A` then `B`.
    pub grads: Vec<Vec<f32>>,
    /// How ggml's scheduler placed the forward and backward graph.
    pub placement: Placement,
}

/// As [`super::loss_and_grads`], with the graph placed by ggml's backend scheduler on `device`
/// first and this machine's CPU (`threads` threads) last: the frozen weights copied once to the
/// device (the mapped file on a CPU device), the LoRA tensors and their gradient accumulators in
/// a buffer of the device.
///
/// The graph is ggml's own backward pass, without the CPU's rewrites of
/// [`Graph::with_fast_backward`] (custom ops no other backend can run): on a CPU device this is
/// the same computation as on any device, slower than [`super::loss_and_grads`]'s. Refused on a
/// device other than the CPU, with [`TrainError::NotOnDevice`]: a model whose backward pass has a
/// custom op (the GELU of Falcon and GPT-NeoX), and [`Activations::Recompute`].
#[allow(clippy::too_many_arguments)]
pub fn loss_and_grads_on(
    device: &Device,
    model: &Model,
    cfg: &LoraConfig,
    values: &[Vec<f32>],
    tokens: &[i32],
    targets: &[Option<i32>],
    activations: Activations,
    threads: usize,
) -> Result<DeviceGrads, TrainError> {
    let rt = Runtime::get();
    let h = model.hparams();
    model.check_tokens(tokens)?;
    if tokens.is_empty() || targets.len() != tokens.len() {
        return Err(ModelError::Inconsistent {
            what: format!("{} tokens with {} targets (one per token, at least one)", tokens.len(), targets.len()),
        }
        .into());
    }
    let on_cpu = device.kind() == DeviceType::Cpu;
    if !on_cpu && activations == Activations::Recompute {
        return Err(TrainError::NotOnDevice { what: "recomputing activations".into(), device: device.name() });
    }
    let cpu = Backend::cpu(rt, threads)?;
    let on_device =
        if on_cpu { None } else { Some(Backend::from_device(rt, device, threads).map_err(ModelError::from)?) };
    let (backends, weights_at) = match &on_device {
        Some(backend) => (vec![backend, &cpu], WeightsPlacement::OnDevice(backend)),
        None => (vec![&cpu], WeightsPlacement::Mapped),
    };
    let n_tensors = 2 * crate::model::lora_layout(h, cfg)?.len();
    let param_ctx = Context::new(rt, 2 * n_tensors + 8, 0)?;
    let lora = LoraParams::new(&param_ctx, h, cfg)?;
    let loss_grad = param_ctx.new_tensor(GgmlType::F32, &[1])?;
    let params = ParamBuffer::alloc(&param_ctx, backends[0])?;
    let accs = lora.grad_accs();
    if values.len() != accs.len() {
        return Err(ModelError::Inconsistent {
            what: format!("{} LoRA tensors, {} value arrays", accs.len(), values.len()),
        }
        .into());
    }
    for ((param, grad), v) in accs.iter().zip(values) {
        params.set_f32(*param, v)?;
        params.fill_zero(*grad)?;
    }
    params.set_f32(loss_grad, &[1.0])?;

    let graph_size = model.graph_size();
    // Room for the graph with gradients and its recomputation rewrite (twice the size each).
    model.with_weights(6, weights_at, |ctx, weights| {
        let inputs = Inputs::new(ctx, h, tokens.len() as u64, 1)?;
        let loss_inputs = LossInputs::new(ctx, h.n_vocab, tokens.len() as u64)?;
        let training = crate::model::masked_loss(ctx, h, weights, &inputs, &loss_inputs, Some(&lora))?;
        let mut graph = Graph::with_grads(ctx, graph_size)?;
        graph.build_forward_expand(training.loss)?;
        let mut grad_accs = accs.clone();
        grad_accs.push((training.loss, loss_grad));
        graph.build_backward_expand(ctx, &grad_accs)?;
        let graph = match activations {
            Activations::Keep => graph,
            Activations::Recompute => graph.with_recomputation(ctx, &training.layer_inputs, 2 * graph_size)?,
        };
        let mut scheduler = Scheduler::new(&backends, 2 * graph_size)?;
        let mut scheduled = scheduler.alloc_graph(&graph).map_err(|e| match e {
            ggml::Error::CustomOpOffCpu { node } => TrainError::NotOnDevice {
                what: format!("{}'s backward pass (its custom op '{node}' runs only on the CPU)", h.arch.name()),
                device: device.name(),
            },
            e => e.into(),
        })?;
        let batch = Batch::single(tokens, targets);
        inputs.set(scheduled.tensors(), &batch)?;
        loss_inputs.set(scheduled.tensors(), &batch)?;
        scheduled.compute()?;
        let loss = scheduled.tensors().get_f32(training.loss)?.first().copied().unwrap_or(f32::NAN);
        let grads = accs.iter().map(|(_, grad)| params.get_f32(*grad)).collect::<Result<_, _>>()?;
        Ok(DeviceGrads { loss, grads, placement: scheduled.placement() })
    })
}
