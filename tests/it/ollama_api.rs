//! `ollama-create` against a stand-in of the Ollama server's HTTP API (common/ollama_server.rs):
//! the blobs it uploads and skips, the create requests it sends, the merge when the server refuses
//! adapters, and the errors of a server that is not running, a base it lacks, a name it refuses.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Value};

use gguftune::gguf::GgufFile;

use crate::common::hub_server::sha256_hex;
use crate::common::ollama_server::{Behaviour, Logged, OllamaServer};
use crate::common::temp_dir;
use crate::modelfile::ollama;
use crate::ollama_cli::{adapter_for, base_model, chatml_go, stderr, store_with_tiny};

/// Runs `gguftune ollama-create ARGS` in `root` with `OLLAMA_HOST` set to `host`, HOME to
/// `root`, and `OLLAMA_MODELS` to `store` (unset when `None`).
fn ollama_create(root: &Path, host: &str, store: Option<&Path>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gguftune"));
    command.arg("ollama-create").args(args).current_dir(root).env("HOME", root).env("OLLAMA_HOST", host);
    command.env_remove("OLLAMA_MODELS");
    if let Some(store) = store {
        command.env("OLLAMA_MODELS", store);
    }
    command.output().expect("the gguftune binary runs")
}

fn digest_of(path: &Path) -> String {
    format!("sha256:{}", sha256_hex(&fs::read(path).unwrap()))
}

/// The blob uploads (`POST /api/blobs/...`) of `log`.
fn uploads(log: &[Logged]) -> Vec<&Logged> {
    log.iter().filter(|l| l.method == "POST" && l.path.starts_with("/api/blobs/")).collect()
}

/// The create requests of `log`, with the status each got.
fn creates(log: &[Logged]) -> Vec<(Value, u16)> {
    log.iter().filter(|l| l.path == "/api/create").map(|l| (l.json.clone().unwrap(), l.status)).collect()
}

/// The value of each command `name` of the Modelfile text, read by the tests' own parser.
fn modelfile_values(text: &str, name: &str) -> Vec<String> {
    ollama::parse(text).unwrap().into_iter().filter(|c| c.name == name).map(|c| c.args).collect()
}

