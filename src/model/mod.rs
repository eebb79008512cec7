//! Models as gguftune runs them: hyper-parameters from GGUF metadata, the weights bound straight
//! to the memory-mapped file (or copied once to a device: [`WeightsPlacement`]), and the forward
//! graph built from ggml ops (the graph training will differentiate, so it uses only ops with a
//! backward pass: no flash attention).

mod batch;
mod graph;
mod hparams;
mod layer;
mod lora;
mod ops;
mod split;
mod weights;

use std::path::Path;

pub use crate::ggml::Devices;
pub use batch::{Batch, BatchOverflow};
pub use graph::{loss_chunk, masked_loss, Inputs, LossInputs, TrainingLoss};
pub use hparams::{HParams, SlidingWindow};
pub use layer::{Activation, AdapterSlot, GraphPurpose, LayerGraph};
pub use lora::{lora_layout, LoraConfig, LoraPair, LoraParams, LoraSlot, TARGETS};
pub use split::{holder, weight_bytes, DeviceBackends, LayerSplit};
pub use weights::{Binder, LayerWeights, Weights};

use crate::ggml::{self, Allocator, Backend, Context, Graph, MappedBuffer, ParamBuffer, Placement, Runtime, Scheduler};
use crate::gguf::{GgufFile, GgufFileError, GgufPlan};

