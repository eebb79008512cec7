//! The families added after the first four: Llama 3.x (rope scaling `llama3`, tied embeddings),
//! Qwen3 (q/k norms, an explicit head size), Phi-3 (fused QKV and gate/up projections,
//! Phi-4-mini's partial rope), Gemma 2 (soft-capped scores and logits, sliding windows, post norms,
//! GELU, norms stored as 1 + w, scaled embeddings) and Gemma 3 (q/k norms, two rope bases, rope
//! scaling on the global layers only), end to end on the checkpoints transformers made with sharp
//! attention (tests/fixtures/{llama3,qwen3,phi3,gemma2,gemma3};
//! scripts/make-{llama3,qwen3,phi3,gemma}-fixture.py), and on the GGUFs llama.cpp's own converter
//! wrote from them: the rope frequency factors we write are llama.cpp's converter's, llama.cpp
//! runs our conversion with transformers' logits, our graph computes llama.cpp's logits and
//! llama.cpp's loss, gradients equal finite differences, adapters ours and PEFT's run in
//! llama.cpp, quantized bytes are llama-quantize's; and a model carrying what our graph does not
//! implement is refused by name.

use std::path::Path;

use gguftune::adapter::{import_peft, write_lora_gguf};
use gguftune::ggml::{LlamaContext, LlamaModel, Runtime};
use gguftune::gguf::{GgufFile, GgufPlan, GgufWriter, MetaValue};
use gguftune::model::{Devices, LoraConfig, Model};
use gguftune::quant::FileType;
use gguftune::train::{loss_and_grads, Activations};

use crate::adapter_merge::llama_logits;
use crate::common::reference::{max_relative_error, nmse, read_logits};
use crate::common::training::random_lora_pairs;
use crate::common::transformers_fixtures::{check_our_logits_against_llama_cpp, converted, f32_tolerance};
use crate::common::{convert_to, fixture_dir, temp_dir, transformers_checkpoint};
use crate::lora_grad::check_model_gradients_by_finite_differences;

/// Every fixture: (family, variant).
const FIXTURES: [(&str, &str); 8] = [
    ("llama3", "3.1"),
    ("llama3", "3.2"),
    ("qwen3", "tied"),
    ("phi3", "partial-rope"),
    ("phi3", "longrope"),
    ("gemma2", "9b"),
    ("gemma3", "1b"),
    ("gemma3", "4b"),
];

/// transformers and llama.cpp both compute in f32 from the same bf16 weights; they differ in the
/// order of reductions and in how the rope angles are computed (llama.cpp: theta^(-2i/d) by
/// repeated multiplication, divided by the factor; transformers: the rescaled inverse frequency
/// times the position). 1e-3 of the largest logit, as for Falcon and GPT-NeoX; a missing or
/// wrong factor moves them by far more (the reference records it: nmse above 1e-2).
const TRANSFORMERS_RELATIVE_TOLERANCE: f32 = 1e-3;
/// The bound for the training graph's loss against llama.cpp's: a mean of ~420 f32 log
/// probabilities, each rounded to ~1e-7 relative, agree far below it; ignoring the rope factors
/// moved the loss by 2e-4 relative on a real Llama 3.2.
const LOSS_RELATIVE_TOLERANCE: f64 = 1e-5;

