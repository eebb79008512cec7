//! `merge`: llama.cpp computes with the merged model what it computes with base + adapter, the
//! output types are `quantize`'s, and bad adapters are refused with exit code 3.

use std::path::{Path, PathBuf};

use gguftune::adapter::{merge, write_lora_gguf, LoraTensorPair, MergeInput};
use gguftune::ggml::{LlamaAdapter, LlamaContext, LlamaModel, Runtime};
use gguftune::gguf::{GgmlType, GgufFile};
use gguftune::quant::{requantize, FileType};

use crate::common::fixtures::{tiny_llama, Dtype, Rng, Shards, TinyLlamaSpec};
use crate::common::reference::{max_relative_error, nmse};
use crate::common::{convert_to, gguftune, temp_dir};

/// Both sides run llama.cpp in f32 with the same kernels; they differ only in where `s·B·A` is
/// added: to the weight before the product (merged) or to the product (`W·x + s·B·(A·x)`). The
/// re-association changes f32 rounding at the level of a few ulps of each product, which the 2
/// layers and the final norm amplify a little: 1e-4 of the largest logit is far above that (we see
/// ~1e-6) and far below what a wrong scale, transposition or missing tensor gives (≥ 1e-2).
const MERGED_F32_RELATIVE_TOLERANCE: f32 = 1e-4;

/// Tokens in the tiny vocabularies of both fixture tokenizers.
pub fn test_tokens() -> Vec<i32> {
    (0..16).map(|i| (i * 29 + 5) % 500).collect()
}

/// A random adapter on every attention and FFN projection of the GGUF `base`, `rank` r.
pub fn random_pairs(base: &Path, rank: u64, seed: u64) -> Vec<LoraTensorPair> {
    let file = GgufFile::open(base).unwrap();
    let g = file.gguf().unwrap();
    let mut rng = Rng::new(seed);
    let targets = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];
    g.tensors
        .iter()
        .filter(|t| t.name.starts_with("blk.") && targets.iter().any(|k| t.name.ends_with(&format!(".{k}.weight"))))
        .map(|t| LoraTensorPair {
            base: t.name.to_owned(),
            n_in: t.ne[0],
            n_out: t.ne[1],
            rank,
            a: (0..t.ne[0] * rank).map(|_| rng.uniform(0.2)).collect(),
            b: (0..rank * t.ne[1]).map(|_| rng.uniform(0.2)).collect(),
        })
        .collect()
}

/// llama.cpp's f32 logits of `model`, with `adapter` at `scale` if given.
pub fn llama_logits(model: &Path, adapter: Option<(&Path, f32)>, tokens: &[i32]) -> Vec<Vec<f32>> {
    let llama = LlamaModel::load(Runtime::get(), model).unwrap();
    let loaded = adapter.map(|(path, _)| LlamaAdapter::load(&llama, path).unwrap());
    let mut ctx = LlamaContext::with_precision(&llama, 64, 2, true).unwrap();
    if let (Some(a), Some((_, scale))) = (&loaded, adapter) {
        ctx.set_adapters(&[(a, scale)]).unwrap();
    }
    ctx.logits_all(tokens).unwrap()
}

/// A tiny Llama converted to `ft`, in `root/<name>.gguf`.
fn tiny_base(root: &Path, name: &str, spec: &TinyLlamaSpec, ft: FileType) -> PathBuf {
    let dir = root.join(name);
    tiny_llama(&dir, spec, Dtype::F32, Shards::One, 8).unwrap();
    let base = root.join(format!("{name}.gguf"));
    convert_to(&dir, ft, &base).unwrap();
    base
}

fn types_of(path: &Path) -> Vec<(String, GgmlType)> {
    let file = GgufFile::open(path).unwrap();
    let g = file.gguf().unwrap();
    g.tensors.iter().map(|t| (t.name.to_owned(), t.ty)).collect()
}

#[test]
fn merged_f32_model_computes_base_plus_adapter_in_llama_cpp() {
    let root = temp_dir();
    let base = tiny_base(root.path(), "m", &TinyLlamaSpec::default(), FileType::F32);
    let adapter = root.path().join("adapter.gguf");
    write_lora_gguf(&adapter, "llama", 8.0, &random_pairs(&base, 4, 3)).unwrap();
    let merged = root.path().join("merged.gguf");
    let scale = 0.75;
    let inputs = [MergeInput { path: adapter.clone(), scale }];
    let summary = merge(&base, &inputs, None, &merged, &mut |_, _| {}).unwrap();
    assert_eq!(summary.merged, 14, "7 projections × 2 layers");

    let tokens = test_tokens();
    let with_adapter = llama_logits(&base, Some((&adapter, scale)), &tokens);
    let merged_logits = llama_logits(&merged, None, &tokens);
    let base_logits = llama_logits(&base, None, &tokens);
    assert!(nmse(&with_adapter, &base_logits) > 1e-3, "the adapter barely changes the logits");
    let err = max_relative_error(&merged_logits, &with_adapter);
    assert!(err < MERGED_F32_RELATIVE_TOLERANCE, "merged vs base + adapter: relative error {err}");
    eprintln!("merged vs base + adapter in llama.cpp: max relative error {err:.2e}");
    assert_eq!(types_of(&merged), types_of(&base));
}

