//! GGUF tensor names, in one table (mirrors `LLM_TENSOR_NAMES` in llama.cpp's src/llama-arch.cpp),
//! and the Hugging Face names of the Llama family that map onto them.

use std::fmt;

/// What a tensor is, independent of its layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorKind {
    TokenEmbd,
    OutputNorm,
    Output,
    AttnNorm,
    AttnQ,
    AttnK,
    AttnV,
    AttnOutput,
    FfnNorm,
    FfnGate,
    FfnUp,
    FfnDown,
}

/// `(kind, GGUF base name, per layer, Hugging Face name after "model." or "model.layers.N.")`.
const TABLE: &[(TensorKind, &str, bool, &str)] = &[
    (TensorKind::TokenEmbd, "token_embd", false, "embed_tokens"),
    (TensorKind::OutputNorm, "output_norm", false, "norm"),
    (TensorKind::Output, "output", false, "lm_head"),
    (TensorKind::AttnNorm, "attn_norm", true, "input_layernorm"),
    (TensorKind::AttnQ, "attn_q", true, "self_attn.q_proj"),
    (TensorKind::AttnK, "attn_k", true, "self_attn.k_proj"),
    (TensorKind::AttnV, "attn_v", true, "self_attn.v_proj"),
    (TensorKind::AttnOutput, "attn_output", true, "self_attn.o_proj"),
    (TensorKind::FfnNorm, "ffn_norm", true, "post_attention_layernorm"),
    (TensorKind::FfnGate, "ffn_gate", true, "mlp.gate_proj"),
    (TensorKind::FfnUp, "ffn_up", true, "mlp.up_proj"),
    (TensorKind::FfnDown, "ffn_down", true, "mlp.down_proj"),
];

impl TensorKind {
    /// The tensors of one layer, in the order llama.cpp's converter writes them.
    pub const PER_LAYER: [TensorKind; 9] = [
        TensorKind::AttnNorm,
        TensorKind::AttnQ,
        TensorKind::AttnK,
        TensorKind::AttnV,
        TensorKind::AttnOutput,
        TensorKind::FfnNorm,
        TensorKind::FfnGate,
        TensorKind::FfnUp,
        TensorKind::FfnDown,
    ];

    fn row(self) -> &'static (TensorKind, &'static str, bool, &'static str) {
        TABLE.iter().find(|r| r.0 == self).expect("TABLE has one row per TensorKind")
    }

    /// The GGUF base name (`attn_q`).
    pub fn gguf_base(self) -> &'static str {
        self.row().1
    }

    /// Whether the tensor exists once per layer.
    pub fn per_layer(self) -> bool {
        self.row().2
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
    /// Maps a Hugging Face Llama-family name (`model.layers.3.self_attn.q_proj.weight`,
    /// `lm_head.weight`) to its GGUF name; `None` for names that have no GGUF counterpart
    /// (`rotary_emb.inv_freq`).
    pub fn from_hf(hf: &str) -> Option<TensorName> {
        let (stem, suffix) = hf.rsplit_once('.')?;
        if suffix != "weight" && suffix != "bias" {
            return None;
        }
        let (layer, rest) = if let Some(rest) = stem.strip_prefix("model.layers.") {
            let (n, rest) = rest.split_once('.')?;
            (Some(n.parse::<u32>().ok()?), rest)
        } else if let Some(rest) = stem.strip_prefix("model.") {
            (None, rest)
        } else {
            (None, stem)
        };
        let kind = TABLE.iter().find(|r| r.2 == layer.is_some() && r.3 == rest)?.0;
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
        let kind = TABLE.iter().find(|r| r.2 == layer.is_some() && r.1 == base)?.0;
        Some(TensorName { kind, layer, suffix: suffix.to_owned() })
    }

    /// The Hugging Face Llama-family name (`model.layers.3.self_attn.q_proj.weight`,
    /// `lm_head.weight`), the inverse of [`TensorName::from_hf`].
    pub fn to_hf(&self) -> String {
        let hf = self.kind.row().3;
        match (self.layer, self.kind) {
            (Some(l), _) => format!("model.layers.{l}.{hf}.{}", self.suffix),
            (None, TensorKind::Output) => format!("{hf}.{}", self.suffix),
            (None, _) => format!("model.{hf}.{}", self.suffix),
        }
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
            assert_eq!(TensorName::from_hf(hf).map(|n| n.to_string()).as_deref(), Some(gguf), "{hf}");
            let back = TensorName::from_gguf(gguf).map(|n| n.to_hf());
            assert_eq!(back.as_deref(), Some(hf), "{gguf}");
        }
        assert_eq!(TensorName::from_gguf("blk.x.attn_q.weight"), None);
        assert_eq!(TensorName::from_gguf("blk.0.output.weight"), None);
        for ignored in
            ["model.layers.0.self_attn.rotary_emb.inv_freq", "model.layers.x.mlp.up_proj.weight", "model.norm"]
        {
            assert_eq!(TensorName::from_hf(ignored), None, "{ignored}");
        }
    }

    #[test]
    fn every_kind_has_one_row() {
        for row in TABLE {
            assert_eq!(row.0.row().1, row.1);
            assert_eq!(row.2, TensorKind::PER_LAYER.contains(&row.0), "{}", row.1);
        }
    }
}