/// The values of the F32 tensor `name` of the GGUF at `path`.
fn f32_tensor(path: &Path, name: &str) -> Vec<f32> {
    let file = GgufFile::open(path).unwrap();
    let g = file.gguf().unwrap();
    let info = g.tensor(name).unwrap_or_else(|| panic!("{}: no {name}", path.display()));
    g.tensor_data(info).chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

/// The fixtures tell apart what they check: the logits move by more than 1e-2 (nmse) without
/// Llama 3's rope factors, without Qwen3's q/k norms, or with Phi-3's rope over whole heads; and
/// llama.cpp runs our f32 conversion with transformers' logits. For Llama 3 the factors we write
/// are llama.cpp's converter's.
#[test]
fn llama_cpp_on_our_conversion_computes_transformers_logits() {
    for fx in FIXTURES {
        let name = format!("{} {}", fx.0, fx.1);
        let reference: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fixture_dir(fx.0, fx.1).join("reference.json")).unwrap()).unwrap();
        // Each feature the fixture records (`nmse_without_...`, `nmse_with_...`: the logits with
        // the feature removed or changed) moves the logits; GELU's exact and ggml's f16-table
        // forms are recorded as the two that barely differ.
        let sensitivities: Vec<(&String, f64)> = reference
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with("nmse_with") && !k.contains("gelu"))
            .map(|(k, v)| (k, v.as_f64().unwrap()))
            .collect();
        assert!(!sensitivities.is_empty(), "{name}: the reference records no feature");
        for (feature, nmse) in sensitivities {
            assert!(nmse > 1e-2, "{name}: the fixture does not tell {feature} apart (nmse {nmse})");
        }

        let root = temp_dir();
        let (dir, tokens, want) = transformers_checkpoint(root.path(), fx.0, fx.1);
        let path = root.path().join("model.gguf");
        convert_to(&dir, FileType::F32, &path).unwrap();
        if fx.0 == "llama3" {
            // The factors llama.cpp's converter computed (in f32 through torch) and ours.
            let theirs = f32_tensor(&fixture_dir(fx.0, fx.1).join("llama-cpp-f32.gguf"), "rope_freqs.weight");
            let ours = f32_tensor(&path, "rope_freqs.weight");
            assert_eq!(ours.len(), 8, "{name}: one factor per rotary pair of a 16-wide head");
            assert!(ours.iter().any(|&f| f > 1.0 && f < 8.0), "{name}: no factor in the smooth band: {ours:?}");
            for (a, b) in ours.iter().zip(&theirs) {
                assert!((a - b).abs() <= 1e-6 * b, "{name}: factors {ours:?} vs llama.cpp's converter's {theirs:?}");
            }
        }
        if fx.1 == "longrope" {
            // Phi-3's long and short factors and attention factor, as llama.cpp's converter wrote them.
            let theirs = fixture_dir(fx.0, fx.1).join("llama-cpp-f32.gguf");
            for name in ["rope_factors_long.weight", "rope_factors_short.weight"] {
                assert_eq!(f32_tensor(&path, name), f32_tensor(&theirs, name), "{name}");
            }
            let attn_factor = |p: &Path| {
                let file = GgufFile::open(p).unwrap();
                let value = file.gguf().unwrap().get("phi3.rope.scaling.attn_factor").and_then(|v| v.as_f64());
                value.unwrap()
            };
            assert_eq!(attn_factor(&path), attn_factor(&theirs));
        }
        let got = llama_logits(&path, None, &tokens);
        let err = max_relative_error(&got, &want);
        eprintln!("{name}: llama.cpp on our f32 conversion vs transformers: max relative error {err:.2e}");
        let tolerance = transformers_tolerance(&reference);
        assert!(err < tolerance, "{name}: relative error {err} (tolerance {tolerance})");
    }
}

/// Every quantized type's tensors (rope_freqs.weight included, kept F32) are llama-quantize's
/// bytes.
#[test]
fn quantized_conversions_are_llama_quantize_s_bytes() {
    for fx in FIXTURES {
        let root = temp_dir();
        let (dir, _, _) = transformers_checkpoint(root.path(), fx.0, fx.1);
        let f32_path = root.path().join("f32.gguf");
        convert_to(&dir, FileType::F32, &f32_path).unwrap();
        for ft in [FileType::Q8_0, FileType::Q4_K_M, FileType::Q6_K, FileType::F16] {
            crate::convert::convert_like_llama_quantize(&dir, &f32_path, ft, &root.path().join(fx.1));
        }
    }
}

#[test]
fn our_logits_equal_llama_cpp_logits() {
    check_our_logits_against_llama_cpp(&FIXTURES);
}

