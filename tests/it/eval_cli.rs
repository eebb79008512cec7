//! `gguftune eval`: an adapter trained on a task scores better than its base on held-out data,
//! its loss is the loss gguftune's training graph computes, and bad data is reported clearly.

use std::path::Path;

use gguftune::adapter::{pairs_from_values, write_lora_gguf};
use gguftune::arch::Arch;
use gguftune::data::{read_jsonl, RenderOptions};
use gguftune::ggml::{LlamaModel, Runtime};
use gguftune::model::{lora_layout, LoraConfig, Model};
use gguftune::quant::FileType;
use gguftune::train::{build_examples, loss_and_grads, Activations, Example};
use serde_json::{json, Value};

use crate::common::fixtures::{
    chat_rows, prompt_completion_rows, sentiment_examples, tiny_llama, write_jsonl, Dtype, SentimentExample, Shards,
    TinyLlamaSpec, TinyTokenizer, NEGATIVE_WORDS, POSITIVE_WORDS,
};
use crate::common::training::train_lora;
use crate::common::{convert_to, gguftune, temp_dir};

/// eval reads llama.cpp's logits with an f32 KV cache and no flash attention; training computes
/// the same loss with its own ggml graph on the same q8_0 weights and LoRA tensors. The two
/// forward passes agree to f32 rounding (tests/it/forward.rs finds q8_0 logits identical), and the
/// softmaxes differ only in the order of their sums (ggml in f32, eval in f64): seen 2e-8.
const LOSS_RELATIVE_TOLERANCE: f64 = 1e-5;

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
    let cfg = LoraConfig { rank: 8, alpha: 16.0, targets: Arch::from_name("llama").unwrap().projections().to_vec() };
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
        let (loss, _) = loss_and_grads(&model, &cfg, &values, &e.tokens, &e.targets, Activations::Keep, 1).unwrap();
        sum += f64::from(loss) * n as f64;
        count += n;
    }
    assert_eq!(adapter["target_tokens"].as_u64(), Some(count as u64), "the tokens finetune trains on");
    let ours = sum / count as f64;
    let theirs = number(adapter, "loss");
    eprintln!("completion loss: training graph {ours}, eval through llama.cpp {theirs}");
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

#[test]
fn eval_picks_the_task_from_the_references() {
    let root = temp_dir();
    for (name, tokenizer) in [("spm", TinyTokenizer::Spm), ("bpe", TinyTokenizer::Bpe)] {
        let dir = root.path().join(name);
        tiny_llama(&dir, &TinyLlamaSpec { tokenizer, ..TinyLlamaSpec::default() }, Dtype::BF16, Shards::One, 3)
            .unwrap();
        convert_to(&dir, FileType::Q8_0, &root.path().join(format!("{name}.gguf"))).unwrap();
    }
    let reviews = sentiment_examples(4, 5);
    let rows = |completion: &dyn Fn(&SentimentExample) -> String| -> Vec<Value> {
        let row =
            |e: &SentimentExample| json!({ "prompt": format!("Review: {}\n", e.review), "completion": completion(e) });
        reviews.iter().map(row).collect()
    };
    let adjective = |e: &SentimentExample| {
        let mut words = e.review.split(|c: char| !c.is_alphabetic());
        words.find(|w| POSITIVE_WORDS.contains(w) || NEGATIVE_WORDS.contains(w)).unwrap().to_owned()
    };
    let entities = rows(&|e| format!(" {}", json!({ e.label: [adjective(e)] })));
    write_jsonl(&root.path().join("entities.jsonl"), &entities).unwrap();
    write_jsonl(
        &root.path().join("summaries.jsonl"),
        &rows(&|e| format!(" The reviewer found it {} overall.", e.label)),
    )
    .unwrap();
    write_jsonl(&root.path().join("chat.jsonl"), &chat_rows(4, 5)).unwrap();
    let eval = |model: &str, data: &str| -> Value {
        let args = ["eval", model, "--data", data, "--max-new", "4", "--threads", "1", "--json"];
        let out = gguftune(root.path(), &args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let in_unit = |v: &Value| v.as_f64().is_some_and(|x| (0.0..=1.0).contains(&x));
    let report = eval("spm.gguf", "entities.jsonl");
    assert_eq!(report["task"], "extract", "{report}");
    let metric = &report["base"]["metric"];
    assert!(["precision", "recall", "f1"].iter().all(|k| in_unit(&metric[*k])), "{report}");
    let report = eval("spm.gguf", "summaries.jsonl");
    assert_eq!(report["task"], "summarize", "{report}");
    assert!(in_unit(&report["base"]["metric"]["rouge_l"]), "{report}");
    // Chat records: rendered with the model's template, the last assistant message is the label.
    let report = eval("bpe.gguf", "chat.jsonl");
    assert_eq!(report["task"], "classify", "{report}");
    assert!(in_unit(&report["base"]["metric"]["accuracy"]), "{report}");
    assert!(report["base"]["target_tokens"].as_u64().unwrap() >= 4, "{report}");
}