/// Why a model cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    #[error(transparent)]
    File(#[from] GgufFileError),
    #[error(transparent)]
    Ggml(#[from] ggml::Error),
    #[error(transparent)]
    Device(#[from] ggml::DeviceError),
    #[error("architecture '{arch}' is not supported (supported: {})", supported_architectures())]
    UnsupportedArch { arch: String },
    #[error("missing metadata keys: {}", keys.join(", "))]
    MissingKeys { keys: Vec<String> },
    #[error("missing tensor '{name}'")]
    MissingTensor { name: String },
    #[error("tensor '{name}' is not part of gguftune's {arch} graph, and ignoring it would train a different model than llama.cpp runs")]
    UnusedTensor { name: String, arch: &'static str },
    #[error("tensor '{name}' has ne {found:?}, expected {expected:?}")]
    TensorShape { name: String, expected: Vec<u64>, found: Vec<u64> },
    #[error("inconsistent hyper-parameters: {what}")]
    Inconsistent { what: String },
    #[error("metadata key '{key}' = {value} changes the model's math, and gguftune's graph does not implement it yet (llama.cpp does: training without it would tune a different model)")]
    UnsupportedKey { key: String, value: String },
    #[error("not supported yet: {what}")]
    Unsupported { what: String },
    #[error("token {token} is outside the vocabulary of {n_vocab}")]
    TokenOutOfRange { token: i32, n_vocab: u64 },
}

/// llama.cpp's names of the architectures gguftune runs, for messages.
fn supported_architectures() -> String {
    crate::arch::Arch::name_list()
}

/// Where a model's weights live while its graphs run.
#[derive(Clone, Copy, Debug)]
pub enum WeightsPlacement<'b> {
    /// The memory-mapped file itself, as a CPU buffer: no copy, pages read on first use.
    Mapped,
    /// Each layer's weights on its backend ([`Weights::place`]): a device's in one buffer of it,
    /// marked as weights and filled once from the file in the stored types, tensor by tensor; a
    /// CPU's share in the mapped file.
    Split(&'b LayerSplit<'b>),
    /// As `Split`, with each device's buffer allocated but not filled (nothing read from the
    /// file or sent to a device): for placing and sizing graphs, as `plan` does, not running
    /// them.
    Unfilled(&'b LayerSplit<'b>),
}

/// Logits computed on a device, and where the graph's nodes ran.
#[derive(Clone, Debug)]
pub struct DeviceLogits {
    /// `tokens.len()` rows of `n_vocab`.
    pub logits: Vec<Vec<f32>>,
    /// How ggml's scheduler placed the forward graph.
    pub placement: Placement,
}

/// A GGUF model opened for running.
#[derive(Debug)]
pub struct Model {
    file: GgufFile,
    hparams: HParams,
}

impl Model {
    /// Opens `path` and reads its hyper-parameters.
    pub fn open(path: &Path) -> Result<Model, ModelError> {
        let file = GgufFile::open(path)?;
        let hparams = HParams::from_gguf(&file.gguf()?)?;
        Ok(Model { file, hparams })
    }

    /// The model `plan` describes, before its file exists: the weights read as zeros and cost no
    /// memory (see [`GgufFile::planned`]). Its graphs can be built and measured, not run usefully.
    pub fn planned(plan: &GgufPlan) -> Result<Model, ModelError> {
        let file = GgufFile::planned(plan, "(planned model)")?;
        let hparams = HParams::from_gguf(&file.gguf()?)?;
        Ok(Model { file, hparams })
    }

    /// The GGUF index of the model's file.
    pub fn gguf(&self) -> Result<crate::gguf::Gguf<'_>, ModelError> {
        Ok(self.file.gguf()?)
    }

    /// Size of the model's file in bytes.
    pub fn file_bytes(&self) -> u64 {
        self.file.bytes().len() as u64
    }

    /// The hyper-parameters.
    pub fn hparams(&self) -> &HParams {
        &self.hparams
    }

    /// Runs `tokens` (one sequence from position 0) through the forward graph on the CPU and
    /// returns the logits of every position (`tokens.len()` rows of `n_vocab`).
    pub fn logits(&self, tokens: &[i32], threads: usize) -> Result<Vec<Vec<f32>>, ModelError> {
        self.logits_with_lora(tokens, None, threads)
    }

    /// As [`Model::logits`], with a LoRA adapter (`cfg` and the data of each pair's `A` and `B`,
    /// in [`LoraParams::pairs`] order) applied.
    pub fn logits_with_lora(
        &self,
        tokens: &[i32],
        lora: Option<(&LoraConfig, &[Vec<f32>])>,
        threads: usize,
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let rt = Runtime::get();
        let h = &self.hparams;
        self.check_tokens(tokens)?;
        let backend = Backend::cpu(rt, threads)?;
        let on_cpu = LayerSplit::new(&Devices::cpu(), vec![&backend], usize::try_from(h.n_layer).unwrap_or(0))?;
        let param_ctx = Context::new(rt, self.max_lora_tensors(lora.map(|l| l.0)), 0)?;
        let adapter = match lora {
            Some((cfg, values)) => Some(bind_lora(&param_ctx, &on_cpu, h, cfg, values)?),
            None => None,
        };
        let flat = self.with_bound_weights(1, |ctx, weights| {
            let inputs = Inputs::new(ctx, h, tokens.len() as u64, 1)?;
            let logits = graph::forward(ctx, h, weights, &inputs, adapter.as_ref().map(|a| &a.0))?;
            let mut graph = Graph::new(ctx, self.graph_size())?;
            graph.build_forward_expand(logits)?;
            let mut allocator = Allocator::new(&backend)?;
            let allocated = allocator.alloc_graph(&graph)?;
            inputs.set(&allocated, &Batch::single(tokens, &vec![None; tokens.len()]))?;
            backend.compute(&allocated)?;
            Ok::<_, ModelError>(allocated.get_f32(logits)?)
        })?;
        let n_vocab = usize::try_from(h.n_vocab).unwrap_or(0);
        Ok(flat.chunks_exact(n_vocab).map(<[f32]>::to_vec).collect())
    }

    /// As [`Model::logits_with_lora`], with the forward graph placed by ggml's backend scheduler
    /// on `devices` (the CPU last) and the layers shared among them ([`LayerSplit`]): each
    /// device's weights copied once into a buffer of its own, a CPU's share read from the mapped
    /// file. Also says where the nodes ran.
    pub fn logits_on(
        &self,
        devices: &Devices,
        tokens: &[i32],
        lora: Option<(&LoraConfig, &[Vec<f32>])>,
        threads: usize,
    ) -> Result<DeviceLogits, ModelError> {
        let rt = Runtime::get();
        let h = &self.hparams;
        self.check_tokens(tokens)?;
        let backends = DeviceBackends::start(devices, threads)?;
        let split = LayerSplit::new(devices, backends.per_device(), usize::try_from(h.n_layer).unwrap_or(0))?;
        let param_ctx = Context::new(rt, self.max_lora_tensors(lora.map(|l| l.0)), 0)?;
        let adapter = match lora {
            Some((cfg, values)) => Some(bind_lora(&param_ctx, &split, h, cfg, values)?),
            None => None,
        };
        let (flat, placement) = self.with_weights(1, WeightsPlacement::Split(&split), |ctx, weights| {
            let inputs = Inputs::new(ctx, h, tokens.len() as u64, 1)?;
            let logits = graph::forward(ctx, h, weights, &inputs, adapter.as_ref().map(|a| &a.0))?;
            let mut graph = Graph::new(ctx, self.graph_size())?;
            graph.build_forward_expand(logits)?;
            let mut scheduler = Scheduler::new(&backends.for_scheduler(), self.graph_size())?;
            let mut scheduled = scheduler.alloc_graph(&graph)?;
            inputs.set(scheduled.tensors(), &Batch::single(tokens, &vec![None; tokens.len()]))?;
            scheduled.compute()?;
            Ok::<_, ModelError>((scheduled.tensors().get_f32(logits)?, scheduled.placement()))
        })?;
        let n_vocab = usize::try_from(h.n_vocab).unwrap_or(0);
        Ok(DeviceLogits { logits: flat.chunks_exact(n_vocab).map(<[f32]>::to_vec).collect(), placement })
    }

    /// Bytes of the compute buffer of one forward pass over `seq_len` tokens (logits of every
    /// position), as ggml's allocator sizes it, allocating nothing.
    pub fn measure_forward(&self, seq_len: usize, threads: usize) -> Result<usize, ModelError> {
        let backend = Backend::cpu(Runtime::get(), threads)?;
        self.with_bound_weights(1, |ctx, weights| {
            let inputs = Inputs::new(ctx, &self.hparams, seq_len as u64, 1)?;
            let logits = graph::forward(ctx, &self.hparams, weights, &inputs, None)?;
            let mut graph = Graph::new(ctx, self.graph_size())?;
            graph.build_forward_expand(logits)?;
            Ok::<_, ModelError>(Allocator::new(&backend)?.measure(&graph))
        })
    }

    /// Binds the weights to the mapped file into a new graph context with room for `graphs`
    /// graphs of this model (see [`Model::graph_size`]) and runs `f` with both, the file's
    /// mapping bound meanwhile.
    pub(crate) fn with_bound_weights<R, E: From<ModelError>>(
        &self,
        graphs: usize,
        f: impl for<'c> FnOnce(&'c Context, &Weights<'c>) -> Result<R, E>,
    ) -> Result<R, E> {
        self.with_weights(graphs, WeightsPlacement::Mapped, f)
    }

    /// As [`Model::with_bound_weights`], with the weights where `placement` says; a device's
    /// buffer lives until `f` returns.
    pub(crate) fn with_weights<R, E: From<ModelError>>(
        &self,
        graphs: usize,
        placement: WeightsPlacement<'_>,
        f: impl for<'c> FnOnce(&'c Context, &Weights<'c>) -> Result<R, E>,
    ) -> Result<R, E> {
        let rt = Runtime::get();
        let gguf = self.file.gguf().map_err(ModelError::from)?;
        let graph_size = self.graph_size();
        let ctx =
            Context::new(rt, gguf.tensors.len() + 4 * graph_size, graphs * graph_size).map_err(ModelError::from)?;
        match placement {
            WeightsPlacement::Mapped => {
                let buffer = MappedBuffer::new(rt, self.file.bytes()).map_err(ModelError::from)?;
                let weights = Weights::bind(&ctx, Some(&buffer), &gguf, &self.hparams)?;
                f(&ctx, &weights)
            }
            WeightsPlacement::Split(split) | WeightsPlacement::Unfilled(split) => {
                // The context holds the weights alone until `f` builds graphs in it.
                let weights = Weights::bind(&ctx, None, &gguf, &self.hparams)?;
                let mapped = match (0..split.backends.len()).any(|i| split.is_cpu(i)) {
                    true => Some(MappedBuffer::new(rt, self.file.bytes()).map_err(ModelError::from)?),
                    false => None,
                };
                let file = matches!(placement, WeightsPlacement::Split(_)).then(|| self.file.bytes());
                let _buffers = weights.place(split, mapped.as_ref(), file)?;
                ggml::init_views(&ctx).map_err(ModelError::from)?;
                f(&ctx, &weights)
            }
        }
    }

    /// Checks that every token is inside the vocabulary.
    pub(crate) fn check_tokens(&self, tokens: &[i32]) -> Result<(), ModelError> {
        let n_vocab = self.hparams.n_vocab;
        match tokens.iter().find(|&&t| t < 0 || t as u64 >= n_vocab) {
            Some(&bad) => Err(ModelError::TokenOutOfRange { token: bad, n_vocab }),
            None => Ok(()),
        }
    }

    /// Nodes a forward and backward graph of this model needs, with room to spare.
    pub(crate) fn graph_size(&self) -> usize {
        1024 + 512 * usize::try_from(self.hparams.n_layer).unwrap_or(usize::MAX / 1024)
    }

    fn max_lora_tensors(&self, cfg: Option<&LoraConfig>) -> usize {
        let n_layer = usize::try_from(self.hparams.n_layer).unwrap_or(0);
        4 * cfg.map_or(0, |c| c.targets.len()) * n_layer + 8
    }
}

/// Creates the LoRA tensors of `cfg` in `ctx`, gives them memory on `backend` and fills `A` and
/// `B` with `values` (in [`LoraParams::pairs`] order, `A` then `B`).
fn bind_lora<'c>(
    ctx: &'c Context,
    split: &LayerSplit<'_>,
    h: &HParams,
    cfg: &LoraConfig,
    values: &[Vec<f32>],
) -> Result<(LoraParams<'c>, Vec<(usize, ParamBuffer<'c>)>), ModelError> {
    let lora = LoraParams::new(ctx, h, cfg)?;
    let tensors: Vec<_> = lora.pairs.iter().flat_map(|p| [p.a, p.b]).collect();
    if values.len() != tensors.len() {
        return Err(ModelError::Inconsistent {
            what: format!("{} LoRA tensors, {} value arrays", tensors.len(), values.len()),
        });
    }
    let placed: Vec<_> =
        lora.pairs.iter().flat_map(|p| [p.a, p.b, p.grad_a, p.grad_b].map(|t| (Some(p.layer), t))).collect();
    let buffers = split.place_params(&placed)?;
    for (t, v) in tensors.iter().zip(values) {
        ParamBuffer::write_f32(*t, v)?;
    }
    Ok((lora, buffers))
}
