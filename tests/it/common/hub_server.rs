//! A stand-in for the Hugging Face hub on 127.0.0.1: serves fixture repositories in the hub's URL
//! layout with the headers hf-hub reads, so the real download code runs without the network.
//!
//! - `GET /api/models/{owner}/{name}/revision/{rev}`: `{"id", "sha", "siblings": [{"rfilename"}]}`.
//! - `GET /{owner}/{name}/resolve/{rev}/{file}`: small files answer directly with `etag` (a
//!   40-digit stand-in for the git blob sha1 the hub sends), `x-repo-commit` and, for a `Range`
//!   request, 206 with `content-range` (hf-hub's first request is `Range: bytes=0-0`);
//!   `*.safetensors` files (Git LFS on the hub) answer 302 with `x-linked-etag` (the sha256 of
//!   the bytes, as the hub gives), `x-linked-size` and `x-repo-commit` and a `Location` on
//!   `/lfs/{sha256}`, as the hub sends large files to its CDN, which answers ranges with 206.
//! - 401 with `X-Error-Code: GatedRepo` for a gated repository without its token, 404 with
//!   `X-Error-Code: RepoNotFound` / `EntryNotFound` for what does not exist.
//!
//! One request per connection (`Connection: close`); every request is logged, with the body
//! bytes it was sent, for assertions.

use super::http_head::RequestHead;
use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

/// A repository the server knows.
pub struct FixtureRepo {
    /// `owner/name`.
    pub id: String,
    /// The commit hash of `main`.
    pub sha: String,
    /// File name in the repository and its bytes.
    pub files: Vec<(String, Vec<u8>)>,
    /// When set, requests must carry `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

impl FixtureRepo {
    /// A repository holding every file of the folder `dir` (not recursive), plus `extra` files.
    pub fn from_dir(id: &str, sha_seed: u8, dir: &Path, extra: &[(&str, &[u8])]) -> FixtureRepo {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
            .collect();
        files.extend(extra.iter().map(|(n, b)| ((*n).to_owned(), b.to_vec())));
        files.sort();
        let sha = format!("{:02x}", sha_seed).repeat(20);
        FixtureRepo { id: id.to_owned(), sha, files, token: None }
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Logged {
    /// The request path.
    pub path: String,
    /// The `Range` header.
    pub range: Option<String>,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// Body bytes sent in answer.
    pub served: usize,
}

#[derive(Default)]
struct State {
    repos: Vec<FixtureRepo>,
    log: Vec<Logged>,
    /// A file whose next full download is cut after this many bytes.
    cut: Option<(String, usize)>,
    /// Files whose every download has its last byte changed, so it no longer matches its etag.
    corrupt: Vec<String>,
}

/// The running server; it stops accepting when dropped.
pub struct HubServer {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    state: Arc<Mutex<State>>,
}

impl HubServer {
    /// Starts serving `repos` on a free port.
    pub fn start(repos: Vec<FixtureRepo>) -> HubServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State { repos, ..State::default() }));
        let shared = Arc::downgrade(&state);
        let base = endpoint.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                // The test is over once the state is gone: stop serving.
                let Some(state) = shared.upgrade() else { break };
                let Ok(stream) = stream else { continue };
                let base = base.clone();
                std::thread::spawn(move || handle(stream, &state, &base));
            }
        });
        HubServer { endpoint, state }
    }

    /// Cuts the connection of the next full download of `file` after `after_bytes` bytes.
    pub fn cut_next_download(&self, file: &str, after_bytes: usize) {
        self.state.lock().unwrap().cut = Some((file.to_owned(), after_bytes));
    }

    /// Changes the last byte of every download of `file` (its etag stays that of the true
    /// bytes), until [`HubServer::repair`].
    pub fn corrupt(&self, file: &str) {
        self.state.lock().unwrap().corrupt.push(file.to_owned());
    }

    /// Serves every file as it is again.
    pub fn repair(&self) {
        self.state.lock().unwrap().corrupt.clear();
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    /// Body bytes sent so far, in answer to every request.
    pub fn bytes_served(&self) -> usize {
        self.state.lock().unwrap().log.iter().map(|l| l.served).sum()
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        // Wake the accept loop so that it sees the state is gone.
        let addr = self.endpoint.trim_start_matches("http://").to_owned();
        let state = std::mem::take(&mut self.state);
        drop(state);
        let _ = TcpStream::connect(addr);
    }
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    cut_after: Option<usize>,
}

impl Response {
    fn error(status: u16, code: &str, message: &str) -> Response {
        let body = serde_json::json!({ "error": message }).to_string().into_bytes();
        let headers = vec![
            ("X-Error-Code".into(), code.into()),
            ("X-Error-Message".into(), message.into()),
            ("Content-Type".into(), "application/json".into()),
        ];
        Response { status, headers, body, cut_after: None }
    }
}

fn handle(stream: TcpStream, state: &Mutex<State>, base: &str) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let Some(head) = RequestHead::read(&mut reader) else { return };
    let header = |name: &str| head.header(name);
    let path = head.path.clone();
    let mut logged =
        Logged { path: path.clone(), range: header("range"), authorization: header("authorization"), served: 0 };
    let response = {
        let mut state = state.lock().unwrap();
        let response = route(&mut state, &logged, base);
        logged.served = response.cut_after.unwrap_or(response.body.len());
        state.log.push(logged);
        response
    };
    write_response(stream, response);
}

