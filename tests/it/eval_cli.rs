//! `gguftune eval`: an adapter trained on a task scores better than its base on held-out data,
//! its loss is the loss gguftune's training graph computes, and bad data is reported clearly.

use std::path::Path;

use gguftune::adapter::{pairs_from_values, write_lora_gguf};
use gguftune::data::{read_jsonl, RenderOptions};
use gguftune::ggml::{LlamaModel, Runtime};
use gguftune::model::{lora_layout, LoraConfig, Model, TARGETS};
use gguftune::quant::FileType;
use gguftune::train::{build_examples, loss_and_grads, Example};
use serde_json::Value;

use crate::common::fixtures::{prompt_completion_rows, tiny_llama, write_jsonl, Dtype, Shards, TinyLlamaSpec};
use crate::common::training::train_lora;
use crate::common::{convert_to, gguftune, temp_dir};

/// eval reads llama.cpp's logits with an f32 KV cache and no flash attention; training computes
/// the same loss with its own ggml graph on the same q8_0 weights. tests/it/forward.rs bounds the
/// logits' difference (identical for q8_0 there, NMSE < 1e-5 in general), so the mean NLL agrees
/// to far better than this 0.1 %; the rest of the budget covers the order of f32 reductions in
/// the two softmaxes (ours in ggml, eval's in f64 over llama.cpp's logits).
const LOSS_RELATIVE_TOLERANCE: f64 = 1e-3;

/// Tokenizes `path` as finetune does (no chat template: prompt-completion records).
fn examples(vocab: &LlamaModel, path: &Path) -> Vec<Example> {
    let dataset = read_jsonl(path).unwrap();
    build_examples(&dataset, None, vocab, &RenderOptions::default(), 64, false).unwrap().0
}

