//! A plain-Rust forward pass of a Llama-family Hugging Face checkpoint, written from the
//! transformers modelling code (LlamaForCausalLM / Qwen2ForCausalLM) and independent of our
//! converter: it reads the safetensors files with the `safetensors` crate, uses the Hugging Face
//! layout (no Q/K permutation) and Hugging Face's rotate-half rope.

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

/// Weights by Hugging Face name, as f32, with their shapes.
pub struct HfWeights {
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    config: serde_json::Value,
}

impl HfWeights {
    /// Reads every `*.safetensors` in `dir` and its config.json.
    pub fn load(dir: &Path) -> HfWeights {
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
        let mut tensors = HashMap::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "safetensors") {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let st = SafeTensors::deserialize(&bytes).unwrap();
            for (name, view) in st.tensors() {
                let data = view.data();
                let values: Vec<f32> = match view.dtype() {
                    Dtype::F32 => data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
                    Dtype::F16 => {
                        data.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
                    }
                    Dtype::BF16 => {
                        data.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
                    }
                    other => panic!("unexpected dtype {other:?}"),
                };
                tensors.insert(name, (view.shape().to_vec(), values));
            }
        }
        HfWeights { tensors, config }
    }

    fn get(&self, name: &str) -> &[f32] {
        &self.tensors.get(name).unwrap_or_else(|| panic!("tensor {name} missing")).1
    }

    fn opt(&self, name: &str) -> Option<&[f32]> {
        self.tensors.get(name).map(|t| t.1.as_slice())
    }

    fn cfg(&self, key: &str) -> f64 {
        self.config[key].as_f64().unwrap_or_else(|| panic!("config key {key}"))
    }

    /// Logits for every position of `tokens`, `[len][vocab]`.
    pub fn forward(&self, tokens: &[i32]) -> Vec<Vec<f32>> {
        let h = self.cfg("hidden_size") as usize;
        let n_layer = self.cfg("num_hidden_layers") as usize;
        let n_head = self.cfg("num_attention_heads") as usize;
        let n_kv = self.config["num_key_value_heads"].as_f64().map_or(n_head, |v| v as usize);
        let hd = self.config["head_dim"].as_f64().map_or(h / n_head, |v| v as usize);
        let ff = self.cfg("intermediate_size") as usize;
        let vocab = self.cfg("vocab_size") as usize;
        let eps = self.cfg("rms_norm_eps") as f32;
        let theta = self.cfg("rope_theta") as f32;
        let embed = self.get("model.embed_tokens.weight");
        let lm_head = self.opt("lm_head.weight").unwrap_or(embed);

        let mut xs: Vec<Vec<f32>> =
            tokens.iter().map(|&t| embed[t as usize * h..(t as usize + 1) * h].to_vec()).collect();
        for l in 0..n_layer {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            let normed: Vec<Vec<f32>> =
                xs.iter().map(|x| rms_norm(x, self.get(&p("input_layernorm.weight")), eps)).collect();
            let proj = |x: &[f32], w: &str, out: usize| {
                let mut y = matvec(self.get(&p(&format!("{w}.weight"))), x, out);
                if let Some(b) = self.opt(&p(&format!("{w}.bias"))) {
                    y.iter_mut().zip(b).for_each(|(y, b)| *y += b);
                }
                y
            };
            let mut qs: Vec<Vec<f32>> = normed.iter().map(|x| proj(x, "self_attn.q_proj", n_head * hd)).collect();
            let mut ks: Vec<Vec<f32>> = normed.iter().map(|x| proj(x, "self_attn.k_proj", n_kv * hd)).collect();
            let vs: Vec<Vec<f32>> = normed.iter().map(|x| proj(x, "self_attn.v_proj", n_kv * hd)).collect();
            for (pos, (q, k)) in qs.iter_mut().zip(ks.iter_mut()).enumerate() {
                rope_rotate_half(q, hd, pos, theta);
                rope_rotate_half(k, hd, pos, theta);
            }
            let scale = 1.0 / (hd as f32).sqrt();
            for (i, x) in xs.iter_mut().enumerate() {
                let mut attn = vec![0.0f32; n_head * hd];
                for head in 0..n_head {
                    let kvh = head / (n_head / n_kv);
                    let q = &qs[i][head * hd..(head + 1) * hd];
                    let scores: Vec<f32> = (0..=i).map(|j| dot(q, &ks[j][kvh * hd..(kvh + 1) * hd]) * scale).collect();
                    let probs = softmax(&scores);
                    for (j, pj) in probs.iter().enumerate() {
                        for d in 0..hd {
                            attn[head * hd + d] += pj * vs[j][kvh * hd + d];
                        }
                    }
                }
                let o = matvec(self.get(&p("self_attn.o_proj.weight")), &attn, h);
                x.iter_mut().zip(&o).for_each(|(x, o)| *x += o);
                let n2 = rms_norm(x, self.get(&p("post_attention_layernorm.weight")), eps);
                let g = matvec(self.get(&p("mlp.gate_proj.weight")), &n2, ff);
                let u = matvec(self.get(&p("mlp.up_proj.weight")), &n2, ff);
                let act: Vec<f32> = g.iter().zip(&u).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect();
                let d = matvec(self.get(&p("mlp.down_proj.weight")), &act, h);
                x.iter_mut().zip(&d).for_each(|(x, d)| *x += d);
            }
        }
        xs.iter().map(|x| matvec(lm_head, &rms_norm(x, self.get("model.norm.weight"), eps), vocab)).collect()
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

/// `W x` for a row-major `[out, in]` weight.
fn matvec(w: &[f32], x: &[f32], out: usize) -> Vec<f32> {
    let n = x.len();
    (0..out).map(|r| dot(&w[r * n..(r + 1) * n], x)).collect()
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (ms + eps).sqrt();
    x.iter().zip(w).map(|(v, w)| v * inv * w).collect()
}

fn softmax(x: &[f32]) -> Vec<f32> {
    let m = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = x.iter().map(|v| (v - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// transformers' `apply_rotary_pos_emb` with `rotate_half`, per head.
fn rope_rotate_half(v: &mut [f32], hd: usize, pos: usize, theta: f32) {
    let half = hd / 2;
    for head in v.chunks_exact_mut(hd) {
        for i in 0..half {
            let freq = 1.0 / theta.powf(2.0 * i as f32 / hd as f32);
            let (sin, cos) = (pos as f32 * freq).sin_cos();
            let (a, b) = (head[i], head[i + half]);
            head[i] = a * cos - b * sin;
            head[i + half] = b * cos + a * sin;
        }
    }
}

/// The logits a fixture script wrote (f32 little-endian, `n_tokens` rows), one row per token.
pub fn read_logits(path: &Path, n_tokens: usize) -> Vec<Vec<f32>> {
    let bytes = std::fs::read(path).unwrap();
    let flat: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(flat.len() % n_tokens.max(1), 0, "{}: not {n_tokens} rows", path.display());
    flat.chunks_exact(flat.len() / n_tokens.max(1)).map(<[f32]>::to_vec).collect()
}

/// Largest absolute difference divided by the largest absolute reference value.
pub fn max_relative_error(got: &[Vec<f32>], want: &[Vec<f32>]) -> f32 {
    let scale = want.iter().flatten().fold(0.0f32, |m, v| m.max(v.abs()));
    let diff = got.iter().flatten().zip(want.iter().flatten()).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    diff / scale
}

/// Normalised mean squared error, as ggml's test-backend-ops measures it.
pub fn nmse(got: &[Vec<f32>], want: &[Vec<f32>]) -> f64 {
    let (mut err, mut norm) = (0.0f64, 0.0f64);
    for (a, b) in got.iter().flatten().zip(want.iter().flatten()) {
        err += f64::from(a - b).powi(2);
        norm += f64::from(*b).powi(2);
    }
    err / norm
}
