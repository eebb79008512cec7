//! Gemma 2 and Gemma 3 (the language model; of the multimodal checkpoints too, their vision tower
//! left out): the Llama layout's projections with RMS norms stored as `1 + w`
//! (the converter adds the 1), token embeddings scaled by `sqrt(n_embd)`, a norm after attention
//! and after the MLP (before each residual sum), a gated MLP with GELU's tanh form, the
//! NEOX-style rope, sliding-window attention in most layers (Gemma 2: every other one; Gemma 3:
//! five of six, with their own rope base and no rope scaling), soft-capped attention scores and
//! logits (Gemma 2; Gemma 3 may cap its logits), Gemma 3's q/k norms; llama.cpp's
//! `llama_model_gemma2::graph` and `llama_model_gemma3::graph`. One type, [`Gemma`], whose two
//! values [`GEMMA2`] and [`GEMMA3`] are registered.
//!
//! llama.cpp scales the attention scores by `1 / sqrt(head_dim)`, or `1 / sqrt(n_embd / n_head)`
//! for the 27B models (known by their layer count), not by config.json's `query_pre_attn_scalar`:
//! a config whose scalar gives another scale is refused, as are layer patterns llama.cpp does
//! not reproduce.

use serde_json::Value;

use super::{llama, Arch, Family};
use crate::ggml::Tensor;
use crate::gguf::{Gguf, MetaValue};
use crate::hf::{ConfigError, ConfigReader, ModelConfig, RopeScaling};
use crate::model::{Activation, Binder, HParams, LayerGraph, LayerWeights, ModelError, SlidingWindow};
use crate::names::{TensorKind, TensorName};

/// A Gemma generation: what tells Gemma 2 and Gemma 3 apart.
pub struct Gemma {
    name: &'static str,
    hf_classes: &'static [(&'static str, &'static str)],
    /// Layers in each repetition of the attention pattern: all sliding but the last.
    pattern: u64,
    /// The layer count of the 27B model, whose attention scale is `1 / sqrt(n_embd / n_head)`.
    layers_27b: u64,
    /// Whether attention scores are soft-capped (Gemma 2: always, 50 by default) and the logits
    /// by default (30); Gemma 3 caps neither unless its config says so for the logits.
    capped: bool,
    /// Gemma 3's q/k norms.
    qk_norms: bool,
    /// Whether the family's checkpoints may be multimodal ones whose language model it converts
    /// (Gemma 3's `Gemma3ForConditionalGeneration`: the text model under `language_model.`, the
    /// vision tower and projector left out, as llama.cpp's converter leaves them without
    /// `--mmproj`).
    multimodal: bool,
    own_keys: &'static [&'static str],
}

/// Gemma 2.
pub const GEMMA2: Gemma = Gemma {
    name: "gemma2",
    hf_classes: &[("Gemma2ForCausalLM", "gemma2")],
    pattern: 2,
    layers_27b: 46,
    capped: true,
    qk_norms: false,
    multimodal: false,
    own_keys: &[
        "attn_logit_softcapping",
        "final_logit_softcapping",
        "attention.sliding_window",
        "attention.sliding_window_pattern",
        "rope.freq_base_swa",
    ],
};

/// Gemma 3's language model: `Gemma3ForCausalLM` (the 270M and 1B models) and the text part of
/// `Gemma3ForConditionalGeneration` (4B, 12B, 27B as published).
pub const GEMMA3: Gemma = Gemma {
    name: "gemma3",
    hf_classes: &[("Gemma3ForCausalLM", "gemma3_text"), ("Gemma3ForConditionalGeneration", "gemma3")],
    pattern: 6,
    layers_27b: 62,
    capped: false,
    qk_norms: true,
    multimodal: true,
    own_keys: &[
        "final_logit_softcapping",
        "attention.sliding_window",
        "attention.sliding_window_pattern",
        "rope.freq_base_swa",
    ],
};

