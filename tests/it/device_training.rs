//! `gguftune finetune --device` as a user runs it, on `gguftune rpc-server` children on 127.0.0.1
//! (devices with their own memory, reached only through ggml's backend API, as a GPU is): a
//! q4_k_m base trains as on the CPU, everything that computes runs on the device, llama.cpp
//! loads the adapter, a run resumed on other devices ends with the same adapter, and a server
//! killed mid-run ends the run with a message naming it and an intact last checkpoint.

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use gguftune::ggml::{LlamaAdapter, LlamaModel, Runtime};
use gguftune::quant::FileType;
use serde_json::Value;

use crate::common::fixtures::{alpaca_rows, tiny_llama, write_jsonl, Dtype, Shards, TinyLlamaSpec};
use crate::common::rpc_server::{serial, Server, THREADS};
use crate::common::{convert_to, gguftune, spawn_gguftune, temp_dir};

/// A tiny Llama in q4_k_m (`base.gguf`) and 16 Alpaca records (`train.jsonl`) in `root`.
fn base_and_data(root: &Path) {
    let dir = root.join("hf");
    tiny_llama(&dir, &TinyLlamaSpec::default(), Dtype::BF16, Shards::One, 6).unwrap();
    convert_to(&dir, FileType::Q4_K_M, &root.join("base.gguf")).unwrap();
    write_jsonl(&root.join("train.jsonl"), &alpaca_rows(16, 3)).unwrap();
}

/// `finetune base.gguf` on `train.jsonl` for 4 steps of 2 micro-batches of 2 sequences, with a
/// validation split, then `extra`.
fn finetune<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["finetune", "base.gguf", "--data", "train.jsonl", "--batch", "2", "--grad-accum", "2"];
    args.extend(["--epochs", "2", "--max-steps", "4", "--rank", "4", "--lr", "1e-3", "--val-split", "0.25", "--json"]);
    args.extend(extra);
    args
}

