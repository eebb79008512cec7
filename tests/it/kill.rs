//! Runs killed with SIGKILL at many points leave every output either absent, as it was before,
//! or complete; a killed `finetune` resumed from its newest checkpoint ends with the adapter of an
//! uninterrupted run; and the temporary files of killed runs are gone after the next run.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gguftune::ggml::{LlamaAdapter, LlamaModel, Runtime};
use gguftune::train::checkpoint::latest_checkpoint;

use crate::common::fixtures::{alpaca_rows, tiny_llama, write_jsonl, Dtype, Shards, TinyLlamaSpec};
use crate::common::{gguftune, temp_dir};

/// Kill points per command, spread evenly over an uninterrupted run's duration.
const KILLS: u32 = 20;

/// Starts `gguftune args` in `dir`, kills it with SIGKILL after `after`, and waits for it.
/// Returns whether it had already finished.
fn run_and_kill(dir: &Path, args: &[&str], after: Duration) -> bool {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gguftune"))
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("gguftune starts");
    let deadline = Instant::now() + after;
    while Instant::now() < deadline {
        if child.try_wait().expect("the child can be polled").is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().expect("SIGKILL can be sent");
    child.wait().expect("the killed child is reaped");
    false
}

/// Runs `args` to completion and returns how long it took.
fn timed(dir: &Path, args: &[&str]) -> Duration {
    let start = Instant::now();
    let out = gguftune(dir, args);
    assert!(out.status.success(), "gguftune {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    start.elapsed()
}

/// The kill points: `KILLS` instants spread over `total`.
fn kill_points(total: Duration) -> impl Iterator<Item = Duration> {
    (0..KILLS).map(move |i| total.mul_f64((f64::from(i) + 0.5) / f64::from(KILLS)))
}

fn temp_files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.contains(".tmp-") {
            found.push(name);
        }
    }
    found
}

#[test]
fn convert_killed_anywhere_leaves_the_old_file_or_the_new_one() {
    let root = temp_dir();
    let dir = root.path();
    // Large enough that converting to q4_k_m takes a while, so kills land inside the work too.
    let spec = TinyLlamaSpec { hidden: 512, ffn: 1536, layers: 6, heads: 8, kv_heads: 4, ..TinyLlamaSpec::default() };
    fs::create_dir(dir.join("hf")).unwrap();
    tiny_llama(&dir.join("hf"), &spec, Dtype::F32, Shards::Two, 11).unwrap();
    let args = ["convert", "hf", "-o", "model.gguf", "--type", "q4_k_m"];
    // The new file, as an uninterrupted run writes it, and the previous one it replaces.
    let duration = timed(dir, &args);
    let new = fs::read(dir.join("model.gguf")).unwrap();
    LlamaModel::load(Runtime::get(), &dir.join("model.gguf")).expect("llama.cpp loads the converted model");
    timed(dir, &["convert", "hf", "-o", "model.gguf", "--type", "q8_0"]);
    let old = fs::read(dir.join("model.gguf")).unwrap();
    assert_ne!(old, new);

    let (mut kept_old, mut finished) = (0, 0);
    for after in kill_points(duration) {
        run_and_kill(dir, &args, after);
        let now = fs::read(dir.join("model.gguf")).unwrap();
        if now == old {
            kept_old += 1;
        } else {
            assert!(now == new, "after a kill at {after:?}, model.gguf is neither the old file nor the new one");
            finished += 1;
            fs::write(dir.join("model.gguf"), &old).unwrap();
        }
    }
    assert!(kept_old > 0, "some kills landed before the rename ({finished} runs finished first)");
    // The next run removes what the killed runs left behind.
    timed(dir, &args);
    assert_eq!(fs::read(dir.join("model.gguf")).unwrap(), new);
    assert_eq!(temp_files(dir), Vec::<String>::new());
}

fn finetune_args<'a>(output: &'a str, resume: Option<&'a str>) -> Vec<&'a str> {
    let mut args = vec![
        "finetune",
        "base.gguf",
        "--data",
        "train.jsonl",
        "-o",
        output,
        "--rank",
        "4",
        "--batch",
        "2",
        "--epochs",
        "2",
        "--threads",
        "1",
        "--checkpoint-every",
        "1",
        "--keep-checkpoints",
        "3",
        "--val-split",
        "0.1",
    ];
    if let Some(dir) = resume {
        args.extend(["--resume", dir]);
    }
    args
}

/// The newest checkpoint folder of the run writing `adapter`.
fn newest_checkpoint(dir: &Path, adapter: &str) -> Option<PathBuf> {
    latest_checkpoint(&dir.join(format!("{}.checkpoints", adapter.trim_end_matches(".gguf"))))
}

