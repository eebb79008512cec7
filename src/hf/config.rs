//! `config.json` of a checkpoint, resolved by its family (see [`crate::arch::Family::config`])
//! into the hyper-parameters conversion needs, through a [`ConfigReader`].
//!
//! config.json varies with the transformers version that wrote it: `rope_theta` at the top level
//! or inside `rope_parameters`, `torch_dtype` or `dtype`, `head_dim` explicit or derived,
//! `rope_scaling` null or an object, `num_key_value_heads` present or not. All are accepted; an
//! inconsistent config (head counts that do not divide) is refused by name.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::rope::RopeScaling;
use super::HfError;
use crate::arch::Arch;

/// The largest value accepted for each size of a config (by transformers' key), far above any
/// published model's and low enough that nothing sized by them runs away: llama.cpp loads at most
/// 512 layers (`LLAMA_MAX_LAYERS`); the widest published models are 16-25k wide, the largest
/// vocabularies 262k tokens, the longest contexts 10M.
pub const LIMITS: [(&str, u64); 8] = [
    ("num_hidden_layers", 512),
    ("hidden_size", 1 << 17),
    ("intermediate_size", 1 << 20),
    ("num_attention_heads", 1 << 12),
    ("num_key_value_heads", 1 << 12),
    ("head_dim", 1 << 12),
    ("vocab_size", 1 << 22),
    ("max_position_embeddings", 1 << 26),
];

/// The resolved hyper-parameters of a checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    /// `architectures[0]` as written (for messages and `general.name` fallback).
    pub hf_architecture: String,
    pub hidden_size: u64,
    pub intermediate_size: u64,
    pub num_layers: u64,
    pub num_heads: u64,
    pub num_kv_heads: u64,
    pub head_dim: u64,
    /// Dimensions of each head that rope rotates: all of them but in GPT-NeoX (Pythia: a
    /// quarter, `rotary_pct`).
    pub rope_dims: u64,
    /// Whether attention and the MLP read the same layer input and both add to the residual
    /// (Falcon; GPT-NeoX's `use_parallel_residual`), rather than the MLP reading attention's sum.
    pub parallel_residual: bool,
    pub context_length: u64,
    /// `rms_norm_eps` (Llama, Qwen2) or `layer_norm_epsilon` (Falcon's layer norms).
    pub norm_eps: f32,
    pub rope_theta: f32,
    pub rope_scaling: Option<RopeScaling>,
    pub vocab_size: u64,
    /// Whether the checkpoint leaves `lm_head.weight` out. Falcon's configs seldom say, and the
    /// Falcon checkpoints on the hub store `lm_head.weight`, so a Falcon config without the key
    /// reads as false; `convert` writes `output.weight` only when the checkpoint has it, as
    /// llama.cpp's converter does.
    pub tie_word_embeddings: bool,
    /// Falcon-40B's layout: attention reads its own layer norm (`ln_attn`, llama.cpp's
    /// `attn_norm_2`) and the MLP another (`ln_mlp`, `attn_norm`); false: one norm feeds both.
    pub attn_norm_2: bool,
    /// `torch_dtype` / `dtype`, when given.
    pub dtype: Option<String>,
    /// Phi-3's `original_max_position_embeddings`, which llama.cpp's converter writes as
    /// `rope.scaling.original_context_length` (the rope of the supported variants does not read it).
    pub original_context_length: Option<u64>,
    /// The attention window of the sliding-window layers (Gemma 2 and 3); Phi-3's `sliding_window`
    /// (0 when null), which llama.cpp's converter writes and its phi3 graph ignores.
    pub sliding_window: Option<u64>,
    /// The rope base of the sliding-window layers, when it differs (Gemma 3's local base).
    pub rope_theta_local: Option<f32>,
    /// Soft-capping of the attention scores (Gemma 2's `attn_logit_softcapping`).
    pub attn_logit_softcapping: Option<f32>,
    /// Soft-capping of the output logits (`final_logit_softcapping`).
    pub final_logit_softcapping: Option<f32>,
}

