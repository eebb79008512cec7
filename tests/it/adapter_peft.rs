//! `import-peft` / `export-peft`: a PEFT adapter imported onto the converted base makes llama.cpp
//! compute what it computes for the Hugging Face model with the adapter merged in HF layout (which
//! checks the Q/K permutation of lora_B for real), round trips are bit-exact, and bad folders are
//! refused naming the file and tensor.

use std::collections::HashMap;
use std::path::Path;

use gguftune::adapter::{export_peft, import_peft, write_lora_gguf};
use gguftune::gguf::GgufFile;
use gguftune::quant::FileType;
use serde_json::{json, Value};

use crate::adapter_merge::{llama_logits, random_pairs, test_tokens};
use crate::common::fixtures::{tiny_llama, Dtype, Rng, Shards, TinyArch, TinyLlamaSpec, TinyTokenizer};
use crate::common::reference::{max_relative_error, nmse};
use crate::common::{convert_to, gguftune, temp_dir};

/// As for `merge` (tests/it/adapter_merge.rs): f32 on both sides, the adapter added to the weight
/// (HF side, before conversion) or to the product (llama.cpp's adapter path); only rounding of
/// re-associated f32 sums differs.
const PEFT_F32_RELATIVE_TOLERANCE: f32 = 1e-4;

const MODULES: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

/// One PEFT LoRA pair: the HF module (`model.layers.0.self_attn.q_proj`), A `[r, in]`, B `[out, r]`,
/// values already rounded to the dtype they are stored in.
struct PeftPair {
    module: String,
    shape_in: usize,
    shape_out: usize,
    a: Vec<f32>,
    b: Vec<f32>,
}

/// Random PEFT pairs on every projection of a model made from `spec`, rounded to `dtype`.
fn peft_pairs(spec: &TinyLlamaSpec, r: usize, dtype: Dtype, seed: u64) -> Vec<PeftPair> {
    let mut rng = Rng::new(seed);
    let round = |v: f32| match dtype {
        Dtype::F32 => v,
        Dtype::F16 => half::f16::from_f32(v).to_f32(),
        Dtype::BF16 => half::bf16::from_f32(v).to_f32(),
    };
    let (h, f) = (spec.hidden, spec.ffn);
    let (q, kv) = (spec.heads * spec.head_dim(), spec.kv_heads * spec.head_dim());
    let mut pairs = Vec::new();
    for layer in 0..spec.layers {
        for (m, (n_out, n_in)) in MODULES.iter().zip([(q, h), (kv, h), (kv, h), (h, q), (f, h), (f, h), (h, f)]) {
            pairs.push(PeftPair {
                module: format!("model.layers.{layer}.{m}"),
                shape_in: n_in,
                shape_out: n_out,
                a: (0..r * n_in).map(|_| round(rng.uniform(0.2))).collect(),
                b: (0..n_out * r).map(|_| round(rng.uniform(0.2))).collect(),
            });
        }
    }
    pairs
}

