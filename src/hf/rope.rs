//! Rope scaling as config.json states it (`rope_scaling`, or transformers 5's `rope_parameters`),
//! and what llama.cpp needs of it: its `rope.scaling.*` keys, or for Llama 3 the per-pair frequency
//! factors it reads from `rope_freqs.weight`.

use std::path::Path;

use serde_json::Value;

use super::config::ConfigError;

/// Rope scaling from config.json, as llama.cpp keys express it.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// `"linear"`: positions divided by `factor`.
    Linear { factor: f32 },
    /// `"yarn"`.
    Yarn { factor: f32, original_context: u32 },
    /// `"llama3"` (Llama 3.1, 3.2, 3.3): the low frequencies divided by `factor`, the high ones
    /// kept, a smooth mix between; written as `rope_freqs.weight` (see [`llama3_frequency_factors`]).
    Llama3 { factor: f32, low_freq_factor: f32, high_freq_factor: f32, original_context: u64 },
    /// `"longrope"` (or its older name `"su"`: Phi-3-mini-128k, Phi-3.5-mini, Phi-4-mini): each
    /// rotary pair's frequency divided by its `short` factor up to the original context, by its
    /// `long` factor beyond; written as `rope_factors_short.weight` and `rope_factors_long.weight`.
    LongRope { short: Vec<f32>, long: Vec<f32> },
}

/// The context Llama 3 was trained at before its context was extended, where a config does not
/// say: what llama.cpp's converter assumes.
const LLAMA3_DEFAULT_ORIGINAL_CONTEXT: u64 = 8192;

impl RopeScaling {
    /// Reads the scaling object `s` (`rope_scaling`, or `rope_parameters` with a `rope_type` other
    /// than `default`) of the config.json at `path`, whose top level is `top`: Llama 3's
    /// `original_max_position_embeddings` is read from `s` (transformers 5 puts it there), else
    /// from the top level, else 8192 as llama.cpp's converter assumes.
    pub(super) fn parse(path: &Path, top: &Value, s: &Value) -> Result<RopeScaling, ConfigError> {
        let kind = s.get("rope_type").or_else(|| s.get("type")).and_then(Value::as_str).unwrap_or("");
        let number = |key: &'static str| -> Result<Option<f64>, ConfigError> {
            match s.get(key).filter(|v| !v.is_null()) {
                None => Ok(None),
                Some(v) => v.as_f64().map(Some).ok_or_else(|| ConfigError::WrongType {
                    path: path.to_owned(),
                    key,
                    expected: "a number",
                    found: v.to_string(),
                }),
            }
        };
        let factor = number("factor")?.unwrap_or(1.0) as f32;
        match kind {
            "linear" => Ok(RopeScaling::Linear { factor }),
            "yarn" => Ok(RopeScaling::Yarn {
                factor,
                original_context: s.get("original_max_position_embeddings").and_then(Value::as_u64).unwrap_or(0) as u32,
            }),
            "llama3" => {
                let required = |key: &'static str| -> Result<f32, ConfigError> {
                    number(key)?.map(|v| v as f32).ok_or(ConfigError::Missing {
                        path: path.to_owned(),
                        key,
                        expected: "a number in rope_scaling (rope_type llama3)",
                    })
                };
                let (factor, low, high) =
                    (required("factor")?, required("low_freq_factor")?, required("high_freq_factor")?);
                let original = match s
                    .get("original_max_position_embeddings")
                    .or_else(|| top.get("original_max_position_embeddings"))
                {
                    None | Some(Value::Null) => LLAMA3_DEFAULT_ORIGINAL_CONTEXT,
                    Some(v) => v.as_u64().ok_or_else(|| ConfigError::WrongType {
                        path: path.to_owned(),
                        key: "original_max_position_embeddings",
                        expected: "a positive integer",
                        found: v.to_string(),
                    })?,
                };
                let valid =
                    factor >= 1.0 && factor.is_finite() && low > 0.0 && high > low && high.is_finite() && original > 0;
                if !valid {
                    return Err(ConfigError::Inconsistent {
                        path: path.to_owned(),
                        what: format!(
                            "rope_scaling llama3 needs factor >= 1, 0 < low_freq_factor < high_freq_factor and a positive original_max_position_embeddings; found factor {factor}, low_freq_factor {low}, high_freq_factor {high}, original_max_position_embeddings {original}"
                        ),
                    });
                }
                Ok(RopeScaling::Llama3 {
                    factor,
                    low_freq_factor: low,
                    high_freq_factor: high,
                    original_context: original,
                })
            }
            "longrope" | "su" => {
                let factors = |key: &'static str| -> Result<Vec<f32>, ConfigError> {
                    let wrong = |found: String| ConfigError::WrongType {
                        path: path.to_owned(),
                        key,
                        expected: "a list of positive numbers in rope_scaling (rope_type longrope)",
                        found,
                    };
                    let list = s
                        .get(key)
                        .and_then(Value::as_array)
                        .ok_or_else(|| wrong(s.get(key).map_or_else(|| "absent".to_owned(), Value::to_string)))?;
                    list.iter()
                        .map(|v| v.as_f64().filter(|f| *f > 0.0 && f.is_finite()).map(|f| f as f32))
                        .collect::<Option<Vec<f32>>>()
                        .ok_or_else(|| wrong(Value::Array(list.clone()).to_string()))
                };
                Ok(RopeScaling::LongRope { short: factors("short_factor")?, long: factors("long_factor")? })
            }
            other => Err(ConfigError::UnsupportedRopeScaling { path: path.to_owned(), kind: other.to_owned() }),
        }
    }
}