/// The bound on llama.cpp's logits against transformers' for a fixture: the shared bound, plus
/// for GELU models what ggml's CPU GELU alone moves them by (it reads a table of f16 values, its
/// input rounded to f16; the fixture script measures the effect by running transformers with
/// that table: up to 1.5e-3 of the largest logit for Gemma 3).
fn transformers_tolerance(reference: &serde_json::Value) -> f32 {
    let gelu_table = reference["max_relative_error_with_ggml_cpu_gelu"].as_f64().unwrap_or(0.0) as f32;
    TRANSFORMERS_RELATIVE_TOLERANCE + gelu_table
}

/// The mean next-token loss llama.cpp's logits give `tokens`, in f64.
fn llama_cpp_loss(path: &Path, tokens: &[i32]) -> f64 {
    let llama = LlamaModel::load(Runtime::get(), path).unwrap();
    let mut ctx = LlamaContext::with_precision(&llama, tokens.len() as u32, 2, true).unwrap();
    let logits = ctx.logits_all(tokens).unwrap();
    let mut sum = 0f64;
    for (row, &next) in logits.iter().zip(&tokens[1..]) {
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
        let log_z = max + row.iter().map(|&v| (f64::from(v) - max).exp()).sum::<f64>().ln();
        sum += log_z - f64::from(row[next as usize]);
    }
    sum / (tokens.len() - 1) as f64
}

/// On the GGUF llama.cpp's own converter wrote, the loss of our training graph (an adapter with
/// B = 0, as training starts) equals the loss llama.cpp's logits give, over 420 tokens: the rope
/// factors of `rope_freqs.weight` are applied as llama.cpp applies them.
#[test]
fn training_loss_equals_llama_cpp_loss_on_llama_cpp_s_conversion() {
    for fx in FIXTURES {
        let variant = format!("{} {}", fx.0, fx.1);
        let path = fixture_dir(fx.0, fx.1).join("llama-cpp-f32.gguf");
        let model = Model::open(&path).unwrap();
        let tokens: Vec<i32> = std::iter::once(1).chain((0..419).map(|i| (i * 131 + 7) % 509 + 3)).collect();
        let targets: Vec<Option<i32>> = (0..tokens.len()).map(|i| tokens.get(i + 1).copied()).collect();
        let cfg = LoraConfig { rank: 4, alpha: 8.0, targets: model.hparams().arch.projections().to_vec() };
        let mut values: Vec<Vec<f32>> =
            random_lora_pairs(&model, &cfg, 3, 0.2).iter().flat_map(|p| [p.a.clone(), p.b.clone()]).collect();
        for b in values.iter_mut().skip(1).step_by(2) {
            b.fill(0.0);
        }
        let (ours, _) = loss_and_grads(&model, &cfg, &values, &tokens, &targets, Activations::Keep, 2).unwrap();
        let theirs = llama_cpp_loss(&path, &tokens);
        let rel = (f64::from(ours) - theirs).abs() / theirs;
        eprintln!("{variant}: training loss {ours} vs llama.cpp's {theirs} (relative {rel:.1e})");
        assert!(rel < LOSS_RELATIVE_TOLERANCE, "{variant}: our loss {ours}, llama.cpp's {theirs}");
    }
}

/// Through the scaled rope (Llama 3), the q/k norms (Qwen3, Gemma 3), the adapters of Phi-3's
/// fused weights, each read in parts by the views of QKV and of gate/up, and Gemma's soft-capped
/// scores and logits, sliding windows, post norms and composed GELU. The step is smaller than
/// lora_grad.rs's 1e-2: with sharp attention the loss curves faster (at 1e-2 the O(h²) error of
/// a central difference reached the 2% bound on Llama 3; at 2e-3 it still reached 5% on Gemma 3,
/// whose embeddings are scaled by 8 and whose norms follow each sublayer); at 5e-4 it is 16 times
/// smaller than at 2e-3, while f32 rounding of a loss near 6 (~1e-6 over 2h: 1e-3) stays far
/// under the bound of 2% of gradients of order 1.
#[test]
fn lora_gradients_through_scaled_rope_qk_norms_and_fused_weights_equal_finite_differences() {
    let fixtures = [("llama3", "3.1"), ("qwen3", "tied"), ("phi3", "partial-rope"), ("phi3", "longrope")];
    for fx in fixtures.into_iter().chain([("gemma2", "9b"), ("gemma3", "4b")]) {
        let root = temp_dir();
        let (path, _) = converted(root.path(), fx, FileType::F32);
        let model = Model::open(&path).unwrap();
        check_model_gradients_by_finite_differences(&model, &Devices::cpu(), 24, 8, 5e-4, 0.02);
    }
}

