//! Falcon and GPT-NeoX end to end on the checkpoints transformers made (tests/fixtures/falcon,
//! tests/fixtures/gptneox): our forward graph, the one training differentiates, against
//! llama.cpp's; LoRA gradients against finite differences; our adapters in llama.cpp; PEFT's
//! adapters imported and exported; `finetune` and `plan` on a Falcon GGUF.

use std::path::Path;

use gguftune::adapter::{export_peft, import_peft, write_lora_gguf};
use gguftune::arch::Arch;
use gguftune::model::{Devices, LoraConfig, Model};
use gguftune::quant::FileType;

use crate::adapter_merge::llama_logits;
use crate::common::fixtures::{sentiment_examples, write_jsonl};
use crate::common::reference::{max_relative_error, nmse, read_logits};
use crate::common::training::random_lora_pairs;
use crate::common::transformers_fixtures::{
    check_our_logits_against_llama_cpp, converted, F32_RELATIVE_TOLERANCE, SHARE_OF_QUANTIZATION_ERROR,
};
use crate::common::{gguftune, temp_dir};
use crate::lora_grad::{check_model_gradients_by_finite_differences, GELU_RELATIVE_TOLERANCE, GELU_STEP};

/// Every fixture: (family, variant).
const FIXTURES: [(&str, &str); 4] =
    [("falcon", "mqa"), ("falcon", "gqa"), ("gptneox", "parallel"), ("gptneox", "sequential")];

#[test]
fn our_logits_equal_llama_cpp_logits() {
    check_our_logits_against_llama_cpp(&FIXTURES);
}

#[test]
fn lora_gradients_equal_finite_differences() {
    for fixture in FIXTURES {
        let root = temp_dir();
        let (path, _) = converted(root.path(), fixture, FileType::F32);
        let model = Model::open(&path).unwrap();
        assert_eq!(model.hparams().arch.projections(), Arch::from_name("falcon").unwrap().projections());
        // Layer 0's four projections (qkv, o, up, down): A and B of each.
        check_model_gradients_by_finite_differences(&model, &Devices::cpu(), 10, 8, GELU_STEP, GELU_RELATIVE_TOLERANCE);
    }
}

/// An adapter on every projection (the fused QKV included), written as llama.cpp's LoRA GGUF,
/// gives in llama.cpp the logits our graph computes with it, and `merge` folds it into an f32
/// base with the same logits.
#[test]
fn llama_cpp_with_our_adapter_computes_our_logits() {
    for (fixture, ft) in FIXTURES.into_iter().zip([FileType::F32, FileType::Q8_0, FileType::Q4_K_M, FileType::F32]) {
        let variant = format!("{} {}", fixture.0, fixture.1);
        let root = temp_dir();
        let (f32_path, _) = converted(root.path(), fixture, FileType::F32);
        let (base, tokens) = converted(root.path(), fixture, ft);
        let model = Model::open(&base).unwrap();
        let cfg =
            LoraConfig { rank: 4, alpha: 8.0, targets: Arch::from_name("falcon").unwrap().projections().to_vec() };
        let pairs = random_lora_pairs(&model, &cfg, 21, 0.2);
        assert!(pairs.iter().any(|p| p.base == "blk.0.attn_qkv.weight"));
        let adapter = root.path().join("adapter.gguf");
        write_lora_gguf(&adapter, model.hparams().arch.name(), cfg.alpha, &pairs).unwrap();
        let values: Vec<Vec<f32>> = pairs.iter().flat_map(|p| [p.a.clone(), p.b.clone()]).collect();

        let ours = model.logits_with_lora(&tokens, Some((&cfg, &values)), 2).unwrap();
        let base_logits = model.logits(&tokens, 2).unwrap();
        let theirs = llama_logits(&base, Some((&adapter, 1.0)), &tokens);
        assert!(nmse(&ours, &base_logits) > 1e-3, "{variant}: the adapter barely changes the logits");
        let (err, e) = (max_relative_error(&ours, &theirs), nmse(&ours, &theirs));
        let quantization = nmse(&theirs, &llama_logits(&f32_path, Some((&adapter, 1.0)), &tokens));
        eprintln!(
            "{variant} {} + adapter: max relative error {err:.2e}, nmse {e:.2e} (quantization: {quantization:.2e})",
            ft.name()
        );
        if ft == FileType::F32 {
            assert!(err < F32_RELATIVE_TOLERANCE, "{variant}: relative error {err}");
            // Merged into the f32 weights (the fused QKV included), the adapter is the same model:
            // W + s·B·A in f32 against W x + s·B(A x), rounding apart.
            let merged = root.path().join("merged.gguf");
            let args = ["merge", base.to_str().unwrap(), adapter.to_str().unwrap(), "-o", merged.to_str().unwrap()];
            let out = gguftune(root.path(), &args);
            assert!(out.status.success(), "merge: {}", String::from_utf8_lossy(&out.stderr));
            let err = max_relative_error(&llama_logits(&merged, None, &tokens), &theirs);
            assert!(err < F32_RELATIVE_TOLERANCE, "{variant} merged: relative error {err}");
        } else {
            assert!(e < SHARE_OF_QUANTIZATION_ERROR * quantization, "{variant}: nmse {e}");
        }
    }
}

