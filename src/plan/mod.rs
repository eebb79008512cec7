//! `plan`: will a fine-tuning run fit, and what does its memory go to, before it starts (and
//! before the model is even downloaded).
//!
//! No separate memory model: a plan builds the very training session `finetune` builds
//! ([`crate::train::measure_session`]) on a stand-in of the model's file ([`Model::planned`],
//! zeros that cost no memory) and lets ggml's allocator size its buffers without allocating them.
//! `finetune` runs the same measurement on its real model and prints it beside the measured peak.
//! On devices ([`device_memory`]), the same session placed by ggml's scheduler gives each
//! device's and the host's share.

mod devices;
mod source;

use crate::gguf::{Gguf, GgufPlan, GgufWriteError};
use crate::model::{lora_layout, LoraConfig, Model, ModelError};
use crate::train::{measure_session, Activations, BatchShape, SessionMemory, TrainError};

pub use devices::{device_memory, DeviceMemory, DevicePlan, HOST};
pub use source::{open_source, ModelSource, PlannedModel, SourceKind};

/// Resident memory of a training process besides the buffers planned here: the program and
/// llama.cpp's code, the vocabulary llama.cpp loads to tokenize, the dataset, the heap. Measured
/// as the peak RSS of `finetune` minus the planned buffers on the test and benchmark models
/// (tens of MiB); kept as one constant that the plan prints.
pub const RUNTIME_OVERHEAD_BYTES: u64 = 48 << 20;

/// Why a plan cannot be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Write(#[from] GgufWriteError),
    #[error(transparent)]
    Convert(#[from] crate::convert::ConvertError),
    #[error(transparent)]
    Quantize(#[from] crate::quant::QuantizeError),
    #[error(transparent)]
    File(#[from] crate::gguf::GgufFileError),
    #[error(transparent)]
    Hf(#[from] crate::hf::HfError),
    #[error("{}: not a GGUF file, a Hugging Face folder (with config.json) or a config.json", path.display())]
    UnknownSource { path: std::path::PathBuf },
}

/// The settings of a LoRA run that decide its memory.
#[derive(Clone, Debug, PartialEq)]
pub struct RunShape {
    pub lora: LoraConfig,
    /// Micro-batch: `n_seq` rows of `seq_len` tokens.
    pub shape: BatchShape,
    /// Whether the backward pass keeps or recomputes the layers' activations.
    pub activations: Activations,
    /// CPU threads (the backend's scratch buffer grows with them).
    pub threads: usize,
}

/// The peak memory of a LoRA training run, line by line.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryPlan {
    /// The model file's pages resident during training: every weight is read each step, except
    /// untied token embeddings, of which only the rows of the tokens in a batch are read.
    pub weights_bytes: u64,
    /// Parameters of the base model.
    pub base_params: u64,
    /// Trainable LoRA parameters.
    pub lora_params: u64,
    /// ggml's buffers as its allocator sizes them for this run's graphs.
    pub session: SessionMemory,
    /// The part of the compute buffer that grows with each layer (activations kept for the
    /// backward pass and their gradients): the difference between the 2-layer and the 1-layer
    /// model's compute buffers.
    pub activations_per_layer: u64,
    /// Layers.
    pub n_layer: u64,
    /// The f32 logits of one loss chunk (`n_vocab × chunk × 4`, [`crate::model::loss_chunk`]
    /// positions); the loss and its backward pass hold a few of these in the compute buffer, and
    /// all of them when activations are kept.
    pub logits_bytes: u64,
    /// Positions per loss chunk.
    pub loss_chunk: u64,
    /// The LoRA tensors and both AdamW moments copied on the host (the resumable state).
    pub host_state_bytes: u64,
    /// [`RUNTIME_OVERHEAD_BYTES`].
    pub runtime_bytes: u64,
}

impl MemoryPlan {
    /// The predicted peak resident memory (what `/usr/bin/time -f %M` reports), file-backed
    /// pages of the mapped model included.
    pub fn peak_bytes(&self) -> u64 {
        self.weights_bytes + self.session.total() as u64 + self.host_state_bytes + self.runtime_bytes
    }

    /// The LoRA parameters with their gradients and both AdamW moments, in bytes.
    pub fn lora_state_bytes(&self) -> u64 {
        4 * 4 * self.lora_params
    }
}

/// Plans the memory of training LoRA `run` on `model`, whose file is `file_bytes` long.
pub fn training_memory(model: &Model, file_bytes: u64, run: &RunShape) -> Result<MemoryPlan, PlanError> {
    let h = model.hparams();
    let session = measure_session(model, &run.lora, run.shape, run.activations, run.threads)?;
    let lora_params: u64 = lora_layout(h, &run.lora)?.iter().map(|s| run.lora.rank * (s.n_in + s.n_out)).sum();
    let gguf = model.gguf()?;
    let base_params = gguf.tensors.iter().map(|t| t.n_elements()).sum();
    let activations_per_layer = if h.n_layer >= 2 {
        let compute = |layers: u64| -> Result<u64, PlanError> {
            let small = Model::planned(&layer_slice(&gguf, layers)?)?;
            Ok(measure_session(&small, &run.lora, run.shape, run.activations, run.threads)?.compute_bytes as u64)
        };
        compute(2)?.saturating_sub(compute(1)?)
    } else {
        session.compute_bytes as u64
    };
    let tokens = (run.shape.seq_len * run.shape.n_seq) as u64;
    let embeddings_read_by_row = match (gguf.tensor("output.weight"), gguf.tensor("token_embd.weight")) {
        (Some(_), Some(embd)) => embd.n_bytes,
        _ => 0,
    };
    Ok(MemoryPlan {
        weights_bytes: file_bytes.saturating_sub(embeddings_read_by_row),
        base_params,
        lora_params,
        session,
        activations_per_layer,
        n_layer: h.n_layer,
        logits_bytes: 4 * h.n_vocab * crate::model::loss_chunk(tokens, h.n_vocab),
        loss_chunk: crate::model::loss_chunk(tokens, h.n_vocab),
        host_state_bytes: 3 * 4 * lora_params,
        runtime_bytes: RUNTIME_OVERHEAD_BYTES,
    })
}

/// The same model cut to its first `layers` layers: the metadata with `block_count` changed and
/// the tensors of later layers left out.
fn layer_slice(g: &Gguf<'_>, layers: u64) -> Result<GgufPlan, PlanError> {
    let arch = g.get_str("general.architecture").unwrap_or("llama");
    let block_count = format!("{arch}.block_count");
    let mut plan = GgufPlan::new();
    for (key, value) in &g.metadata {
        let value = if *key == block_count {
            crate::gguf::MetaValue::U32(u32::try_from(layers).unwrap_or(u32::MAX))
        } else {
            value.to_owned_value()
        };
        plan.add_kv(key, value)?;
    }
    for t in &g.tensors {
        let layer = t.name.strip_prefix("blk.").and_then(|rest| rest.split('.').next()?.parse::<u64>().ok());
        if layer.is_none_or(|l| l < layers) {
            plan.add_tensor(t.name, t.ty, &t.ne)?;
        }
    }
    Ok(plan)
}
