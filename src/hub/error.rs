//! Errors of fetching from the hub: the hub's own reason in one line, not a stack of HTTP errors.

use std::path::PathBuf;

use hf_hub::api::sync::ApiError;

use super::{HubOptions, RepoId};

/// Why a repository could not be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// The argument is not `owner/name[@revision]`.
    #[error("'{found}' is not a hub repository id: {expected}")]
    BadRepoId {
        /// The argument as given.
        found: String,
        /// What a repository id looks like.
        expected: &'static str,
    },
    /// Neither `HF_HOME`, `XDG_CACHE_HOME` nor `HOME` is set, so there is no cache folder.
    #[error("no Hugging Face cache folder: set HF_HOME (or HF_HUB_CACHE)")]
    NoCacheDir,
    /// The hub refused access (401 or 403): a gated or private repository.
    #[error("{repo}{}: the hub answered {status}: {reason} (hint: {})", on_file(file), if *token_sent {
        "the token was sent but has no access; accept the model's terms on its page on the hub, or use a token that has access"
    } else {
        "for a gated or private model, accept its terms on the hub and set HF_TOKEN or run `huggingface-cli login`"
    })]
    Unauthorized {
        /// The repository.
        repo: RepoId,
        /// The file asked for, when it was a download that failed.
        file: Option<String>,
        /// 401 or 403.
        status: u16,
        /// The hub's reason (`X-Error-Message` or the `error` of its JSON body).
        reason: String,
        /// Whether a token went with the request.
        token_sent: bool,
    },
    /// The repository, revision or file does not exist (404).
    #[error(
        "{repo}{}: the hub answered 404: {reason} (hint: check the repository id and the revision)",
        on_file(file)
    )]
    NotFound {
        /// The repository.
        repo: RepoId,
        /// The file asked for, when it was a download that failed.
        file: Option<String>,
        /// The hub's reason.
        reason: String,
    },
    /// Any other HTTP status.
    #[error("{repo}{}: the hub answered {status}: {reason}", on_file(file))]
    Status {
        /// The repository.
        repo: RepoId,
        /// The file asked for, when it was a download that failed.
        file: Option<String>,
        /// The HTTP status.
        status: u16,
        /// The hub's reason.
        reason: String,
    },
    /// The hub could not be reached, or the connection broke.
    #[error("{repo}{}: cannot reach the hub: {message}", on_file(file))]
    Network {
        /// The repository.
        repo: RepoId,
        /// The file asked for, when it was a download that failed.
        file: Option<String>,
        /// What the HTTP client said.
        message: String,
    },
    /// A download failed in another way (hf-hub's error is the source).
    #[error("{repo}{}: download failed", on_file(file))]
    Download {
        /// The repository.
        repo: RepoId,
        /// The file asked for.
        file: Option<String>,
        /// hf-hub's error.
        source: ApiError,
    },
    /// Reading or writing the hub cache failed.
    #[error("{}: hub cache", path.display())]
    Cache {
        /// The cache folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The hub's answer named a commit that is not a 40-digit hash.
    #[error("{repo}: the hub reported commit '{found}', expected a 40-digit hex hash")]
    BadCommit {
        /// The repository.
        repo: RepoId,
        /// The `sha` the hub sent.
        found: String,
    },
    /// A file arrived from another commit than the repository's listing named.
    #[error("{repo}: '{file}' arrived from another commit than {expected} (hint: the branch moved during the download; run again)")]
    CommitMoved {
        /// The repository.
        repo: RepoId,
        /// The file.
        file: String,
        /// The commit of the listing.
        expected: String,
    },
    /// The repository has no `config.json`.
    #[error("{repo}: no config.json in the repository (hint: gguftune converts transformers checkpoints; a repository of GGUF files needs no conversion)")]
    NoConfig {
        /// The repository.
        repo: RepoId,
    },
    /// The repository's weights are pickled only.
    #[error("{repo}: its weights are only in '{file}', a pickle, and unpickling can run arbitrary code, so it is not downloaded (hint: use a revision or a copy of the model with model.safetensors, e.g. the hub's 'refs/pr/N' safetensors conversion)")]
    PickleOnly {
        /// The repository.
        repo: RepoId,
        /// The pickled weights file.
        file: String,
    },
    /// The repository has no weights conversion reads.
    #[error("{repo}: no model.safetensors or model.safetensors.index.json in the repository{}", found_note(found))]
    NoWeights {
        /// The repository.
        repo: RepoId,
        /// Other safetensors files it has.
        found: Vec<String>,
    },
    /// The shard index names a file the repository lacks, or one that is not a plain file name.
    #[error("{repo}: model.safetensors.index.json names shard '{shard}', {why}")]
    BadShard {
        /// The repository.
        repo: RepoId,
        /// The shard name.
        shard: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The shard index is not the JSON it should be.
    #[error("{}: expected a JSON object with a 'weight_map' of file names", path.display())]
    BadIndex {
        /// The index file.
        path: PathBuf,
    },
    /// A downloaded file's sha256 is not the one its etag gives; the file was removed.
    #[error("{repo} '{file}': sha256 of the download is {found}, expected {expected} (the hub's etag); the file was removed (hint: run again to download it anew)")]
    Sha256Mismatch {
        /// The repository.
        repo: RepoId,
        /// The file.
        file: String,
        /// The sha256 the hub's etag gives, in hex.
        expected: Box<str>,
        /// The sha256 of the bytes that arrived, in hex.
        found: Box<str>,
    },
    /// A safetensors header is longer than any reader accepts, so it was not requested.
    #[error("{repo} '{file}': the safetensors header is {found} bytes, expected at most {max}")]
    HeaderTooLarge {
        /// The repository.
        repo: RepoId,
        /// The safetensors file.
        file: String,
        /// The length its first 8 bytes give.
        found: u64,
        /// The limit.
        max: u64,
    },
    /// A safetensors header read from the hub is not valid.
    #[error("{repo} '{file}': not a valid safetensors header")]
    Header {
        /// The repository.
        repo: RepoId,
        /// The safetensors file.
        file: String,
        /// What the header parser found.
        source: safetensors::SafeTensorError,
    },
    /// A range request was not answered with the bytes asked for.
    #[error("{repo} '{file}': asked for bytes {first}-{last}, the hub answered {found}")]
    BadRange {
        /// The repository.
        repo: RepoId,
        /// The file.
        file: String,
        /// The first byte asked for.
        first: u64,
        /// The last byte asked for.
        last: u64,
        /// What came back instead.
        found: String,
    },
    /// A file fetched from the hub is not what it should be (config.json that is not a JSON
    /// object, an index naming a tensor that its shard lacks).
    #[error(transparent)]
    Hf(#[from] crate::hf::HfError),
    /// `--offline` and the cache has no complete snapshot of the repository.
    #[error("{repo}: not in the hub cache at {} (hint: run once without --offline to download it)", cache.display())]
    NotCached {
        /// The repository.
        repo: RepoId,
        /// The cache folder searched.
        cache: PathBuf,
    },
}

fn on_file(file: &Option<String>) -> String {
    file.as_ref().map(|f| format!(" '{f}'")).unwrap_or_default()
}

fn found_note(found: &[String]) -> String {
    if found.is_empty() {
        String::new()
    } else {
        format!(" (it has {}; only the standard names are converted)", found.join(", "))
    }
}

impl HubError {
    /// Turns hf-hub's error into the hub's reason: the status and its one-line message.
    pub(super) fn from_api(err: ApiError, repo: &RepoId, options: &HubOptions, file: Option<&str>) -> HubError {
        let download = |source| HubError::Download { repo: repo.clone(), file: file.map(str::to_owned), source };
        let inner = match err {
            ApiError::RequestError(inner) => *inner,
            ApiError::TooManyRetries(inner) => match *inner {
                ApiError::RequestError(inner) => *inner,
                other => return download(ApiError::TooManyRetries(Box::new(other))),
            },
            other => return download(other),
        };
        HubError::from_ureq(inner, repo, options, file)
    }

    /// Turns the HTTP client's error into the hub's reason: the status and its one-line message.
    pub(super) fn from_ureq(err: ureq::Error, repo: &RepoId, options: &HubOptions, file: Option<&str>) -> HubError {
        let repo = repo.clone();
        let file = file.map(str::to_owned);
        match err {
            ureq::Error::Status(status, response) => {
                let reason = reason_of(response);
                match status {
                    401 | 403 => {
                        HubError::Unauthorized { repo, file, status, reason, token_sent: options.token.is_some() }
                    }
                    404 => HubError::NotFound { repo, file, reason },
                    _ => HubError::Status { repo, file, status, reason },
                }
            }
            ureq::Error::Transport(transport) => HubError::Network { repo, file, message: transport.to_string() },
        }
    }

    /// Whether the failure is in reaching or writing (I/O), rather than in what was asked for.
    pub fn is_io(&self) -> bool {
        matches!(
            self,
            HubError::Network { .. }
                | HubError::Download { .. }
                | HubError::Cache { .. }
                | HubError::NotCached { .. }
                | HubError::NoCacheDir
                | HubError::Status { .. }
                | HubError::Sha256Mismatch { .. }
                | HubError::BadRange { .. }
                | HubError::Hf(crate::hf::HfError::Io { .. })
        )
    }
}

/// The hub puts its reason in `X-Error-Message` and in the `error` field of a JSON body.
fn reason_of(response: ureq::Response) -> String {
    const MAX_REASON_BYTES: u64 = 4096;
    if let Some(message) = response.header("x-error-message").filter(|m| !m.trim().is_empty()) {
        return message.trim().to_owned();
    }
    let status_text = response.status_text().to_owned();
    let mut body = String::new();
    // Best effort: a body that cannot be read leaves the status text as the reason.
    let _ =
        std::io::Read::read_to_string(&mut std::io::Read::take(response.into_reader(), MAX_REASON_BYTES), &mut body);
    let from_json = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned));
    let line = from_json.unwrap_or(body);
    let line = line.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        status_text
    } else {
        line.to_owned()
    }
}
