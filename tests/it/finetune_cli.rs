//! `gguftune finetune` as a user runs it: an adapter llama.cpp loads, metrics, a summary, and
//! clear errors for bad data.

use std::fs;

use gguftune::ggml::{LlamaAdapter, LlamaModel, Runtime};

use crate::common::fixtures::{
    alpaca_rows, chat_rows, tiny_llama, write_jsonl, Dtype, Shards, TinyLlamaSpec, TinyTokenizer,
};
use crate::common::{gguftune, temp_dir};

fn base_model(root: &std::path::Path, spec: &TinyLlamaSpec) -> std::path::PathBuf {
    let dir = root.join("hf");
    fs::create_dir(&dir).unwrap();
    tiny_llama(&dir, spec, Dtype::BF16, Shards::One, 6).unwrap();
    let out = gguftune(root, &["convert", "hf", "-o", "base.gguf", "--type", "q8_0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    root.join("base.gguf")
}

#[test]
fn finetune_writes_an_adapter_llama_cpp_loads_and_metrics() {
    let root = temp_dir();
    let base = base_model(root.path(), &TinyLlamaSpec::default());
    write_jsonl(&root.path().join("train.jsonl"), &alpaca_rows(12, 3)).unwrap();
    let out = gguftune(
        root.path(),
        &[
            "finetune",
            "base.gguf",
            "--data",
            "train.jsonl",
            "-o",
            "adapter.gguf",
            "--rank",
            "4",
            "--batch",
            "4",
            "--epochs",
            "2",
            "--lr",
            "1e-3",
            "--threads",
            "2",
            "--warmup",
            "0.34",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["examples_used"], 12);
    assert_eq!(summary["steps"], 6);
    assert!(summary["final_loss"].as_f64().unwrap() < summary["first_loss"].as_f64().unwrap(), "{summary}");
    assert_eq!((summary["examples_train"].as_u64(), summary["examples_validation"].as_u64()), (Some(11), Some(1)));
    let metrics = fs::read_to_string(root.path().join("adapter.metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let (metrics, validations): (Vec<_>, Vec<_>) = lines.into_iter().partition(|m| m.get("loss").is_some());
    assert_eq!(metrics.len(), 6);
    // Validation at the end of each epoch, the last one reported in the summary.
    let val_steps: Vec<u64> = validations.iter().map(|v| v["step"].as_u64().unwrap()).collect();
    assert_eq!(val_steps, vec![3, 6]);
    let val_loss = validations[1]["val_loss"].as_f64().unwrap();
    assert_eq!(summary["val_loss"].as_f64(), Some(val_loss));
    assert!((validations[1]["val_perplexity"].as_f64().unwrap() - val_loss.exp()).abs() < 1e-3 * val_loss.exp());
    let modelfile = fs::read_to_string(root.path().join("adapter.Modelfile")).unwrap();
    assert!(modelfile.contains("FROM ./base.gguf") && modelfile.contains("ADAPTER ./adapter.gguf"), "{modelfile}");
    assert_eq!(summary["modelfile"].as_str().map(|p| p.ends_with("adapter.Modelfile")), Some(true));
    let svg = fs::read_to_string(root.path().join("adapter.loss.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<polyline") && svg.trim_end().ends_with("</svg>"), "{svg}");
    // Two warmup steps to the peak of 1e-3, then a cosine decay over the last four.
    let lr = |i: usize| metrics[i]["lr"].as_f64().unwrap();
    assert!((lr(0) - 5e-4).abs() < 1e-9 && (lr(1) - 1e-3).abs() < 1e-9, "{metrics:?}");
    assert!(lr(5) < 2e-4 && lr(5) > 0.0, "{metrics:?}");
    assert!(metrics.iter().all(|m| m["grad_norm"].as_f64().unwrap() > 0.0));
    let llama = LlamaModel::load(Runtime::get(), &base).unwrap();
    LlamaAdapter::load(&llama, &root.path().join("adapter.gguf")).unwrap();
    let inspect = gguftune(root.path(), &["inspect", "adapter.gguf", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(v["kind"], "adapter");
    assert_eq!(v["tensor_count"], 2 * 7 * 2);
}

#[test]
fn chat_data_trains_through_the_models_template() {
    let root = temp_dir();
    base_model(root.path(), &TinyLlamaSpec { tokenizer: TinyTokenizer::Bpe, ..TinyLlamaSpec::default() });
    write_jsonl(&root.path().join("chat.jsonl"), &chat_rows(6, 1)).unwrap();
    let out = gguftune(
        root.path(),
        &["finetune", "base.gguf", "--data", "chat.jsonl", "-o", "a.gguf", "--rank", "2", "--batch", "3", "--json"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (tokens, trained) = (summary["tokens"].as_u64().unwrap(), summary["target_tokens"].as_u64().unwrap());
    assert!(trained > 0 && trained < tokens / 2, "only assistant turns are trained: {trained} of {tokens}");
}

#[test]
fn bad_data_is_reported_by_line_and_leaves_no_adapter() {
    let root = temp_dir();
    base_model(root.path(), &TinyLlamaSpec::default());
    let mut rows = alpaca_rows(3, 1);
    rows.push(serde_json::json!({"instruction": "x"}));
    write_jsonl(&root.path().join("bad.jsonl"), &rows).unwrap();
    let out = gguftune(root.path(), &["finetune", "base.gguf", "--data", "bad.jsonl", "-o", "a.gguf"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.jsonl:4"), "{err}");
    assert!(!root.path().join("a.gguf").exists());

    write_jsonl(&root.path().join("long.jsonl"), &alpaca_rows(3, 1)).unwrap();
    let out = gguftune(
        root.path(),
        &["finetune", "base.gguf", "--data", "long.jsonl", "-o", "a.gguf", "--ctx", "4", "--overlong", "skip"],
    );
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("every one of the 3 examples was skipped"), "{err}");
    assert!(!root.path().join("a.gguf").exists());
}

#[test]
fn a_bf16_base_trains_like_any_other() {
    let root = temp_dir();
    base_model(root.path(), &TinyLlamaSpec::default());
    let out = gguftune(root.path(), &["quantize", "base.gguf", "bf16.gguf", "bf16"]);
    assert_eq!(out.status.code(), Some(3), "q8_0 is not a float source: {}", String::from_utf8_lossy(&out.stderr));
    let out = gguftune(root.path(), &["convert", "hf", "-o", "bf16.gguf", "--type", "bf16"]);
    assert!(out.status.success());
    write_jsonl(&root.path().join("train.jsonl"), &alpaca_rows(2, 1)).unwrap();
    let out = gguftune(
        root.path(),
        &["finetune", "bf16.gguf", "--data", "train.jsonl", "-o", "a.gguf", "--val-split", "0", "--json"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let llama = LlamaModel::load(Runtime::get(), &root.path().join("bf16.gguf")).unwrap();
    LlamaAdapter::load(&llama, &root.path().join("a.gguf")).unwrap();
}

fn train_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "finetune",
        "base.gguf",
        "--data",
        "train.jsonl",
        "--batch",
        "2",
        "--grad-accum",
        "2",
        "--epochs",
        "2",
        "--threads",
        "2",
        "--val-split",
        "0",
        "--json",
    ];
    args.extend_from_slice(extra);
    for (flag, default) in [("--rank", "4"), ("--lr", "1e-3")] {
        if !extra.contains(&flag) {
            args.extend([flag, default]);
        }
    }
    args
}

fn step_losses(path: &std::path::Path) -> Vec<f64> {
    let text = fs::read_to_string(path).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|m| m.get("loss").and_then(|l| l.as_f64()))
        .collect()
}

#[test]
fn a_run_resumed_from_a_checkpoint_ends_with_the_same_adapter() {
    let root = temp_dir();
    base_model(root.path(), &TinyLlamaSpec::default());
    write_jsonl(&root.path().join("train.jsonl"), &alpaca_rows(12, 3)).unwrap();
    // 12 examples, 4 per step: 3 steps per epoch, 6 in all; checkpoints after steps 2 and 4.
    let out = gguftune(root.path(), &train_args(&["-o", "full.gguf", "--checkpoint-every", "2"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let checkpoints = root.path().join("full.checkpoints");
    let names: Vec<String> = {
        let mut n: Vec<String> = fs::read_dir(&checkpoints)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    };
    assert_eq!(names, vec!["step-000002", "step-000004"]);
    // A checkpoint's adapter is a complete adapter llama.cpp loads.
    let llama = LlamaModel::load(Runtime::get(), &root.path().join("base.gguf")).unwrap();
    LlamaAdapter::load(&llama, &checkpoints.join("step-000002/adapter.gguf")).unwrap();

    let resume = checkpoints.join("step-000002");
    let resume = resume.to_str().unwrap();
    let out = gguftune(root.path(), &train_args(&["-o", "resumed.gguf", "--resume", resume]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((summary["resumed_at_step"].as_u64(), summary["steps"].as_u64()), (Some(2), Some(6)));
    assert_eq!(fs::read(root.path().join("full.gguf")).unwrap(), fs::read(root.path().join("resumed.gguf")).unwrap());
    let (full, resumed) =
        (step_losses(&root.path().join("full.metrics.jsonl")), step_losses(&root.path().join("resumed.metrics.jsonl")));
    assert_eq!(full.len(), 6);
    assert_eq!(full, resumed);

    // Other settings are refused, naming what differs.
    let out = gguftune(root.path(), &train_args(&["-o", "other.gguf", "--resume", resume, "--rank", "8"]));
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rank: 4 -> 8"), "{err}");
}

#[test]
fn a_diverging_run_stops_and_points_at_the_last_good_checkpoint() {
    let root = temp_dir();
    base_model(root.path(), &TinyLlamaSpec::default());
    write_jsonl(&root.path().join("train.jsonl"), &alpaca_rows(12, 3)).unwrap();
    let out = gguftune(
        root.path(),
        &train_args(&[
            "-o",
            "a.gguf",
            "--lr",
            "1e38",
            "--max-grad-norm",
            "0",
            "--checkpoint-every",
            "1",
            "--warmup",
            "0",
        ]),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("training diverged at step") && err.contains("last good checkpoint"), "{err}");
    assert!(!root.path().join("a.gguf").exists());
    assert!(root.path().join("a.checkpoints/step-000001/adapter.gguf").exists());
}

#[test]
fn an_output_path_that_is_a_folder_is_refused_before_any_work() {
    let root = temp_dir();
    base_model(root.path(), &TinyLlamaSpec::default());
    write_jsonl(&root.path().join("train.jsonl"), &alpaca_rows(4, 3)).unwrap();
    fs::create_dir(root.path().join("out")).unwrap();
    for args in [
        &["convert", "hf", "-o", "out", "--type", "q8_0"][..],
        &["finetune", "base.gguf", "--data", "train.jsonl", "-o", "out", "--threads", "1"][..],
    ] {
        let out = gguftune(root.path(), args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{args:?}: {stderr}");
        assert!(stderr.contains("'out' is a directory"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert_eq!(fs::read_dir(root.path().join("out")).unwrap().count(), 0);
}