/// Our adapter (every projection) gives in llama.cpp the logits our graph computes with it; PEFT's
/// adapter, imported onto our conversion, gives PEFT's logits in llama.cpp.
#[test]
fn adapters_ours_and_peft_s_run_in_llama_cpp() {
    for fx in FIXTURES {
        let variant = format!("{} {}", fx.0, fx.1);
        let root = temp_dir();
        let (base, tokens) = converted(root.path(), fx, FileType::F32);
        let model = Model::open(&base).unwrap();
        let cfg = LoraConfig { rank: 4, alpha: 8.0, targets: model.hparams().arch.projections().to_vec() };
        let pairs = random_lora_pairs(&model, &cfg, 21, 0.2);
        let adapter = root.path().join("adapter.gguf");
        write_lora_gguf(&adapter, model.hparams().arch.name(), cfg.alpha, &pairs).unwrap();
        let values: Vec<Vec<f32>> = pairs.iter().flat_map(|p| [p.a.clone(), p.b.clone()]).collect();
        let ours = model.logits_with_lora(&tokens, Some((&cfg, &values)), 2).unwrap();
        let theirs = llama_logits(&base, Some((&adapter, 1.0)), &tokens);
        assert!(nmse(&ours, &model.logits(&tokens, 2).unwrap()) > 1e-3, "{variant}: the adapter barely matters");
        let err = max_relative_error(&ours, &theirs);
        assert!(err < f32_tolerance(fx), "{variant} + our adapter: relative error {err}");

        let want = read_logits(&fixture_dir(fx.0, fx.1).join("logits-adapter.bin"), tokens.len());
        let imported = root.path().join("peft.gguf");
        let summary = import_peft(&fixture_dir(fx.0, fx.1).join("adapter"), &base, &imported).unwrap();
        let projections = model.hparams().arch.projections().len() as u64;
        assert_eq!(summary.pairs as u64, model.hparams().n_layer * projections, "{variant}: every projection");
        let got = llama_logits(&base, Some((&imported, 1.0)), &tokens);
        let err = max_relative_error(&got, &want);
        eprintln!("{variant}: llama.cpp with PEFT's adapter vs PEFT: max relative error {err:.2e}");
        let reference: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fixture_dir(fx.0, fx.1).join("reference.json")).unwrap()).unwrap();
        let tolerance = transformers_tolerance(&reference);
        assert!(err < tolerance, "{variant} + PEFT's adapter: relative error {err} (tolerance {tolerance})");
    }
}

/// A copy of the GGUF at `src` with `extra_kv` set (added, or in place of the key's value) and
/// `extra_tensor` (name, values; F32) appended.
fn copy_with(src: &Path, dst: &Path, extra_kv: Option<(&str, MetaValue)>, extra_tensor: Option<(&str, &[f32])>) {
    let file = GgufFile::open(src).unwrap();
    let g = file.gguf().unwrap();
    let mut plan = GgufPlan::new();
    for (k, v) in &g.metadata {
        if extra_kv.as_ref().is_none_or(|(key, _)| key != k) {
            plan.add_kv(k, v.to_owned_value()).unwrap();
        }
    }
    if let Some((k, v)) = extra_kv {
        plan.add_kv(k, v).unwrap();
    }
    for t in &g.tensors {
        plan.add_tensor(t.name, t.ty, &t.ne).unwrap();
    }
    if let Some((name, values)) = extra_tensor {
        plan.add_tensor(name, gguftune::gguf::GgmlType::F32, &[values.len() as u64]).unwrap();
    }
    let mut w = GgufWriter::create(dst, plan).unwrap();
    for t in &g.tensors {
        w.write_tensor(t.name, g.tensor_data(t)).unwrap();
    }
    if let Some((name, values)) = extra_tensor {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        w.write_tensor(name, &bytes).unwrap();
    }
    w.finish().unwrap();
}

