//! GGUF tensor names, in one table (mirrors `LLM_TENSOR_NAMES` in llama.cpp's src/llama-arch.cpp),
//! and their mapping to and from each family's Hugging Face names.

use std::fmt;

use crate::arch::Arch;

/// What a tensor is, independent of its layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorKind {
    TokenEmbd,
    OutputNorm,
    Output,
    AttnNorm,
    /// Falcon-40B's second layer norm, the one attention reads.
    AttnNorm2,
    AttnQ,
    AttnK,
    AttnV,
    /// Falcon's fused query, key and value projection.
    AttnQkv,
    AttnOutput,
    /// Qwen3's RMS norm of each query head, before the rope.
    AttnQNorm,
    /// Qwen3's RMS norm of each key head.
    AttnKNorm,
    /// Gemma's RMS norm of attention's output, before the residual sum.
    AttnPostNorm,
    FfnNorm,
    FfnGate,
    FfnUp,
    FfnDown,
    /// Gemma's RMS norm of the MLP's output, before the residual sum.
    FfnPostNorm,
    /// Llama 3's rope frequency factors (`rope_freqs.weight`): one per rotary pair, computed from
    /// config.json's `rope_scaling` by the converter; no Hugging Face tensor holds them.
    RopeFreqs,
    /// Phi-3's long-context rope factors (`rope_factors_long.weight`), from config.json's
    /// `long_factor`; used beyond the original context.
    RopeFactorsLong,
    /// Phi-3's short-context rope factors (`rope_factors_short.weight`), from `short_factor`.
    RopeFactorsShort,
}

/// One row of the name table: what the tensor is, its GGUF base name, and whether it exists per
/// layer. Each family knows its tensors' Hugging Face names ([`crate::arch::Family::hf_names`]).
struct NameRow {
    kind: TensorKind,
    gguf: &'static str,
    per_layer: bool,
}

const fn row(kind: TensorKind, gguf: &'static str, per_layer: bool) -> NameRow {
    NameRow { kind, gguf, per_layer }
}

const TABLE: &[NameRow] = &[
    row(TensorKind::TokenEmbd, "token_embd", false),
    row(TensorKind::OutputNorm, "output_norm", false),
    row(TensorKind::Output, "output", false),
    row(TensorKind::AttnNorm, "attn_norm", true),
    row(TensorKind::AttnNorm2, "attn_norm_2", true),
    row(TensorKind::AttnQ, "attn_q", true),
    row(TensorKind::AttnK, "attn_k", true),
    row(TensorKind::AttnV, "attn_v", true),
    row(TensorKind::AttnQkv, "attn_qkv", true),
    row(TensorKind::AttnOutput, "attn_output", true),
    row(TensorKind::AttnQNorm, "attn_q_norm", true),
    row(TensorKind::AttnKNorm, "attn_k_norm", true),
    row(TensorKind::AttnPostNorm, "post_attention_norm", true),
    row(TensorKind::FfnNorm, "ffn_norm", true),
    row(TensorKind::FfnGate, "ffn_gate", true),
    row(TensorKind::FfnUp, "ffn_up", true),
    row(TensorKind::FfnDown, "ffn_down", true),
    row(TensorKind::FfnPostNorm, "post_ffw_norm", true),
    row(TensorKind::RopeFreqs, "rope_freqs", false),
    row(TensorKind::RopeFactorsLong, "rope_factors_long", false),
    row(TensorKind::RopeFactorsShort, "rope_factors_short", false),
];

impl TensorKind {
    /// The tensors of one layer, in the order llama.cpp's converter writes them.
    pub const PER_LAYER: [TensorKind; 15] = [
        TensorKind::AttnNorm,
        TensorKind::AttnNorm2,
        TensorKind::AttnQ,
        TensorKind::AttnK,
        TensorKind::AttnV,
        TensorKind::AttnQkv,
        TensorKind::AttnOutput,
        TensorKind::AttnQNorm,
        TensorKind::AttnKNorm,
        TensorKind::AttnPostNorm,
        TensorKind::FfnNorm,
        TensorKind::FfnGate,
        TensorKind::FfnUp,
        TensorKind::FfnDown,
        TensorKind::FfnPostNorm,
    ];

    fn row(self) -> &'static NameRow {
        TABLE.iter().find(|r| r.kind == self).expect("TABLE has one row per TensorKind")
    }

    /// The GGUF base name (`attn_q`).
    pub fn gguf_base(self) -> &'static str {
        self.row().gguf
    }

    /// Whether the tensor exists once per layer.
    pub fn per_layer(self) -> bool {
        self.row().per_layer
    }
}

/// A GGUF tensor name: kind, layer and suffix (`blk.3.attn_q.weight`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorName {
    pub kind: TensorKind,
    pub layer: Option<u32>,
    /// `weight` or `bias`.
    pub suffix: String,
}

impl fmt::Display for TensorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.layer {
            Some(l) => write!(f, "blk.{l}.{}.{}", self.kind.gguf_base(), self.suffix),
            None => write!(f, "{}.{}", self.kind.gguf_base(), self.suffix),
        }
    }
}