/// `finetune` trains a Falcon and a GPT-NeoX GGUF with the default targets (every projection),
/// lowers the loss, and writes an adapter llama.cpp loads; `plan` refuses a Llama projection for
/// them by name.
#[test]
fn finetune_and_plan_run_on_falcon_and_gpt_neox() {
    for fixture in [("falcon", "gqa"), ("gptneox", "parallel")] {
        finetune_and_plan(fixture);
    }
}

fn finetune_and_plan(fixture: (&str, &str)) {
    let root = temp_dir();
    let (base, tokens) = converted(root.path(), fixture, FileType::Q8_0);
    let rows: Vec<serde_json::Value> = sentiment_examples(32, 4)
        .iter()
        .map(|e| serde_json::json!({"text": format!("{} {}", e.review, e.label)}))
        .collect();
    let data = root.path().join("train.jsonl");
    write_jsonl(&data, &rows).unwrap();
    let base_arg = base.to_str().unwrap();
    let out = gguftune(
        root.path(),
        &[
            "finetune",
            base_arg,
            "--data",
            "train.jsonl",
            "-o",
            "adapter.gguf",
            "--epochs",
            "3",
            "--ctx",
            "32",
            "--batch",
            "4",
            "--lr",
            "3e-3",
            "--val-split",
            "0",
            "--threads",
            "2",
            "--json",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "finetune failed: {stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (first, last) = (summary["first_loss"].as_f64().unwrap(), summary["final_loss"].as_f64().unwrap());
    assert!(last < first, "the loss did not fall: {first} -> {last}");
    let adapter = root.path().join("adapter.gguf");
    let with = llama_logits(&base, Some((&adapter, 1.0)), &tokens);
    assert!(nmse(&with, &llama_logits(&base, None, &tokens)) > 1e-6, "the trained adapter changes nothing");

    let out = gguftune(root.path(), &["plan", base_arg, "--targets", "q,v", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let refusal = format!("'q' is not a projection of {} models", fixture.0);
    assert!(!out.status.success() && stderr.contains(&refusal), "{stderr}");
    let out = gguftune(root.path(), &["plan", base_arg, "--ctx", "32", "--batch", "4", "--json"]);
    assert!(out.status.success(), "plan failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// transformers (exact erf GELU) against llama.cpp (the tanh approximation), as in
/// tests/it/convert.rs: 1e-3 of the largest logit (seen 3.5e-4 without an adapter).
const PEFT_RELATIVE_TOLERANCE: f32 = 1e-3;

/// The real tool: adapters PEFT made on transformers' Falcon and GPT-NeoX (every projection, the
/// fused QKV included; scripts/make-falcon-fixture.py, scripts/make-gptneox-fixture.py), imported
/// onto our conversion, give PEFT's logits in llama.cpp; exported again, they are PEFT's tensors
/// value for value.
#[test]
fn peft_adapters_import_to_peft_logits_and_export_back() {
    for fixture in FIXTURES {
        let variant = format!("{} {}", fixture.0, fixture.1);
        let root = temp_dir();
        let (base, tokens) = converted(root.path(), fixture, FileType::F32);
        let fixture = crate::common::fixture_dir(fixture.0, fixture.1);
        let want = read_logits(&fixture.join("logits-adapter.bin"), tokens.len());

        let adapter = root.path().join("adapter.gguf");
        let summary = import_peft(&fixture.join("adapter"), &base, &adapter).unwrap();
        assert_eq!((summary.pairs, summary.permuted), (8, true), "{variant}");
        let got = llama_logits(&base, Some((&adapter, 1.0)), &tokens);
        assert!(nmse(&want, &llama_logits(&base, None, &tokens)) > 1e-3, "{variant}: the adapter barely matters");
        let err = max_relative_error(&got, &want);
        eprintln!("{variant}: llama.cpp with the imported PEFT adapter vs PEFT: max relative error {err:.2e}");
        assert!(err < PEFT_RELATIVE_TOLERANCE, "{variant}: relative error {err}");

        let exported = root.path().join("exported");
        export_peft(&adapter, &exported, Some(&base)).unwrap();
        let read = |path: &Path| {
            let bytes = std::fs::read(path).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> =
                st.tensors().into_iter().map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec())).collect();
            tensors.sort();
            tensors
        };
        let (ours, peft) = (
            read(&exported.join("adapter_model.safetensors")),
            read(&fixture.join("adapter/adapter_model.safetensors")),
        );
        assert_eq!(ours.len(), peft.len(), "{variant}");
        for (a, b) in ours.iter().zip(&peft) {
            assert_eq!((&a.0, &a.1), (&b.0, &b.1), "{variant}");
            assert!(a.2 == b.2, "{variant}: {} differs from PEFT's", a.0);
        }
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(exported.join("adapter_config.json")).unwrap()).unwrap();
        let mut modules: Vec<&str> =
            config["target_modules"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
        modules.sort_unstable();
        assert_eq!(modules, ["dense", "dense_4h_to_h", "dense_h_to_4h", "query_key_value"], "{variant}");
    }
}
