//! `config.json` of a Llama-family checkpoint, resolved into the hyper-parameters conversion needs.
//!
//! config.json varies with the transformers version that wrote it: `rope_theta` at the top level
//! or inside `rope_parameters`, `torch_dtype` or `dtype`, `head_dim` explicit or derived,
//! `rope_scaling` null or an object, `num_key_value_heads` present or not. All are accepted; an
//! inconsistent config (head counts that do not divide) is refused by name.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::HfError;

/// The architectures `convert` supports, by llama.cpp's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// Llama 1/2/3, Code Llama, Vicuna, TinyLlama, SmolLM, and Mistral (which llama.cpp loads as llama).
    Llama,
    /// Qwen2 (q/k/v biases, NEOX-style rope).
    Qwen2,
}

impl Arch {
    /// llama.cpp's `general.architecture`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }

    /// The Hugging Face architectures each maps from.
    pub const SUPPORTED: &'static [(&'static str, Arch)] =
        &[("LlamaForCausalLM", Arch::Llama), ("MistralForCausalLM", Arch::Llama), ("Qwen2ForCausalLM", Arch::Qwen2)];
}

/// Rope scaling from config.json's `rope_scaling`, as llama.cpp keys express it.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// `"linear"`: positions divided by `factor`.
    Linear { factor: f32 },
    /// `"yarn"`.
    Yarn { factor: f32, original_context: u32 },
    /// `"llama3"`: frequencies rescaled into `rope_freqs.weight` (not supported yet).
    Llama3,
}

/// The resolved hyper-parameters of a Llama-family checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub arch: Arch,
    /// `architectures[0]` as written (for messages and `general.name` fallback).
    pub hf_architecture: String,
    pub hidden_size: u64,
    pub intermediate_size: u64,
    pub num_layers: u64,
    pub num_heads: u64,
    pub num_kv_heads: u64,
    pub head_dim: u64,
    pub context_length: u64,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub rope_scaling: Option<RopeScaling>,
    pub vocab_size: u64,
    pub tie_word_embeddings: bool,
    /// `torch_dtype` / `dtype`, when given.
    pub dtype: Option<String>,
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
    #[error("{}: rope_scaling type '{kind}' is not supported yet (supported: linear, yarn)", path.display())]
    UnsupportedRopeScaling { path: PathBuf, kind: String },
}

fn supported_list() -> String {
    Arch::SUPPORTED.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

struct Reader<'a> {
    path: &'a Path,
    json: &'a Value,
}