#[test]
fn ollama_create_uploads_only_missing_blobs_and_sends_the_adapter_and_the_template() {
    let root = temp_dir();
    let base = base_model(root.path());
    let adapter = root.path().join("adapter.gguf");
    adapter_for(&base, &adapter);
    let (base_digest, adapter_digest) = (digest_of(&base), digest_of(&adapter));
    // The server has the base's blob already.
    let server = OllamaServer::start(Behaviour { blobs: [base_digest.clone()].into(), ..Behaviour::default() });

    let out = ollama_create(
        root.path(),
        &server.address,
        None,
        &["mine", "--adapter", "adapter.gguf", "--model", "base.gguf"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("created mine: ollama run mine"), "{}", stderr(&out));
    let log = server.log();
    let heads: Vec<(&str, u16)> =
        log.iter().filter(|l| l.method == "HEAD").map(|l| (l.path.as_str(), l.status)).collect();
    let (base_blob, adapter_blob) = (format!("/api/blobs/{base_digest}"), format!("/api/blobs/{adapter_digest}"));
    assert_eq!(heads, [(base_blob.as_str(), 200), (adapter_blob.as_str(), 404)]);
    // Only the adapter is uploaded, whole: the body's digest is the file's and the path's.
    let sent = uploads(&log);
    assert_eq!(sent.len(), 1, "{log:?}");
    assert_eq!((sent[0].path.as_str(), sent[0].status), (adapter_blob.as_str(), 201));
    assert_eq!(sent[0].body_digest, adapter_digest);
    assert_eq!(sent[0].body_len as u64, fs::metadata(&adapter).unwrap().len());
    // The create request: the base's file, the adapter, and what the Modelfile sets.
    let text = fs::read_to_string(root.path().join("adapter.Modelfile")).unwrap();
    let template = modelfile_values(&text, "template");
    let stops = modelfile_values(&text, "stop");
    assert_eq!(template.len(), 1, "{text}");
    assert!(!stops.is_empty(), "{text}");
    let requests = creates(&log);
    assert_eq!(requests.len(), 1);
    let (request, status) = &requests[0];
    assert_eq!(*status, 200);
    assert_eq!(request["model"], "mine");
    assert_eq!(request["files"], json!({ "base.gguf": base_digest }));
    assert_eq!(request["adapters"], json!({ "adapter.gguf": adapter_digest }));
    assert_eq!(request["template"], template[0]);
    assert_eq!(request["parameters"]["stop"], json!(stops));
    assert!(request.get("from").is_none(), "{request}");
    assert!(stderr(&out).contains("ollama: writing manifest"), "{}", stderr(&out));

    // Again, from the Modelfile alone, with OLLAMA_HOST as a URL: both blobs are there now,
    // nothing is uploaded, and the request is the same.
    server.clear_log();
    let host = format!("http://{}", server.address);
    let out = ollama_create(root.path(), &host, None, &["mine:v2", "--adapter", "adapter.gguf"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = server.log();
    assert!(uploads(&log).is_empty(), "{log:?}");
    let again = creates(&log);
    assert_eq!(again.len(), 1);
    let mut expected = request.clone();
    expected["model"] = json!("mine:v2");
    assert_eq!(again[0].0, expected);

    // --merge: the server never sees the adapter; the merged GGUF keeps the base's types.
    server.clear_log();
    let out = ollama_create(root.path(), &server.address, None, &["merged", "--adapter", "adapter.gguf", "--merge"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--merge: merged it into the base instead, as adapter.merged.gguf"),
        "{}",
        stderr(&out)
    );
    let merged = root.path().join("adapter.merged.gguf");
    let log = server.log();
    let requests = creates(&log);
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].0["files"], json!({ "adapter.merged.gguf": digest_of(&merged) }));
    assert!(requests[0].0.get("adapters").is_none(), "{}", requests[0].0);
    assert_eq!(requests[0].0["template"], template[0]);
    assert_eq!(uploads(&log).len(), 1);
    assert_eq!(uploads(&log)[0].body_digest, digest_of(&merged));
    let types = |path: &Path| {
        let file = GgufFile::open(path).unwrap();
        let g = file.gguf().unwrap();
        g.tensors.iter().map(|t| (t.name.to_owned(), t.ty)).collect::<Vec<_>>()
    };
    assert_eq!(types(&merged), types(&base));
}

#[test]
fn ollama_create_builds_from_an_ollama_model_and_merges_when_the_server_refuses_adapters() {
    let root = temp_dir();
    let base = base_model(root.path());
    let store = store_with_tiny(root.path(), &base);
    let adapter = root.path().join("adapter.gguf");
    adapter_for(&base, &adapter);
    let server = OllamaServer::start(Behaviour {
        models: ["tiny:q8".to_owned()].into(),
        refuse_adapters: true,
        ..Behaviour::default()
    });
    let out = ollama_create(
        root.path(),
        &server.address,
        Some(&store.root),
        &["mine", "--adapter", "adapter.gguf", "--model", "ollama:tiny:q8"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(
        message.contains("the Ollama server refused the adapter (LoRA adapters are no longer supported): merged it into the base instead, as adapter.merged.gguf"),
        "{message}"
    );
    let log = server.log();
    let show: Vec<&Logged> = log.iter().filter(|l| l.path == "/api/show").collect();
    assert_eq!(show.len(), 1);
    assert_eq!(show[0].json, Some(json!({ "model": "tiny:q8" })));
    let requests = creates(&log);
    assert_eq!(requests.len(), 2, "{log:?}");
    // First FROM the server's model with the adapter (and nothing else: the Modelfile keeps
    // Ollama's own template), refused.
    let adapter_digest = digest_of(&adapter);
    assert_eq!(
        requests[0],
        (
            json!({ "model": "mine", "from": "tiny:q8", "adapters": { "adapter.gguf": adapter_digest }, "stream": true }),
            400
        )
    );
    // Then the merged model, uploaded, with the template, system prompt and parameters of the
    // Ollama model it was built on.
    let merged = root.path().join("adapter.merged.gguf");
    let merged_digest = digest_of(&merged);
    assert_eq!(
        requests[1],
        (
            json!({
                "model": "mine",
                "files": { "adapter.merged.gguf": merged_digest },
                "template": chatml_go(),
                "system": "Be brief.",
                "parameters": { "stop": ["<|im_end|>", "<|im_start|>"] },
                "stream": true,
            }),
            200
        )
    );
    let sent: Vec<&str> = uploads(&log).iter().map(|l| l.body_digest.as_str()).collect();
    assert_eq!(sent, [adapter_digest.as_str(), merged_digest.as_str()]);
    // The Modelfile for building by hand is there too.
    let text = fs::read_to_string(root.path().join("adapter.Modelfile")).unwrap();
    assert_eq!(modelfile_values(&text, "model"), ["tiny:q8"]);
}

#[test]
fn ollama_create_errors_name_what_failed() {
    let root = temp_dir();
    let base = base_model(root.path());
    let store = store_with_tiny(root.path(), &base);
    adapter_for(&base, &root.path().join("adapter.gguf"));
    let args = ["mine", "--adapter", "adapter.gguf", "--model", "base.gguf"];

    // Nothing listens: the address, and `ollama serve`.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let out = ollama_create(root.path(), &closed, None, &args);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(message.contains(&format!("no Ollama server answers at http://{closed}")), "{message}");
    assert!(
        message.contains("`ollama serve`") && message.contains("the Modelfile adapter.Modelfile stays"),
        "{message}"
    );

    // A base the server does not have: `ollama pull`, and nothing uploaded or created.
    let server = OllamaServer::start(Behaviour::default());
    let out = ollama_create(
        root.path(),
        &server.address,
        Some(&store.root),
        &["mine", "--adapter", "adapter.gguf", "--model", "ollama:tiny:q8"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("has no model tiny:q8 to build on (hint: `ollama pull tiny:q8`)"),
        "{}",
        stderr(&out)
    );
    assert!(server.log().iter().all(|l| l.path == "/api/show"), "{:?}", server.log());

    // A name the server refuses: its own message.
    server.with(|b| b.refuse_name = Some("mine".into()));
    let out = ollama_create(root.path(), &server.address, None, &args);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("refused POST /api/create (HTTP 400): invalid model name"), "{}", stderr(&out));
    // A server that fails while it creates: its message, exit 1.
    server.with(|b| {
        b.refuse_name = None;
        b.fail_create = Some("write manifest: no space left on device".into());
    });
    let out = ollama_create(root.path(), &server.address, None, &args);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("failed POST /api/create: write manifest: no space left on device"),
        "{}",
        stderr(&out)
    );
    // A name Ollama's rules refuse never reaches the server.
    server.clear_log();
    let out = ollama_create(root.path(), &server.address, None, &["bad name", "--adapter", "adapter.gguf"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(server.log().is_empty());
    // The base model's own name.
    let out = ollama_create(
        root.path(),
        &server.address,
        Some(&store.root),
        &["tiny:q8", "--adapter", "adapter.gguf", "--model", "ollama:tiny:q8"],
    );
    assert!(!out.status.success() && stderr(&out).contains("the base model itself"), "{}", stderr(&out));

    // Without --model: a Modelfile of another adapter, and no Modelfile at all.
    fs::copy(root.path().join("adapter.gguf"), root.path().join("other.gguf")).unwrap();
    let out = ollama_create(
        root.path(),
        &server.address,
        None,
        &["mine2", "--adapter", "other.gguf", "--modelfile", "adapter.Modelfile"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("is for the adapter ./adapter.gguf, not other.gguf"), "{}", stderr(&out));
    let out = ollama_create(root.path(), &server.address, None, &["mine2", "--adapter", "other.gguf"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("no Modelfile at other.Modelfile"), "{}", stderr(&out));
    assert!(server.log().iter().all(|l| l.path != "/api/create"), "{:?}", server.log());
}
