//! GGUF tensor names, in one table (mirrors `LLM_TENSOR_NAMES` in llama.cpp's src/llama-arch.cpp),
//! and the Hugging Face names of the Llama family and of Falcon that map onto them.

use std::fmt;

use crate::hf::Arch;

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
    FfnNorm,
    FfnGate,
    FfnUp,
    FfnDown,
}

/// One row of the name table: what the tensor is, its GGUF base name, whether it exists per
/// layer, and its Hugging Face name in the Llama family (after `model.` or `model.layers.N.`) and
/// in Falcon (after `transformer.` or `transformer.h.N.`), where it has one.
struct NameRow {
    kind: TensorKind,
    gguf: &'static str,
    per_layer: bool,
    llama: Option<&'static str>,
    falcon: &'static [&'static str],
}

const fn row(
    kind: TensorKind,
    gguf: &'static str,
    per_layer: bool,
    llama: Option<&'static str>,
    falcon: &'static [&'static str],
) -> NameRow {
    NameRow { kind, gguf, per_layer, llama, falcon }
}

const TABLE: &[NameRow] = &[
    row(TensorKind::TokenEmbd, "token_embd", false, Some("embed_tokens"), &["word_embeddings"]),
    row(TensorKind::OutputNorm, "output_norm", false, Some("norm"), &["ln_f"]),
    row(TensorKind::Output, "output", false, Some("lm_head"), &["lm_head"]),
    // Falcon-40B's MLP norm is llama.cpp's attn_norm and its attention norm attn_norm_2.
    row(TensorKind::AttnNorm, "attn_norm", true, Some("input_layernorm"), &["input_layernorm", "ln_mlp"]),
    row(TensorKind::AttnNorm2, "attn_norm_2", true, None, &["ln_attn"]),
    row(TensorKind::AttnQ, "attn_q", true, Some("self_attn.q_proj"), &[]),
    row(TensorKind::AttnK, "attn_k", true, Some("self_attn.k_proj"), &[]),
    row(TensorKind::AttnV, "attn_v", true, Some("self_attn.v_proj"), &[]),
    row(TensorKind::AttnQkv, "attn_qkv", true, None, &["self_attention.query_key_value"]),
    row(TensorKind::AttnOutput, "attn_output", true, Some("self_attn.o_proj"), &["self_attention.dense"]),
    row(TensorKind::FfnNorm, "ffn_norm", true, Some("post_attention_layernorm"), &[]),
    row(TensorKind::FfnGate, "ffn_gate", true, Some("mlp.gate_proj"), &[]),
    row(TensorKind::FfnUp, "ffn_up", true, Some("mlp.up_proj"), &["mlp.dense_h_to_4h"]),
    row(TensorKind::FfnDown, "ffn_down", true, Some("mlp.down_proj"), &["mlp.dense_4h_to_h"]),
];

impl TensorKind {
    /// The tensors of one layer, in the order llama.cpp's converter writes them.
    pub const PER_LAYER: [TensorKind; 11] = [
        TensorKind::AttnNorm,
        TensorKind::AttnNorm2,
        TensorKind::AttnQ,
        TensorKind::AttnK,
        TensorKind::AttnV,
        TensorKind::AttnQkv,
        TensorKind::AttnOutput,
        TensorKind::FfnNorm,
        TensorKind::FfnGate,
        TensorKind::FfnUp,
        TensorKind::FfnDown,
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
        let (layers, top) = match arch {
            Arch::Llama | Arch::Qwen2 => ("model.layers.", "model."),
            Arch::Falcon => ("transformer.h.", "transformer."),
        };
        let (layer, rest) = if let Some(rest) = stem.strip_prefix(layers) {
            let (n, rest) = rest.split_once('.')?;
            (Some(n.parse::<u32>().ok()?), rest)
        } else if let Some(rest) = stem.strip_prefix(top) {
            (None, rest)
        } else {
            (None, stem)
        };
        let named = |r: &NameRow| match arch {
            Arch::Llama | Arch::Qwen2 => r.llama == Some(rest),
            Arch::Falcon => r.falcon.contains(&rest),
        };
        let kind = TABLE.iter().find(|r| r.per_layer == layer.is_some() && named(r))?.kind;
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
        let row = self.kind.row();
        let (hf, layers, top) = match arch {
            Arch::Llama | Arch::Qwen2 => (row.llama?, "model.layers", "model."),
            Arch::Falcon => (*row.falcon.first()?, "transformer.h", "transformer."),
        };
        Some(match (self.layer, self.kind) {
            (Some(l), _) => format!("{layers}.{l}.{hf}.{}", self.suffix),
            (None, TensorKind::Output) => format!("{hf}.{}", self.suffix),
            (None, _) => format!("{top}{hf}.{}", self.suffix),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            assert_eq!(TensorName::from_hf(hf, Arch::Llama).map(|n| n.to_string()).as_deref(), Some(gguf), "{hf}");
            let back = TensorName::from_gguf(gguf).and_then(|n| n.to_hf(Arch::Llama));
            assert_eq!(back.as_deref(), Some(hf), "{gguf}");
        }
        assert_eq!(TensorName::from_gguf("blk.x.attn_q.weight"), None);
        assert_eq!(TensorName::from_gguf("blk.0.output.weight"), None);
        for ignored in
            ["model.layers.0.self_attn.rotary_emb.inv_freq", "model.layers.x.mlp.up_proj.weight", "model.norm"]
        {
            assert_eq!(TensorName::from_hf(ignored, Arch::Llama), None, "{ignored}");
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
            assert_eq!(TensorName::from_hf(hf, Arch::Falcon).map(|n| n.to_string()).as_deref(), Some(gguf), "{hf}");
            if !hf.contains("ln_mlp") {
                let back = TensorName::from_gguf(gguf).and_then(|n| n.to_hf(Arch::Falcon));
                assert_eq!(back.as_deref(), Some(hf), "{gguf}");
            }
        }
        // Each family's names are its own.
        assert_eq!(TensorName::from_hf("model.layers.0.self_attn.q_proj.weight", Arch::Falcon), None);
        assert_eq!(TensorName::from_hf("transformer.h.0.self_attention.dense.weight", Arch::Llama), None);
        assert_eq!(TensorName::from_gguf("blk.0.attn_qkv.weight").and_then(|n| n.to_hf(Arch::Llama)), None);
        assert_eq!(TensorName::from_gguf("blk.0.attn_q.weight").and_then(|n| n.to_hf(Arch::Falcon)), None);
    }

    #[test]
    fn every_kind_has_one_row() {
        for row in TABLE {
            assert_eq!(row.kind.row().gguf, row.gguf);
            assert_eq!(row.per_layer, TensorKind::PER_LAYER.contains(&row.kind), "{}", row.gguf);
        }
    }
}