#[test]
fn a_trained_adapter_beats_its_base_and_eval_loss_is_the_training_loss() {
    let root = temp_dir();
    let dir = root.path().join("hf");
    tiny_llama(&dir, &TinyLlamaSpec::default(), Dtype::BF16, Shards::One, 3).unwrap();
    let base = root.path().join("base.gguf");
    convert_to(&dir, FileType::Q8_0, &base).unwrap();

    // Held-out reviews are sentences that never occur in the training set.
    let train_rows = prompt_completion_rows(48, 1);
    let held_out: Vec<Value> =
        prompt_completion_rows(40, 2).into_iter().filter(|r| !train_rows.contains(r)).take(8).collect();
    assert_eq!(held_out.len(), 8);
    write_jsonl(&root.path().join("train.jsonl"), &train_rows).unwrap();
    write_jsonl(&root.path().join("val.jsonl"), &held_out).unwrap();

    let vocab = LlamaModel::load_vocab(Runtime::get(), &base).unwrap();
    let model = Model::open(&base).unwrap();
    let cfg = LoraConfig { rank: 8, alpha: 16.0, targets: TARGETS.iter().map(|(_, k)| *k).collect() };
    let (values, losses) = train_lora(&model, &cfg, &examples(&vocab, &root.path().join("train.jsonl")), 8, 20, 3e-3);
    eprintln!("training loss {:.3} -> {:.3}", losses[0], losses.last().unwrap());
    let slots = lora_layout(model.hparams(), &cfg).unwrap();
    write_lora_gguf(
        &root.path().join("adapter.gguf"),
        "llama",
        cfg.alpha,
        &pairs_from_values(&slots, cfg.rank, &values),
    )
    .unwrap();

    let args = ["eval", "base.gguf", "--lora", "adapter.gguf", "--data", "val.jsonl", "--compare", "--threads", "1"];
    let out = gguftune(root.path(), &[&args[..], &["--json"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("{report:#}");
    assert_eq!(report["task"], "classify", "short labels from a small set");
    assert_eq!(report["examples"], 8);
    let (base_scores, adapter) = (&report["base"], &report["adapter"]);
    let number = |v: &Value, key: &str| v[key].as_f64().unwrap_or_else(|| panic!("{key} in {v}"));
    let accuracy = |v: &Value| number(&v["metric"], "accuracy");
    assert!(number(adapter, "loss") < number(base_scores, "loss"), "{report}");
    assert!(accuracy(adapter) >= accuracy(base_scores), "{report}");
    assert!(accuracy(adapter) >= 0.875, "llama.cpp answers the held-out reviews: {report}");
    let delta = number(&report["delta"], "loss");
    assert!((delta - (number(adapter, "loss") - number(base_scores, "loss"))).abs() < 1e-12);
    assert!((number(adapter, "perplexity") - number(adapter, "loss").exp()).abs() < 1e-9);

    // The same loss from gguftune's training graph, weighted by completion tokens.
    let val = examples(&vocab, &root.path().join("val.jsonl"));
    let (mut sum, mut count) = (0f64, 0usize);
    for e in &val {
        let n = e.targets.iter().flatten().count();
        let (loss, _) = loss_and_grads(&model, &cfg, &values, &e.tokens, &e.targets, 1).unwrap();
        sum += f64::from(loss) * n as f64;
        count += n;
    }
    assert_eq!(adapter["target_tokens"].as_u64(), Some(count as u64), "the tokens finetune trains on");
    let ours = sum / count as f64;
    let theirs = number(adapter, "loss");
    assert!((ours - theirs).abs() <= LOSS_RELATIVE_TOLERANCE * ours, "training graph {ours}, eval {theirs}");

    // The table: a row per number, a column per run and the delta.
    let out = gguftune(root.path(), &args);
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), ["base", "adapter", "delta"]);
    assert!(lines[1].starts_with("loss") && lines[2].starts_with("perplexity") && lines[3].starts_with("accuracy"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("evaluated 8 examples"));
}

#[test]
fn eval_reports_bad_data_by_file_and_line() {
    let root = temp_dir();
    let dir = root.path().join("hf");
    tiny_llama(&dir, &TinyLlamaSpec::default(), Dtype::BF16, Shards::One, 3).unwrap();
    convert_to(&dir, FileType::Q8_0, &root.path().join("base.gguf")).unwrap();
    let run = |data: &str, extra: &[&str]| {
        let out =
            gguftune(root.path(), &[&["eval", "base.gguf", "--threads", "1", "--data", data][..], extra].concat());
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = run("missing.jsonl", &[]);
    assert_eq!(code, Some(4));
    assert!(err.contains("missing.jsonl"), "{err}");

    let mut rows = prompt_completion_rows(3, 1);
    rows.push(serde_json::json!({ "prompt": "x" }));
    write_jsonl(&root.path().join("bad.jsonl"), &rows).unwrap();
    let (code, err) = run("bad.jsonl", &[]);
    assert_eq!(code, Some(3));
    assert!(err.contains("bad.jsonl:4:1: expected field 'completion'"), "{err}");

    write_jsonl(&root.path().join("labels.jsonl"), &prompt_completion_rows(3, 1)).unwrap();
    let (code, err) = run("labels.jsonl", &["--task", "extract"]);
    assert_eq!(code, Some(3));
    assert!(err.contains("labels.jsonl:1: the reference answer is not entity JSON"), "{err}");
    let (code, err) = run("labels.jsonl", &["--lora", "base.gguf"]);
    assert_eq!(code, Some(3), "a model is not an adapter: {err}");
    // Loss only: no task metric row.
    let out = gguftune(
        root.path(),
        &["eval", "base.gguf", "--threads", "1", "--data", "labels.jsonl", "--task", "none", "--json"],
    );
    assert!(out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((report["task"].clone(), report["base"]["metric"].clone()), (Value::Null, Value::Null));
    assert!(report["adapter"].is_null() && report["base"]["loss"].as_f64().unwrap() > 0.0);
}