/// Why a config.json cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{}: missing key '{key}' (expected {expected})", path.display())]
    Missing { path: PathBuf, key: &'static str, expected: &'static str },
    #[error("{}: key '{key}' is {found}, expected {expected}", path.display())]
    WrongType { path: PathBuf, key: &'static str, expected: &'static str, found: String },
    #[error("{}: architecture '{found}' is not supported (supported: {})", path.display(), supported_list())]
    UnsupportedArch { path: PathBuf, found: String },
    #[error("{}: {what}", path.display())]
    Inconsistent { path: PathBuf, what: String },
    #[error("{}: '{key}' is {value}; expected 1 to {max}", path.display())]
    OutOfRange { path: PathBuf, key: &'static str, value: u64, max: u64 },
    #[error("{}: rope_scaling type '{kind}' is not supported yet (supported: linear, yarn, llama3, longrope)", path.display())]
    UnsupportedRopeScaling { path: PathBuf, kind: String },
    #[error("{}: '{key}' is {found}; llama.cpp's {arch} needs {expected}", path.display())]
    UnsupportedValue { path: PathBuf, arch: &'static str, key: &'static str, found: String, expected: &'static str },
}

fn supported_list() -> String {
    Arch::hf_class_list()
}

/// A config.json being resolved: typed access to its keys, with errors naming the file and the
/// key. Each family's [`crate::arch::Family::config`] reads its keys through it.
pub struct ConfigReader<'a> {
    path: &'a Path,
    json: &'a Value,
}