/// Writes a PEFT adapter folder as `PeftModel.save_pretrained` does.
fn write_peft(dir: &Path, pairs: &[PeftPair], r: usize, dtype: Dtype, adapter_name: Option<&str>, config: Value) {
    std::fs::create_dir_all(dir).unwrap();
    let segment = adapter_name.map(|n| format!("{n}.")).unwrap_or_default();
    let mut tensors = Vec::new();
    for p in pairs {
        let prefix = format!("base_model.model.{}", p.module);
        tensors.push((format!("{prefix}.lora_A.{segment}weight"), vec![r, p.shape_in], dtype.encode(&p.a)));
        tensors.push((format!("{prefix}.lora_B.{segment}weight"), vec![p.shape_out, r], dtype.encode(&p.b)));
    }
    let views: Vec<_> = tensors
        .iter()
        .map(|(n, shape, bytes)| {
            (n.clone(), safetensors::tensor::TensorView::new(dtype.safetensors(), shape.clone(), bytes).unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, &None, &dir.join("adapter_model.safetensors")).unwrap();
    let mut cfg = json!({
        "base_model_name_or_path": "tiny", "bias": "none", "fan_in_fan_out": false, "inference_mode": true,
        "lora_alpha": 8, "lora_dropout": 0.0, "modules_to_save": null, "peft_type": "LORA", "r": r,
        "rank_pattern": {}, "alpha_pattern": {}, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj",
        "gate_proj", "up_proj", "down_proj"], "task_type": "CAUSAL_LM", "use_rslora": false,
    });
    for (k, v) in config.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    std::fs::write(dir.join("adapter_config.json"), serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
}

/// Copies the checkpoint `src` to `dst` with `W += scale · B·A` for every pair, in HF layout
/// (`W` `[out, in]` row-major), in f32.
fn merge_in_hf_layout(src: &Path, dst: &Path, pairs: &[PeftPair], r: usize, scale: f32) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dst.join(path.file_name().unwrap())).unwrap();
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let by_module: HashMap<String, &PeftPair> = pairs.iter().map(|p| (format!("{}.weight", p.module), p)).collect();
    let mut out: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        assert_eq!(view.dtype(), safetensors::Dtype::F32);
        let mut w: Vec<f32> = view.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        if let Some(p) = by_module.get(&name) {
            for o in 0..p.shape_out {
                for k in 0..r {
                    let b = scale * p.b[o * r + k];
                    for i in 0..p.shape_in {
                        w[o * p.shape_in + i] += b * p.a[k * p.shape_in + i];
                    }
                }
            }
        }
        out.push((name, view.shape().to_vec(), w.iter().flat_map(|v| v.to_le_bytes()).collect()));
    }
    assert_eq!(out.iter().filter(|(n, _, _)| by_module.contains_key(n)).count(), pairs.len());
    let views: Vec<_> = out
        .iter()
        .map(|(n, s, b)| {
            (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, &None, &dst.join("model.safetensors")).unwrap();
}

#[test]
fn imported_peft_adapter_computes_the_hf_merged_model_in_llama_cpp() {
    let root = temp_dir();
    let qwen = TinyLlamaSpec { arch: TinyArch::Qwen2, tokenizer: TinyTokenizer::Bpe, ..TinyLlamaSpec::default() };
    // (name, spec, adapter dtype, adapter-name segment, use_rslora)
    let cases = [
        ("llama-f32-default", TinyLlamaSpec::default(), Dtype::F32, Some("default"), false),
        ("llama-bf16", TinyLlamaSpec::default(), Dtype::BF16, None, false),
        ("qwen2-f16-rslora", qwen, Dtype::F16, None, true),
    ];
    let (r, alpha) = (4usize, 8.0f32);
    let tokens = test_tokens();
    for (name, spec, dtype, adapter_name, rslora) in cases {
        let hf = root.path().join(format!("{name}-hf"));
        tiny_llama(&hf, &spec, Dtype::F32, Shards::One, 8).unwrap();
        let base = root.path().join(format!("{name}.gguf"));
        convert_to(&hf, FileType::F32, &base).unwrap();
        let pairs = peft_pairs(&spec, r, dtype, 17);
        let peft = root.path().join(format!("{name}-peft"));
        write_peft(&peft, &pairs, r, dtype, adapter_name, json!({ "use_rslora": rslora }));
        let scale = if rslora { alpha / (r as f32).sqrt() } else { alpha / r as f32 };
        let merged_hf = root.path().join(format!("{name}-merged-hf"));
        merge_in_hf_layout(&hf, &merged_hf, &pairs, r, scale);
        let merged = root.path().join(format!("{name}-merged.gguf"));
        convert_to(&merged_hf, FileType::F32, &merged).unwrap();

        let adapter = root.path().join(format!("{name}-adapter.gguf"));
        let summary = import_peft(&peft, &base, &adapter).unwrap();
        assert_eq!((summary.pairs, summary.permuted), (14, spec.arch == TinyArch::Llama), "{name}");
        let with_adapter = llama_logits(&base, Some((&adapter, 1.0)), &tokens);
        let want = llama_logits(&merged, None, &tokens);
        assert!(nmse(&want, &llama_logits(&base, None, &tokens)) > 1e-3, "{name}: the adapter barely matters");
        let err = max_relative_error(&with_adapter, &want);
        assert!(err < PEFT_F32_RELATIVE_TOLERANCE, "{name}: relative error {err}");
        eprintln!("{name}: imported adapter vs HF-merged model in llama.cpp: max relative error {err:.2e}");
    }
}

/// Name, `ne` and bytes of one tensor.
type TensorContents = (String, Vec<u64>, Vec<u8>);

/// Every tensor, and the alpha, of an adapter GGUF.
fn adapter_contents(path: &Path) -> (Vec<TensorContents>, Option<f64>) {
    let file = GgufFile::open(path).unwrap();
    let g = file.gguf().unwrap();
    let tensors = g.tensors.iter().map(|t| (t.name.to_owned(), t.ne.clone(), g.tensor_data(t).to_vec())).collect();
    (tensors, g.get("adapter.lora.alpha").and_then(|v| v.as_f64()))
}

#[test]
fn peft_round_trips_are_bit_exact() {
    let root = temp_dir();
    let spec = TinyLlamaSpec::default();
    let hf = root.path().join("hf");
    tiny_llama(&hf, &spec, Dtype::F32, Shards::One, 8).unwrap();
    let base = root.path().join("base.gguf");
    convert_to(&hf, FileType::F32, &base).unwrap();

    // PEFT -> GGUF -> PEFT -> GGUF.
    let peft = root.path().join("peft");
    write_peft(&peft, &peft_pairs(&spec, 4, Dtype::F32, 3), 4, Dtype::F32, None, json!({ "use_rslora": true }));
    let first = root.path().join("first.gguf");
    import_peft(&peft, &base, &first).unwrap();
    let exported = root.path().join("exported");
    export_peft(&first, &exported, Some(&base)).unwrap();
    let config: Value = serde_json::from_slice(&std::fs::read(exported.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!((config["r"].as_u64(), config["lora_alpha"].as_f64()), (Some(4), Some(16.0)), "rsLoRA alpha 8·sqrt(4)");
    assert_eq!(config["base_model_name_or_path"], "hf", "general.name of the base (its folder name)");
    assert_eq!(
        config["target_modules"],
        json!(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    );
    let second = root.path().join("second.gguf");
    import_peft(&exported, &base, &second).unwrap();
    assert_eq!(adapter_contents(&first), adapter_contents(&second));
    // The exported lora_B of q is back in HF row order, so it differs from the GGUF's.
    let st_bytes = std::fs::read(exported.join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&st_bytes).unwrap();
    let original = std::fs::read(peft.join("adapter_model.safetensors")).unwrap();
    let original = safetensors::SafeTensors::deserialize(&original).unwrap();
    let q_b = "base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight";
    assert_eq!(st.tensor(q_b).unwrap().data(), original.tensor(q_b).unwrap().data());

    // A GGUF adapter we trained (write_lora_gguf) -> PEFT -> GGUF.
    let ours = root.path().join("ours.gguf");
    write_lora_gguf(&ours, "llama", 6.0, &random_pairs(&base, 2, 11)).unwrap();
    let out = gguftune(root.path(), &["export-peft", "ours.gguf", "--base", "base.gguf", "-o", "ours-peft", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((summary["pairs"].as_u64(), summary["rank"].as_u64()), (Some(14), Some(2)));
    let out = gguftune(root.path(), &["import-peft", "ours-peft", "--base", "base.gguf", "-o", "back.gguf"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(adapter_contents(&ours), adapter_contents(&root.path().join("back.gguf")));
}

#[test]
fn peft_errors_name_the_file_and_tensor() {
    let root = temp_dir();
    let spec = TinyLlamaSpec::default();
    tiny_llama(&root.path().join("hf"), &spec, Dtype::F32, Shards::One, 8).unwrap();
    convert_to(&root.path().join("hf"), FileType::F32, &root.path().join("base.gguf")).unwrap();
    let pairs = peft_pairs(&spec, 4, Dtype::F32, 5);
    let dir = |n: &str| root.path().join(n);
    write_peft(&dir("no-config"), &pairs, 4, Dtype::F32, None, json!({}));
    std::fs::remove_file(dir("no-config").join("adapter_config.json")).unwrap();
    write_peft(&dir("no-weights"), &pairs, 4, Dtype::F32, None, json!({}));
    std::fs::remove_file(dir("no-weights").join("adapter_model.safetensors")).unwrap();
    write_peft(&dir("pattern"), &pairs, 4, Dtype::F32, None, json!({ "rank_pattern": { "q_proj": 8 } }));
    write_peft(&dir("saved"), &pairs, 4, Dtype::F32, None, json!({ "modules_to_save": ["lm_head"] }));
    let mut narrow = peft_pairs(&spec, 4, Dtype::F32, 5);
    narrow[2].shape_in = 32;
    narrow[2].a.truncate(4 * 32);
    write_peft(&dir("shape"), &narrow, 4, Dtype::F32, None, json!({}));
    let mut deep = peft_pairs(&spec, 4, Dtype::F32, 5);
    deep[0].module = "model.layers.5.self_attn.q_proj".into();
    write_peft(&dir("deep"), &deep, 4, Dtype::F32, None, json!({}));
    for (folder, code, expected) in [
        ("no-config", 4, "no-config/adapter_config.json"),
        ("no-weights", 4, "no-weights/adapter_model.safetensors"),
        ("pattern", 3, "rank_pattern = [\"q_proj\"] is not supported"),
        (
            "deep",
            3,
            "tensor 'base_model.model.model.layers.5.self_attn.q_proj.lora_A.weight' adapts 'blk.5.attn_q.weight', which the base base.gguf does not have",
        ),
        ("saved", 3, "modules_to_save = [\"lm_head\"] is not supported: those modules are saved as full trained weights"),
        (
            "shape",
            3,
            "tensor 'base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight' has shape [4, 32], expected [4, 64]",
        ),
    ] {
        let out = gguftune(root.path(), &["import-peft", folder, "--base", "base.gguf", "-o", "out.gguf"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{folder}: {stderr}");
        assert!(stderr.contains(expected), "{folder}: {stderr}");
        assert!(!dir("out.gguf").exists());
    }
    // Exporting a Llama adapter of q/k without the base cannot undo the permutation.
    write_lora_gguf(&dir("a.gguf"), "llama", 4.0, &random_pairs(&dir("base.gguf"), 2, 1)).unwrap();
    let out = gguftune(root.path(), &["export-peft", "a.gguf", "-o", "a-peft"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("a.gguf: adapts 'blk.0.attn_q.weight'") && stderr.contains("--base"), "{stderr}");
    assert!(!dir("a-peft").exists());
}

/// PyTorch (PEFT) against llama.cpp, both f32 on the same bf16-rounded weights: they differ in
/// kernels, summation order and rope (transformers' cos/sin tables vs ggml's rope), each at f32
/// rounding; seen 1.8e-7 of the largest logit. 1e-5 leaves a margin of fifty; a wrong permutation
/// or scale is off by the logits' own size.
const PEFT_REFERENCE_RELATIVE_TOLERANCE: f32 = 1e-5;

/// The real tool: an adapter that PEFT itself made and saved on a transformers model
/// (scripts/make-peft-fixture.py, tests/fixtures/peft-llama), imported onto the converted base,
/// gives PEFT's logits in llama.cpp.
#[test]
fn imported_peft_adapter_reproduces_peft_logits() {
    let fixture = crate::common::repo_root().join("tests/fixtures/peft-llama");
    let reference: Value = serde_json::from_slice(&std::fs::read(fixture.join("reference.json")).unwrap()).unwrap();
    let tokens: Vec<i32> = reference["tokens"].as_array().unwrap().iter().map(|t| t.as_i64().unwrap() as i32).collect();
    let vocab = reference["shape"][1].as_u64().unwrap() as usize;
    let want = crate::common::reference::read_logits(&fixture.join("logits.bin"), tokens.len());
    assert_eq!(want[0].len(), vocab);

    // The script's model has the hyper-parameters of this spec; the fixture writes config.json and
    // the tokenizer, and the weights are replaced by the script's.
    let root = temp_dir();
    let hf = root.path().join("hf");
    let spec = TinyLlamaSpec { tie_embeddings: true, ..TinyLlamaSpec::default() };
    let info = tiny_llama(&hf, &spec, Dtype::F32, Shards::One, 8).unwrap();
    assert_eq!(info.vocab_size, vocab, "the fixture tokenizer's vocabulary is the script's vocab_size");
    std::fs::copy(fixture.join("model.safetensors"), hf.join("model.safetensors")).unwrap();
    let base = root.path().join("base.gguf");
    convert_to(&hf, FileType::F32, &base).unwrap();
    let adapter = root.path().join("adapter.gguf");
    import_peft(&fixture.join("adapter"), &base, &adapter).unwrap();

    let got = llama_logits(&base, Some((&adapter, 1.0)), &tokens);
    assert!(nmse(&want, &llama_logits(&base, None, &tokens)) > 1e-2, "the adapter barely matters");
    let err = max_relative_error(&got, &want);
    assert!(
        err < PEFT_REFERENCE_RELATIVE_TOLERANCE,
        "llama.cpp with the imported adapter vs PEFT: relative error {err}"
    );
    eprintln!("llama.cpp with the imported adapter vs PEFT: max relative error {err:.2e}");
}
