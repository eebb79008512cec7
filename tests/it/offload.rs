//! `generate` and `eval` with the model offloaded to a device (issue 19): on a `gguftune
//! rpc-server` child on 127.0.0.1 (serving its CPU) they give the CPU's numbers and text bit for
//! bit, the server receives the weights (its `--cache` folder fills), and a server killed in the
//! middle of a run ends it with one line naming the server and exit code 4, not ggml's abort.

use std::net::Ipv4Addr;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use gguftune::quant::FileType;
use serde_json::Value;

use crate::common::fixtures::{prompt_completion_rows, tiny_llama, write_jsonl, Dtype, Shards, TinyLlamaSpec};
use crate::common::rpc_server::{free_port, serial, Server, THREADS};
use crate::common::{convert_to, gguftune, spawn_gguftune, temp_dir};

/// A tiny Llama whose output projection (65536 × 192 in q8_0, 13.4 MB) is over the 10 MiB above
/// which ggml's RPC client sends a weight by hash first and the server keeps it in its `--cache`
/// folder: files there show that the server received the weights.
fn model_with_a_large_output(root: &Path) {
    let dir = root.join("hf");
    let spec = TinyLlamaSpec { hidden: 192, ffn: 384, vocab_size: Some(65536), ..TinyLlamaSpec::default() };
    tiny_llama(&dir, &spec, Dtype::BF16, Shards::One, 5).unwrap();
    convert_to(&dir, FileType::Q8_0, &root.join("base.gguf")).unwrap();
}

fn cache_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| entries.count())
}