impl ConfigReader<'_> {
    /// The value of `key`, unless absent or null.
    pub fn get(&self, key: &'static str) -> Option<&Value> {
        self.json.get(key).filter(|v| !v.is_null())
    }

    /// `key` as a non-negative integer, if present.
    pub fn u64_opt(&self, key: &'static str) -> Result<Option<u64>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| ConfigError::WrongType {
                path: self.path.to_owned(),
                key,
                expected: "a non-negative integer",
                found: v.to_string(),
            }),
        }
    }

    /// `key` as a non-negative integer, which must be present.
    pub fn u64(&self, key: &'static str) -> Result<u64, ConfigError> {
        self.u64_opt(key)?.ok_or(ConfigError::Missing { path: self.path.to_owned(), key, expected: "an integer" })
    }

    /// `key` as a boolean, if present.
    pub fn bool_opt(&self, key: &'static str) -> Result<Option<bool>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| ConfigError::WrongType {
                path: self.path.to_owned(),
                key,
                expected: "true or false",
                found: v.to_string(),
            }),
        }
    }

    /// The first of `keys` present (configs renamed keys over time), as an integer.
    pub fn u64_any(&self, keys: &[&'static str]) -> Result<u64, ConfigError> {
        for key in keys {
            if let Some(v) = self.u64_opt(key)? {
                return Ok(v);
            }
        }
        Err(ConfigError::Missing { path: self.path.to_owned(), key: keys[0], expected: "an integer" })
    }

    /// `key` has a value (`found`) that llama.cpp's `arch` graph does not run.
    pub fn unsupported(&self, arch: Arch, key: &'static str, found: &str, expected: &'static str) -> ConfigError {
        ConfigError::UnsupportedValue {
            path: self.path.to_owned(),
            arch: arch.name(),
            key,
            found: found.to_owned(),
            expected,
        }
    }

    /// The config contradicts itself (`what`).
    pub fn inconsistent(&self, what: String) -> ConfigError {
        ConfigError::Inconsistent { path: self.path.to_owned(), what }
    }

    /// `head_dim`, given or derived, checked against the head counts.
    pub fn head_dim(&self, hidden_size: u64, num_heads: u64, num_kv_heads: u64) -> Result<u64, ConfigError> {
        if num_heads == 0 || num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return Err(self.inconsistent(format!(
                "num_attention_heads {num_heads} is not a positive multiple of the key/value heads {num_kv_heads}"
            )));
        }
        let head_dim = match self.u64_opt("head_dim")? {
            Some(d) => d,
            None if hidden_size % num_heads == 0 => hidden_size / num_heads,
            None => {
                return Err(self.inconsistent(format!(
                    "hidden_size {hidden_size} is not a multiple of num_attention_heads {num_heads} and no head_dim is given"
                )))
            }
        };
        if head_dim % 2 != 0 {
            return Err(
                self.inconsistent(format!("head_dim {head_dim} is odd; rotary embeddings need an even head size"))
            );
        }
        Ok(head_dim)
    }

    /// transformers 5's `rope_parameters` object (empty when absent).
    pub fn rope_parameters(&self) -> ConfigReader<'_> {
        self.object("rope_parameters")
    }

    /// The object `key` (empty when absent), read with this reader's file name for messages.
    pub fn object(&self, key: &'static str) -> ConfigReader<'_> {
        ConfigReader { path: self.path, json: self.get(key).unwrap_or(&Value::Null) }
    }

    /// A rope object of transformers 5's per-layer-type `rope_parameters` (`{"rope_type":
    /// "linear", "factor": 8.0, "rope_theta": ...}`): its base (`default_theta` when absent) and
    /// scaling (`None` for `default`).
    pub fn rope_object(&self, default_theta: f32) -> Result<(f32, Option<RopeScaling>), ConfigError> {
        let theta = self.f32_opt("rope_theta")?.unwrap_or(default_theta);
        let scaling = match self.get("rope_type").and_then(Value::as_str) {
            None | Some("default") => None,
            Some(_) => Some(RopeScaling::parse(self.path, self.json, self.json)?),
        };
        Ok((theta, scaling))
    }

    /// The share of each head the rope rotates: the first of `top_level_keys` present (each
    /// checked to be a number), else `partial_rotary_factor` in `rope_parameters`, else `default`.
    pub fn rotary_fraction(&self, top_level_keys: &[&'static str], default: f32) -> Result<f32, ConfigError> {
        let mut top_level = None;
        for key in top_level_keys {
            top_level = top_level.or(self.f32_opt(key)?);
        }
        match top_level {
            Some(f) => Ok(f),
            None => Ok(self.rope_parameters().f32_opt("partial_rotary_factor")?.unwrap_or(default)),
        }
    }

    /// Refuses a rotary fraction (named `what` in the message) outside (0, 1], or one that rotates
    /// `rope_dims` dimensions of each `head_dim`-wide head when that is none or an odd number.
    pub fn check_rope_dims(&self, what: &str, fraction: f32, head_dim: u64, rope_dims: u64) -> Result<(), ConfigError> {
        if !(fraction > 0.0 && fraction <= 1.0) || rope_dims == 0 || rope_dims % 2 != 0 {
            return Err(self.inconsistent(format!(
                "{what} {fraction} of head_dim {head_dim} is {rope_dims} dimensions; rope needs an even number of at least 2"
            )));
        }
        Ok(())
    }

    /// `rope_theta` (top level or in `rope_parameters`, 10000 when absent) and the rope scaling.
    pub fn rope(&self) -> Result<(f32, Option<RopeScaling>), ConfigError> {
        let rope_parameters = self.rope_parameters();
        let rope_theta = match self.f32_opt("rope_theta")? {
            Some(t) => t,
            None => rope_parameters.f32_opt("rope_theta")?.unwrap_or(10_000.0),
        };
        let scaling_json = self.get("rope_scaling").or_else(|| {
            rope_parameters.get("rope_type").filter(|t| t.as_str() != Some("default")).map(|_| rope_parameters.json)
        });
        let rope_scaling = match scaling_json {
            None => None,
            Some(s) => Some(RopeScaling::parse(self.path, self.json, s)?),
        };
        Ok((rope_theta, rope_scaling))
    }

    /// `torch_dtype` or `dtype`, when given.
    pub fn dtype(&self) -> Option<String> {
        self.get("torch_dtype").or_else(|| self.get("dtype")).and_then(Value::as_str).map(str::to_owned)
    }

    /// `key` as a number, if present.
    pub fn f32_opt(&self, key: &'static str) -> Result<Option<f32>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(|f| Some(f as f32)).ok_or_else(|| ConfigError::WrongType {
                path: self.path.to_owned(),
                key,
                expected: "a number",
                found: v.to_string(),
            }),
        }
    }

    /// A config of the Llama layout (Llama, Mistral, Qwen2, Qwen3), with transformers' defaults.
    /// Sliding-window attention on some layers (Qwen2's and Qwen3's `use_sliding_window`,
    /// `layer_types`), which llama.cpp's graphs of these families do not run, is refused by key.
    pub fn llama_layout(&self, arch: Arch, hf_architecture: String) -> Result<ModelConfig, ConfigError> {
        let r = self;
        if r.bool_opt("use_sliding_window")? == Some(true) {
            return Err(r.unsupported(arch, "use_sliding_window", "true", "full attention in every layer"));
        }
        if let Some(types) = r.get("layer_types").and_then(Value::as_array) {
            if let Some(other) = types.iter().find(|t| t.as_str() != Some("full_attention")) {
                return Err(r.unsupported(arch, "layer_types", &other.to_string(), "full_attention in every layer"));
            }
        }
        r.decoder(arch, hf_architecture)
    }

    /// The sizes, norm and rope of a decoder config with the Llama layout's keys and defaults,
    /// whatever its attention pattern (the caller checks that).
    pub fn decoder(&self, arch: Arch, hf_architecture: String) -> Result<ModelConfig, ConfigError> {
        let r = self;
        let hidden_size = r.u64("hidden_size")?;
        let num_heads = r.u64("num_attention_heads")?;
        let num_kv_heads = r.u64_opt("num_key_value_heads")?.unwrap_or(num_heads);
        let head_dim = r.head_dim(hidden_size, num_heads, num_kv_heads)?;
        let (rope_theta, rope_scaling) = r.rope()?;
        if let Some(RopeScaling::LongRope { .. }) = rope_scaling {
            return Err(r.unsupported(
                arch,
                "rope_scaling",
                "longrope",
                "linear, yarn or llama3 (llama.cpp reads longrope factors for phi3 only)",
            ));
        }
        Ok(ModelConfig {
            arch,
            hf_architecture,
            hidden_size,
            intermediate_size: r.u64("intermediate_size")?,
            num_layers: r.u64("num_hidden_layers")?,
            num_heads,
            num_kv_heads,
            head_dim,
            rope_dims: head_dim,
            parallel_residual: false,
            context_length: r.u64_opt("max_position_embeddings")?.unwrap_or(2048),
            norm_eps: r.f32_opt("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            vocab_size: r.u64("vocab_size")?,
            tie_word_embeddings: r.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(false),
            attn_norm_2: false,
            dtype: r.dtype(),
            original_context_length: None,
            sliding_window: None,
            rope_theta_local: None,
            attn_logit_softcapping: None,
            final_logit_softcapping: None,
        })
    }
}