impl Family for Gemma {
    fn name(&self) -> &'static str {
        self.name
    }

    fn hf_classes(&self) -> &'static [(&'static str, &'static str)] {
        self.hf_classes
    }

    fn config(&self, r: &ConfigReader<'_>, hf_architecture: String) -> Result<ModelConfig, ConfigError> {
        let arch = self.arch();
        // A multimodal checkpoint's language model is configured by its text_config.
        let text = r.object("text_config");
        let r = if self.multimodal && r.get("text_config").is_some() { &text } else { r };
        let mut c = self.shared_config(r, hf_architecture)?;
        let global_and_local = if self.capped {
            // transformers' defaults; llama.cpp's converter requires both keys.
            c.attn_logit_softcapping = Some(r.f32_opt("attn_logit_softcapping")?.unwrap_or(50.0));
            c.final_logit_softcapping = Some(r.f32_opt("final_logit_softcapping")?.unwrap_or(30.0));
            let (theta, scaling) = r.rope()?;
            ((theta, scaling), None)
        } else {
            if let Some(cap) = r.f32_opt("attn_logit_softcapping")? {
                return Err(r.unsupported(
                    arch,
                    "attn_logit_softcapping",
                    &cap.to_string(),
                    "null (Gemma 3 does not cap attention)",
                ));
            }
            c.final_logit_softcapping = r.f32_opt("final_logit_softcapping")?.filter(|&cap| cap != 0.0);
            let (global, local) = gemma3_rope(r)?;
            (global, Some(local))
        };
        let ((theta, scaling), local) = global_and_local;
        match (&scaling, self.capped) {
            (None, _) | (Some(RopeScaling::Linear { .. }), false) => {}
            (Some(other), _) => {
                let expected = if self.capped { "null" } else { "linear or none (llama.cpp's gemma3)" };
                return Err(r.unsupported(arch, "rope_scaling", &format!("{other:?}"), expected));
            }
        }
        if let Some((_, Some(scaling))) = &local {
            return Err(r.unsupported(
                arch,
                "rope_parameters",
                &format!("sliding_attention scaled {scaling:?}"),
                "no scaling of the sliding-window layers' rope (llama.cpp's gemma3)",
            ));
        }
        (c.rope_theta, c.rope_scaling) = (theta, scaling);
        if c.sliding_window.is_some() {
            c.rope_theta_local = local.map(|(theta, _)| theta);
        }
        Ok(c)
    }

    fn hf_names(&self, kind: TensorKind) -> &'static [&'static str] {
        use TensorKind::*;
        match kind {
            AttnPostNorm => &["post_attention_layernorm"],
            FfnNorm => &["pre_feedforward_layernorm"],
            FfnPostNorm => &["post_feedforward_layernorm"],
            Output => &[],
            other => llama::hf_names(other),
        }
    }

    fn drops_hf_tensor(&self, name: &str) -> bool {
        let name = self.hf_wrapper().and_then(|w| name.strip_prefix(w)).unwrap_or(name);
        name == "lm_head.weight" || name.starts_with("vision_tower.") || name.starts_with("multi_modal_projector.")
    }

    fn hf_wrapper(&self) -> Option<&'static str> {
        self.multimodal.then_some("language_model.")
    }

    fn stored_offset(&self, name: &TensorName) -> f32 {
        // llama.cpp's converter adds 1 to every `*norm.weight` of Gemma.
        use TensorKind::*;
        let norm =
            matches!(name.kind, AttnNorm | AttnPostNorm | FfnNorm | FfnPostNorm | OutputNorm | AttnQNorm | AttnKNorm);
        if norm && name.suffix == "weight" {
            1.0
        } else {
            0.0
        }
    }

    fn layer_tensors(&self, _c: &ModelConfig) -> Vec<(TensorKind, &'static str)> {
        use TensorKind::*;
        let mut t = llama::weights(llama::LAYER);
        t.extend(llama::weights(&[AttnPostNorm, FfnPostNorm]));
        if self.qk_norms {
            t.extend(llama::weights(&[AttnQNorm, AttnKNorm]));
        }
        t
    }

    fn metadata(&self, c: &ModelConfig, kv: &mut Vec<(String, MetaValue)>) {
        // The keys llama.cpp's converter writes for Gemma beyond the shared ones.
        let name = self.name;
        if let Some(cap) = c.attn_logit_softcapping {
            kv.push((format!("{name}.attn_logit_softcapping"), MetaValue::F32(cap)));
        }
        if let Some(cap) = c.final_logit_softcapping {
            kv.push((format!("{name}.final_logit_softcapping"), MetaValue::F32(cap)));
        }
        if let Some(window) = c.sliding_window {
            kv.push((
                format!("{name}.attention.sliding_window"),
                MetaValue::U32(u32::try_from(window).unwrap_or(u32::MAX)),
            ));
        }
        if let Some(theta) = c.rope_theta_local {
            kv.push((format!("{name}.rope.freq_base_swa"), MetaValue::F32(theta)));
        }
    }

    fn own_keys(&self) -> &'static [&'static str] {
        self.own_keys
    }

    fn hparams(&self, g: &Gguf<'_>, h: &mut HParams) -> Result<(), ModelError> {
        self.read_hparams(g, h)
    }

    fn projections(&self) -> &'static [TensorKind] {
        llama::PROJECTIONS
    }

    fn peft_modules(&self) -> &'static str {
        "q/k/v/o_proj, gate/up/down_proj"
    }

    fn fewer_targets(&self) -> &'static [&'static str] {
        &["q,k,v,o", "q,v"]
    }

    fn bind_layer<'c>(&self, b: &Binder<'_, 'c>) -> Result<LayerWeights<'c>, ModelError> {
        let (e, head_dim) = (b.h.n_embd, b.h.head_dim);
        let mut l = llama::bind_layer(b)?;
        l.attn_post_norm = Some(b.need(TensorKind::AttnPostNorm, &[e])?);
        l.ffn_post_norm = Some(b.need(TensorKind::FfnPostNorm, &[e])?);
        if self.qk_norms {
            l.attn_q_norm = Some(b.need(TensorKind::AttnQNorm, &[head_dim])?);
            l.attn_k_norm = Some(b.need(TensorKind::AttnKNorm, &[head_dim])?);
        }
        Ok(l)
    }

    /// Attention on the normed input, normed again, added to the input; the gated GELU MLP on the
    /// normed sum, normed again, added to the sum.
    fn layer<'c>(&self, g: &LayerGraph<'_, 'c>, l: &LayerWeights<'c>, x: Tensor<'c>) -> Result<Tensor<'c>, ModelError> {
        let ctx = g.ctx;
        let missing = |what: &str| ModelError::Inconsistent { what: format!("a Gemma layer without {what}") };
        let attn_out = g.attention(l, g.rms_norm(x, l.attn_norm)?)?;
        let attn_out = g.rms_norm(attn_out, l.attn_post_norm.ok_or_else(|| missing("post_attention_norm"))?)?;
        let sa_out = ctx.add(attn_out, x)?;
        let ffn_in = g.rms_norm(sa_out, l.ffn_norm.ok_or_else(|| missing("ffn_norm"))?)?;
        let ffn_out = g.gated_mlp(l, ffn_in, Activation::Gelu)?;
        let ffn_out = g.rms_norm(ffn_out, l.ffn_post_norm.ok_or_else(|| missing("post_ffw_norm"))?)?;
        Ok(ctx.add(ffn_out, sa_out)?)
    }
}

