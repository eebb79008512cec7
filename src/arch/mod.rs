//! The model families gguftune converts, trains and runs: one module per family, each owning
//! what is specific to it (its Hugging Face classes and config.json, its tensors' names and
//! shapes, row reorders, metadata keys, how its layers bind and compute, the projections LoRA
//! adapts), behind the [`Family`] trait; [`FAMILIES`] is the registry. Shared code (the graph's
//! skeleton and pieces, the loss, the converter's streaming) asks the family through [`Arch`].
//!
//! Adding a family is one file implementing [`Family`] and one line in [`FAMILIES`]
//! (docs/layout.md, "Adding an architecture").

mod falcon;
mod gemma;
mod gptneox;
mod llama;
mod phi3;
mod qwen2;
mod qwen3;

use std::fmt;

use crate::convert::{Heads, RowOrder};
use crate::ggml::Tensor;
use crate::gguf::{Gguf, MetaValue};
use crate::hf::{ConfigError, ConfigReader, ModelConfig};
use crate::model::{Binder, HParams, LayerGraph, LayerWeights, ModelError};
use crate::names::{TensorKind, TensorName};

/// Every family gguftune supports, in the order messages list them.
pub const FAMILIES: &[&dyn Family] = &[
    &llama::Llama,
    &qwen2::Qwen2,
    &qwen3::Qwen3,
    &gemma::GEMMA2,
    &gemma::GEMMA3,
    &phi3::Phi3,
    &falcon::Falcon,
    &gptneox::GptNeox,
];

/// What one model family knows about itself. The provided methods give the Llama layout's
/// answers; a family overrides what differs.
pub trait Family: Sync {
    /// llama.cpp's `general.architecture` (`llama`, `qwen3`, ...), also the prefix of the
    /// family's own GGUF metadata keys.
    fn name(&self) -> &'static str;

    /// The Hugging Face model classes (`architectures[0]` of config.json) that convert to this
    /// family, each with the `model_type` that names it in a config without `architectures`.
    fn hf_classes(&self) -> &'static [(&'static str, &'static str)];

    /// Resolves a config.json of class `hf_architecture`, refusing by key what llama.cpp's graph
    /// of this family does not run.
    fn config(&self, r: &ConfigReader<'_>, hf_architecture: String) -> Result<ModelConfig, ConfigError>;

    /// The prefixes of per-layer and of other tensor names in checkpoints
    /// (`model.layers.`, `model.`).
    fn hf_prefixes(&self) -> (&'static str, &'static str) {
        ("model.layers.", "model.")
    }

    /// The Hugging Face names of tensors of `kind` (after the prefix); the first of several is
    /// the one written back. Empty when the family has no such tensor.
    fn hf_names(&self, kind: TensorKind) -> &'static [&'static str] {
        llama::hf_names(kind)
    }

    /// Whether llama.cpp's converter leaves the checkpoint's tensor `name` out (Gemma's
    /// `lm_head.weight`, which some quantizers store beside the tied embeddings; the vision tower
    /// of Gemma 3's multimodal checkpoints).
    fn drops_hf_tensor(&self, _name: &str) -> bool {
        false
    }