/// Fail closed: a tensor our graph would not use (Qwen3's q norm on a llama model) or a key that
/// changes the math (Gemma 2's soft-capping on a llama model) is refused by name, by the library and by `finetune`
/// and `plan`, instead of training a different model than llama.cpp runs.
#[test]
fn a_model_carrying_what_the_graph_does_not_implement_is_refused_by_name() {
    let root = temp_dir();
    let (base, tokens) = converted(root.path(), ("llama3", "3.1"), FileType::F32);
    let extra_tensor = root.path().join("extra-tensor.gguf");
    copy_with(&base, &extra_tensor, None, Some(("blk.0.attn_q_norm.weight", &[1.0; 16])));
    let err = Model::open(&extra_tensor).unwrap().logits(&tokens, 2).unwrap_err().to_string();
    assert!(err.contains("tensor 'blk.0.attn_q_norm.weight' is not part of gguftune's llama graph"), "{err}");

    let extra_key = root.path().join("extra-key.gguf");
    copy_with(&base, &extra_key, Some(("llama.attn_logit_softcapping", MetaValue::F32(50.0))), None);
    let err = Model::open(&extra_key).unwrap_err().to_string();
    assert!(err.contains("metadata key 'llama.attn_logit_softcapping' = 50"), "{err}");
    // A neutral value of a known key is accepted: dense models written with expert_count 0.
    let neutral = root.path().join("neutral.gguf");
    copy_with(&base, &neutral, Some(("llama.expert_count", MetaValue::U32(0))), None);
    Model::open(&neutral).unwrap().logits(&tokens, 2).unwrap();
    // A sliding window is refused for llama, and ignored at any value for phi3, as llama.cpp's
    // phi3 ignores it (Phi-3-mini-4k's GGUF says 2047).
    let window = root.path().join("window.gguf");
    copy_with(&base, &window, Some(("llama.attention.sliding_window", MetaValue::U32(2047))), None);
    let err = Model::open(&window).unwrap_err().to_string();
    assert!(err.contains("metadata key 'llama.attention.sliding_window' = 2047"), "{err}");
    let phi3 = fixture_dir("phi3", "partial-rope").join("llama-cpp-f32.gguf");
    let phi3_window = root.path().join("phi3-window.gguf");
    copy_with(&phi3, &phi3_window, Some(("phi3.attention.sliding_window", MetaValue::U32(2047))), None);
    let want = Model::open(&phi3).unwrap().logits(&tokens, 2).unwrap();
    assert_eq!(Model::open(&phi3_window).unwrap().logits(&tokens, 2).unwrap(), want);
    // Phi-3's long-context rope factors come in pairs: long ones without short ones are refused.
    let long = root.path().join("phi3-long.gguf");
    copy_with(&phi3, &long, None, Some(("rope_factors_long.weight", &[1.0; 6])));
    let err = Model::open(&long).unwrap().logits(&tokens, 2).unwrap_err().to_string();
    assert!(err.contains("missing tensor 'rope_factors_short.weight'"), "{err}");

    // Gemma: a config whose attention scale llama.cpp would not apply (the fixture's
    // query_pre_attn_scalar of 8 with 32-wide heads: llama.cpp's logits are off by nmse 4.7e-2
    // there) is refused by convert; a GGUF key llama.cpp would read differently is refused too.
    let (dir, _, _) = transformers_checkpoint(root.path(), "gemma2", "query-scale");
    let err = convert_to(&dir, FileType::F32, &root.path().join("query-scale.gguf")).unwrap_err().to_string();
    assert!(err.contains("'query_pre_attn_scalar' is 8"), "{err}");
    let gemma2 = fixture_dir("gemma2", "9b").join("llama-cpp-f32.gguf");
    let uncapped = root.path().join("gemma2-cap-0.gguf");
    copy_with(&gemma2, &uncapped, Some(("gemma2.attn_logit_softcapping", MetaValue::F32(0.0))), None);
    let err = Model::open(&uncapped).unwrap_err().to_string();
    assert!(err.contains("metadata key 'gemma2.attn_logit_softcapping' = 0"), "{err}");

    std::fs::write(root.path().join("train.jsonl"), "{\"text\": \"one two three four\"}\n".repeat(8)).unwrap();
    for (path, named) in [(&extra_tensor, "blk.0.attn_q_norm.weight"), (&extra_key, "llama.attn_logit_softcapping")] {
        let path = path.to_str().unwrap();
        let finetune = ["finetune", path, "--data", "train.jsonl", "-o", "a.gguf", "--val-split", "0", "--ctx", "16"];
        for command in [&["plan", path, "--ctx", "16"][..], &finetune] {
            let out = crate::common::gguftune(root.path(), command);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success() && stderr.contains(named), "{} on {named}: {stderr}", command[0]);
        }
        assert!(!root.path().join("a.gguf").exists());
    }
}