/// Llama 3's frequency factors for `rope_dims` rotated dimensions at base `theta`: one per
/// rotary pair, the number llama.cpp divides that pair's frequency by (`rope_freqs.weight`).
/// transformers' `_compute_llama3_parameters` rescales the inverse frequencies; the factor is the
/// original frequency over the rescaled one, computed in f32 as transformers computes them.
pub fn llama3_frequency_factors(
    theta: f32,
    rope_dims: u64,
    factor: f32,
    low_freq_factor: f32,
    high_freq_factor: f32,
    original_context: u64,
) -> Vec<f32> {
    let original = original_context as f32;
    let low_freq_wavelen = original / low_freq_factor;
    let high_freq_wavelen = original / high_freq_factor;
    (0..rope_dims / 2)
        .map(|i| {
            let inv_freq = 1.0 / theta.powf((2 * i) as f32 / rope_dims as f32);
            let wavelen = 2.0 * std::f32::consts::PI / inv_freq;
            if wavelen < high_freq_wavelen {
                1.0
            } else if wavelen > low_freq_wavelen {
                factor
            } else {
                let smooth = (original / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn llama3_factors_keep_high_frequencies_and_divide_low_ones() {
        // Llama 3.1 8B: theta 500000, head 128, factor 8, low 1, high 4, original 8192.
        let f = llama3_frequency_factors(500_000.0, 128, 8.0, 1.0, 4.0, 8192);
        assert_eq!(f.len(), 64);
        assert_eq!(f[0], 1.0, "the highest frequency is kept");
        assert_eq!(f[63], 8.0, "the lowest frequency is divided by the factor");
        assert!(f.windows(2).all(|w| w[0] <= w[1]), "factors grow as frequencies fall: {f:?}");
        // The smooth band: wavelengths between 8192/4 and 8192/1.
        let smooth: Vec<_> = f.iter().filter(|&&x| x > 1.0 && x < 8.0).collect();
        assert!(!smooth.is_empty());
        // Pair i's wavelength 2π·theta^(2i/d), checked against the band edges by hand for i = 32.
        let wavelen = 2.0 * std::f64::consts::PI * 500_000f64.powf(64.0 / 128.0);
        assert!(wavelen > 2048.0 && wavelen < 8192.0, "{wavelen}");
        let smooth = (8192.0 / wavelen - 1.0) / 3.0;
        let expected = 1.0 / ((1.0 - smooth) / 8.0 + smooth);
        assert!((f64::from(f[32]) - expected).abs() < 1e-4 * expected, "{} vs {expected}", f[32]);
    }

    #[test]
    fn llama3_reads_the_original_context_wherever_the_config_puts_it() {
        let p = Path::new("config.json");
        let inner = json!({"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                           "original_max_position_embeddings": 4096});
        let top = json!({});
        let expected =
            RopeScaling::Llama3 { factor: 32.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_context: 4096 };
        assert_eq!(RopeScaling::parse(p, &top, &inner).unwrap(), expected);
        let mut outer = inner.clone();
        outer.as_object_mut().unwrap().remove("original_max_position_embeddings");
        let top = json!({"original_max_position_embeddings": 4096});
        assert_eq!(RopeScaling::parse(p, &top, &outer).unwrap(), expected);
        let RopeScaling::Llama3 { original_context, .. } = RopeScaling::parse(p, &json!({}), &outer).unwrap() else {
            panic!()
        };
        assert_eq!(original_context, 8192);
        let mut missing = inner.clone();
        missing.as_object_mut().unwrap().remove("high_freq_factor");
        let err = RopeScaling::parse(p, &json!({}), &missing).unwrap_err().to_string();
        assert!(err.contains("missing key 'high_freq_factor'"), "{err}");
        let mut equal = inner;
        equal["low_freq_factor"] = json!(4.0);
        let err = RopeScaling::parse(p, &json!({}), &equal).unwrap_err().to_string();
        assert!(err.contains("0 < low_freq_factor < high_freq_factor"), "{err}");
    }
}
