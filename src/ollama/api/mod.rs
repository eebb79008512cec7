//! A client of the Ollama server's HTTP API, the part `ollama create` uses, so that a model is
//! made without the `ollama` program: the requests of Ollama's docs/api.md ("Create a Model",
//! "Check if a Blob Exists", "Push a Blob", "Show Model Information").
//!
//! ```text
//! HEAD /api/blobs/sha256:<hex>     200 when the server has the blob, 404 when not
//! POST /api/blobs/sha256:<hex>     the file as the body: 201, or 400 when the digest is not the file's
//! POST /api/show   {"model"}       200 with the model's details, 404 when the server has no such model
//! POST /api/create {"model", "from" | "files", "adapters", "template", "system", "parameters", "stream"}
//!                                  a stream of JSON lines {"status": ...}, ending in "success";
//!                                  an error as {"error": ...}, with an error status before the
//!                                  stream starts or as a line of it (server/create.go)
//! ```
//!
//! Blobs are named by the sha256 of their bytes, computed here as the file streams
//! ([`file_digest`]); uploads stream from the file with a `Content-Length`, so neither is held in
//! memory. The server's address is `OLLAMA_HOST`, read as Ollama reads it ([`OllamaHost`]).
//! Nothing here prints: progress and status lines go to callbacks.

mod error;
mod host;

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use sha2::{Digest as _, Sha256};

pub use error::ApiError;
pub use host::{OllamaHost, DEFAULT_PORT, HOST_VAR};

/// The longest line of a streamed answer read. Status lines are a few hundred bytes.
const MAX_LINE_BYTES: u64 = 1 << 20;
/// The largest error body read.
const MAX_ERROR_BYTES: u64 = 64 << 10;
/// Bytes read from a file at a time while hashing or uploading it.
const CHUNK_BYTES: usize = 1 << 20;

/// A blob's name on the server: `sha256:` and the 64 hex digits of its bytes' sha256.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct BlobDigest(String);

impl BlobDigest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> BlobDigest {
        BlobDigest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    fn from_hasher(hasher: Sha256) -> BlobDigest {
        let hex: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        BlobDigest(format!("sha256:{hex}"))
    }

    /// `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BlobDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The digest of the file at `path`, read as a stream; `progress` gets (bytes done, total).
pub fn file_digest(path: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<BlobDigest, ApiError> {
    let read_err = |source| ApiError::ReadFile { path: path.to_owned(), source };
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    let total = file.metadata().map_err(read_err)?.len();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut done = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        hasher.update(&buf[..n]);
        done += n as u64;
        progress(done, total);
    }
    Ok(BlobDigest::from_hasher(hasher))
}

/// The body of `POST /api/create` (api.CreateRequest in Ollama's api/types.go): the new
/// model's name, its base (`from` a model the server has, or GGUF `files` uploaded as blobs),
/// LoRA `adapters` (uploaded as blobs), and what a Modelfile's TEMPLATE, SYSTEM and PARAMETER
/// lines would set. Empty fields are left out, as Ollama's client leaves them.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct CreateRequest {
    /// The model to create, `name[:tag]`.
    pub model: String,
    /// The model to build on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// File name → blob digest of the base model's GGUF.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, BlobDigest>,
    /// File name → blob digest of each LoRA adapter GGUF.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub adapters: BTreeMap<String, BlobDigest>,
    /// The Go template (TEMPLATE).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// The system prompt (SYSTEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Parameters (PARAMETER), `stop` as a list of strings.
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub parameters: serde_json::Map<String, serde_json::Value>,
    /// License texts (LICENSE).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub license: Vec<String>,
    /// Messages put before every chat (MESSAGE).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<Message>,
    /// Always true: the server streams its status lines.
    pub stream: bool,
}

/// A chat message of a create request (api.Message).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// A connection to one Ollama server.
#[derive(Debug, Clone)]
pub struct OllamaClient {
    host: OllamaHost,
    agent: ureq::Agent,
}

impl OllamaClient {
    /// A client of the server at `host`. No request is made until one is asked for.
    pub fn new(host: OllamaHost) -> OllamaClient {
        OllamaClient { host, agent: ureq::AgentBuilder::new().build() }
    }