impl ModelConfig {
    /// Resolves a parsed config.json (`path` is only for messages). Every size is checked against
    /// [`LIMITS`] before anything is sized by it.
    pub fn from_json(path: &Path, json: &Value) -> Result<ModelConfig, ConfigError> {
        let config = Self::resolve(path, json)?;
        config.check_limits(path)?;
        Ok(config)
    }

    /// Refuses a size outside [`LIMITS`], naming its key.
    fn check_limits(&self, path: &Path) -> Result<(), ConfigError> {
        let values = [
            self.num_layers,
            self.hidden_size,
            self.intermediate_size,
            self.num_heads,
            self.num_kv_heads,
            self.head_dim,
            self.vocab_size,
            self.context_length,
        ];
        for ((key, max), value) in LIMITS.iter().zip(values) {
            if value == 0 || value > *max {
                return Err(ConfigError::OutOfRange { path: path.to_owned(), key, value, max: *max });
            }
        }
        Ok(())
    }

    fn resolve(path: &Path, json: &Value) -> Result<ModelConfig, ConfigError> {
        let r = ConfigReader { path, json };
        let hf_architecture = match r.get("architectures").and_then(|a| a.get(0)).and_then(Value::as_str) {
            Some(a) => a.to_owned(),
            None => match r.get("model_type").and_then(Value::as_str) {
                Some(model_type) => Arch::hf_class_of_model_type(model_type).unwrap_or(model_type).to_owned(),
                None => {
                    return Err(ConfigError::Missing {
                        path: path.to_owned(),
                        key: "architectures",
                        expected: "a list naming the model class, or 'model_type'",
                    })
                }
            },
        };
        let arch = Arch::from_hf_class(&hf_architecture)
            .ok_or_else(|| ConfigError::UnsupportedArch { path: path.to_owned(), found: hf_architecture.clone() })?;
        arch.family().config(&r, hf_architecture)
    }

    /// Reads and resolves `dir/config.json`.
    pub fn load(dir: &Path) -> Result<ModelConfig, HfError> {
        Self::load_file(&dir.join("config.json"))
    }