#[test]
fn finetune_killed_anywhere_resumes_to_the_uninterrupted_adapter() {
    let root = temp_dir();
    let dir = root.path();
    fs::create_dir(dir.join("hf")).unwrap();
    tiny_llama(&dir.join("hf"), &TinyLlamaSpec::default(), Dtype::F32, Shards::One, 12).unwrap();
    timed(dir, &["convert", "hf", "-o", "base.gguf", "--type", "q8_0"]);
    write_jsonl(&dir.join("train.jsonl"), &alpaca_rows(20, 5)).unwrap();
    let rt = Runtime::get();
    let base = LlamaModel::load(rt, &dir.join("base.gguf")).unwrap();

    // The kill points spread over the run's duration; tests running beside this one slow some
    // runs down, so the shorter of two uninterrupted runs (which must write the same adapter)
    // is the one measured, lest most kills land after the run.
    let duration = timed(dir, &finetune_args("reference.gguf", None));
    let reference = fs::read(dir.join("reference.gguf")).unwrap();
    let duration = duration.min(timed(dir, &finetune_args("again.gguf", None)));
    assert!(fs::read(dir.join("again.gguf")).unwrap() == reference, "two uninterrupted runs wrote different adapters");
    // An older adapter at the output path: it must survive every kill until a run completes.
    fs::copy(dir.join("reference.checkpoints/step-000016/adapter.gguf"), dir.join("adapter.gguf")).ok();
    let old = fs::read(dir.join("adapter.gguf")).ok();

    let mut resumed = 0;
    for after in kill_points(duration) {
        let _ = fs::remove_dir_all(dir.join("adapter.checkpoints"));
        if let Some(old) = &old {
            fs::write(dir.join("adapter.gguf"), old).unwrap();
        }
        let finished = run_and_kill(dir, &finetune_args("adapter.gguf", None), after);
        let now = fs::read(dir.join("adapter.gguf")).ok();
        assert!(now == old || now.as_deref() == Some(&reference[..]), "after a kill at {after:?}: a partial adapter");
        for (name, check) in
            [("adapter.metrics.jsonl", "}\n"), ("adapter.loss.svg", "</svg>\n"), ("adapter.Modelfile", "\n")]
        {
            if let Ok(text) = fs::read_to_string(dir.join(name)) {
                assert!(text.ends_with(check), "after a kill at {after:?}: {name} is cut short");
            }
        }
        // Every checkpoint that exists is complete: llama.cpp loads its adapter.
        if let Ok(entries) = fs::read_dir(dir.join("adapter.checkpoints")) {
            for entry in entries {
                let path = entry.unwrap().path();
                if path.file_name().unwrap().to_string_lossy().starts_with("step-") {
                    LlamaAdapter::load(&base, &path.join("adapter.gguf"))
                        .unwrap_or_else(|e| panic!("after a kill at {after:?}: {}: {e}", path.display()));
                    assert!(path.join("optimizer.gguf").is_file() && path.join("metrics.jsonl").is_file());
                }
            }
        }
        if finished {
            continue;
        }
        // Resume from the newest checkpoint, or start again when none was written yet.
        let checkpoint = newest_checkpoint(dir, "adapter.gguf");
        let checkpoint = checkpoint.as_ref().map(|p| p.to_string_lossy().into_owned());
        timed(dir, &finetune_args("adapter.gguf", checkpoint.as_deref()));
        assert_eq!(fs::read(dir.join("adapter.gguf")).unwrap(), reference, "resumed after a kill at {after:?}");
        resumed += 1;
    }
    assert!(resumed > KILLS / 2, "most kills landed inside the run ({resumed} of {KILLS})");
    assert_eq!(temp_files(dir), Vec::<String>::new());
    assert_eq!(temp_files(&dir.join("adapter.checkpoints")), Vec::<String>::new());
}

#[test]
fn ctrl_c_saves_a_checkpoint_that_resumes_to_the_uninterrupted_adapter() {
    let root = temp_dir();
    let dir = root.path();
    fs::create_dir(dir.join("hf")).unwrap();
    tiny_llama(&dir.join("hf"), &TinyLlamaSpec::default(), Dtype::F32, Shards::One, 13).unwrap();
    timed(dir, &["convert", "hf", "-o", "base.gguf", "--type", "q8_0"]);
    write_jsonl(&dir.join("train.jsonl"), &alpaca_rows(40, 6)).unwrap();
    let args = |output: &'static str| {
        vec!["finetune", "base.gguf", "--data", "train.jsonl", "-o", output, "--rank", "4", "--batch", "2"]
            .into_iter()
            .chain(["--epochs", "3", "--threads", "1", "--val-split", "0"])
            .collect::<Vec<_>>()
    };
    let duration = timed(dir, &args("reference.gguf"));
    let reference = fs::read(dir.join("reference.gguf")).unwrap();
    // The shorter of two runs, as for the kills above: a reference run slowed by the tests beside
    // it would put the interrupt after the end of a faster run.
    let duration = duration.min(timed(dir, &args("again.gguf")));
    assert_eq!(fs::read(dir.join("again.gguf")).unwrap(), reference);

    let child = Command::new(env!("CARGO_BIN_EXE_gguftune"))
        .args(args("adapter.gguf"))
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(duration.mul_f64(0.4));
    let sent = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(!dir.join("adapter.gguf").exists(), "an interrupted run writes no adapter");
    let checkpoint = newest_checkpoint(dir, "adapter.gguf").expect("Ctrl-C saved a checkpoint");
    let step = checkpoint.file_name().unwrap().to_string_lossy().into_owned();
    assert!(stderr.contains(&format!("--resume adapter.checkpoints/{step}")), "{stderr}");

    let checkpoint = checkpoint.to_string_lossy().into_owned();
    timed(dir, &[&args("adapter.gguf")[..], &["--resume", &checkpoint]].concat());
    assert_eq!(fs::read(dir.join("adapter.gguf")).unwrap(), reference);
}