/// Gemma 3's global and local rope (base, scaling): transformers 5 writes a rope object per
/// layer type; earlier versions the global rope at the top level and the local base beside it.
#[allow(clippy::type_complexity)]
fn gemma3_rope(r: &ConfigReader<'_>) -> Result<((f32, Option<RopeScaling>), (f32, Option<RopeScaling>)), ConfigError> {
    let per_type = r.rope_parameters();
    if per_type.get("full_attention").is_some() {
        let global = per_type.object("full_attention").rope_object(1_000_000.0)?;
        let local = per_type.object("sliding_attention").rope_object(10_000.0)?;
        return Ok((global, local));
    }
    let (theta, scaling) = r.rope()?;
    let theta = if r.get("rope_theta").is_some() || per_type.get("rope_theta").is_some() { theta } else { 1_000_000.0 };
    Ok(((theta, scaling), (r.f32_opt("rope_local_base_freq")?.unwrap_or(10_000.0), None)))
}

impl Gemma {
    /// This generation's registered handle.
    fn arch(&self) -> Arch {
        Arch(if self.name == GEMMA2.name { &GEMMA2 } else { &GEMMA3 })
    }

    /// The shared part of both generations' configs: the Llama layout's sizes, GELU's tanh form,
    /// tied embeddings, llama.cpp's attention scale, and the sliding window in llama.cpp's
    /// pattern (or none, for a Gemma 3 without it).
    fn shared_config(&self, r: &ConfigReader<'_>, hf_architecture: String) -> Result<ModelConfig, ConfigError> {
        let arch = self.arch();
        let unsupported = |key, found: &str, expected| r.unsupported(arch, key, found, expected);
        for key in ["hidden_activation", "hidden_act"] {
            if let Some(act) = r.get(key).and_then(Value::as_str).filter(|a| *a != "gelu_pytorch_tanh") {
                return Err(unsupported(key, act, "gelu_pytorch_tanh (llama.cpp runs GELU's tanh form)"));
            }
        }
        if r.bool_opt("attention_bias")? == Some(true) {
            return Err(unsupported("attention_bias", "true", "false (llama.cpp's Gemma has no projection biases)"));
        }
        if r.bool_opt("tie_word_embeddings")? == Some(false) {
            return Err(unsupported(
                "tie_word_embeddings",
                "false",
                "true (llama.cpp's Gemma reads the token embeddings)",
            ));
        }
        let mut c = r.decoder(arch, hf_architecture)?;
        c.tie_word_embeddings = true;
        // llama.cpp's scale (see the module docs) against transformers' query_pre_attn_scalar^-1/2.
        let scale_dim = if c.num_layers == self.layers_27b { c.hidden_size / c.num_heads } else { c.head_dim };
        if let Some(scalar) = r.f32_opt("query_pre_attn_scalar")? {
            if scalar != scale_dim as f32 {
                return Err(r.unsupported(
                    arch,
                    "query_pre_attn_scalar",
                    &scalar.to_string(),
                    if c.num_layers == self.layers_27b {
                        "hidden_size / num_attention_heads (llama.cpp's attention scale for this layer count)"
                    } else {
                        "head_dim (llama.cpp's attention scale)"
                    },
                ));
            }
        }
        // The sliding window, in llama.cpp's pattern: every `pattern`-th layer global.
        let window = r.u64_opt("sliding_window")?;
        let pattern = r.u64_opt("sliding_window_pattern")?;
        // Compared layer by layer: nothing is sized by num_hidden_layers before it is checked.
        let llama_cpp_type = |il: usize| {
            if il as u64 % self.pattern < self.pattern - 1 {
                "sliding_attention"
            } else {
                "full_attention"
            }
        };
        let types: Option<Vec<&str>> = r
            .get("layer_types")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|t| t.as_str().unwrap_or("?")).collect());
        let all_global = types.as_ref().is_some_and(|t| t.iter().all(|t| *t == "full_attention")) || pattern == Some(1);
        if all_global && !self.capped {
            c.sliding_window = None;
        } else {
            if let Some(p) = pattern.filter(|&p| p != self.pattern) {
                return Err(unsupported(
                    "sliding_window_pattern",
                    &p.to_string(),
                    "llama.cpp's pattern for this family",
                ));
            }
            let differs = |t: &Vec<&str>| {
                t.len() as u64 != c.num_layers || t.iter().enumerate().any(|(il, t)| *t != llama_cpp_type(il))
            };
            if let Some(types) = types.filter(differs) {
                return Err(unsupported(
                    "layer_types",
                    &types.join(","),
                    "llama.cpp's pattern for this family (every layer sliding but each last of a repetition)",
                ));
            }
            if window == Some(0) {
                return Err(unsupported("sliding_window", "0", "a window of at least one position"));
            }
            c.sliding_window = Some(window.unwrap_or(4096));
        }
        Ok(c)
    }

    /// The family's hyper-parameters from the GGUF, as llama.cpp's `load_arch_hparams` reads them.
    fn read_hparams(&self, g: &Gguf<'_>, h: &mut HParams) -> Result<(), ModelError> {
        let name = self.name;
        let key = |k: &str| format!("{name}.{k}");
        let float = |k: &str| g.get(&key(k)).and_then(|v| v.as_f64()).map(|v| v as f32);
        h.embed_scale = Some((h.n_embd as f32).sqrt());
        let scale_dim = if h.n_layer == self.layers_27b { h.n_embd / h.n_head } else { h.head_dim };
        h.attn_scale = 1.0 / (scale_dim as f32).sqrt();
        h.scale_queries = true;
        let is_gemma2 = self.capped;
        if is_gemma2 {
            // llama.cpp's defaults when the keys are absent.
            let cap = float("attn_logit_softcapping").unwrap_or(50.0);
            if cap.is_nan() || cap <= 0.0 {
                return Err(ModelError::UnsupportedKey { key: key("attn_logit_softcapping"), value: cap.to_string() });
            }
            h.attn_softcap = Some(cap);
            h.final_softcap = Some(float("final_logit_softcapping").unwrap_or(30.0)).filter(|&c| c != 0.0);
        } else {
            h.final_softcap = float("final_logit_softcapping").filter(|&c| c != 0.0);
        }
        let window = g.get(&key("attention.sliding_window")).and_then(|v| v.as_u64());
        let window = if is_gemma2 { Some(window.unwrap_or(4096)) } else { window.filter(|&w| w > 0) };
        let Some(size) = window else { return Ok(()) };
        // llama.cpp's `set_swa_pattern`: layer il slides unless il % p == p - 1 (p = 0: all
        // slide). A per-layer array of the key is refused (not written by llama.cpp's converter
        // for these families).
        let pattern_key = key("attention.sliding_window_pattern");
        let p = match g.get(&pattern_key) {
            None => self.pattern,
            Some(v) => v.as_u64().ok_or_else(|| ModelError::UnsupportedKey {
                key: pattern_key,
                value: format!("an {:?}", v.value_type()),
            })?,
        };
        let layers = (0..h.n_layer).map(|il| p == 0 || il % p < p - 1).collect();
        let (rope_freq_base, rope_freq_scale) = if is_gemma2 {
            (float("rope.freq_base_swa").unwrap_or(h.rope_freq_base), h.rope_freq_scale)
        } else {
            (float("rope.freq_base_swa").unwrap_or(10_000.0), 1.0)
        };
        h.sliding_window = Some(SlidingWindow { size, layers, rope_freq_base, rope_freq_scale });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::{json, Value};

    use crate::hf::{ConfigError, ModelConfig};

    fn gemma2() -> Value {
        json!({
            "architectures": ["Gemma2ForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
            "query_pre_attn_scalar": 32, "sliding_window": 8, "attn_logit_softcapping": 50.0,
            "final_logit_softcapping": 30.0, "hidden_activation": "gelu_pytorch_tanh", "vocab_size": 512,
            "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
            "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]
        })
    }

    fn gemma3() -> Value {
        json!({
            "architectures": ["Gemma3ForCausalLM"], "hidden_size": 64, "intermediate_size": 64,
            "num_hidden_layers": 6, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
            "query_pre_attn_scalar": 16, "sliding_window": 512, "vocab_size": 512, "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "sliding_window_pattern": 6,
            "rope_scaling": {"rope_type": "linear", "factor": 8.0}
        })
    }

    fn resolve(json: &Value) -> Result<ModelConfig, ConfigError> {
        ModelConfig::from_json(Path::new("config.json"), json)
    }

    fn refused_key(json: &Value) -> String {
        match resolve(json) {
            Err(ConfigError::UnsupportedValue { key, .. }) => key.to_owned(),
            other => panic!("expected a refusal by key, got {other:?}"),
        }
    }

    #[test]
    fn resolves_both_generations_in_every_layout() {
        let c = resolve(&gemma2()).unwrap();
        assert_eq!(c.arch.name(), "gemma2");
        assert_eq!(
            (c.sliding_window, c.attn_logit_softcapping, c.final_logit_softcapping),
            (Some(8), Some(50.0), Some(30.0))
        );
        assert!(c.tie_word_embeddings);
        // Gemma 3 as transformers 4.5x wrote it, and as transformers 5 writes it.
        let older = resolve(&gemma3()).unwrap();
        assert_eq!((older.rope_theta, older.rope_theta_local, older.sliding_window), (1e6, Some(1e4), Some(512)));
        assert_eq!(older.rope_scaling, Some(crate::hf::RopeScaling::Linear { factor: 8.0 }));
        let mut newer = gemma3();
        let obj = newer.as_object_mut().unwrap();
        for key in ["rope_theta", "rope_local_base_freq", "rope_scaling", "sliding_window_pattern"] {
            obj.remove(key);
        }
        obj.insert(
            "rope_parameters".into(),
            json!({"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                   "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0}}),
        );
        let types = ["sliding_attention"; 5].iter().chain(&["full_attention"]).copied().collect::<Vec<_>>();
        obj.insert("layer_types".into(), json!(types));
        assert_eq!(resolve(&newer).unwrap(), older);
    }

    #[test]
    fn what_llama_cpp_would_compute_differently_is_refused_by_key() {
        let with = |mut json: Value, key: &str, value: Value| {
            json[key] = value;
            json
        };
        // llama.cpp scales by head_dim's root, whatever query_pre_attn_scalar says.
        assert_eq!(refused_key(&with(gemma2(), "query_pre_attn_scalar", json!(8))), "query_pre_attn_scalar");
        // Its layer pattern is fixed (every other layer for Gemma 2, five of six for Gemma 3).
        let shifted = json!(["full_attention", "sliding_attention", "full_attention", "sliding_attention"]);
        assert_eq!(refused_key(&with(gemma2(), "layer_types", shifted)), "layer_types");
        assert_eq!(refused_key(&with(gemma3(), "sliding_window_pattern", json!(4))), "sliding_window_pattern");
        assert_eq!(refused_key(&with(gemma2(), "hidden_activation", json!("gelu"))), "hidden_activation");
        assert_eq!(refused_key(&with(gemma2(), "tie_word_embeddings", json!(false))), "tie_word_embeddings");
        assert_eq!(refused_key(&with(gemma2(), "sliding_window", json!(0))), "sliding_window");
        assert_eq!(refused_key(&with(gemma3(), "attn_logit_softcapping", json!(50.0))), "attn_logit_softcapping");
        let yarn = json!({"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 8192});
        assert_eq!(refused_key(&with(gemma3(), "rope_scaling", yarn)), "rope_scaling");
    }
}