fn write_response(mut stream: TcpStream, r: Response) {
    let reason = match r.status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        401 => "Unauthorized",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        _ => "Other",
    };
    let mut head =
        format!("HTTP/1.1 {} {reason}\r\nConnection: close\r\nContent-Length: {}\r\n", r.status, r.body.len());
    for (k, v) in &r.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let body = match r.cut_after {
        Some(n) => &r.body[..n],
        None => &r.body[..],
    };
    let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body)).and_then(|()| stream.flush());
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// The sha256 of `bytes` in hex: the hub's etag of a Git LFS file.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A stand-in for the git blob sha1 the hub gives as the etag of a small file: 40 hex digits
/// derived from the bytes (not a sha256, so nothing checks the bytes against it).
fn git_etag_of(bytes: &[u8]) -> String {
    sha256_hex(bytes)[..40].to_owned()
}

fn route(state: &mut State, req: &Logged, base: &str) -> Response {
    if let Some(etag) = req.path.strip_prefix("/lfs/") {
        let found = state.repos.iter().flat_map(|r| &r.files).find(|(_, b)| sha256_hex(b) == etag);
        let Some((name, bytes)) = found.cloned() else { return Response::error(404, "EntryNotFound", "no such blob") };
        return ranged(state, &name, bytes, req.range.as_deref(), Vec::new());
    }
    let (api, rest) = match req.path.strip_prefix("/api/models/") {
        Some(rest) => (true, rest),
        None => (false, req.path.trim_start_matches('/')),
    };
    let mut parts = rest.splitn(3, '/');
    let id = format!("{}/{}", parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let tail = parts.next().unwrap_or("");
    let Some(repo) = state.repos.iter().find(|r| r.id == id) else {
        return Response::error(404, "RepoNotFound", &format!("Repository not found: {id}"));
    };
    if let Some(token) = &repo.token {
        if req.authorization.as_deref() != Some(&format!("Bearer {token}")) {
            let message = format!(
                "Access to model {id} is restricted. You must have access to it and be authenticated to access it. Please log in."
            );
            return Response::error(401, "GatedRepo", &message);
        }
    }
    let (kind, rev_and_file) = tail.split_once('/').unwrap_or((tail, ""));
    let (rev, file) = rev_and_file.split_once('/').unwrap_or((rev_and_file, ""));
    if rev != "main" && rev != repo.sha {
        return Response::error(404, "RevisionNotFound", &format!("Invalid rev id: {rev}"));
    }
    if api && kind == "revision" {
        let siblings: Vec<_> = repo.files.iter().map(|(n, _)| serde_json::json!({ "rfilename": n })).collect();
        let body = serde_json::json!({ "id": id, "sha": repo.sha, "siblings": siblings }).to_string().into_bytes();
        let headers = vec![("Content-Type".into(), "application/json".into())];
        return Response { status: 200, headers, body, cut_after: None };
    }
    if api || kind != "resolve" {
        return Response::error(404, "EntryNotFound", "unknown route");
    }
    let Some((name, bytes)) = repo.files.iter().find(|(n, _)| n == file).cloned() else {
        return Response::error(404, "EntryNotFound", &format!("{file} does not exist on \"{rev}\""));
    };
    let commit = vec![("X-Repo-Commit".to_owned(), repo.sha.clone())];
    if name.ends_with(".safetensors") {
        let etag = sha256_hex(&bytes);
        let mut headers = commit;
        headers.push(("ETag".into(), format!("\"{}\"", git_etag_of(&bytes))));
        headers.push(("X-Linked-ETag".into(), format!("\"{etag}\"")));
        headers.push(("X-Linked-Size".into(), bytes.len().to_string()));
        headers.push(("Location".into(), format!("{base}/lfs/{etag}")));
        return Response { status: 302, headers, body: Vec::new(), cut_after: None };
    }
    let mut headers = commit;
    headers.push(("ETag".into(), format!("\"{}\"", git_etag_of(&bytes))));
    ranged(state, &name, bytes, req.range.as_deref(), headers)
}

/// The bytes, or the part a `Range: bytes=a-[b]` asks for, with `Content-Range`.
fn ranged(
    state: &mut State,
    name: &str,
    mut bytes: Vec<u8>,
    range: Option<&str>,
    mut headers: Vec<(String, String)>,
) -> Response {
    if state.corrupt.iter().any(|c| c == name) {
        if let Some(last) = bytes.last_mut() {
            *last ^= 0xff;
        }
    }
    headers.push(("Accept-Ranges".into(), "bytes".into()));
    let total = bytes.len();
    let Some(spec) = range.and_then(|r| r.strip_prefix("bytes=")) else {
        return Response { status: 200, headers, body: bytes, cut_after: None };
    };
    let (start, end) = spec.split_once('-').unwrap();
    let start: usize = start.parse().unwrap();
    let end: usize = if end.is_empty() { total - 1 } else { end.parse::<usize>().unwrap().min(total - 1) };
    if start >= total || start > end {
        return Response::error(416, "RangeNotSatisfiable", "range not satisfiable");
    }
    headers.push(("Content-Range".into(), format!("bytes {start}-{end}/{total}")));
    let body = bytes[start..=end].to_vec();
    let mut cut_after = None;
    if body.len() > 1 {
        if let Some((_, after)) = state.cut.take_if(|cut| cut.0 == name) {
            cut_after = Some(after.min(body.len() - 1));
        }
    }
    Response { status: 206, headers, body, cut_after }
}