    /// A prefix some checkpoints of the family put before every name of the language model
    /// (Gemma 3's multimodal checkpoints: `language_model.`), removed before [`Family::hf_names`]
    /// are looked up.
    fn hf_wrapper(&self) -> Option<&'static str> {
        None
    }

    /// A value llama.cpp's converter adds to every element of the tensor `name` (Gemma's RMS norm
    /// weights, which the checkpoint stores as `w` and llama.cpp multiplies by as `1 + w`).
    fn stored_offset(&self, _name: &TensorName) -> f32 {
        0.0
    }

    /// The tensors of one layer of a checkpoint of `c`: kind and suffix (`weight`, `bias`).
    fn layer_tensors(&self, c: &ModelConfig) -> Vec<(TensorKind, &'static str)>;

    /// Whether a checkpoint must hold `lm_head` when its embeddings are not tied (Falcon's
    /// llama.cpp graph reads the token embeddings in its place when it is absent).
    fn requires_output(&self) -> bool {
        true
    }

    /// The tensors whose rows llama.cpp's converter reorders (see [`Family::row_order`]).
    fn reordered_rows(&self) -> &'static [TensorKind] {
        &[]
    }

    /// How the rows of the checkpoint's tensor `kind` are reordered into the GGUF, for a model
    /// with `heads` (also how an adapter's `lora_B` rows follow, in PEFT import and export).
    fn row_order(&self, _heads: &Heads, _kind: TensorKind) -> RowOrder {
        RowOrder::AsIs
    }

    /// Metadata keys of this family beyond the ones every family writes.
    fn metadata(&self, _c: &ModelConfig, _kv: &mut Vec<(String, MetaValue)>) {}

    /// Whether the layers normalise with layer norms (weight and bias) rather than RMS norms.
    fn layer_norms(&self) -> bool {
        false
    }

    /// Whether the rope rotates the two halves of each head (NEOX style) rather than adjacent
    /// pairs; llama.cpp's converter then keeps the checkpoint's Q and K rows as they are.
    fn neox_rope(&self) -> bool {
        true
    }

    /// Whether the gated MLP's gate and up projections are one fused `ffn_up` of `2 × n_ff` rows,
    /// the gate's first (llama.cpp's `LLM_FFN_SWIGLU` without a gate tensor).
    fn fused_gate_up(&self) -> bool {
        false
    }

    /// Keys of the family's GGUF namespace beyond the ones every family reads: the ones its
    /// [`Family::hparams`] reads, and the ones llama.cpp reads and then ignores for it. Any other
    /// key there is refused (unless at a neutral value), since it changes llama.cpp's math.
    fn own_keys(&self) -> &'static [&'static str] {
        &[]
    }

    /// Reads the family's own hyper-parameters (soft-capping, sliding windows, scales) from the
    /// GGUF's metadata into `h`, which holds the shared ones.
    fn hparams(&self, _g: &Gguf<'_>, _h: &mut HParams) -> Result<(), ModelError> {
        Ok(())
    }

    /// Whether attention and the MLP read the same layer input, from the GGUF's metadata.
    fn parallel_residual(&self, _g: &Gguf<'_>) -> bool {
        false
    }

    /// The projections of each layer, which LoRA can adapt.
    fn projections(&self) -> &'static [TensorKind];

    /// The Hugging Face module names of the family's adapters, for messages.
    fn peft_modules(&self) -> &'static str;

    /// Smaller `--targets` lists `plan` suggests when a run does not fit, largest first.
    fn fewer_targets(&self) -> &'static [&'static str];

    /// Binds one layer's weights (the binder knows which layer); every tensor the file holds
    /// must be bound by some family method, or the model is refused.
    fn bind_layer<'c>(&self, b: &Binder<'_, 'c>) -> Result<LayerWeights<'c>, ModelError>;

    /// One layer's graph: the residual stream `x` leaving the layer, from the one entering it.
    fn layer<'c>(&self, g: &LayerGraph<'_, 'c>, l: &LayerWeights<'c>, x: Tensor<'c>) -> Result<Tensor<'c>, ModelError>;
}

/// A model family, as a cheap handle: compares, prints and hashes by its llama.cpp name.
#[derive(Clone, Copy)]
pub struct Arch(&'static dyn Family);

impl PartialEq for Arch {
    fn eq(&self, other: &Arch) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Arch {}

impl fmt::Debug for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Arch {
    /// Every family of the registry.
    pub fn all() -> impl Iterator<Item = Arch> {
        FAMILIES.iter().map(|f| Arch(*f))
    }

    /// The family llama.cpp names `name`, if gguftune supports it.
    pub fn from_name(name: &str) -> Option<Arch> {
        Arch::all().find(|a| a.name() == name)
    }

    /// The family of the Hugging Face class `class`.
    pub fn from_hf_class(class: &str) -> Option<Arch> {
        Arch::all().find(|a| a.0.hf_classes().iter().any(|(c, _)| *c == class))
    }

    /// The Hugging Face class a config's `model_type` names.
    pub fn hf_class_of_model_type(model_type: &str) -> Option<&'static str> {
        FAMILIES.iter().flat_map(|f| f.hf_classes()).find(|(_, t)| *t == model_type).map(|(c, _)| *c)
    }

    /// Every supported Hugging Face class, for messages.
    pub fn hf_class_list() -> String {
        FAMILIES.iter().flat_map(|f| f.hf_classes()).map(|(c, _)| *c).collect::<Vec<_>>().join(", ")
    }

    /// Every supported family's llama.cpp name, for messages.
    pub fn name_list() -> String {
        Arch::all().map(|a| a.name()).collect::<Vec<_>>().join(", ")
    }

    /// What the family knows.
    pub fn family(self) -> &'static dyn Family {
        self.0
    }

    /// llama.cpp's `general.architecture`.
    pub fn name(self) -> &'static str {
        self.0.name()
    }

    /// See [`Family::projections`].
    pub fn projections(self) -> &'static [TensorKind] {
        self.0.projections()
    }

    /// See [`Family::layer_norms`].
    pub fn layer_norms(self) -> bool {
        self.0.layer_norms()
    }

    /// See [`Family::neox_rope`].
    pub fn neox_rope(self) -> bool {
        self.0.neox_rope()
    }

    /// See [`Family::fused_gate_up`].
    pub fn fused_gate_up(self) -> bool {
        self.0.fused_gate_up()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_every_family_has_classes_and_projections() {
        for arch in Arch::all() {
            assert_eq!(Arch::from_name(arch.name()), Some(arch));
            assert!(!arch.projections().is_empty());
            assert!(!arch.family().hf_classes().is_empty(), "{arch} has no Hugging Face class");
            for (class, model_type) in arch.family().hf_classes() {
                assert_eq!(Arch::from_hf_class(class), Some(arch));
                assert!(Arch::hf_class_of_model_type(model_type).is_some_and(|c| Arch::from_hf_class(c) == Some(arch)));
            }
        }
        assert_eq!(Arch::from_name("mamba"), None);
        let names: Vec<_> = Arch::all().map(Arch::name).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(names.len(), unique.len(), "a family registered twice: {names:?}");
    }
}