impl TensorName {
    /// Maps a Hugging Face name of an `arch` checkpoint (`model.layers.3.self_attn.q_proj.weight`,
    /// `transformer.h.3.self_attention.dense.weight`, `lm_head.weight`) to its GGUF name; `None`
    /// for names that have no GGUF counterpart (`rotary_emb.inv_freq`).
    pub fn from_hf(hf: &str, arch: Arch) -> Option<TensorName> {
        let (stem, suffix) = hf.rsplit_once('.')?;
        if suffix != "weight" && suffix != "bias" {
            return None;
        }
        let family = arch.family();
        let stem = family.hf_wrapper().and_then(|w| stem.strip_prefix(w)).unwrap_or(stem);
        let (layers, top) = family.hf_prefixes();
        let (layer, rest) = if let Some(rest) = stem.strip_prefix(layers) {
            let (n, rest) = rest.split_once('.')?;
            (Some(n.parse::<u32>().ok()?), rest)
        } else if let Some(rest) = stem.strip_prefix(top) {
            (None, rest)
        } else {
            (None, stem)
        };
        let kind =
            TABLE.iter().find(|r| r.per_layer == layer.is_some() && family.hf_names(r.kind).contains(&rest))?.kind;
        Some(TensorName { kind, layer, suffix: suffix.to_owned() })
    }
}

impl TensorName {
    /// Parses a GGUF name (`blk.3.attn_q.weight`, `output.weight`); `None` for names outside the
    /// table.
    pub fn from_gguf(name: &str) -> Option<TensorName> {
        let (stem, suffix) = name.rsplit_once('.')?;
        let (layer, base) = match stem.strip_prefix("blk.") {
            Some(rest) => {
                let (n, base) = rest.split_once('.')?;
                (Some(n.parse::<u32>().ok()?), base)
            }
            None => (None, stem),
        };
        let kind = TABLE.iter().find(|r| r.per_layer == layer.is_some() && r.gguf == base)?.kind;
        Some(TensorName { kind, layer, suffix: suffix.to_owned() })
    }

