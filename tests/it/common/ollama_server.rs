//! A stand-in for the Ollama server's HTTP API on 127.0.0.1, written from Ollama's docs/api.md
//! ("Check if a Blob Exists", "Push a Blob", "Show Model Information", "Create a Model") and the
//! answers of its server/create.go, recording every request for assertions.
//!
//! - `HEAD /api/blobs/sha256:<hex>`: 200 when the blob is there, 404 when not.
//! - `POST /api/blobs/sha256:<hex>`: the body (with `Content-Length`, or chunked) is the blob: 201,
//!   or 400 with `{"error"}` when its sha256 is not the digest.
//! - `POST /api/show {"model"}`: 200 for a model the server has, 404 `{"error": "model '…' not
//!   found"}` for another.
//! - `POST /api/create`: 400 `{"error": "invalid model name"}` for a name it is told to refuse;
//!   400 `{"error": "LoRA adapters are no longer supported"}` for adapters when it is told to
//!   refuse them (Ollama's `errAdaptersUnsupported`); 400 when a blob named in `files` or
//!   `adapters` was never uploaded; else a chunked stream of `{"status"}` lines ending in
//!   `success`, or an `{"error"}` line when `from` names a model it does not have (or when told to
//!   fail, as a server does on a full disk). A created model
//!   is one it has from then on.
//!
//! One request per connection (`Connection: close`).

use super::http_head::RequestHead;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::hub_server::sha256_hex;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Logged {
    /// `HEAD`, `POST`, ...
    pub method: String,
    /// The request path.
    pub path: String,
    /// The sha256 of the body, as `sha256:<hex>`, and its length.
    pub body_digest: String,
    /// Body bytes.
    pub body_len: usize,
    /// The body as JSON, when it is JSON.
    pub json: Option<Value>,
    /// The status answered.
    pub status: u16,
}

/// How the server behaves, and what it has.
#[derive(Debug, Default)]
pub struct Behaviour {
    /// Blobs it has, by `sha256:<hex>`.
    pub blobs: BTreeSet<String>,
    /// Models it has, as `name:tag`.
    pub models: BTreeSet<String>,
    /// Refuse every create request that carries adapters.
    pub refuse_adapters: bool,
    /// Refuse this model name in create requests.
    pub refuse_name: Option<String>,
    /// Fail every create request midway, with this message in the stream.
    pub fail_create: Option<String>,
}

#[derive(Default)]
struct State {
    behaviour: Behaviour,
    log: Vec<Logged>,
}

/// The running server; it stops accepting when dropped.
pub struct OllamaServer {
    /// `127.0.0.1:<port>`, an `OLLAMA_HOST` value.
    pub address: String,
    state: Arc<Mutex<State>>,
}

impl OllamaServer {
    /// Starts a server that behaves as `behaviour` says, on a free port.
    pub fn start(behaviour: Behaviour) -> OllamaServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(State { behaviour, log: Vec::new() }));
        let shared = Arc::downgrade(&state);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                // The test is over once the state is gone: stop serving.
                let Some(state) = shared.upgrade() else { break };
                let Ok(stream) = stream else { continue };
                std::thread::spawn(move || handle(stream, &state));
            }
        });
        OllamaServer { address, state }
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    /// Forgets the requests so far.
    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }

    /// Changes how the server behaves.
    pub fn with<T>(&self, f: impl FnOnce(&mut Behaviour) -> T) -> T {
        f(&mut self.state.lock().unwrap().behaviour)
    }
}

impl Drop for OllamaServer {
    fn drop(&mut self) {
        // Wake the accept loop so that it sees the state is gone.
        drop(std::mem::take(&mut self.state));
        let _ = TcpStream::connect(&self.address);
    }
}

/// The largest body the stand-in reads (the tests' models are small).
const MAX_BODY_BYTES: usize = 256 << 20;

fn handle(stream: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let Some(head) = RequestHead::read(&mut reader) else { return };
    let header = |name: &str| head.header(name);
    let (method, path) = (head.method.clone(), head.path.clone());
    let body = if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        read_chunked(&mut reader)
    } else {
        let len: usize = header("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
        let mut body = vec![0u8; len.min(MAX_BODY_BYTES)];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        body
    };
    let body_digest = format!("sha256:{}", sha256_hex(&body));
    let json = serde_json::from_slice(&body).ok();
    let mut logged = Logged { method, path, body_digest, body_len: body.len(), json, status: 0 };
    let answer = {
        let mut state = state.lock().unwrap();
        let answer = route(&mut state.behaviour, &logged);
        logged.status = answer.status;
        state.log.push(logged);
        answer
    };
    write_answer(stream, answer);
}

