//! The model architectures gguftune converts, trains and runs, by llama.cpp's names, with the
//! Hugging Face classes that map onto them and the projections LoRA adapts in each.

use crate::names::TensorKind;

/// An architecture, as llama.cpp's `general.architecture` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// Llama 1/2/3, Code Llama, Vicuna, TinyLlama, SmolLM, and Mistral (which llama.cpp loads as llama).
    Llama,
    /// Qwen2 and Qwen2.5 (q/k/v biases, NEOX-style rope).
    Qwen2,
    /// Qwen3 (dense): Qwen2's layout without biases, with an RMS norm over each query and key
    /// head before the rope (`attn_q_norm`, `attn_k_norm`) and an explicit head size.
    Qwen3,
    /// Falcon 7B/40B/180B and Falcon2 11B: one fused QKV projection, layer norms with biases,
    /// attention and MLP in parallel on the same input, a GELU MLP, NEOX-style rope.
    Falcon,
    /// GPT-NeoX: Pythia, Dolly v2. A fused QKV projection with biases (heads interleaved in the
    /// checkpoint), layer norms, a GELU MLP with biases, rope on part of each head, attention
    /// and MLP in parallel or one after the other.
    GptNeox,
    /// Phi-3 (mini 4k) and Phi-4-mini: the Llama layout with one fused QKV projection (rows q; k; v
    /// as in the checkpoint), one fused gate and up projection (`ffn_up`, rows gate; up), a
    /// NEOX-style rope (Phi-4-mini's on three quarters of each head). The long-context variants'
    /// `rope_factors_long`/`rope_factors_short` are not supported.
    Phi3,
}

impl Arch {
    /// Every architecture.
    pub const ALL: [Arch; 6] = [Arch::Llama, Arch::Qwen2, Arch::Qwen3, Arch::Falcon, Arch::GptNeox, Arch::Phi3];

    /// The Hugging Face model classes (`architectures[0]` of config.json) each maps from.
    pub const HF_CLASSES: &'static [(&'static str, Arch)] = &[
        ("LlamaForCausalLM", Arch::Llama),
        ("MistralForCausalLM", Arch::Llama),
        ("Qwen2ForCausalLM", Arch::Qwen2),
        ("Qwen3ForCausalLM", Arch::Qwen3),
        ("FalconForCausalLM", Arch::Falcon),
        // The name of Falcon's remote code before transformers had the model.
        ("RWForCausalLM", Arch::Falcon),
        ("GPTNeoXForCausalLM", Arch::GptNeox),
        ("Phi3ForCausalLM", Arch::Phi3),
    ];

    /// llama.cpp's `general.architecture`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Falcon => "falcon",
            Arch::GptNeox => "gptneox",
            Arch::Phi3 => "phi3",
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
            Arch::Llama | Arch::Qwen2 | Arch::Qwen3 => &[AttnQ, AttnK, AttnV, AttnOutput, FfnGate, FfnUp, FfnDown],
            Arch::Falcon | Arch::GptNeox | Arch::Phi3 => &[AttnQkv, AttnOutput, FfnUp, FfnDown],
        }
    }

    /// Whether query, key and value come from one fused projection (`attn_qkv`).
    pub fn fused_qkv(self) -> bool {
        matches!(self, Arch::Falcon | Arch::GptNeox | Arch::Phi3)
    }

    /// Whether the gated MLP's gate and up projections are one fused `ffn_up` of `2 × n_ff` rows,
    /// the gate's first (llama.cpp's `LLM_FFN_SWIGLU` without a gate tensor).
    pub fn fused_gate_up(self) -> bool {
        matches!(self, Arch::Phi3)
    }

    /// Whether the layers normalise with layer norms (weight and bias) rather than RMS norms.
    pub fn layer_norms(self) -> bool {
        matches!(self, Arch::Falcon | Arch::GptNeox)
    }

    /// Whether the rope rotates the two halves of each head (NEOX style) rather than adjacent
    /// pairs; llama.cpp's converter then keeps the checkpoint's Q and K rows as they are.
    pub fn neox_rope(self) -> bool {
        !matches!(self, Arch::Llama)
    }

    /// Whether each layer has an RMS norm over every query and key head before the rope.
    pub fn qk_norms(self) -> bool {
        matches!(self, Arch::Qwen3)
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
