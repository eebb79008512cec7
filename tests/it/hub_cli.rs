//! `gguftune convert owner/name` and `gguftune inspect owner/name`: the real hf-hub download
//! code and the range requests for safetensors headers against a stand-in hub on 127.0.0.1
//! (`common::hub_server`), pointed at through `HF_ENDPOINT` and `HF_HOME`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::fixtures::{tiny_llama, Dtype, Shards, TinyLlamaSpec};
use crate::common::hub_server::{sha256_hex, FixtureRepo, HubServer};
use crate::common::{gguftune, temp_dir};

/// Runs the CLI with the hub at `endpoint` and its cache under `hf_home`, and nothing else of
/// the caller's Hugging Face environment.
fn hub_cli(dir: &Path, endpoint: &str, hf_home: &Path, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gguftune"));
    cmd.args(args).current_dir(dir).env("HF_ENDPOINT", endpoint).env("HF_HOME", hf_home);
    for var in ["HF_TOKEN", "HF_TOKEN_PATH", "HF_HUB_CACHE", "HF_HUB_OFFLINE"] {
        cmd.env_remove(var);
    }
    if let Some(token) = token {
        cmd.env("HF_TOKEN", token);
    }
    cmd.output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A tiny checkpoint in `root/name`.
fn tiny_folder(root: &Path, name: &str, shards: Shards) -> PathBuf {
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap();
    tiny_llama(&dir, &TinyLlamaSpec::default(), Dtype::F32, shards, 23).unwrap();
    dir
}

/// A tiny checkpoint in `root/name`, and its conversion to q8_0 by the CLI from the folder.
fn local_model(root: &Path, name: &str, shards: Shards) -> (PathBuf, Vec<u8>) {
    let dir = tiny_folder(root, name, shards);
    let out = root.join(format!("{name}-local.gguf"));
    let run = gguftune(root, &["convert", dir.to_str().unwrap(), "-o", out.to_str().unwrap(), "--type", "q8_0"]);
    assert!(run.status.success(), "{}", stderr(&run));
    (dir, fs::read(out).unwrap())
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn hub_repo_converts_like_the_local_folder_into_the_hf_cache_then_offline() {
    let root = temp_dir();
    let (dir, local) = local_model(root.path(), "tiny-chat", Shards::Two);
    let repo = FixtureRepo::from_dir(
        "fixtures/tiny-chat",
        0xab,
        &dir,
        &[("README.md", b"# tiny"), ("pytorch_model.bin", b"x")],
    );
    let sha = repo.sha.clone();
    let server = HubServer::start(vec![repo]);
    let hf_home = root.path().join("hf");

    let run = hub_cli(
        root.path(),
        &server.endpoint,
        &hf_home,
        None,
        &["convert", "fixtures/tiny-chat", "-o", "hub.gguf", "--type", "q8_0"],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(fs::read(root.path().join("hub.gguf")).unwrap() == local, "the GGUF differs from the local folder's");

    // huggingface_hub's layout: blobs, snapshots/<commit>/<file> links, refs/main.
    let repo_dir = hf_home.join("hub").join("models--fixtures--tiny-chat");
    assert_eq!(fs::read_to_string(repo_dir.join("refs").join("main")).unwrap().trim(), sha);
    let snapshot = repo_dir.join("snapshots").join(&sha);
    for file in ["config.json", "tokenizer.json", "model.safetensors.index.json", "model-00002-of-00002.safetensors"] {
        assert!(snapshot.join(file).is_file(), "{file} is not in the snapshot");
    }
    let mut cached = Vec::new();
    files_under(&repo_dir, &mut cached);
    assert!(!cached.iter().any(|p| p.extension().is_some_and(|e| e == "part")), "{cached:?}");
    // Only what conversion reads was asked for: never the README or the pickle.
    let paths: Vec<String> = server.log().into_iter().map(|l| l.path).collect();
    assert!(paths.iter().any(|p| p.contains("/resolve/") && p.ends_with("model-00001-of-00002.safetensors")));
    assert!(!paths.iter().any(|p| p.ends_with("README.md") || p.ends_with("pytorch_model.bin")), "{paths:?}");

    // Without the server, --offline converts from the cache alone.
    drop(server);
    let run = hub_cli(
        root.path(),
        "http://127.0.0.1:9",
        &hf_home,
        None,
        &["convert", "fixtures/tiny-chat", "--offline", "-o", "offline.gguf", "--type", "q8_0"],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(fs::read(root.path().join("offline.gguf")).unwrap() == local);
}

#[test]
fn gated_repo_answers_401_without_a_token_and_converts_with_one() {
    let root = temp_dir();
    let (dir, local) = local_model(root.path(), "gated", Shards::One);
    let mut repo = FixtureRepo::from_dir("meta/gated", 0x11, &dir, &[]);
    repo.token = Some("hf_secret".to_owned());
    let server = HubServer::start(vec![repo]);
    let hf_home = root.path().join("hf");
    let args = ["convert", "meta/gated", "-o", "gated.gguf", "--type", "q8_0"];

    let run = hub_cli(root.path(), &server.endpoint, &hf_home, None, &args);
    assert_eq!(run.status.code(), Some(3), "{}", stderr(&run));
    let err = stderr(&run);
    assert_eq!(err.lines().count(), 1, "one line, not a stack of HTTP errors: {err}");
    assert!(err.contains("401") && err.contains("Access to model meta/gated is restricted"), "{err}");
    assert!(err.contains("HF_TOKEN"), "{err}");

    let run = hub_cli(root.path(), &server.endpoint, &hf_home, Some("hf_secret"), &args);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(fs::read(root.path().join("gated.gguf")).unwrap() == local);
    let log = server.log();
    let downloads: Vec<_> = log.iter().filter(|l| l.path.contains("/resolve/")).collect();
    assert!(!downloads.is_empty());
    assert!(downloads.iter().all(|l| l.authorization.as_deref() == Some("Bearer hf_secret")), "{downloads:?}");

    // The token file `huggingface-cli login` writes works as well.
    let other_home = root.path().join("hf2");
    fs::create_dir_all(&other_home).unwrap();
    fs::write(other_home.join("token"), "hf_secret\n").unwrap();
    let run = hub_cli(root.path(), &server.endpoint, &other_home, None, &args);
    assert!(run.status.success(), "{}", stderr(&run));
}

#[test]
fn missing_repo_pickle_only_repo_and_uncached_offline_are_refused_by_name() {
    let root = temp_dir();
    let pickled = root.path().join("pickled");
    fs::create_dir_all(&pickled).unwrap();
    fs::write(pickled.join("config.json"), r#"{"architectures": ["LlamaForCausalLM"]}"#).unwrap();
    fs::write(pickled.join("pytorch_model.bin"), b"not really a pickle").unwrap();
    let server = HubServer::start(vec![FixtureRepo::from_dir("old/pickled", 0x22, &pickled, &[])]);
    let hf_home = root.path().join("hf");

    let run = hub_cli(root.path(), &server.endpoint, &hf_home, None, &["convert", "nobody/nothing", "-o", "x.gguf"]);
    assert_eq!(run.status.code(), Some(3), "{}", stderr(&run));
    let err = stderr(&run);
    assert!(err.contains("nobody/nothing") && err.contains("404") && err.contains("Repository not found"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let run = hub_cli(root.path(), &server.endpoint, &hf_home, None, &["convert", "old/pickled", "-o", "x.gguf"]);
    assert_eq!(run.status.code(), Some(3), "{}", stderr(&run));
    let err = stderr(&run);
    assert!(err.contains("'pytorch_model.bin'") && err.contains("pickle") && err.contains("safetensors"), "{err}");
    assert!(!server.log().iter().any(|l| l.path.contains("/resolve/")), "nothing is downloaded");

    let run = hub_cli(
        root.path(),
        &server.endpoint,
        &hf_home,
        None,
        &["convert", "old/pickled", "--offline", "-o", "x.gguf"],
    );
    assert_eq!(run.status.code(), Some(4), "{}", stderr(&run));
    assert!(stderr(&run).contains("not in the hub cache"), "{}", stderr(&run));
}

#[test]
fn download_cut_mid_file_resumes_from_where_it_stopped() {
    let root = temp_dir();
    let (dir, local) = local_model(root.path(), "cut", Shards::One);
    let repo = FixtureRepo::from_dir("fixtures/cut", 0x33, &dir, &[]);
    let size = repo.files.iter().find(|(n, _)| n == "model.safetensors").unwrap().1.len();
    let server = HubServer::start(vec![repo]);
    let half = size / 2;
    server.cut_next_download("model.safetensors", half);
    let hf_home = root.path().join("hf");

    let run = hub_cli(
        root.path(),
        &server.endpoint,
        &hf_home,
        None,
        &["convert", "fixtures/cut", "-o", "cut.gguf", "--type", "q8_0"],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(fs::read(root.path().join("cut.gguf")).unwrap() == local);
    let ranges: Vec<String> =
        server.log().into_iter().filter(|l| l.path.starts_with("/lfs/")).filter_map(|l| l.range).collect();
    assert!(ranges.contains(&format!("bytes={half}-")), "the second request resumes at byte {half}: {ranges:?}");
    let mut cached = Vec::new();
    files_under(&hf_home, &mut cached);
    assert!(!cached.iter().any(|p| p.extension().is_some_and(|e| e == "part")), "{cached:?}");
}

/// The bytes a header-only read of `repo` needs: each safetensors file's 8-byte length and its
/// header, and the total size of the weights.
fn header_and_weight_bytes(repo: &FixtureRepo) -> (usize, usize) {
    let weights = repo.files.iter().filter(|(n, _)| n.ends_with(".safetensors"));
    let header = weights.clone().map(|(_, b)| 8 + u64::from_le_bytes(b[..8].try_into().unwrap()) as usize).sum();
    (header, weights.map(|(_, b)| b.len()).sum())
}

/// The report without its first line, which names the input.
fn after_first_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).lines().skip(1).collect::<Vec<_>>().join("\n")
}

fn json_of(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `inspect owner/name` against the server: the same table as `inspect` of the folder, with no
/// more of the weights fetched than their headers.
fn inspect_matches_the_local_folder(shards: Shards) {
    let root = temp_dir();
    let dir = tiny_folder(root.path(), "tiny", shards);
    let repo = FixtureRepo::from_dir("fixtures/tiny", 0x44, &dir, &[("README.md", b"# tiny")]);
    let (header_bytes, weight_bytes) = header_and_weight_bytes(&repo);
    let small_bytes: usize = repo
        .files
        .iter()
        .filter(|(n, _)| n == "config.json" || n == "model.safetensors.index.json")
        .map(|(_, b)| b.len())
        .sum();
    let sha = repo.sha.clone();
    let server = HubServer::start(vec![repo]);
    let hf_home = root.path().join("hf");
    let local_dir = dir.to_str().unwrap();

    let remote = hub_cli(root.path(), &server.endpoint, &hf_home, None, &["inspect", "fixtures/tiny", "--tensors"]);
    assert!(remote.status.success(), "{}", stderr(&remote));
    let local = gguftune(root.path(), &["inspect", local_dir, "--tensors"]);
    assert!(local.status.success(), "{}", stderr(&local));
    let first_line = String::from_utf8_lossy(&remote.stdout).lines().next().unwrap_or_default().to_owned();
    assert_eq!(first_line, format!("fixtures/tiny@{sha}: hf-hub model"));
    assert_eq!(after_first_line(&remote), after_first_line(&local));
    assert!(after_first_line(&local).contains("model.layers.1.mlp.down_proj.weight"));

    // Of the weights, exactly the length prefixes and headers were sent; over all, little more
    // than the headers, config.json and the index (the file listing and hf-hub's one-byte probes).
    let log = server.log();
    let from_weights: usize =
        log.iter().filter(|l| l.path.starts_with("/lfs/") || l.path.ends_with(".safetensors")).map(|l| l.served).sum();
    assert_eq!(from_weights, header_bytes, "{log:?}");
    let served = server.bytes_served();
    assert!(served < header_bytes + small_bytes + 4096, "{served} bytes served: {log:?}");
    assert!(served < weight_bytes, "{served} bytes served, the weights are {weight_bytes}");
    let mut cached = Vec::new();
    files_under(&hf_home, &mut cached);
    assert!(!cached.iter().any(|p| p.to_string_lossy().ends_with(".safetensors")), "{cached:?}");

    // --json gives the same data as for the folder.
    let args = ["inspect", "fixtures/tiny", "--json", "--tensors"];
    let remote = json_of(&hub_cli(root.path(), &server.endpoint, &hf_home, None, &args));
    let local = json_of(&gguftune(root.path(), &["inspect", local_dir, "--json", "--tensors"]));
    assert_eq!(remote["format"], "hf-hub");
    for key in ["tensors", "metadata", "parameter_count", "file_bytes", "file_type", "architecture", "name"] {
        assert_eq!(remote[key], local[key], "{key}");
    }
}

#[test]
fn hub_inspect_reads_only_the_safetensors_header_and_prints_the_local_table() {
    inspect_matches_the_local_folder(Shards::One);
}

#[test]
fn hub_inspect_of_a_sharded_repo_reads_each_shards_header() {
    inspect_matches_the_local_folder(Shards::Two);
}

#[test]
fn hub_inspect_offline_uses_the_cached_snapshot_only_when_it_has_the_weights() {
    let root = temp_dir();
    let dir = tiny_folder(root.path(), "tiny", Shards::Two);
    let server = HubServer::start(vec![FixtureRepo::from_dir("fixtures/tiny", 0x55, &dir, &[])]);
    let hf_home = root.path().join("hf");
    let offline = ["inspect", "fixtures/tiny", "--offline", "--tensors"];

    // An online inspect caches config.json and the index, not a checkpoint.
    let run = hub_cli(root.path(), &server.endpoint, &hf_home, None, &["inspect", "fixtures/tiny"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let run = hub_cli(root.path(), "http://127.0.0.1:9", &hf_home, None, &offline);
    assert_eq!(run.status.code(), Some(4), "{}", stderr(&run));
    assert!(stderr(&run).contains("not in the hub cache"), "{}", stderr(&run));
    let convert = ["convert", "fixtures/tiny", "--offline", "-o", "x.gguf", "--type", "q8_0"];
    let run = hub_cli(root.path(), "http://127.0.0.1:9", &hf_home, None, &convert);
    assert_eq!(run.status.code(), Some(4), "{}", stderr(&run));

    // Once a conversion has downloaded the weights, --offline inspects the snapshot folder.
    let convert = ["convert", "fixtures/tiny", "-o", "x.gguf", "--type", "q8_0"];
    let run = hub_cli(root.path(), &server.endpoint, &hf_home, None, &convert);
    assert!(run.status.success(), "{}", stderr(&run));
    drop(server);
    let run = hub_cli(root.path(), "http://127.0.0.1:9", &hf_home, None, &offline);
    assert!(run.status.success(), "{}", stderr(&run));
    let local = gguftune(root.path(), &["inspect", dir.to_str().unwrap(), "--tensors"]);
    assert_eq!(after_first_line(&run), after_first_line(&local));
}

#[test]
fn hub_inspect_refuses_a_header_length_over_the_cap_before_requesting_it() {
    let root = temp_dir();
    let repo_dir = root.path().join("huge");
    fs::create_dir_all(&repo_dir).unwrap();
    fs::write(repo_dir.join("config.json"), r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama"}"#)
        .unwrap();
    let mut weights = 200_000_000u64.to_le_bytes().to_vec();
    weights.extend_from_slice(b"{\"a\": 1}");
    fs::write(repo_dir.join("model.safetensors"), weights).unwrap();
    let server = HubServer::start(vec![FixtureRepo::from_dir("fixtures/huge", 0x66, &repo_dir, &[])]);
    let hf_home = root.path().join("hf");

    let run = hub_cli(root.path(), &server.endpoint, &hf_home, None, &["inspect", "fixtures/huge"]);
    assert_eq!(run.status.code(), Some(3), "{}", stderr(&run));
    let err = stderr(&run);
    assert!(err.contains("'model.safetensors'") && err.contains("200000000") && err.contains("100000000"), "{err}");
    let ranges: Vec<_> =
        server.log().into_iter().filter(|l| l.path.starts_with("/lfs/")).filter_map(|l| l.range).collect();
    assert_eq!(ranges, ["bytes=0-7"], "only the length was asked for");
}

#[test]
fn hub_inspect_of_gated_and_missing_repos_answers_as_convert_does() {
    let root = temp_dir();
    let dir = tiny_folder(root.path(), "gated", Shards::One);
    let mut repo = FixtureRepo::from_dir("meta/gated", 0x77, &dir, &[]);
    repo.token = Some("hf_secret".to_owned());
    let server = HubServer::start(vec![repo]);
    let hf_home = root.path().join("hf");

    let run = hub_cli(root.path(), &server.endpoint, &hf_home, None, &["inspect", "meta/gated"]);
    assert_eq!(run.status.code(), Some(3), "{}", stderr(&run));
    let err = stderr(&run);
    assert_eq!(err.lines().count(), 1, "one line, not a stack of HTTP errors: {err}");
    assert!(err.contains("401") && err.contains("Access to model meta/gated is restricted"), "{err}");
    assert!(err.contains("HF_TOKEN"), "{err}");

    let run = hub_cli(root.path(), &server.endpoint, &hf_home, Some("hf_secret"), &["inspect", "meta/gated"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let resolves: Vec<_> = server.log().into_iter().filter(|l| l.path.contains("/resolve/")).collect();
    assert!(resolves.iter().any(|l| l.range.as_deref() == Some("bytes=0-7")), "{resolves:?}");
    assert!(resolves.iter().all(|l| l.authorization.as_deref() == Some("Bearer hf_secret")), "{resolves:?}");

    let run = hub_cli(root.path(), &server.endpoint, &hf_home, None, &["inspect", "nobody/nothing"]);
    assert_eq!(run.status.code(), Some(3), "{}", stderr(&run));
    let err = stderr(&run);
    assert!(err.contains("nobody/nothing") && err.contains("404") && err.contains("Repository not found"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn corrupted_download_fails_the_sha256_check_and_leaves_no_blob() {
    let root = temp_dir();
    let (dir, local) = local_model(root.path(), "corrupt", Shards::One);
    let repo = FixtureRepo::from_dir("fixtures/corrupt", 0x88, &dir, &[]);
    let bytes = repo.files.iter().find(|(n, _)| n == "model.safetensors").unwrap().1.clone();
    let expected = sha256_hex(&bytes);
    let mut corrupted = bytes.clone();
    *corrupted.last_mut().unwrap() ^= 0xff;
    let found = sha256_hex(&corrupted);
    let server = HubServer::start(vec![repo]);
    server.corrupt("model.safetensors");
    let hf_home = root.path().join("hf");
    let args = ["convert", "fixtures/corrupt", "-o", "c.gguf", "--type", "q8_0"];

    let run = hub_cli(root.path(), &server.endpoint, &hf_home, None, &args);
    assert_eq!(run.status.code(), Some(4), "{}", stderr(&run));
    let err = stderr(&run);
    assert!(err.contains("'model.safetensors'") && err.contains("sha256"), "{err}");
    assert!(err.contains(&expected) && err.contains(&found), "{err}");
    assert!(!root.path().join("c.gguf").exists());
    let mut cached = Vec::new();
    files_under(&hf_home, &mut cached);
    assert!(!cached.iter().any(|p| p.ends_with(&expected) || p.ends_with(&found)), "{cached:?}");
    assert!(!cached.iter().any(|p| p.extension().is_some_and(|e| e == "part")), "{cached:?}");
    let link = hf_home.join("hub/models--fixtures--corrupt/snapshots").join("88".repeat(20)).join("model.safetensors");
    assert!(fs::symlink_metadata(&link).is_err(), "the snapshot's link is gone too");

    // Served intact, the next run downloads it again and converts.
    server.repair();
    let run = hub_cli(root.path(), &server.endpoint, &hf_home, None, &args);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(fs::read(root.path().join("c.gguf")).unwrap() == local);
}