fn run_json(root: &Path, args: &[&str]) -> Value {
    let out = gguftune(root, args);
    assert!(out.status.success(), "gguftune {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn eval_and_generate_on_an_rpc_device_equal_the_cpu_s_bit_for_bit() {
    // One RPC test at a time: see rpc_server::serial.
    let _serial = serial();
    let root = temp_dir();
    model_with_a_large_output(root.path());
    write_jsonl(&root.path().join("val.jsonl"), &prompt_completion_rows(6, 2)).unwrap();
    let cache = root.path().join("rpc-cache");
    let (server, _) = Server::start_with(Ipv4Addr::LOCALHOST, &["--cache", cache.to_str().unwrap()]);
    let remote = format!("rpc:{}", server.endpoint);
    let threads = THREADS.to_string();

    let eval = |device: &[&str]| {
        let base = ["eval", "base.gguf", "--data", "val.jsonl", "--max-new", "6", "--threads", &threads, "--json"];
        run_json(root.path(), &[&base[..], device].concat())
    };
    let on_cpu = eval(&["--device", "cpu"]);
    assert_eq!(cache_files(&cache), 0, "nothing sent to the server yet");
    let on_rpc = eval(&["--device", &remote]);
    assert!(cache_files(&cache) > 0, "the server received the output weight");
    // Both repeating layers and the output layer on the CPU, on the CPU of a server, and split
    // (`1,2` of the 3: layer 0 on the CPU, layer 1 and the output on the server): the same
    // ggml CPU kernels on the same bytes, the same thread count (the same split of rows between
    // threads), and RPC moves bytes unchanged.
    let split = eval(&["--device", &format!("cpu,{remote}"), "--split", "1,2"]);
    assert_eq!(on_cpu["devices"], serde_json::json!(["CPU"]));
    assert_eq!(on_rpc["devices"], serde_json::json!([remote]));
    assert_eq!(split["devices"], serde_json::json!(["CPU", remote]));
    let loss = on_cpu["base"]["loss"].as_f64().unwrap();
    assert!(loss.is_finite() && loss > 0.0, "{on_cpu}");
    assert!(on_cpu["base"]["metric"].is_object(), "answers were generated and scored: {on_cpu}");
    assert_eq!(on_rpc["base"], on_cpu["base"], "eval on {remote}");
    assert_eq!(split["base"], on_cpu["base"], "eval on cpu,{remote}");

    let generate = |device: &str| {
        let args = ["generate", "base.gguf", "-p", "the food was", "--temp", "0", "-n", "12", "--ctx", "64"];
        run_json(root.path(), &[&args[..], &["--threads", &threads, "--json", "--device", device]].concat())
    };
    let (on_cpu, on_rpc) = (generate("cpu"), generate(&remote));
    assert_eq!(on_cpu["tokens"].as_array().unwrap().len(), 12, "{on_cpu}");
    assert_eq!(on_rpc["tokens"], on_cpu["tokens"]);
    assert_eq!(on_rpc["text"], on_cpu["text"]);
    assert_eq!(on_rpc["devices"], serde_json::json!([remote]));
    // Models and contexts using the server are gone (each run was its own process).
    drop(server);
}

#[test]
fn split_and_device_errors_are_clear() {
    let root = temp_dir();
    let run = |args: &[&str]| {
        let out = gguftune(root.path(), args);
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = run(&["generate", "missing.gguf", "-p", "x", "--split", "1,1"]);
    assert_eq!(code, Some(2), "--split needs --device: {err}");
    let (code, err) = run(&["generate", "missing.gguf", "-p", "x", "--device", "cpu", "--split", "1,1"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--split has 2 shares for 1 devices (CPU)"), "{err}");
    let (code, err) = run(&["generate", "missing.gguf", "-p", "x", "--device", "gpu"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("unknown device kind 'gpu'"), "{err}");
    // A server that is not there: the typed error before anything runs, exit code 4.
    let port = free_port(Ipv4Addr::LOCALHOST);
    let data = root.path().join("val.jsonl");
    write_jsonl(&data, &prompt_completion_rows(2, 1)).unwrap();
    std::fs::write(root.path().join("m.gguf"), b"").unwrap();
    let (code, err) = run(&["eval", "m.gguf", "--data", "val.jsonl", "--device", &format!("rpc:127.0.0.1:{port}")]);
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains(&format!("rpc:127.0.0.1:{port}: cannot connect")), "{err}");
}

#[test]
fn a_server_killed_mid_run_ends_eval_with_one_line_and_exit_code_4() {
    // One RPC test at a time: see rpc_server::serial.
    let _serial = serial();
    let root = temp_dir();
    model_with_a_large_output(root.path());
    // Enough examples, each answered for up to 48 tokens, that the run lasts well past the
    // moment the server has the weights (each generated token is a round trip to the server).
    write_jsonl(&root.path().join("val.jsonl"), &prompt_completion_rows(64, 3)).unwrap();
    let cache = root.path().join("rpc-cache");
    let (server, _) = Server::start_with(Ipv4Addr::LOCALHOST, &["--cache", cache.to_str().unwrap()]);
    let endpoint = server.endpoint.clone();
    let remote = format!("rpc:{endpoint}");
    let args = ["eval", "base.gguf", "--data", "val.jsonl", "--max-new", "48", "--task", "summarize"];
    let mut eval =
        spawn_gguftune(root.path(), &[&args[..], &["--threads", "1", "--json", "--device", &remote]].concat());
    // The server has received the output weight once its cache has a file; the run goes on.
    while cache_files(&cache) == 0 {
        assert!(eval.try_wait().unwrap().is_none(), "eval ended before sending the weights");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(eval.try_wait().unwrap().is_none(), "eval finished before the server was killed: give it more data");
    drop(server);
    let out = eval.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), None, "ended by a signal (ggml's abort): {stderr}");
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].starts_with(&format!("error: rpc device {remote} stopped answering (ggml: ")),
        "the line names the server: {stderr}"
    );
    assert!(!stderr.contains("GGML_ABORT") && !stderr.contains("backtrace"), "{stderr}");
    assert!(out.stdout.is_empty(), "no partial result: {}", String::from_utf8_lossy(&out.stdout));
}
