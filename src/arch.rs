//! The model architectures gguftune converts, trains and runs, by llama.cpp's names, with the
//! Hugging Face classes that map onto them and the projections LoRA adapts in each.

use crate::names::TensorKind;

/// An architecture, as llama.cpp's `general.architecture` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// Llama 1/2/3, Code Llama, Vicuna, TinyLlama, SmolLM, and Mistral (which llama.cpp loads as llama).
    Llama,
    /// Qwen2 (q/k/v biases, NEOX-style rope).
    Qwen2,
    /// Falcon 7B/40B/180B and Falcon2 11B: one fused QKV projection, layer norms with biases,
    /// attention and MLP in parallel on the same input, a GELU MLP, NEOX-style rope.
    Falcon,
    /// GPT-NeoX: Pythia, Dolly v2. A fused QKV projection with biases (heads interleaved in the
    /// checkpoint), layer norms, a GELU MLP with biases, rope on part of each head, attention
    /// and MLP in parallel or one after the other.
    GptNeox,
}

impl Arch {
    /// Every architecture.
    pub const ALL: [Arch; 4] = [Arch::Llama, Arch::Qwen2, Arch::Falcon, Arch::GptNeox];

    /// The Hugging Face model classes (`architectures[0]` of config.json) each maps from.
    pub const HF_CLASSES: &'static [(&'static str, Arch)] = &[
        ("LlamaForCausalLM", Arch::Llama),
        ("MistralForCausalLM", Arch::Llama),
        ("Qwen2ForCausalLM", Arch::Qwen2),
        ("FalconForCausalLM", Arch::Falcon),
        // The name of Falcon's remote code before transformers had the model.
        ("RWForCausalLM", Arch::Falcon),
        ("GPTNeoXForCausalLM", Arch::GptNeox),
    ];

    /// llama.cpp's `general.architecture`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Falcon => "falcon",
            Arch::GptNeox => "gptneox",
        }
    }

    /// The architecture llama.cpp names `name`, if gguftune supports it.
    pub fn from_name(name: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The projections of each layer, which LoRA can adapt.
    pub fn projections(self) -> &'static [TensorKind] {
        use TensorKind::*;
        match self {
            Arch::Llama | Arch::Qwen2 => &[AttnQ, AttnK, AttnV, AttnOutput, FfnGate, FfnUp, FfnDown],
            Arch::Falcon | Arch::GptNeox => &[AttnQkv, AttnOutput, FfnUp, FfnDown],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_every_class_maps_to_a_known_arch() {
        for arch in Arch::ALL {
            assert_eq!(Arch::from_name(arch.name()), Some(arch));
            assert!(!arch.projections().is_empty());
        }
        assert_eq!(Arch::from_name("mamba"), None);
        for arch in Arch::ALL {
            assert!(Arch::HF_CLASSES.iter().any(|(_, a)| *a == arch), "{arch:?} has no Hugging Face class");
        }
    }
}
