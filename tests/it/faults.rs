//! Environment faults (issue 7): a full disk, a read-only output folder, missing and unreadable
//! inputs, an input truncated while it is mapped. Each ends with one error line that names the
//! file, a non-zero exit code, no panic, and nothing left behind: no temporary file, and a
//! previous complete output untouched.
//!
//! The full and read-only file systems are tmpfs mounts made by the test. As root it mounts them
//! itself; otherwise it runs again inside a user and mount namespace (`unshare -rm`), where it may;
//! where neither works it says so and skips. Every mount is unmounted by a guard, also when the
//! test fails.

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::common::fixtures::{alpaca_rows, tiny_llama, write_jsonl, Dtype, Shards, TinyLlamaSpec};
use crate::common::{gguftune, temp_dir};

/// Set in the environment of a test run again inside `unshare -rm`.
const IN_NAMESPACE: &str = "GGUFTUNE_TEST_IN_USER_NAMESPACE";

// ----- Mounts ---------------------------------------------------------------------------------

/// A tmpfs mounted on a folder for one test; unmounted when dropped, also while a failed test
/// unwinds.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size_bytes` on `dir`, creating the folder.
    fn mount(dir: &Path, size_bytes: u64) -> Result<Tmpfs, String> {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_bytes},mode=0777"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount -t tmpfs: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(Tmpfs { dir: dir.to_owned() })
    }

    /// Makes the mount read-only (the mount point's flag, which a user namespace may set too).
    fn remount_read_only(&self) {
        let out = Command::new("mount").args(["-o", "remount,bind,ro"]).arg(&self.dir).output().unwrap();
        assert!(out.status.success(), "remount,ro: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Fills the file system with a file named `filler`, leaving about `free` bytes (rounded down
    /// to pages) free.
    fn fill_leaving(&self, free: u64) {
        let path = self.dir.join("filler");
        let mut file = fs::File::create(&path).unwrap();
        let chunk = vec![0x55u8; 64 << 10];
        let mut written = 0u64;
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.kind() == ErrorKind::StorageFull => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        let free = free & !4095;
        assert!(written > free, "the file system holds only {written} bytes");
        file.set_len(written - free).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(&self.dir).status().is_ok_and(|s| s.success());
        if !unmounted {
            // Something still holds it (a child left running by a failed test): detach it now,
            // the kernel frees it when the last user is gone.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Whether this process may mount a tmpfs. When it may not, runs `test` again inside a user and
/// mount namespace and asserts that it passed there; when that is impossible too, prints why the
/// test is skipped. Either way the caller returns at once when this returns false.
fn can_mount_or_rerun(test: &str) -> bool {
    let probe = temp_dir();
    match Tmpfs::mount(&probe.path().join("probe"), 1 << 16) {
        Ok(_mounted) => return true,
        Err(why) if std::env::var_os(IN_NAMESPACE).is_some() => {
            panic!("cannot mount a tmpfs even inside a user namespace: {why}")
        }
        Err(_) => {}
    }
    let unshare_works = Command::new("unshare").args(["-rm", "true"]).status().is_ok_and(|s| s.success());
    if !unshare_works {
        eprintln!(
            "skipped {test}: mounting a tmpfs needs root or `unshare -rm` (user namespaces), and neither works here"
        );
        return false;
    }
    let out = Command::new("unshare")
        .args(["-rm", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([test, "--exact", "--test-threads", "1", "--nocapture"])
        .env(IN_NAMESPACE, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{test} ran inside `unshare -rm`:\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && stdout.contains("1 passed"), "{test} failed inside `unshare -rm`");
    false
}

// ----- Fixtures and runs ----------------------------------------------------------------------

/// A folder with a tiny checkpoint `hf/`, its f16 GGUF `base.gguf`, `train.jsonl` and an adapter
/// `adapter.gguf` trained on it for one step.
fn fixture() -> TempDir {
    let root = temp_dir();
    let dir = root.path();
    fs::create_dir(dir.join("hf")).unwrap();
    tiny_llama(&dir.join("hf"), &TinyLlamaSpec::default(), Dtype::BF16, Shards::One, 7).unwrap();
    write_jsonl(&dir.join("train.jsonl"), &alpaca_rows(8, 5)).unwrap();
    for args in [
        &["convert", "hf", "-o", "base.gguf", "--type", "f16"][..],
        &["finetune", "base.gguf", "--data", "train.jsonl", "-o", "adapter.gguf", "--threads", "1", "--max-steps", "1"],
        &["export-peft", "adapter.gguf", "--base", "base.gguf", "-o", "peft"],
    ] {
        let out = gguftune(dir, args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    root
}

/// A command that writes an output into the folder `out`.
struct Writer {
    name: &'static str,
    args: Vec<String>,
    /// The path the error must name (relative to the fixture).
    named: String,
    /// The output a previous run left there, which a failed run must not touch (file outputs).
    previous: Option<String>,
    /// The bytes the output takes (measured by a run elsewhere) decide how much room to leave on
    /// a full disk: half of it, so that the write fails part-way; `false` leaves none.
    partial: bool,
}

/// Every command that writes a file, with its output in the folder `out`.
fn writers(out: &str) -> Vec<Writer> {
    fn finetune<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            "finetune",
            "base.gguf",
            "--data",
            "train.jsonl",
            "--threads",
            "1",
            "--batch",
            "2",
            "--max-steps",
            "2",
        ];
        args.extend_from_slice(extra);
        args
    }
    let w = |name, args: Vec<&str>, named: String, previous: Option<String>, partial| Writer {
        name,
        args: args.into_iter().map(str::to_owned).collect(),
        named,
        previous,
        partial,
    };
    let p = |file: &str| format!("{out}/{file}");
    vec![
        w(
            "convert",
            vec!["convert", "hf", "-o", &p("model.gguf"), "--type", "q8_0"],
            p("model.gguf"),
            Some(p("model.gguf")),
            true,
        ),
        w("quantize", vec!["quantize", "base.gguf", &p("q.gguf"), "q8_0"], p("q.gguf"), Some(p("q.gguf")), true),
        w("finetune (adapter)", finetune(&["-o", &p("a.gguf")]), p("a.gguf"), Some(p("a.gguf")), true),
        w(
            "finetune (checkpoint)",
            finetune(&["-o", &p("a.gguf"), "--checkpoint-every", "1"]),
            p("a.checkpoints"),
            Some(p("a.gguf")),
            false,
        ),
        w(
            "merge",
            vec!["merge", "base.gguf", "adapter.gguf", "-o", &p("m.gguf")],
            p("m.gguf"),
            Some(p("m.gguf")),
            true,
        ),
        w(
            "modelfile",
            vec!["modelfile", "--model", "base.gguf", "--adapter", "adapter.gguf", "-o", &p("Modelfile")],
            p("Modelfile"),
            Some(p("Modelfile")),
            false,
        ),
        w(
            "import-peft",
            vec!["import-peft", "peft", "--base", "base.gguf", "-o", &p("i.gguf")],
            p("i.gguf"),
            Some(p("i.gguf")),
            true,
        ),
        w("export-peft", vec!["export-peft", "adapter.gguf", "--base", "base.gguf", "-o", &p("e")], p("e"), None, true),
    ]
}

fn run(dir: &Path, args: &[String]) -> Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    gguftune(dir, &args)
}

/// Bytes of a file, or of every file under a folder.
fn size_of(path: &Path) -> u64 {
    if path.is_dir() {
        fs::read_dir(path).unwrap().map(|e| size_of(&e.unwrap().path())).sum()
    } else {
        fs::metadata(path).unwrap().len()
    }
}

/// The names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// Checks that `out` failed with `code` and one line on stderr that names `named` and contains
/// `reason` (compared in lower case); what is wrong, if anything.
fn one_line_error(what: &str, out: &Output, code: i32, named: &str, reason: &str) -> Vec<String> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{what}: {}", stderr.trim_end());
    let mut problems = Vec::new();
    if out.status.code() != Some(code) {
        problems.push(format!("{what}: exit code {:?}, expected {code}: {stderr}", out.status.code()));
    }
    if stderr.contains("panicked") || stderr.lines().count() != 1 || !stderr.starts_with("gguftune: ") {
        problems.push(format!("{what}: not one error line: {stderr}"));
    }
    if !stderr.contains(named) {
        problems.push(format!("{what}: '{named}' is not named: {stderr}"));
    }
    if !stderr.to_lowercase().contains(reason) {
        problems.push(format!("{what}: '{reason}' is not said: {stderr}"));
    }
    problems
}

const PREVIOUS: &[u8] = b"the complete output of an earlier run\n";

// ----- Full disk and read-only folder ---------------------------------------------------------

#[test]
fn a_full_disk_fails_each_write_in_one_line_and_leaves_the_previous_output() {
    if !can_mount_or_rerun("faults::a_full_disk_fails_each_write_in_one_line_and_leaves_the_previous_output") {
        return;
    }
    let fx = fixture();
    let dir = fx.path();
    fs::create_dir(dir.join("plain")).unwrap();
    let mut problems = Vec::new();
    for (reference, writer) in writers("plain").into_iter().zip(writers("disk")) {
        let out = run(dir, &reference.args);
        assert!(out.status.success(), "{}: {}", reference.name, String::from_utf8_lossy(&out.stderr));
        let free = if writer.partial { size_of(&dir.join(&reference.named)) / 2 } else { 0 };

        let disk = Tmpfs::mount(&dir.join("disk"), 8 << 20).unwrap();
        if let Some(previous) = &writer.previous {
            fs::write(dir.join(previous), PREVIOUS).unwrap();
        }
        disk.fill_leaving(free);
        let before = names_in(&dir.join("disk"));
        let out = run(dir, &writer.args);
        problems.extend(one_line_error(writer.name, &out, 4, &writer.named, "no space left on device"));
        if names_in(&dir.join("disk")) != before {
            problems.push(format!("{}: left behind: {:?}", writer.name, names_in(&dir.join("disk"))));
        }
        if let Some(previous) = &writer.previous {
            if fs::read(dir.join(previous)).unwrap() != PREVIOUS {
                problems.push(format!("{}: the previous output changed", writer.name));
            }
        }
        drop(disk);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_read_only_output_folder_fails_each_write_in_one_line_and_changes_nothing() {
    if !can_mount_or_rerun("faults::a_read_only_output_folder_fails_each_write_in_one_line_and_changes_nothing") {
        return;
    }
    let fx = fixture();
    let dir = fx.path();
    let mut problems = Vec::new();
    // finetune refuses a read-only folder before it trains, so it never reaches a checkpoint.
    for writer in writers("ro").into_iter().filter(|w| w.name != "finetune (checkpoint)") {
        let folder = Tmpfs::mount(&dir.join("ro"), 1 << 20).unwrap();
        if let Some(previous) = &writer.previous {
            fs::write(dir.join(previous), PREVIOUS).unwrap();
        }
        folder.remount_read_only();
        let before = names_in(&dir.join("ro"));
        let out = run(dir, &writer.args);
        problems.extend(one_line_error(writer.name, &out, 4, &writer.named, "read-only file system"));
        if names_in(&dir.join("ro")) != before
            || fs::read(dir.join(writer.previous.as_deref().unwrap_or("ro/filler"))).ok().is_some_and(|b| b != PREVIOUS)
        {
            problems.push(format!("{}: the folder changed: {:?}", writer.name, names_in(&dir.join("ro"))));
        }
        drop(folder);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ----- Missing and unreadable inputs ----------------------------------------------------------

/// Runs `gguftune args` in `dir` as a user that file permissions apply to: as root (who reads any
/// file), as the unprivileged user 65534.
fn run_unprivileged(dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gguftune"));
    command.args(args).current_dir(dir);
    if fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
        command.uid(65534).gid(65534);
    }
    command.output().expect("the gguftune binary runs")
}

/// Copies the folder `from` to `to` (files only, one level).
fn copy_folder(from: &Path, to: &Path) {
    fs::create_dir(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn a_missing_or_unreadable_input_is_named_in_one_line_with_exit_code_4() {
    let fx = fixture();
    let dir = fx.path();
    // Unreadable copies of every kind of input.
    fs::copy(dir.join("base.gguf"), dir.join("locked.gguf")).unwrap();
    fs::copy(dir.join("adapter.gguf"), dir.join("locked-adapter.gguf")).unwrap();
    fs::copy(dir.join("train.jsonl"), dir.join("locked.jsonl")).unwrap();
    copy_folder(&dir.join("hf"), &dir.join("locked-hf"));
    copy_folder(&dir.join("peft"), &dir.join("locked-peft"));
    for locked in [
        "locked.gguf",
        "locked-adapter.gguf",
        "locked.jsonl",
        "locked-hf/model.safetensors",
        "locked-peft/adapter_model.safetensors",
    ] {
        fs::set_permissions(dir.join(locked), fs::Permissions::from_mode(0o000)).unwrap();
    }
    // The unprivileged user writes its outputs here (the test's folder is private to its owner).
    for folder in [dir, &dir.join("locked-hf"), &dir.join("locked-peft")] {
        fs::set_permissions(folder, fs::Permissions::from_mode(0o777)).unwrap();
    }
    let finetune = |model: &'static str, data: &'static str| {
        vec!["finetune", model, "--data", data, "-o", "out.gguf", "--threads", "1", "--max-steps", "1"]
    };
    // `inspect missing.gguf` is tests/it/inspect_cli.rs's.
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["inspect", "locked.gguf"], "locked.gguf"),
        (vec!["convert", "missing-hf", "-o", "out.gguf"], "missing-hf"),
        (vec!["convert", "locked-hf", "-o", "out.gguf"], "locked-hf/model.safetensors"),
        (vec!["quantize", "missing.gguf", "out.gguf", "q8_0"], "missing.gguf"),
        (vec!["quantize", "locked.gguf", "out.gguf", "q8_0"], "locked.gguf"),
        (finetune("missing.gguf", "train.jsonl"), "missing.gguf"),
        (finetune("locked.gguf", "train.jsonl"), "locked.gguf"),
        (finetune("base.gguf", "missing.jsonl"), "missing.jsonl"),
        (finetune("base.gguf", "locked.jsonl"), "locked.jsonl"),
        ([finetune("base.gguf", "train.jsonl"), vec!["--resume", "missing-checkpoint"]].concat(), "missing-checkpoint"),
        (vec!["merge", "missing.gguf", "adapter.gguf", "-o", "out.gguf"], "missing.gguf"),
        (vec!["merge", "base.gguf", "locked-adapter.gguf", "-o", "out.gguf"], "locked-adapter.gguf"),
        (
            vec!["modelfile", "--model", "missing.gguf", "--adapter", "adapter.gguf", "-o", "out.Modelfile"],
            "missing.gguf",
        ),
        (
            vec!["modelfile", "--model", "base.gguf", "--adapter", "locked-adapter.gguf", "-o", "out.Modelfile"],
            "locked-adapter.gguf",
        ),
        (vec!["generate", "missing.gguf", "-p", "hi", "-n", "1"], "missing.gguf"),
        (vec!["generate", "locked.gguf", "-p", "hi", "-n", "1"], "locked.gguf"),
        (vec!["eval", "missing.gguf", "--data", "train.jsonl"], "missing.gguf"),
        (vec!["eval", "base.gguf", "--data", "locked.jsonl"], "locked.jsonl"),
        (vec!["import-peft", "missing-peft", "--base", "base.gguf", "-o", "out.gguf"], "missing-peft"),
        (
            vec!["import-peft", "locked-peft", "--base", "base.gguf", "-o", "out.gguf"],
            "locked-peft/adapter_model.safetensors",
        ),
        (vec!["export-peft", "missing.gguf", "-o", "out-peft"], "missing.gguf"),
        (vec!["export-peft", "locked-adapter.gguf", "-o", "out-peft"], "locked-adapter.gguf"),
        (vec!["plan", "missing.gguf"], "missing.gguf"),
        (vec!["plan", "locked.gguf"], "locked.gguf"),
    ];
    let before = names_in(dir);
    let mut problems = Vec::new();
    for (args, named) in &cases {
        let out = run_unprivileged(dir, args);
        let reason = if named.contains("missing") { "no such file or directory" } else { "permission denied" };
        problems.extend(one_line_error(&args.join(" "), &out, 4, named, reason));
        if names_in(dir) != before {
            problems.push(format!("{}: left behind: {:?}", args.join(" "), names_in(dir)));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ----- An input truncated while mapped --------------------------------------------------------

/// A run whose input is cut short once it is mapped.
struct Truncation {
    args: &'static [&'static str],
    /// Files that must all be mapped before any is cut (a checkpoint maps every shard up front).
    mapped: &'static [&'static str],
    /// The files cut, each with the length it is cut to.
    shrink: Vec<(PathBuf, u64)>,
}

/// Runs `t.args` in `dir`; as soon as every file of `t.mapped` shows in its memory maps, stops it
/// (SIGSTOP), truncates the files of `t.shrink`, and lets it continue.
fn run_truncating_when_mapped(dir: &Path, t: &Truncation) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gguftune"))
        .args(t.args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let maps = PathBuf::from(format!("/proc/{pid}/maps"));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = fs::read_to_string(&maps).unwrap_or_default();
        if t.mapped.iter().all(|m| text.contains(m)) {
            break;
        }
        if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
            let out = child.wait_with_output().unwrap();
            panic!(
                "{:?} ended or hung before mapping {:?}: {}",
                t.args,
                t.mapped,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let signal = |name: &str| assert!(Command::new("kill").args([name, &pid]).status().unwrap().success());
    signal("-STOP");
    for (path, len) in &t.shrink {
        fs::OpenOptions::new().write(true).open(dir.join(path)).unwrap().set_len(*len).unwrap();
    }
    signal("-CONT");
    child.wait_with_output().unwrap()
}

#[test]
fn an_input_truncated_while_mapped_ends_in_one_line_naming_it_and_leaves_no_temp_file() {
    let root = temp_dir();
    let dir = root.path();
    // 50 MB of f32 weights in two shards: converting them takes far longer than stopping the
    // process once it has mapped them.
    let spec = TinyLlamaSpec { hidden: 512, ffn: 1536, layers: 4, heads: 8, kv_heads: 4, ..TinyLlamaSpec::default() };
    fs::create_dir(dir.join("hf")).unwrap();
    tiny_llama(&dir.join("hf"), &spec, Dtype::F32, Shards::Two, 3).unwrap();
    let out = gguftune(dir, &["convert", "hf", "-o", "f32.gguf", "--type", "f32"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let f32_len = fs::metadata(dir.join("f32.gguf")).unwrap().len();
    fs::create_dir(dir.join("out")).unwrap();
    for name in ["model.gguf", "q.gguf"] {
        fs::write(dir.join("out").join(name), PREVIOUS).unwrap();
    }
    const SHARDS: &[&str] = &["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
    let cases = [
        Truncation {
            args: &["convert", "hf", "-o", "out/model.gguf", "--type", "q8_0"],
            mapped: SHARDS,
            shrink: SHARDS.iter().map(|s| (Path::new("hf").join(s), 4096)).collect(),
        },
        Truncation {
            args: &["quantize", "f32.gguf", "out/q.gguf", "q4_k_m"],
            mapped: &["f32.gguf"],
            shrink: vec![("f32.gguf".into(), f32_len / 2)],
        },
    ];
    let mut problems = Vec::new();
    for t in &cases {
        let what = t.args.join(" ");
        let out = run_truncating_when_mapped(dir, t);
        problems.extend(one_line_error(&what, &out, 3, "", "shrank while it was being read"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !t.mapped.iter().any(|m| stderr.contains(&format!("{m}: the file shrank"))) {
            problems.push(format!("{what}: the truncated file is not named: {stderr}"));
        }
        if names_in(&dir.join("out")) != ["model.gguf", "q.gguf"] {
            problems.push(format!("{what}: left behind: {:?}", names_in(&dir.join("out"))));
        }
    }
    for name in ["model.gguf", "q.gguf"] {
        assert_eq!(fs::read(dir.join("out").join(name)).unwrap(), PREVIOUS, "out/{name} changed");
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