/// `finetune` lowers the loss of a Llama 3.2-style (tied), a Qwen3, two Phi-3 (one with the
/// long-context rope), a Gemma 2 and a Gemma 3 q8_0 model and
/// writes an adapter that changes llama.cpp's logits; `plan` plans it; `eval` and `generate` run
/// with it; `merge` folds the trained
/// adapter into the f32 base (rope_freqs.weight and the q/k norms carried over; Phi-3's fused
/// weights adapted whole) with llama.cpp's logits of base plus adapter; `export-peft` writes it
/// with PEFT's module names.
#[test]
fn finetune_plan_merge_and_export_run_on_llama3_qwen3_phi3_and_gemma() {
    let fixtures = [("llama3", "3.2"), ("qwen3", "tied"), ("phi3", "partial-rope"), ("phi3", "longrope")];
    for fx in fixtures.into_iter().chain([("gemma2", "9b"), ("gemma3", "1b")]) {
        finetune_plan_merge_and_export(fx);
    }
}

fn finetune_plan_merge_and_export(fx: (&str, &str)) {
    let root = temp_dir();
    let (base, tokens) = converted(root.path(), fx, FileType::Q8_0);
    let (f32_base, _) = converted(root.path(), fx, FileType::F32);
    let rows: Vec<serde_json::Value> = crate::common::fixtures::sentiment_examples(32, 4)
        .iter()
        .map(|e| serde_json::json!({"text": format!("{} {}", e.review, e.label)}))
        .collect();
    crate::common::fixtures::write_jsonl(&root.path().join("train.jsonl"), &rows).unwrap();
    let (base_arg, f32_arg) = (base.to_str().unwrap(), f32_base.to_str().unwrap());
    let train = ["--data", "train.jsonl", "--epochs", "2", "--ctx", "32", "--batch", "4", "--lr", "3e-3"];
    let rest = ["--val-split", "0", "--threads", "2", "--json"];
    let out = crate::common::gguftune(
        root.path(),
        &[&["finetune", base_arg, "-o", "adapter.gguf"][..], &train, &rest].concat(),
    );
    assert!(out.status.success(), "finetune failed: {}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (first, last) = (summary["first_loss"].as_f64().unwrap(), summary["final_loss"].as_f64().unwrap());
    assert!(last < first, "the loss did not fall: {first} -> {last}");
    let adapter = root.path().join("adapter.gguf");
    let with = llama_logits(&base, Some((&adapter, 1.0)), &tokens);
    assert!(nmse(&with, &llama_logits(&base, None, &tokens)) > 1e-6, "the trained adapter changes nothing");

    let out = crate::common::gguftune(root.path(), &["plan", base_arg, "--ctx", "32", "--batch", "4", "--json"]);
    assert!(out.status.success(), "plan failed: {}", String::from_utf8_lossy(&out.stderr));
    let eval = ["eval", base_arg, "--lora", "adapter.gguf", "--data", "train.jsonl", "--compare", "--task", "none"];
    let out = crate::common::gguftune(root.path(), &[&eval[..], &["--ctx", "32", "--threads", "2"]].concat());
    assert!(out.status.success(), "eval failed: {}", String::from_utf8_lossy(&out.stderr));
    let generate = ["generate", base_arg, "--lora", "adapter.gguf", "-p", "great movie", "-n", "4", "--temp", "0"];
    let out = crate::common::gguftune(root.path(), &generate);
    assert!(out.status.success(), "generate failed: {}", String::from_utf8_lossy(&out.stderr));

    let args = ["merge", f32_arg, "adapter.gguf", "-o", "merged.gguf"];
    let out = crate::common::gguftune(root.path(), &args);
    assert!(out.status.success(), "merge: {}", String::from_utf8_lossy(&out.stderr));
    let merged = root.path().join("merged.gguf");
    let carried = match fx.0 {
        "llama3" => "rope_freqs.weight",
        "phi3" if fx.1 == "longrope" => "rope_factors_long.weight",
        "qwen3" => "blk.1.attn_q_norm.weight",
        "gemma2" | "gemma3" => "blk.1.post_ffw_norm.weight",
        _ => "blk.1.ffn_norm.weight",
    };
    assert_eq!(f32_tensor(&merged, carried), f32_tensor(&f32_base, carried));
    let want = llama_logits(&f32_base, Some((&adapter, 1.0)), &tokens);
    let err = max_relative_error(&llama_logits(&merged, None, &tokens), &want);
    assert!(err < f32_tolerance(fx), "merged: relative error {err}");

    let out = crate::common::gguftune(root.path(), &["export-peft", "adapter.gguf", "-o", "peft", "--base", f32_arg]);
    assert!(out.status.success(), "export-peft: {}", String::from_utf8_lossy(&out.stderr));
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.path().join("peft/adapter_config.json")).unwrap()).unwrap();
    let modules: Vec<&str> = config["target_modules"].as_array().unwrap().iter().filter_map(|m| m.as_str()).collect();
    let want: &[&str] = match fx.0 {
        "phi3" => &["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
        _ => &["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    };
    assert_eq!(modules, want, "{}: every projection, by PEFT's names: {config}", fx.0);
}

/// Gemma 3 as its 4B, 12B and 27B are published (`Gemma3ForConditionalGeneration`: the language
/// model under `language_model.`, its config in `text_config`, a vision tower beside it): the
/// language model is converted and the vision tower left out, as llama.cpp's converter does
/// without `--mmproj`. The fixture holds gemma3/1b's text weights (its text-only logits are
/// gemma3/1b's, checked by the fixture script), so the conversion equals gemma3/1b's tensor for
/// tensor and key for key, and llama.cpp runs it with transformers' logits.
#[test]
fn gemma3_multimodal_checkpoints_convert_to_their_language_model() {
    let root = temp_dir();
    let (multimodal, tokens, want) = transformers_checkpoint(root.path(), "gemma3", "multimodal");
    let (text, _, _) = transformers_checkpoint(root.path(), "gemma3", "1b");
    let (ours, reference) = (root.path().join("multimodal.gguf"), root.path().join("text.gguf"));
    convert_to(&multimodal, FileType::F32, &ours).unwrap();
    convert_to(&text, FileType::F32, &reference).unwrap();
    let (a, b) = (GgufFile::open(&ours).unwrap(), GgufFile::open(&reference).unwrap());
    let (a, b) = (a.gguf().unwrap(), b.gguf().unwrap());
    let names = |g: &gguftune::gguf::Gguf<'_>| g.tensors.iter().map(|t| t.name.to_owned()).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b));
    for t in &b.tensors {
        assert_eq!(a.tensor_data(a.tensor(t.name).unwrap()), b.tensor_data(t), "{}", t.name);
    }
    for (key, value) in &b.metadata {
        if *key != "general.name" {
            assert_eq!(a.get(key).map(|v| format!("{v:?}")), Some(format!("{value:?}")), "{key}");
        }
    }
    let got = llama_logits(&ours, None, &tokens);
    let text_reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture_dir("gemma3", "1b").join("reference.json")).unwrap()).unwrap();
    let err = max_relative_error(&got, &want);
    assert!(err < transformers_tolerance(&text_reference), "llama.cpp vs transformers: relative error {err}");
}