fn run_json(root: &Path, args: &[&str]) -> Value {
    let out = gguftune(root, args);
    assert!(out.status.success(), "gguftune {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Each step's training loss, and each validation loss, from a run's metrics file.
fn losses(path: &Path) -> (Vec<f64>, Vec<f64>) {
    let (mut train, mut validation) = (Vec::new(), Vec::new());
    for line in fs::read_to_string(path).unwrap().lines() {
        let m: Value = serde_json::from_str(line).unwrap();
        if let Some(l) = m.get("loss").and_then(Value::as_f64) {
            train.push(l);
        }
        if let Some(l) = m.get("val_loss").and_then(Value::as_f64) {
            validation.push(l);
        }
    }
    (train, validation)
}

#[test]
fn a_q4_k_m_base_trains_on_an_rpc_device_as_on_the_cpu() {
    // One RPC test at a time: see rpc_server::serial.
    let _serial = serial();
    let root = temp_dir();
    base_and_data(root.path());
    let (server, _) = Server::start(Ipv4Addr::LOCALHOST);
    let remote = format!("rpc:{}", server.endpoint);
    let threads = THREADS.to_string();
    let on_cpu = run_json(root.path(), &finetune(&["-o", "cpu.gguf", "--device", "cpu", "--threads", &threads]));
    let on_rpc = run_json(root.path(), &finetune(&["-o", "rpc.gguf", "--device", &remote, "--threads", &threads]));
    assert_eq!(on_cpu["devices"], serde_json::json!(["CPU"]));
    assert!(on_cpu["placement"].is_null(), "the CPU alone: no scheduler");
    assert_eq!(on_rpc["devices"].as_array().map(Vec::len), Some(1), "{on_rpc}");

    // Every node that computes ran on the device (forward products through the q4_k_m weights,
    // the backward pass through them, attention, the loss); on the CPU only views of the loss's
    // inputs, which live there.
    let placement = &on_rpc["placement"];
    let backends = placement["backends"].as_array().unwrap();
    assert!(backends[0]["backend"].as_str().unwrap().starts_with("RPC"), "{placement}");
    let cpu = backends.last().unwrap();
    assert_eq!(cpu["nodes"], cpu["views"], "nothing computed on the CPU: {placement}");
    assert_eq!(placement["splits"], 1, "{placement}");
    // AdamW too: the LoRA tensors, their gradients and moments never leave the device.
    let optimizer = &on_rpc["optimizer_placement"];
    let backends = optimizer["backends"].as_array().unwrap();
    assert!(backends[0]["nodes"].as_u64().unwrap() > 0, "{optimizer}");
    assert_eq!(backends.last().unwrap()["nodes"], 0, "nothing of AdamW on the CPU: {optimizer}");

    // The same training: the device's graph is ggml's own backward pass (the weights
    // dequantized by get_rows, the outer products ggml's), the CPU's has its rewrites, which sum
    // in another order; after four AdamW steps the losses agree to 1e-4 relative.
    let (cpu_train, cpu_val) = losses(&root.path().join("cpu.metrics.jsonl"));
    let (rpc_train, rpc_val) = losses(&root.path().join("rpc.metrics.jsonl"));
    assert_eq!(cpu_train.len(), 4);
    assert_eq!((rpc_train.len(), rpc_val.len()), (cpu_train.len(), cpu_val.len()));
    assert!(!cpu_val.is_empty(), "a validation pass ran");
    for (a, b) in cpu_train.iter().zip(&rpc_train).chain(cpu_val.iter().zip(&rpc_val)) {
        assert!(
            (a - b).abs() <= 1e-4 * a.abs(),
            "losses: CPU {cpu_train:?} {cpu_val:?}, RPC {rpc_train:?} {rpc_val:?}"
        );
    }
    assert!(rpc_train[3] < rpc_train[0], "the loss went down: {rpc_train:?}");

    // llama.cpp loads the adapter trained on the device, and it changes the model's logits as
    // the CPU's does.
    let rt = Runtime::get();
    let llama = LlamaModel::load(rt, &root.path().join("base.gguf")).unwrap();
    LlamaAdapter::load(&llama, &root.path().join("rpc.gguf")).unwrap();
    drop(server);
}

#[test]
fn a_run_resumed_on_other_devices_ends_with_the_same_adapter() {
    // One RPC test at a time: see rpc_server::serial.
    let _serial = serial();
    let root = temp_dir();
    base_and_data(root.path());
    let (first, _) = Server::start(Ipv4Addr::LOCALHOST);
    let (second, _) = Server::start(Ipv4Addr::LOCALHOST);
    let threads = THREADS.to_string();
    let one = format!("rpc:{}", first.endpoint);
    let split = format!("cpu,rpc:{}", second.endpoint);
    let full = run_json(
        root.path(),
        &finetune(&["-o", "full.gguf", "--device", &one, "--threads", &threads, "--checkpoint-every", "2"]),
    );
    assert_eq!(full["steps"], 4);
    // Resumed from step 2 on other devices (this machine's CPU and another server, half of the
    // layers each): the same kernels on the same bytes, so the same adapter, bit for bit.
    let checkpoint = root.path().join("full.checkpoints/step-000002");
    let resumed = run_json(
        root.path(),
        &finetune(&[
            "-o",
            "resumed.gguf",
            "--device",
            &split,
            "--split",
            "1,1",
            "--threads",
            &threads,
            "--resume",
            checkpoint.to_str().unwrap(),
        ]),
    );
    assert_eq!((resumed["resumed_at_step"].as_u64(), resumed["steps"].as_u64()), (Some(2), Some(4)));
    assert_eq!(resumed["devices"].as_array().map(Vec::len), Some(2), "{resumed}");
    assert!(resumed["placement"]["splits"].as_u64().unwrap() > 1, "{resumed}");
    assert_eq!(fs::read(root.path().join("full.gguf")).unwrap(), fs::read(root.path().join("resumed.gguf")).unwrap());
    let (full_losses, _) = losses(&root.path().join("full.metrics.jsonl"));
    let (resumed_losses, _) = losses(&root.path().join("resumed.metrics.jsonl"));
    assert_eq!(full_losses, resumed_losses);
    drop((first, second));
}

#[test]
fn a_server_killed_mid_run_ends_it_naming_the_server_and_the_last_checkpoint() {
    // One RPC test at a time: see rpc_server::serial.
    let _serial = serial();
    let root = temp_dir();
    base_and_data(root.path());
    let (mut server, _) = Server::start(Ipv4Addr::LOCALHOST);
    let remote = format!("rpc:{}", server.endpoint);
    let threads = THREADS.to_string();
    // Many steps, a checkpoint after each: the server is killed once the first one is written.
    let args = [
        "finetune",
        "base.gguf",
        "--data",
        "train.jsonl",
        "--batch",
        "1",
        "--epochs",
        "200",
        "--rank",
        "4",
        "--val-split",
        "0",
        "--checkpoint-every",
        "1",
        "--keep-checkpoints",
        "1000",
        "--device",
        &remote,
        "--threads",
        &threads,
        "-o",
        "adapter.gguf",
    ];
    let mut run = spawn_gguftune(root.path(), &args);
    let checkpoints = root.path().join("adapter.checkpoints");
    wait_for_checkpoint(&mut run, &checkpoints.join("step-000001"));
    server.child.kill().unwrap();
    let out = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), None, "no abort: {stderr}");
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains(&remote), "the server is named: {stderr}");
    assert!(stderr.contains("checkpoint") && stderr.contains("--resume"), "the checkpoint is named: {stderr}");
    assert!(!root.path().join("adapter.gguf").exists(), "no adapter written");

    // Every checkpoint left is complete: the newest one resumes on the CPU to the end.
    let mut names: Vec<String> =
        fs::read_dir(&checkpoints).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    let newest = checkpoints.join(names.last().unwrap());
    assert!(stderr.contains(&newest.display().to_string()) || stderr.contains("step-"), "{stderr}");
    let llama = LlamaModel::load(Runtime::get(), &root.path().join("base.gguf")).unwrap();
    LlamaAdapter::load(&llama, &newest.join("adapter.gguf")).unwrap();
    // `--resume` continues from it on the devices available then (the CPU): it trains on, and
    // writes the next checkpoint, before this test stops it.
    let step: u64 = names.last().unwrap().trim_start_matches("step-").parse().unwrap();
    let next = checkpoints.join(format!("step-{:06}", step + 1));
    let device = args.iter().position(|a| *a == remote.as_str()).unwrap();
    let mut resume: Vec<&str> = args.to_vec();
    resume[device] = "cpu";
    let newest = newest.to_str().unwrap().to_owned();
    resume.extend(["--resume", &newest]);
    let mut resumed = spawn_gguftune(root.path(), &resume);
    wait_for_checkpoint(&mut resumed, &next);
    resumed.kill().unwrap();
    resumed.wait().unwrap();
}

/// Waits until the finetune run `run` has written the checkpoint `dir` (its adapter), failing
/// with the run's stderr if it ends first, or after 10 minutes.
fn wait_for_checkpoint(run: &mut Child, dir: &Path) {
    let started = Instant::now();
    while !dir.join("adapter.gguf").exists() {
        if let Some(status) = run.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut run.stderr.take().unwrap(), &mut err).unwrap();
            panic!("finetune ended ({status}) before writing {}: {err}", dir.display());
        }
        assert!(started.elapsed() < Duration::from_secs(600), "no {} in 10 minutes", dir.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}