#[test]
fn merge_with_a_type_writes_what_quantize_writes_of_the_merged_model() {
    let root = temp_dir();
    // 256-wide rows so that k-quants apply (narrower ones fall back, which is tested elsewhere).
    let spec = TinyLlamaSpec { hidden: 256, ffn: 512, ..TinyLlamaSpec::default() };
    let base = tiny_base(root.path(), "m", &spec, FileType::F32);
    let adapter = root.path().join("adapter.gguf");
    write_lora_gguf(&adapter, "llama", 4.0, &random_pairs(&base, 2, 5)).unwrap();
    let args = |out: &str, ty: Option<&str>| {
        let mut v = vec!["merge", "m.gguf", "adapter.gguf", "-o", out];
        if let Some(ty) = ty {
            v.extend(["--type", ty]);
        }
        v.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = gguftune(root.path(), &args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        out
    };
    run(args("merged-f32.gguf", None));
    for ft in [FileType::Q8_0, FileType::Q4_K_M] {
        let name = format!("merged-{}.gguf", ft.name());
        let out = run(args(&name, Some(ft.name())));
        assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("wrote {name}")));
        let reference = root.path().join(format!("quantized-{}.gguf", ft.name()));
        requantize(&root.path().join("merged-f32.gguf"), &reference, ft, &mut |_, _| {}).unwrap();
        let ours = GgufFile::open(&root.path().join(&name)).unwrap();
        let theirs = GgufFile::open(&reference).unwrap();
        let (ours, theirs) = (ours.gguf().unwrap(), theirs.gguf().unwrap());
        assert_eq!(ours.get("general.file_type").and_then(|v| v.as_u64()), Some(u64::from(ft.llama_ftype())));
        assert_eq!(ours.tensors.len(), theirs.tensors.len());
        for (a, b) in ours.tensors.iter().zip(&theirs.tensors) {
            assert_eq!((a.name, a.ty), (b.name, b.ty), "{ft}");
            // The same f32 values quantized by the same ggml routine: the same bytes.
            assert!(ours.tensor_data(a) == theirs.tensor_data(b), "{ft}: {} differs", a.name);
        }
        LlamaModel::load(Runtime::get(), &root.path().join(&name)).unwrap();
    }
    // Without --type a quantized base keeps its types: merged tensors are quantized back.
    let q8 = root.path().join("m-q8_0.gguf");
    requantize(&base, &q8, FileType::Q8_0, &mut |_, _| {}).unwrap();
    let merged = root.path().join("merged-from-q8_0.gguf");
    merge(&q8, &[MergeInput { path: adapter, scale: 1.0 }], None, &merged, &mut |_, _| {}).unwrap();
    assert_eq!(types_of(&merged), types_of(&q8));
    let tokens = test_tokens();
    let e = nmse(
        &llama_logits(&merged, None, &tokens),
        &llama_logits(&root.path().join("merged-q8_0.gguf"), None, &tokens),
    );
    // Merging into a dequantized Q8_0 weight and quantizing again vs quantizing the merged f32
    // weight once: both are within Q8_0's error of each other (ggml's q8_0 error budget is ~1e-4).
    assert!(e < 1e-3, "q8_0 base merged vs f32 base merged then quantized: nmse {e}");
}

#[test]
fn merge_refuses_adapters_that_do_not_fit_the_base() {
    let root = temp_dir();
    let base = tiny_base(root.path(), "m", &TinyLlamaSpec::default(), FileType::F32);
    let pairs = random_pairs(&base, 2, 9);
    write_lora_gguf(&root.path().join("qwen.gguf"), "qwen2", 4.0, &pairs).unwrap();
    let mut wide = pairs[0].clone();
    wide.n_in = 32;
    wide.a.truncate(64);
    write_lora_gguf(&root.path().join("wide.gguf"), "llama", 4.0, &[wide]).unwrap();
    let mut missing = pairs[0].clone();
    missing.base = "blk.7.attn_q.weight".into();
    write_lora_gguf(&root.path().join("missing.gguf"), "llama", 4.0, &[missing]).unwrap();
    for (adapter, expected) in [
        ("qwen.gguf", "adapter is for architecture 'qwen2' but the base m.gguf is 'llama'"),
        ("wide.gguf", "tensor 'blk.0.attn_q.weight.lora_a' has ne [32, 2], expected [64, 2]"),
        ("missing.gguf", "adapts 'blk.7.attn_q.weight', which the base m.gguf does not have"),
        ("m.gguf", "not a LoRA adapter: 'general.type' is 'model', expected 'adapter'"),
    ] {
        let out = gguftune(root.path(), &["merge", "m.gguf", adapter, "-o", "out.gguf"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{adapter}: {stderr}");
        assert!(stderr.contains(adapter) && stderr.contains(expected), "{adapter}: {stderr}");
        assert!(!root.path().join("out.gguf").exists());
    }
    let out = gguftune(root.path(), &["merge", "m.gguf", "absent.gguf", "-o", "out.gguf"]);
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
}