/// A chunked request body (what an HTTP client sends for a body of unknown length).
fn read_chunked(reader: &mut impl BufRead) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        if reader.read_line(&mut size).unwrap_or(0) == 0 {
            return body;
        }
        let Ok(n) = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16) else { return body };
        if n == 0 || body.len() + n > MAX_BODY_BYTES {
            let mut end = String::new();
            let _ = reader.read_line(&mut end);
            return body;
        }
        let start = body.len();
        body.resize(start + n, 0);
        if reader.read_exact(&mut body[start..]).is_err() {
            return body;
        }
        let mut crlf = [0u8; 2];
        let _ = reader.read_exact(&mut crlf);
    }
}

struct Answer {
    status: u16,
    /// A JSON body, or JSON lines streamed in chunks.
    body: Vec<Value>,
    stream: bool,
}

impl Answer {
    fn status(status: u16) -> Answer {
        Answer { status, body: Vec::new(), stream: false }
    }

    fn error(status: u16, message: &str) -> Answer {
        Answer { status, body: vec![json!({ "error": message })], stream: false }
    }
}

fn write_answer(mut stream: TcpStream, answer: Answer) {
    let reason = match answer.status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Other",
    };
    let mut out = format!("HTTP/1.1 {} {reason}\r\nConnection: close\r\n", answer.status).into_bytes();
    if answer.stream {
        out.extend_from_slice(b"Content-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n");
        for line in &answer.body {
            let line = format!("{line}\n");
            out.extend_from_slice(format!("{:x}\r\n{line}\r\n", line.len()).as_bytes());
        }
        out.extend_from_slice(b"0\r\n\r\n");
    } else {
        let body = answer.body.first().map(|v| v.to_string()).unwrap_or_default();
        out.extend_from_slice(
            format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes(),
        );
    }
    let _ = stream.write_all(&out).and_then(|()| stream.flush());
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// `name` with Ollama's default tag.
fn with_tag(name: &str) -> String {
    if name.rsplit('/').next().is_some_and(|last| last.contains(':')) {
        name.to_owned()
    } else {
        format!("{name}:latest")
    }
}

fn route(b: &mut Behaviour, req: &Logged) -> Answer {
    if let Some(digest) = req.path.strip_prefix("/api/blobs/") {
        return match req.method.as_str() {
            "HEAD" if b.blobs.contains(digest) => Answer::status(200),
            "HEAD" => Answer::status(404),
            "POST" if req.body_digest == digest => {
                b.blobs.insert(digest.to_owned());
                Answer::status(201)
            }
            "POST" => Answer::error(400, &format!("digest mismatch, expected {digest}, got {}", req.body_digest)),
            _ => Answer::status(405),
        };
    }
    let Some(body) = req.json.as_ref().filter(|_| req.method == "POST") else {
        return Answer::error(404, "404 page not found");
    };
    let model = body["model"].as_str().unwrap_or("").to_owned();
    match req.path.as_str() {
        "/api/show" if b.models.contains(&with_tag(&model)) => {
            Answer { status: 200, body: vec![json!({ "details": { "format": "gguf" } })], stream: false }
        }
        "/api/show" => Answer::error(404, &format!("model '{model}' not found")),
        "/api/create" => create(b, body, &model),
        _ => Answer::error(404, "404 page not found"),
    }
}

fn create(b: &mut Behaviour, body: &Value, model: &str) -> Answer {
    if model.is_empty() || b.refuse_name.as_deref() == Some(model) {
        return Answer::error(400, "invalid model name");
    }
    let digests = |key: &str| -> BTreeMap<String, String> {
        body[key]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned())).collect())
            .unwrap_or_default()
    };
    let (files, adapters) = (digests("files"), digests("adapters"));
    if !adapters.is_empty() && b.refuse_adapters {
        return Answer::error(400, "LoRA adapters are no longer supported");
    }
    for digest in files.values().chain(adapters.values()) {
        if !b.blobs.contains(digest) {
            return Answer::error(400, &format!("open blobs/{}: no such file or directory", digest.replace(':', "-")));
        }
    }
    let mut lines = Vec::new();
    match body["from"].as_str() {
        Some(from) if !b.models.contains(&with_tag(from)) => {
            lines.push(json!({ "error": format!("pull model manifest: file does not exist") }));
            return Answer { status: 200, body: lines, stream: true };
        }
        Some(_) => lines.push(json!({ "status": "reading model metadata" })),
        None if files.is_empty() => return Answer::error(400, "neither 'from' or 'files' was specified"),
        None => lines.push(json!({ "status": "parsing GGUF" })),
    }
    if let Some(message) = &b.fail_create {
        lines.push(json!({ "error": message }));
        return Answer { status: 200, body: lines, stream: true };
    }
    for digest in files.values().chain(adapters.values()) {
        lines.push(json!({ "status": format!("using existing layer {digest}") }));
    }
    lines.push(json!({ "status": "writing manifest" }));
    lines.push(json!({ "status": "success" }));
    b.models.insert(with_tag(model));
    Answer { status: 200, body: lines, stream: true }
}