impl Reader<'_> {
    fn get(&self, key: &'static str) -> Option<&Value> {
        self.json.get(key).filter(|v| !v.is_null())
    }

    fn u64_opt(&self, key: &'static str) -> Result<Option<u64>, ConfigError> {
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

    fn u64(&self, key: &'static str) -> Result<u64, ConfigError> {
        self.u64_opt(key)?.ok_or(ConfigError::Missing { path: self.path.to_owned(), key, expected: "an integer" })
    }

    fn f32_opt(&self, key: &'static str) -> Result<Option<f32>, ConfigError> {
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
}

impl LlamaConfig {
    /// Resolves a parsed config.json (`path` is only for messages).
    pub fn from_json(path: &Path, json: &Value) -> Result<LlamaConfig, ConfigError> {
        let r = Reader { path, json };
        let hf_architecture = match r.get("architectures").and_then(|a| a.get(0)).and_then(Value::as_str) {
            Some(a) => a.to_owned(),
            None => match r.get("model_type").and_then(Value::as_str) {
                Some("llama") => "LlamaForCausalLM".to_owned(),
                Some("mistral") => "MistralForCausalLM".to_owned(),
                Some("qwen2") => "Qwen2ForCausalLM".to_owned(),
                Some(other) => other.to_owned(),
                None => {
                    return Err(ConfigError::Missing {
                        path: path.to_owned(),
                        key: "architectures",
                        expected: "a list naming the model class, or 'model_type'",
                    })
                }
            },
        };
        let arch =
            Arch::SUPPORTED.iter().find(|(n, _)| *n == hf_architecture).map(|(_, a)| *a).ok_or_else(|| {
                ConfigError::UnsupportedArch { path: path.to_owned(), found: hf_architecture.clone() }
            })?;

        let hidden_size = r.u64("hidden_size")?;
        let num_heads = r.u64("num_attention_heads")?;
        let num_kv_heads = r.u64_opt("num_key_value_heads")?.unwrap_or(num_heads);
        let inconsistent = |what: String| ConfigError::Inconsistent { path: path.to_owned(), what };
        if num_heads == 0 || num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return Err(inconsistent(format!(
                "num_attention_heads {num_heads} is not a positive multiple of num_key_value_heads {num_kv_heads}"
            )));
        }
        let head_dim = match r.u64_opt("head_dim")? {
            Some(d) => d,
            None if hidden_size % num_heads == 0 => hidden_size / num_heads,
            None => {
                return Err(inconsistent(format!(
                    "hidden_size {hidden_size} is not a multiple of num_attention_heads {num_heads} and no head_dim is given"
                )))
            }
        };
        if head_dim % 2 != 0 {
            return Err(inconsistent(format!("head_dim {head_dim} is odd; rotary embeddings need an even head size")));
        }
        let rope_parameters = Reader { path, json: r.get("rope_parameters").unwrap_or(&Value::Null) };
        let rope_theta = match r.f32_opt("rope_theta")? {
            Some(t) => t,
            None => rope_parameters.f32_opt("rope_theta")?.unwrap_or(10_000.0),
        };
        let scaling_json = r.get("rope_scaling").or_else(|| {
            rope_parameters.get("rope_type").filter(|t| t.as_str() != Some("default")).map(|_| rope_parameters.json)
        });
        let rope_scaling = match scaling_json {
            None => None,
            Some(s) => Some(parse_rope_scaling(path, s)?),
        };
        let dtype = r.get("torch_dtype").or_else(|| r.get("dtype")).and_then(Value::as_str).map(str::to_owned);
        Ok(LlamaConfig {
            arch,
            hf_architecture,
            hidden_size,
            intermediate_size: r.u64("intermediate_size")?,
            num_layers: r.u64("num_hidden_layers")?,
            num_heads,
            num_kv_heads,
            head_dim,
            context_length: r.u64_opt("max_position_embeddings")?.unwrap_or(2048),
            rms_norm_eps: r.f32_opt("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            vocab_size: r.u64("vocab_size")?,
            tie_word_embeddings: r.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(false),
            dtype,
        })
    }

    /// Reads and resolves `dir/config.json`.
    pub fn load(dir: &Path) -> Result<LlamaConfig, HfError> {
        Self::load_file(&dir.join("config.json"))
    }

    /// Reads and resolves the config.json at `path`.
    pub fn load_file(path: &Path) -> Result<LlamaConfig, HfError> {
        let json = super::checkpoint::read_json(path)?;
        LlamaConfig::from_json(path, &json).map_err(HfError::Config)
    }
}

fn parse_rope_scaling(path: &Path, s: &Value) -> Result<RopeScaling, ConfigError> {
    let kind = s.get("rope_type").or_else(|| s.get("type")).and_then(Value::as_str).unwrap_or("");
    let factor = s.get("factor").and_then(Value::as_f64).unwrap_or(1.0) as f32;
    match kind {
        "linear" => Ok(RopeScaling::Linear { factor }),
        "yarn" => Ok(RopeScaling::Yarn {
            factor,
            original_context: s.get("original_max_position_embeddings").and_then(Value::as_u64).unwrap_or(0) as u32,
        }),
        "llama3" => Ok(RopeScaling::Llama3),
        other => Err(ConfigError::UnsupportedRopeScaling { path: path.to_owned(), kind: other.to_owned() }),
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
        let c = LlamaConfig::from_json(Path::new("config.json"), &base()).unwrap();
        assert_eq!((c.head_dim, c.num_kv_heads, c.rope_theta), (16, 2, 10000.0));
        let mut newer = base();
        newer.as_object_mut().unwrap().remove("rope_theta");
        newer.as_object_mut().unwrap().remove("torch_dtype");
        newer["dtype"] = json!("float16");
        newer["rope_parameters"] = json!({"rope_theta": 500000.0, "rope_type": "default"});
        newer["head_dim"] = json!(32);
        let c = LlamaConfig::from_json(Path::new("config.json"), &newer).unwrap();
        assert_eq!(
            (c.rope_theta, c.head_dim, c.dtype.as_deref(), c.rope_scaling),
            (500000.0, 32, Some("float16"), None)
        );
        let mut no_kv = base();
        no_kv.as_object_mut().unwrap().remove("num_key_value_heads");
        no_kv["rope_scaling"] = json!({"type": "linear", "factor": 2.0});
        let c = LlamaConfig::from_json(Path::new("config.json"), &no_kv).unwrap();
        assert_eq!((c.num_kv_heads, c.rope_scaling), (4, Some(RopeScaling::Linear { factor: 2.0 })));
    }

    #[test]
    fn refuses_inconsistent_or_unsupported_configs_by_name() {
        let mut bad = base();
        bad["num_key_value_heads"] = json!(3);
        let err = LlamaConfig::from_json(Path::new("config.json"), &bad).unwrap_err().to_string();
        assert!(err.contains("num_attention_heads 4 is not a positive multiple of num_key_value_heads 3"), "{err}");
        let mut gpt = base();
        gpt["architectures"] = json!(["GPTNeoXForCausalLM"]);
        let err = LlamaConfig::from_json(Path::new("config.json"), &gpt).unwrap_err().to_string();
        assert!(err.contains("'GPTNeoXForCausalLM' is not supported (supported: LlamaForCausalLM"), "{err}");
        let mut missing = base();
        missing.as_object_mut().unwrap().remove("hidden_size");
        let err = LlamaConfig::from_json(Path::new("config.json"), &missing).unwrap_err().to_string();
        assert!(err.contains("missing key 'hidden_size'"), "{err}");
        let mut wrong = base();
        wrong["num_hidden_layers"] = json!("2");
        assert!(matches!(LlamaConfig::from_json(Path::new("c"), &wrong), Err(ConfigError::WrongType { .. })));
    }
}
