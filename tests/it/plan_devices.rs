//! `plan --device` (issue 19): the memory of each device and of the host, planned on a real
//! `gguftune rpc-server`, is what `finetune --device` then allocates there, and the weights
//! each one holds are the model file's tensors of its layers.

use std::net::Ipv4Addr;
use std::path::Path;

use serde_json::{json, Value};

use gguftune::gguf::GgufFile;
use gguftune::quant::FileType;

use crate::common::fixtures::{tiny_llama, write_jsonl, Dtype, Shards, TinyLlamaSpec};
use crate::common::rpc_server::{serial, Server, THREADS};
use crate::common::{convert_to, gguftune, temp_dir};

/// The last line of `gguftune args`' stdout (run in `dir`) as JSON; the run must succeed.
fn run_json(dir: &Path, args: &[&str]) -> Value {
    let out = gguftune(dir, args);
    assert!(out.status.success(), "gguftune {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// The bytes of the tensors of `model` whose layer `holder` maps to each of `n` memories (the
/// layer of `blk.N.*`, `None` for the others), summed per memory.
fn tensor_bytes_by(model: &Path, n: usize, holder: impl Fn(Option<usize>) -> usize) -> Vec<u64> {
    let file = GgufFile::open(model).unwrap();
    let g = file.gguf().unwrap();
    let mut bytes = vec![0u64; n];
    for t in &g.tensors {
        let layer = t.name.strip_prefix("blk.").and_then(|rest| rest.split('.').next()?.parse::<usize>().ok());
        bytes[holder(layer)] += t.n_bytes;
    }
    bytes
}

/// Which memory holds the tensors of a layer (`None`: outside the layers): 0 the RPC device, 1
/// the host.
type LayerHolder = fn(Option<usize>) -> usize;

fn u64_of(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a byte count: {v}"))
}

#[test]
fn plan_on_devices_predicts_what_finetune_allocates_there() {
    // One RPC test at a time: see rpc_server::serial.
    let _serial = serial();
    let root = temp_dir();
    let dir = root.path().join("hf");
    std::fs::create_dir(&dir).unwrap();
    let spec = TinyLlamaSpec { layers: 4, hidden: 128, ffn: 256, ..TinyLlamaSpec::default() };
    tiny_llama(&dir, &spec, Dtype::F32, Shards::One, 5).unwrap();
    let model = root.path().join("model.gguf");
    convert_to(&dir, FileType::Q8_0, &model).unwrap();
    // Every example longer than the context: finetune's sequence length is --ctx, as planned.
    let rows: Vec<Value> = (0..8).map(|i| json!({"text": format!("{i} ").repeat(200)})).collect();
    write_jsonl(&root.path().join("train.jsonl"), &rows).unwrap();
    let (server, _) = Server::start(Ipv4Addr::LOCALHOST);
    let rpc = format!("rpc:{}", server.endpoint);
    let threads = THREADS.to_string();
    let m = model.to_str().unwrap();
    let common = ["--ctx", "48", "--batch", "2", "--rank", "4", "--targets", "q,v,down", "--threads", &threads];

    // (--device, --split, where each layer's tensors are).
    let cpu_and_rpc = format!("cpu,{rpc}");
    let cases: [(&str, Option<&str>, LayerHolder); 2] = [
        // Everything on the device; the host keeps the inputs and its own needs.
        (rpc.as_str(), None, |_| 0),
        // A quarter of the layers (layer 0) on this machine's CPU, the rest and the output layer
        // on the device: llama.cpp's --tensor-split rule.
        (cpu_and_rpc.as_str(), Some("1,3"), |layer| if layer == Some(0) { 1 } else { 0 }),
    ];
    for (device, split, holder) in cases {
        let mut args = vec!["--device", device];
        if let Some(split) = split {
            args.extend(["--split", split]);
        }
        args.extend(common);
        let mut plan_args = vec!["plan", m, "--json"];
        plan_args.extend(&args);
        let plan = run_json(root.path(), &plan_args);
        let memories = plan["devices"].as_array().expect("per-device rows");
        let what = format!("--device {device} --split {split:?}: {plan}");
        assert_eq!(memories.len(), 2, "{what}");
        assert!(memories[0]["name"].as_str().unwrap().starts_with("RPC"), "{what}");
        assert_eq!(memories[1]["name"], "host", "{what}");

        // Weights: the file's tensors, each where its layer goes, adding up to all of them.
        let expected = tensor_bytes_by(&model, 2, holder);
        let planned: Vec<u64> = memories.iter().map(|d| u64_of(&d["weights_bytes"])).collect();
        assert_eq!(planned, expected, "{what}");
        assert_eq!(planned.iter().sum::<u64>(), tensor_bytes_by(&model, 1, |_| 0)[0], "{what}");
        let layers: Vec<u64> = memories.iter().map(|d| u64_of(&d["layers"])).collect();
        assert_eq!(layers, if split.is_some() { vec![3, 1] } else { vec![4, 0] }, "{what}");
        // The device does the training: its compute buffer and the LoRA state of its layers.
        assert!(u64_of(&memories[0]["compute_buffer_bytes"]) > 0, "{what}");
        assert!(u64_of(&memories[0]["lora_state_bytes"]) > 0, "{what}");
        assert_eq!(memories[1]["lora_state_bytes"] != 0, split.is_some(), "host's LoRA state: {what}");
        for d in memories {
            let parts =
                ["weights_bytes", "lora_state_bytes", "compute_buffer_bytes", "optimizer_buffer_bytes", "host_bytes"];
            assert_eq!(u64_of(&d["total_bytes"]), parts.iter().map(|p| u64_of(&d[p])).sum::<u64>(), "{what}");
        }
        // The RPC server reports its machine's memory, which the tiny model fits in.
        assert_eq!(memories[0]["fits"], true, "{what}");

        // finetune on the same devices: each memory's buffers as the run allocated them are the
        // planned ones, to the byte (ggml's scheduler sizes them from the same graphs).
        let mut finetune_args =
            vec!["finetune", m, "--data", "train.jsonl", "-o", "adapter.gguf", "--max-steps", "2", "--val-split", "0"];
        finetune_args.extend(&args);
        finetune_args.push("--json");
        let summary = run_json(root.path(), &finetune_args);
        assert_eq!(summary["seq_len"], 48);
        let used = summary["device_memory"].as_array().expect("per-device memory in finetune's summary");
        assert_eq!(used.len(), memories.len(), "{what}\nrun: {summary}");
        for (u, p) in used.iter().zip(memories) {
            let run = format!("{what}\nrun: {u}");
            assert_eq!(u["name"], p["name"], "{run}");
            for (measured, planned) in [
                ("compute_buffer_bytes", "compute_buffer_bytes"),
                ("optimizer_buffer_bytes", "optimizer_buffer_bytes"),
                ("lora_state_bytes", "lora_state_bytes"),
            ] {
                assert_eq!(u[measured], p[planned], "{measured}: {run}");
            }
            assert_eq!(u["planned_bytes"], p["total_bytes"], "{run}");
            assert_eq!(u["bytes"], u["planned_bytes"], "{run}");
        }
    }
    drop(server);
}

#[test]
fn plan_on_a_device_says_when_the_host_does_not_fit_and_what_would_help() {
    // One RPC test at a time: see rpc_server::serial.
    let _serial = serial();
    let root = temp_dir();
    let dir = root.path().join("hf");
    std::fs::create_dir(&dir).unwrap();
    tiny_llama(&dir, &TinyLlamaSpec::default(), Dtype::F32, Shards::One, 5).unwrap();
    let model = root.path().join("model.gguf");
    convert_to(&dir, FileType::Q8_0, &model).unwrap();
    let (server, _) = Server::start(Ipv4Addr::LOCALHOST);
    let rpc = format!("rpc:{}", server.endpoint);
    let m = model.to_str().unwrap();
    // Half the layers on this machine's CPU, half on the device.
    let device = format!("cpu,{rpc}");
    let args = ["plan", m, "--device", &device, "--split", "1,1", "--ctx", "64", "--batch", "2", "--rank", "4"];
    // The host's memory is ours to give: 1 MiB holds less than the runtime alone.
    let mut json_args = args.to_vec();
    json_args.extend(["--memory", "1MiB", "--json"]);
    let plan = run_json(root.path(), &json_args);
    assert_eq!(plan["fits"], false, "{plan}");
    let host = &plan["devices"][1];
    assert_eq!(host["name"], "host");
    assert_eq!(host["available_bytes"], 1 << 20, "{plan}");
    assert_eq!(host["fits"], false, "{plan}");
    assert_eq!(host["layers"], 1, "{plan}");
    assert_eq!(plan["devices"][0]["fits"], true, "the device has its server machine's memory: {plan}");
    let changes: Vec<&str> =
        plan["suggestions"].as_array().unwrap().iter().map(|s| s["change"].as_str().unwrap()).collect();
    assert!(changes.contains(&"--recompute"), "{changes:?}");
    assert!(changes.iter().any(|c| c.starts_with("--batch 1")), "{changes:?}");
    // Each change of the run says what the memory that fits worst then needs.
    for s in plan["suggestions"].as_array().unwrap().iter().filter(|s| s.get("peak_memory_bytes").is_some()) {
        assert_eq!(s["on"], "host", "{s}");
        assert_eq!(s["fits"], false, "nothing fits in 1 MiB: {s}");
    }
    assert!(changes.iter().any(|c| c.contains("give the host's layers to a device")), "{changes:?}");
    // Enough memory: it fits, and nothing is suggested.
    let mut roomy = args.to_vec();
    roomy.extend(["--memory", "64GiB", "--json"]);
    let plan = run_json(root.path(), &roomy);
    assert_eq!(plan["devices"][1]["fits"], true, "{plan}");
    assert!(plan["suggestions"].as_array().unwrap().is_empty(), "{plan}");
    // The table, in words.
    let mut text_args = args.to_vec();
    text_args.extend(["--memory", "1MiB"]);
    let out = gguftune(root.path(), &text_args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("RPC") && stdout.contains("host"), "{stdout}");
    assert!(stdout.contains("does NOT fit in 1.0 MiB"), "{stdout}");
    assert!(stdout.contains("to fit, change one of:"), "{stdout}");
    drop(server);
}