    /// The Hugging Face name in an `arch` checkpoint (`model.layers.3.self_attn.q_proj.weight`,
    /// `transformer.h.3.self_attention.query_key_value.weight`, `lm_head.weight`), the inverse of
    /// [`TensorName::from_hf`]; `None` for tensors the family does not have.
    pub fn to_hf(&self, arch: Arch) -> Option<String> {
        let family = arch.family();
        let hf = family.hf_names(self.kind).first()?;
        let (layers, top) = family.hf_prefixes();
        Some(match (self.layer, self.kind) {
            (Some(l), _) => format!("{layers}{l}.{hf}.{}", self.suffix),
            (None, TensorKind::Output) => format!("{hf}.{}", self.suffix),
            (None, _) => format!("{top}{hf}.{}", self.suffix),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arch(name: &str) -> Arch {
        Arch::from_name(name).unwrap()
    }

    #[test]
    fn maps_hugging_face_names() {
        let cases = [
            ("model.embed_tokens.weight", "token_embd.weight"),
            ("model.norm.weight", "output_norm.weight"),
            ("lm_head.weight", "output.weight"),
            ("model.layers.0.input_layernorm.weight", "blk.0.attn_norm.weight"),
            ("model.layers.12.self_attn.q_proj.bias", "blk.12.attn_q.bias"),
            ("model.layers.3.self_attn.o_proj.weight", "blk.3.attn_output.weight"),
            ("model.layers.3.post_attention_layernorm.weight", "blk.3.ffn_norm.weight"),
            ("model.layers.7.mlp.down_proj.weight", "blk.7.ffn_down.weight"),
        ];
        for (hf, gguf) in cases {
            assert_eq!(TensorName::from_hf(hf, arch("llama")).map(|n| n.to_string()).as_deref(), Some(gguf), "{hf}");
            let back = TensorName::from_gguf(gguf).and_then(|n| n.to_hf(arch("llama")));
            assert_eq!(back.as_deref(), Some(hf), "{gguf}");
        }
        assert_eq!(TensorName::from_gguf("blk.x.attn_q.weight"), None);
        assert_eq!(TensorName::from_gguf("blk.0.output.weight"), None);
        for ignored in
            ["model.layers.0.self_attn.rotary_emb.inv_freq", "model.layers.x.mlp.up_proj.weight", "model.norm"]
        {
            assert_eq!(TensorName::from_hf(ignored, arch("llama")), None, "{ignored}");
        }
    }

    #[test]
    fn maps_falcon_names() {
        let cases = [
            ("transformer.word_embeddings.weight", "token_embd.weight"),
            ("transformer.ln_f.bias", "output_norm.bias"),
            ("lm_head.weight", "output.weight"),
            ("transformer.h.0.input_layernorm.bias", "blk.0.attn_norm.bias"),
            ("transformer.h.5.ln_mlp.weight", "blk.5.attn_norm.weight"),
            ("transformer.h.5.ln_attn.weight", "blk.5.attn_norm_2.weight"),
            ("transformer.h.1.self_attention.query_key_value.weight", "blk.1.attn_qkv.weight"),
            ("transformer.h.1.self_attention.dense.weight", "blk.1.attn_output.weight"),
            ("transformer.h.2.mlp.dense_h_to_4h.weight", "blk.2.ffn_up.weight"),
            ("transformer.h.2.mlp.dense_4h_to_h.weight", "blk.2.ffn_down.weight"),
        ];
        for (hf, gguf) in cases {
            assert_eq!(TensorName::from_hf(hf, arch("falcon")).map(|n| n.to_string()).as_deref(), Some(gguf), "{hf}");
            if !hf.contains("ln_mlp") {
                let back = TensorName::from_gguf(gguf).and_then(|n| n.to_hf(arch("falcon")));
                assert_eq!(back.as_deref(), Some(hf), "{gguf}");
            }
        }
        // Each family's names are its own.
        assert_eq!(TensorName::from_hf("model.layers.0.self_attn.q_proj.weight", arch("falcon")), None);
        assert_eq!(TensorName::from_hf("transformer.h.0.self_attention.dense.weight", arch("llama")), None);
        assert_eq!(TensorName::from_gguf("blk.0.attn_qkv.weight").and_then(|n| n.to_hf(arch("llama"))), None);
        assert_eq!(TensorName::from_gguf("blk.0.attn_q.weight").and_then(|n| n.to_hf(arch("falcon"))), None);
    }

    #[test]
    fn maps_gpt_neox_names() {
        let cases = [
            ("gpt_neox.embed_in.weight", "token_embd.weight"),
            ("gpt_neox.final_layer_norm.bias", "output_norm.bias"),
            ("embed_out.weight", "output.weight"),
            ("gpt_neox.layers.0.input_layernorm.weight", "blk.0.attn_norm.weight"),
            ("gpt_neox.layers.1.attention.query_key_value.bias", "blk.1.attn_qkv.bias"),
            ("gpt_neox.layers.1.attention.dense.weight", "blk.1.attn_output.weight"),
            ("gpt_neox.layers.2.post_attention_layernorm.bias", "blk.2.ffn_norm.bias"),
            ("gpt_neox.layers.2.mlp.dense_h_to_4h.bias", "blk.2.ffn_up.bias"),
            ("gpt_neox.layers.2.mlp.dense_4h_to_h.weight", "blk.2.ffn_down.weight"),
        ];
        for (hf, gguf) in cases {
            assert_eq!(TensorName::from_hf(hf, arch("gptneox")).map(|n| n.to_string()).as_deref(), Some(gguf), "{hf}");
            let back = TensorName::from_gguf(gguf).and_then(|n| n.to_hf(arch("gptneox")));
            assert_eq!(back.as_deref(), Some(hf), "{gguf}");
        }
        // The buffers old checkpoints store have no GGUF counterpart.
        assert_eq!(TensorName::from_hf("gpt_neox.layers.0.attention.masked_bias", arch("gptneox")), None);
        assert_eq!(TensorName::from_hf("gpt_neox.layers.0.attention.bias", arch("gptneox")), None);
    }

    #[test]
    fn maps_phi3_names() {
        let cases = [
            ("model.embed_tokens.weight", "token_embd.weight"),
            ("lm_head.weight", "output.weight"),
            ("model.layers.0.input_layernorm.weight", "blk.0.attn_norm.weight"),
            ("model.layers.1.self_attn.qkv_proj.weight", "blk.1.attn_qkv.weight"),
            ("model.layers.1.self_attn.o_proj.weight", "blk.1.attn_output.weight"),
            ("model.layers.2.post_attention_layernorm.weight", "blk.2.ffn_norm.weight"),
            ("model.layers.2.mlp.gate_up_proj.weight", "blk.2.ffn_up.weight"),
            ("model.layers.2.mlp.down_proj.weight", "blk.2.ffn_down.weight"),
            ("model.norm.weight", "output_norm.weight"),
        ];
        for (hf, gguf) in cases {
            assert_eq!(TensorName::from_hf(hf, arch("phi3")).map(|n| n.to_string()).as_deref(), Some(gguf), "{hf}");
            let back = TensorName::from_gguf(gguf).and_then(|n| n.to_hf(arch("phi3")));
            assert_eq!(back.as_deref(), Some(hf), "{gguf}");
        }
        // Separate projections are not Phi-3's, nor its fused ones the Llama family's.
        assert_eq!(TensorName::from_hf("model.layers.0.self_attn.q_proj.weight", arch("phi3")), None);
        assert_eq!(TensorName::from_hf("model.layers.0.mlp.up_proj.weight", arch("phi3")), None);
        assert_eq!(TensorName::from_hf("model.layers.0.mlp.gate_up_proj.weight", arch("llama")), None);
    }

    #[test]
    fn every_kind_has_one_row() {
        for row in TABLE {
            assert_eq!(row.kind.row().gguf, row.gguf);
            assert_eq!(row.per_layer, TensorKind::PER_LAYER.contains(&row.kind), "{}", row.gguf);
        }
    }
}
