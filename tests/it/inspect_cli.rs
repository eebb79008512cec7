//! `gguftune inspect` as a user runs it: text and JSON, GGUF models, adapters, safetensors files
//! and model folders, and bad input.

use std::fs;

use gguftune::gguf::{GgmlType, GgufPlan, GgufWriter, MetaValue};

use crate::common::fixtures::{tiny_llama, Dtype, Shards, TinyLlamaSpec};
use crate::common::tiny_gguf::{write_tiny_llama, TinyLlamaGguf};
use crate::common::{gguftune, temp_dir};

fn json_of(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("--json prints one JSON object")
}

#[test]
fn inspects_a_gguf_model_as_text_and_json() {
    let dir = temp_dir();
    write_tiny_llama(&dir.path().join("m.gguf"), &TinyLlamaGguf::default(), 1);
    let out = gguftune(dir.path(), &["inspect", "m.gguf", "--tensors"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("architecture: llama"), "{text}");
    assert!(text.contains("file type:    F32"), "{text}");
    assert!(text.contains("blk.1.ffn_down.weight"), "{text}");

    let v = json_of(&gguftune(dir.path(), &["inspect", "m.gguf", "--json", "--tensors"]));
    assert_eq!(v["format"], "gguf");
    assert_eq!(v["kind"], "model");
    assert_eq!(v["architecture"], "llama");
    let h = TinyLlamaGguf::default();
    let per_layer = 2 * h.n_embd + 2 * h.n_embd * h.n_embd + 2 * h.n_embd * (h.n_embd / 2) + 3 * h.n_embd * h.n_ff;
    let expected = 2 * h.n_embd * h.n_vocab + h.n_embd + h.n_layer * per_layer;
    assert_eq!(v["parameter_count"], expected);
    assert_eq!(v["tensors"].as_array().unwrap().len() as u64, 2 + 1 + 9 * h.n_layer);
    assert_eq!(v["tensors"][0]["dims"], serde_json::json!([h.n_embd, h.n_vocab]));
}

#[test]
fn long_arrays_are_summarised_and_control_characters_escaped() {
    let dir = temp_dir();
    let mut plan = GgufPlan::new();
    plan.add_kv("general.architecture", "llama").unwrap();
    plan.add_kv("general.name", "evil\u{1b}[2Jname").unwrap();
    let tokens: Vec<String> = (0..1000).map(|i| format!("t{i}")).collect();
    plan.add_kv("tokenizer.ggml.tokens", MetaValue::Array(gguftune::gguf::MetaArray::String(tokens))).unwrap();
    GgufWriter::create(&dir.path().join("a.gguf"), plan).unwrap().finish().unwrap();
    let out = gguftune(dir.path(), &["inspect", "a.gguf"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains('\u{1b}'), "escape sequences reach the terminal: {text:?}");
    assert!(text.contains("evil\\u{1b}[2Jname"), "{text}");
    assert!(text.contains("\"len\":1000"), "{text}");
    let v = json_of(&gguftune(dir.path(), &["inspect", "a.gguf", "--json"]));
    let tokens = v["metadata"].as_array().unwrap().iter().find(|m| m["key"] == "tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens["type"], "array[string]");
    assert_eq!(tokens["value"]["len"], 1000);
    assert_eq!(tokens["value"]["head"].as_array().unwrap().len(), 8);
}

#[test]
fn inspects_a_lora_adapter() {
    let dir = temp_dir();
    let mut plan = GgufPlan::new();
    plan.add_kv("general.type", "adapter").unwrap();
    plan.add_kv("general.architecture", "llama").unwrap();
    plan.add_kv("adapter.type", "lora").unwrap();
    plan.add_kv("adapter.lora.alpha", MetaValue::F32(32.0)).unwrap();
    plan.add_tensor("blk.0.attn_q.weight.lora_a", GgmlType::F32, &[64, 8]).unwrap();
    plan.add_tensor("blk.0.attn_q.weight.lora_b", GgmlType::F32, &[8, 64]).unwrap();
    let mut w = GgufWriter::create(&dir.path().join("adapter.gguf"), plan).unwrap();
    w.write_tensor("blk.0.attn_q.weight.lora_a", &[0; 64 * 8 * 4]).unwrap();
    w.write_tensor("blk.0.attn_q.weight.lora_b", &[0; 64 * 8 * 4]).unwrap();
    w.finish().unwrap();
    let v = json_of(&gguftune(dir.path(), &["inspect", "adapter.gguf", "--json"]));
    assert_eq!(v["kind"], "adapter");
    assert_eq!(v["parameter_count"], 2 * 64 * 8);
    assert_eq!(v["tensor_count"], 2);
}

#[test]
fn inspects_safetensors_files_and_model_folders() {
    let dir = temp_dir();
    let model = dir.path().join("model");
    fs::create_dir(&model).unwrap();
    let info = tiny_llama(&model, &TinyLlamaSpec::default(), Dtype::BF16, Shards::Two, 3).unwrap();
    let v = json_of(&gguftune(dir.path(), &["inspect", "model", "--json", "--tensors"]));
    assert_eq!(v["format"], "hf-folder");
    assert_eq!(v["architecture"], "llama");
    assert_eq!(v["file_type"], "BF16");
    assert_eq!(v["tensors"].as_array().unwrap().len(), info.tensor_names.len());
    let expected_params: u64 = info.tensor_shapes.iter().map(|(_, s)| s.iter().product::<usize>() as u64).sum();
    assert_eq!(v["parameter_count"], expected_params);
    assert!(v["tensors"][0]["file"].as_str().unwrap().starts_with("model-0000"));

    let v = json_of(&gguftune(dir.path(), &["inspect", "model/model-00001-of-00002.safetensors", "--json"]));
    assert_eq!(v["format"], "safetensors");
    assert!(v["metadata"].as_array().unwrap().iter().any(|m| m["key"] == "format" && m["value"] == "pt"));
}

#[test]
fn bad_input_gives_one_line_with_path_and_offset_and_exit_code_3() {
    let dir = temp_dir();
    fs::write(dir.path().join("bad.gguf"), b"GGUF\x03\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff").unwrap();
    let out = gguftune(dir.path(), &["inspect", "bad.gguf"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("gguftune: inspecting bad.gguf: bad.gguf: byte 0x8: tensor count:"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let out = gguftune(dir.path(), &["inspect", "missing.gguf"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.gguf"));

    let out = gguftune(dir.path(), &["inspect"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn error_chains_do_not_repeat_themselves() {
    let dir = temp_dir();
    let out = gguftune(dir.path(), &["inspect", "missing.gguf"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    fs::write(dir.path().join("bad.gguf"), b"GGUF\x09\x00\x00\x00").unwrap();
    let out = gguftune(dir.path(), &["inspect", "bad.gguf"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("version 9 is not supported").count(), 1, "{err}");
}