    /// The server's address.
    pub fn host(&self) -> &OllamaHost {
        &self.host
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.host.url())
    }

    /// Whether the server has the blob `digest` (`HEAD /api/blobs/<digest>`).
    pub fn has_blob(&self, digest: &BlobDigest) -> Result<bool, ApiError> {
        let path = format!("/api/blobs/{digest}");
        let request = format!("HEAD {path}");
        match self.agent.head(&self.url(&path)).call() {
            Ok(_) => Ok(true),
            Err(ureq::Error::Status(404, _)) => Ok(false),
            Err(e) => Err(self.error(&request, e)),
        }
    }

    /// Uploads the file at `path` as the blob `digest` (`POST /api/blobs/<digest>`), streamed
    /// from the file; `progress` gets (bytes sent, total).
    pub fn push_blob(
        &self,
        path: &Path,
        digest: &BlobDigest,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(), ApiError> {
        let read_err = |source| ApiError::ReadFile { path: path.to_owned(), source };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let total = file.metadata().map_err(read_err)?.len();
        let url_path = format!("/api/blobs/{digest}");
        let request = format!("POST {url_path}");
        let reader = ProgressReader { inner: file, done: 0, total, progress };
        let sent = self
            .agent
            .post(&self.url(&url_path))
            .set("Content-Type", "application/octet-stream")
            .set("Content-Length", &total.to_string())
            .send(reader);
        match sent {
            Ok(response) if response.status() == 201 || response.status() == 200 => Ok(()),
            Ok(response) => Err(ApiError::BadAnswer {
                host: self.host.to_string(),
                request,
                detail: format!("HTTP {}", response.status()),
            }),
            Err(e) => Err(self.error(&request, e)),
        }
    }

    /// Whether the server has the model `name` (`POST /api/show`: 404 when it has not).
    pub fn has_model(&self, name: &str) -> Result<bool, ApiError> {
        let request = "POST /api/show";
        let body = serde_json::json!({ "model": name }).to_string();
        match self.agent.post(&self.url("/api/show")).set("Content-Type", "application/json").send_string(&body) {
            Ok(_) => Ok(true),
            Err(ureq::Error::Status(404, _)) => Ok(false),
            Err(e) => Err(self.error(request, e)),
        }
    }

    /// Creates a model (`POST /api/create`); `on_status` gets each status line the server
    /// streams. Ends with the server's `success`, or with the error it reported.
    pub fn create(&self, body: &CreateRequest, on_status: &mut dyn FnMut(&str)) -> Result<(), ApiError> {
        let request = "POST /api/create";
        let json =
            serde_json::to_string(body).map_err(|e| self.bad(request, format!("a request it cannot send: {e}")))?;
        let response = match self
            .agent
            .post(&self.url("/api/create"))
            .set("Content-Type", "application/json")
            .send_string(&json)
        {
            Ok(response) => response,
            Err(e) => return Err(self.error(request, e)),
        };
        let mut reader = BufReader::new(response.into_reader());
        let mut line = Vec::new();
        let mut succeeded = false;
        loop {
            line.clear();
            let n = (&mut reader).take(MAX_LINE_BYTES + 1).read_until(b'\n', &mut line).map_err(|source| {
                ApiError::ReadAnswer { host: self.host.to_string(), request: request.to_owned(), source }
            })?;
            if n == 0 {
                break;
            }
            if line.len() as u64 > MAX_LINE_BYTES {
                return Err(self.bad(request, format!("a line longer than {MAX_LINE_BYTES} bytes")));
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            let value: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| self.bad(request, format!("a line that is not JSON ({e}): {text:?}")))?;
            if let Some(message) = value.get("error") {
                let host = self.host.to_string();
                let request = request.to_owned();
                let message = message.as_str().map_or_else(|| message.to_string(), str::to_owned);
                // server/create.go adds the HTTP status it means to a streamed error when the
                // request was at fault.
                return Err(match value.get("status").and_then(|s| s.as_u64()) {
                    Some(status @ 400..=499) => ApiError::Refused { host, request, status: status as u16, message },
                    _ => ApiError::Failed { host, request, message },
                });
            }
            if let Some(status) = value.get("status").and_then(|s| s.as_str()) {
                on_status(status);
                succeeded = status == "success";
            }
        }
        if !succeeded {
            return Err(self.bad(request, "a stream that ended before its \"success\" line".to_owned()));
        }
        Ok(())
    }

    fn bad(&self, request: &str, detail: String) -> ApiError {
        ApiError::BadAnswer { host: self.host.to_string(), request: request.to_owned(), detail }
    }

    /// The error of a failed request: the server's status and message, or why it could not be
    /// reached.
    fn error(&self, request: &str, error: ureq::Error) -> ApiError {
        let host = self.host.to_string();
        match error {
            ureq::Error::Status(status, response) => {
                let mut body = String::new();
                // The body is only read for its message: a failure to read it leaves it empty.
                let _ = response.into_reader().take(MAX_ERROR_BYTES).read_to_string(&mut body);
                let message = match serde_json::from_str::<serde_json::Value>(&body) {
                    Ok(v) => match v.get("error") {
                        Some(serde_json::Value::String(s)) => s.clone(),
                        Some(other) => other.to_string(),
                        None => body.trim().to_owned(),
                    },
                    Err(_) => body.trim().to_owned(),
                };
                ApiError::Refused { host, request: request.to_owned(), status, message }
            }
            ureq::Error::Transport(transport) => {
                if matches!(transport.kind(), ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Dns) {
                    ApiError::NotRunning { host, source: Box::new(transport) }
                } else {
                    ApiError::Transport { host, request: request.to_owned(), source: Box::new(transport) }
                }
            }
        }
    }
}

/// A reader that reports how much of it was read.
struct ProgressReader<'a, R> {
    inner: R,
    done: u64,
    total: u64,
    progress: &'a mut dyn FnMut(u64, u64),
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        (self.progress)(self.done, self.total);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_is_the_sha256_of_the_bytes_and_the_file_digest_streams_it() {
        // sha256("abc"), FIPS 180-2 appendix B.1.
        let abc = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(BlobDigest::of(b"abc").as_str(), abc);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let bytes: Vec<u8> = (0..3 * CHUNK_BYTES + 7).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let mut last = (0, 0);
        let digest = file_digest(&path, &mut |done, total| last = (done, total)).unwrap();
        assert_eq!(digest, BlobDigest::of(&bytes));
        assert_eq!(last, (bytes.len() as u64, bytes.len() as u64));
    }

    #[test]
    fn a_create_request_leaves_out_what_is_not_set() {
        let mut body =
            CreateRequest { model: "m".into(), from: Some("llama3.2:1b".into()), stream: true, ..Default::default() };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({ "model": "m", "from": "llama3.2:1b", "stream": true })
        );
        body.adapters.insert("a.gguf".into(), BlobDigest::of(b""));
        body.parameters.insert("stop".into(), serde_json::json!(["</s>"]));
        let v = serde_json::to_value(&body).unwrap();
        assert_eq!(v["adapters"]["a.gguf"], BlobDigest::of(b"").as_str());
        assert_eq!(v["parameters"]["stop"][0], "</s>");
    }
}