    /// Reads and resolves the config.json at `path`.
    pub fn load_file(path: &Path) -> Result<ModelConfig, HfError> {
        let json = super::checkpoint::read_json(path)?;
        ModelConfig::from_json(path, &json).map_err(HfError::Config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "vocab_size": 512, "tie_word_embeddings": false, "torch_dtype": "bfloat16"
        })
    }

    #[test]
    fn resolves_every_config_layout() {
        let c = ModelConfig::from_json(Path::new("config.json"), &base()).unwrap();
        assert_eq!((c.head_dim, c.num_kv_heads, c.rope_theta), (16, 2, 10000.0));
        let mut newer = base();
        newer.as_object_mut().unwrap().remove("rope_theta");
        newer.as_object_mut().unwrap().remove("torch_dtype");
        newer["dtype"] = json!("float16");
        newer["rope_parameters"] = json!({"rope_theta": 500000.0, "rope_type": "default"});
        newer["head_dim"] = json!(32);
        let c = ModelConfig::from_json(Path::new("config.json"), &newer).unwrap();
        assert_eq!(
            (c.rope_theta, c.head_dim, c.dtype.as_deref(), c.rope_scaling),
            (500000.0, 32, Some("float16"), None)
        );
        let mut no_kv = base();
        no_kv.as_object_mut().unwrap().remove("num_key_value_heads");
        no_kv["rope_scaling"] = json!({"type": "linear", "factor": 2.0});
        let c = ModelConfig::from_json(Path::new("config.json"), &no_kv).unwrap();
        assert_eq!((c.num_kv_heads, c.rope_scaling), (4, Some(RopeScaling::Linear { factor: 2.0 })));
    }

    #[test]
    fn refuses_inconsistent_or_unsupported_configs_by_name() {
        let mut bad = base();
        bad["num_key_value_heads"] = json!(3);
        let err = ModelConfig::from_json(Path::new("config.json"), &bad).unwrap_err().to_string();
        assert!(err.contains("num_attention_heads 4 is not a positive multiple of the key/value heads 3"), "{err}");
        let mut gpt = base();
        gpt["architectures"] = json!(["GPT2LMHeadModel"]);
        let err = ModelConfig::from_json(Path::new("config.json"), &gpt).unwrap_err().to_string();
        assert!(err.contains("'GPT2LMHeadModel' is not supported (supported: LlamaForCausalLM"), "{err}");
        let mut missing = base();
        missing.as_object_mut().unwrap().remove("hidden_size");
        let err = ModelConfig::from_json(Path::new("config.json"), &missing).unwrap_err().to_string();
        assert!(err.contains("missing key 'hidden_size'"), "{err}");
        let mut wrong = base();
        wrong["num_hidden_layers"] = json!("2");
        assert!(matches!(ModelConfig::from_json(Path::new("c"), &wrong), Err(ConfigError::WrongType { .. })));
    }

    #[test]
    fn qwen3_resolves_with_its_head_size_and_sliding_windows_are_refused_by_key() {
        let mut qwen3 = base();
        qwen3["architectures"] = json!(["Qwen3ForCausalLM"]);
        qwen3["head_dim"] = json!(32);
        qwen3["use_sliding_window"] = json!(false);
        qwen3["layer_types"] = json!(["full_attention", "full_attention"]);
        let c = ModelConfig::from_json(Path::new("config.json"), &qwen3).unwrap();
        assert_eq!((c.arch.name(), c.head_dim, c.rope_dims), ("qwen3", 32, 32));
        let mut sliding = qwen3.clone();
        sliding["use_sliding_window"] = json!(true);
        let err = ModelConfig::from_json(Path::new("config.json"), &sliding).unwrap_err().to_string();
        assert!(err.contains("'use_sliding_window' is true; llama.cpp's qwen3 needs full attention"), "{err}");
        let mut mixed = qwen3;
        mixed["layer_types"] = json!(["sliding_attention", "full_attention"]);
        let err = ModelConfig::from_json(Path::new("config.json"), &mixed).unwrap_err().to_string();
        assert!(err.contains("'layer_types' is \"sliding_attention\""), "{err}");
    }

    /// The config.json files of models people tune today, as their repositories publish them,
    /// resolve as the families llama.cpp loads them as: Llama 3.2 1B (llama3 rope scaling, tied),
    /// SmolLM2 135M (a Llama), Qwen2.5 0.5B (a Qwen2 with its sliding window switched off) and
    /// Qwen3 0.6B (head_dim 128 beside hidden_size 1024 / 16 heads).
    #[test]
    fn published_configs_of_current_models_resolve_as_their_families() {
        let llama_3_2_1b = json!({
            "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
            "bos_token_id": 128000, "eos_token_id": 128001, "head_dim": 64, "hidden_act": "silu",
            "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 8192,
            "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
            "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8, "pretraining_tp": 1,
            "rms_norm_eps": 1e-05,
            "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                             "original_max_position_embeddings": 8192, "rope_type": "llama3"},
            "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
            "transformers_version": "4.45.0.dev0", "use_cache": true, "vocab_size": 128256
        });
        let c = ModelConfig::from_json(Path::new("config.json"), &llama_3_2_1b).unwrap();
        assert_eq!((c.arch.name(), c.head_dim, c.tie_word_embeddings, c.rope_theta), ("llama", 64, true, 500000.0));
        let llama3 =
            RopeScaling::Llama3 { factor: 32.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_context: 8192 };
        assert_eq!(c.rope_scaling, Some(llama3));

        let smollm2_135m = json!({
            "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
            "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "silu", "hidden_size": 576,
            "initializer_range": 0.041666666666666664, "intermediate_size": 1536, "is_llama_config": true,
            "max_position_embeddings": 8192, "model_type": "llama", "num_attention_heads": 9,
            "num_hidden_layers": 30, "num_key_value_heads": 3, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
            "rope_interleaved": false, "rope_scaling": null, "rope_theta": 100000, "tie_word_embeddings": true,
            "torch_dtype": "bfloat16", "transformers_version": "4.42.3", "use_cache": true, "vocab_size": 49152
        });
        let c = ModelConfig::from_json(Path::new("config.json"), &smollm2_135m).unwrap();
        assert_eq!((c.arch.name(), c.head_dim, c.num_kv_heads, c.rope_scaling), ("llama", 64, 3, None));

        let qwen2_5_0_5b = json!({
            "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
            "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02,
            "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 21,
            "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2,
            "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": true,
            "torch_dtype": "bfloat16", "transformers_version": "4.43.1", "use_cache": true,
            "use_sliding_window": false, "vocab_size": 151936
        });
        let c = ModelConfig::from_json(Path::new("config.json"), &qwen2_5_0_5b).unwrap();
        assert_eq!((c.arch.name(), c.head_dim, c.num_kv_heads), ("qwen2", 64, 2));

        let qwen3_0_6b = json!({
            "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
            "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
            "hidden_size": 1024, "initializer_range": 0.02, "intermediate_size": 3072,
            "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3",
            "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8, "rms_norm_eps": 1e-06,
            "rope_scaling": null, "rope_theta": 1000000, "sliding_window": null, "tie_word_embeddings": true,
            "torch_dtype": "bfloat16", "transformers_version": "4.51.0", "use_cache": true,
            "use_sliding_window": false, "vocab_size": 151936
        });
        let c = ModelConfig::from_json(Path::new("config.json"), &qwen3_0_6b).unwrap();
        assert_eq!((c.arch.name(), c.head_dim, c.rope_dims, c.num_heads * c.head_dim), ("qwen3", 128, 128, 2048));
    }

    /// microsoft/Phi-3-mini-4k-instruct's config.json as published, and Phi-4-mini's partial rope
    /// (transformers 5 writes it inside rope_parameters); the long-context variants are refused.
    #[test]
    fn phi3_resolves_with_partial_rope_and_long_context_and_other_scalings_are_refused() {
        let mini = json!({
            "architectures": ["Phi3ForCausalLM"], "hidden_size": 3072, "intermediate_size": 8192,
            "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
            "max_position_embeddings": 4096, "original_max_position_embeddings": 4096,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": null, "sliding_window": 2047,
            "hidden_act": "silu", "vocab_size": 32064, "tie_word_embeddings": false, "torch_dtype": "bfloat16"
        });
        let c = ModelConfig::from_json(Path::new("config.json"), &mini).unwrap();
        assert_eq!((c.arch.name(), c.head_dim, c.rope_dims, c.num_kv_heads), ("phi3", 96, 96, 32));
        assert_eq!((c.original_context_length, c.sliding_window, c.norm_eps), (Some(4096), Some(2047), 1e-5));
        let mut phi4 = mini.clone();
        phi4.as_object_mut().unwrap().remove("rope_theta");
        phi4["num_key_value_heads"] = json!(8);
        phi4["sliding_window"] = json!(null);
        phi4["rope_parameters"] = json!({"rope_theta": 10000.0, "rope_type": "default", "partial_rotary_factor": 0.75});
        let c = ModelConfig::from_json(Path::new("config.json"), &phi4).unwrap();
        assert_eq!((c.rope_dims, c.sliding_window), (72, Some(0)));
        // Phi-3-mini-128k: 48 factors of each kind for 96 rotated dimensions, in either name.
        let mut long = mini.clone();
        long["max_position_embeddings"] = json!(131072);
        let (short, long_factors): (Vec<f32>, Vec<f32>) =
            (0..48).map(|i| (1.0 + i as f32 / 48.0, 1.0 + i as f32)).unzip();
        for kind in ["longrope", "su"] {
            long["rope_scaling"] = json!({"type": kind, "long_factor": long_factors, "short_factor": short});
            let c = ModelConfig::from_json(Path::new("config.json"), &long).unwrap();
            assert_eq!(
                c.rope_scaling,
                Some(RopeScaling::LongRope { short: short.clone(), long: long_factors.clone() })
            );
        }
        long["rope_scaling"] = json!({"type": "longrope", "long_factor": [1.0], "short_factor": [1.0]});
        let err = ModelConfig::from_json(Path::new("config.json"), &long).unwrap_err().to_string();
        assert!(err.contains("rope_scaling has 1 short and 1 long factors; 96 rotated dimensions need 48"), "{err}");
        long["rope_scaling"] = json!({"type": "longrope", "long_factor": long_factors, "short_factor": "x"});
        let err = ModelConfig::from_json(Path::new("config.json"), &long).unwrap_err().to_string();
        assert!(err.contains("'short_factor' is \"x\""), "{err}");
        // Other families refuse longrope by key.
        let mut llama = base();
        llama["rope_scaling"] = json!({"type": "longrope", "long_factor": vec![1.0; 8], "short_factor": vec![1.0; 8]});
        let err = ModelConfig::from_json(Path::new("config.json"), &llama).unwrap_err().to_string();
        assert!(err.contains("'rope_scaling' is longrope"), "{err}");
        let mut linear = mini.clone();
        linear["rope_scaling"] = json!({"type": "linear", "factor": 2.0});
        let err = ModelConfig::from_json(Path::new("config.json"), &linear).unwrap_err().to_string();
        assert!(err.contains("'rope_scaling' is Linear"), "{err}");
        let mut biased = mini;
        biased["attention_bias"] = json!(true);
        let err = ModelConfig::from_json(Path::new("config.json"), &biased).unwrap_err().to_string();
        assert!(err.contains("'attention_bias' is true; llama.cpp's phi3"), "{err}");
    }

    /// tiiuae/falcon-7b's config.json as published (transformers' port of the model).
    fn falcon_7b() -> Value {
        json!({
            "alibi": false, "apply_residual_connection_post_layernorm": false,
            "architectures": ["FalconForCausalLM"], "attention_dropout": 0.0, "bias": false,
            "bos_token_id": 11, "eos_token_id": 11, "hidden_dropout": 0.0, "hidden_size": 4544,
            "initializer_range": 0.02, "layer_norm_epsilon": 1e-05, "model_type": "falcon",
            "multi_query": true, "new_decoder_architecture": false, "num_attention_heads": 71,
            "num_hidden_layers": 32, "parallel_attn": true, "torch_dtype": "bfloat16",
            "transformers_version": "4.27.4", "use_cache": true, "vocab_size": 65024
        })
    }

    #[test]
    fn resolves_falcon_configs_with_transformers_defaults() {
        let c = ModelConfig::from_json(Path::new("config.json"), &falcon_7b()).unwrap();
        assert_eq!(c.arch.name(), "falcon");
        assert_eq!((c.num_heads, c.num_kv_heads, c.head_dim), (71, 1, 64), "multi-query: one key/value head");
        assert_eq!((c.intermediate_size, c.context_length, c.norm_eps), (4 * 4544, 2048, 1e-5));
        assert!(!c.tie_word_embeddings && !c.attn_norm_2, "the hub's checkpoints store lm_head; one norm");

        // Falcon-40B: the new decoder architecture, 8 key/value heads, two norms per layer.
        let mut f40 = falcon_7b();
        let o = f40.as_object_mut().unwrap();
        o.remove("multi_query");
        o.insert("new_decoder_architecture".into(), json!(true));
        o.insert("hidden_size".into(), json!(8192));
        o.insert("num_attention_heads".into(), json!(128));
        o.insert("num_kv_heads".into(), json!(8));
        let c = ModelConfig::from_json(Path::new("config.json"), &f40).unwrap();
        assert_eq!((c.num_kv_heads, c.head_dim, c.attn_norm_2), (8, 64, true));
        f40["num_ln_in_parallel_attn"] = json!(1);
        f40["ffn_hidden_size"] = json!(16384);
        let c = ModelConfig::from_json(Path::new("config.json"), &f40).unwrap();
        assert_eq!((c.attn_norm_2, c.intermediate_size), (false, 16384), "Falcon2 11B's single norm");

        // The remote-code RWConfig's key names.
        let rw = json!({
            "architectures": ["RWForCausalLM"], "hidden_size": 64, "n_head": 4, "n_layer": 2,
            "n_head_kv": 2, "new_decoder_architecture": true, "vocab_size": 512
        });
        let c = ModelConfig::from_json(Path::new("config.json"), &rw).unwrap();
        assert_eq!((c.num_heads, c.num_layers, c.num_kv_heads), (4, 2, 2));
    }

    #[test]
    fn refuses_falcon_layouts_llama_cpp_does_not_run_by_key() {
        for (key, value, expected) in [
            ("alibi", json!(true), "false (rotary"),
            ("bias", json!(true), "false (projections"),
            ("parallel_attn", json!(false), "true (attention and MLP"),
            ("activation", json!("relu"), "gelu"),
        ] {
            let mut c = falcon_7b();
            c[key] = value;
            let err = ModelConfig::from_json(Path::new("config.json"), &c).unwrap_err().to_string();
            assert!(err.contains(&format!("'{key}' is")) && err.contains(expected), "{err}");
        }
    }

    #[test]
    fn resolves_gpt_neox_configs_old_and_new() {
        // EleutherAI/pythia-160m's config.json (transformers 4.24).
        let pythia = json!({
            "architectures": ["GPTNeoXForCausalLM"], "bos_token_id": 0, "eos_token_id": 0,
            "hidden_act": "gelu", "hidden_size": 768, "initializer_range": 0.02,
            "intermediate_size": 3072, "layer_norm_eps": 1e-05, "max_position_embeddings": 2048,
            "model_type": "gpt_neox", "num_attention_heads": 12, "num_hidden_layers": 12,
            "rotary_emb_base": 10000, "rotary_pct": 0.25, "tie_word_embeddings": false,
            "torch_dtype": "float16", "use_cache": true, "use_parallel_residual": true, "vocab_size": 50304
        });
        let c = ModelConfig::from_json(Path::new("config.json"), &pythia).unwrap();
        assert_eq!(c.arch.name(), "gptneox");
        assert_eq!((c.head_dim, c.rope_dims, c.num_kv_heads, c.parallel_residual), (64, 16, 12, true));
        assert_eq!((c.rope_theta, c.norm_eps, c.tie_word_embeddings), (10000.0, 1e-5, false));
        // transformers 5 moves the rotary fraction and base into rope_parameters.
        let mut newer = pythia.clone();
        let o = newer.as_object_mut().unwrap();
        o.remove("rotary_pct");
        o.remove("rotary_emb_base");
        o.insert("use_parallel_residual".into(), json!(false));
        o.insert(
            "rope_parameters".into(),
            json!({"partial_rotary_factor": 1.0, "rope_theta": 500.0, "rope_type": "default"}),
        );
        let c = ModelConfig::from_json(Path::new("config.json"), &newer).unwrap();
        assert_eq!((c.rope_dims, c.rope_theta, c.parallel_residual), (64, 500.0, false));
        for (key, value) in
            [("attention_bias", json!(false)), ("tie_word_embeddings", json!(true)), ("hidden_act", json!("relu"))]
        {
            let mut bad = pythia.clone();
            bad[key] = value;
            let err = ModelConfig::from_json(Path::new("config.json"), &bad).unwrap_err().to_string();
            assert!(err.contains(&format!("'{key}' is")) && err.contains("gptneox"), "{err}");
        }
    }
}
