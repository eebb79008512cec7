//! Models on the Hugging Face hub: a repository id (`owner/name[@revision]`) becomes a local
//! snapshot folder that [`crate::hf::Checkpoint::open`] reads like any other.
//!
//! Downloads go through the hub's own Rust client, `hf-hub` (its blocking `ureq` API), into the
//! cache layout huggingface_hub uses (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`): `models--owner--name/blobs/<etag>` holds the bytes,
//! `snapshots/<commit>/<file>` links to them and `refs/<revision>` names the commit. Files that
//! Python tools downloaded are reused, and ours are reused by them.
//!
//! Only the files conversion reads are fetched: `config.json`, the tokenizer and generation
//! files that exist, and `model.safetensors` or `model.safetensors.index.json` with its shards.
//! Pickled weights (`pytorch_model.bin`) are never fetched: unpickling can run code.
//!
//! What hf-hub gives and what it does not:
//! - an interrupted download stays in `blobs/<etag>.part` and the next attempt (a retry in the
//!   same run, or the next run) asks for the rest with a `Range` request;
//! - hf-hub does not check the downloaded bytes against the sha256 in the etag, so we do, for
//!   every `.safetensors` file (see `hub/verify.rs`);
//! - hf-hub reads neither `HF_HUB_CACHE` nor `HF_TOKEN` nor `HF_HUB_OFFLINE` itself, so
//!   [`HubOptions::from_env`] resolves them and hands them to it.
//!
//! [`fetch_headers`] lists a checkpoint without its weights: config.json and the shard index are
//! downloaded, and of each safetensors file only the header is read, by range requests.
//!
//! This module does not print: progress comes out as [`FetchEvent`]s.

mod error;
mod headers;
mod repo_id;
mod select;
mod verify;

use std::path::{Path, PathBuf};

use hf_hub::api::sync::{Api, ApiBuilder};
use hf_hub::{Cache, Repo, RepoType};

pub use error::HubError;
pub use headers::{fetch_headers, RemoteCheckpoint, RemoteFile};
pub use repo_id::RepoId;
pub use select::{select_files, INDEX_FILE, OPTIONAL_FILES, SINGLE_FILE};

/// The hub's address when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// The revision asked for when a repository id has no `@revision`.
pub const DEFAULT_REVISION: &str = "main";

/// Where and how to fetch: resolved once from the environment, then passed down.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// The hub's base URL (`HF_ENDPOINT`), without a trailing slash.
    pub endpoint: String,
    /// The hub cache folder (`HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`).
    pub cache_dir: PathBuf,
    /// The access token for gated and private repositories (`HF_TOKEN`, else the token file
    /// `huggingface-cli login` writes).
    pub token: Option<String>,
    /// Use the cache only, never the network (`--offline`, or `HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// How many times an interrupted download is resumed within one run.
    pub retries: usize,
}

impl HubOptions {
    /// Reads `HF_ENDPOINT`, `HF_HUB_CACHE`, `HF_HOME`, `HF_TOKEN`, `HF_TOKEN_PATH` and
    /// `HF_HUB_OFFLINE` as huggingface_hub does.
    pub fn from_env() -> Result<HubOptions, HubError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let hf_home = match var("HF_HOME") {
            Some(home) => PathBuf::from(home),
            None => {
                let xdg = var("XDG_CACHE_HOME").map(PathBuf::from);
                let home = var("HOME").map(|h| Path::new(&h).join(".cache"));
                xdg.or(home).ok_or(HubError::NoCacheDir)?.join("huggingface")
            }
        };
        let cache_dir = var("HF_HUB_CACHE").map(PathBuf::from).unwrap_or_else(|| hf_home.join("hub"));
        let token_path = var("HF_TOKEN_PATH").map(PathBuf::from).unwrap_or_else(|| hf_home.join("token"));
        let token = var("HF_TOKEN").or_else(|| {
            let text = std::fs::read_to_string(token_path).ok()?;
            Some(text.trim().to_owned()).filter(|t| !t.is_empty())
        });
        let endpoint = var("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        let offline = var("HF_HUB_OFFLINE")
            .is_some_and(|v| matches!(v.trim().to_ascii_uppercase().as_str(), "1" | "ON" | "YES" | "TRUE"));
        Ok(HubOptions { endpoint: endpoint.trim_end_matches('/').to_owned(), cache_dir, token, offline, retries: 3 })
    }
}

/// Progress of one file's download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchEvent<'a> {
    /// A download starts (or restarts, after an interruption) with `total_bytes` to reach.
    Start {
        /// The file's name in the repository.
        file: &'a str,
        /// Its size.
        total_bytes: u64,
    },
    /// `done_bytes` of the file are on disk.
    Progress {
        /// The file's name in the repository.
        file: &'a str,
        /// Bytes on disk so far (a resumed download starts where the last one stopped).
        done_bytes: u64,
    },
    /// The file is complete.
    Finish {
        /// The file's name in the repository.
        file: &'a str,
    },
}

/// Fetches the files conversion needs from `repo` into the hub cache and returns the snapshot
/// folder (`models--owner--name/snapshots/<commit>`). With `options.offline` the cache alone
/// answers.
pub fn fetch_checkpoint(
    repo: &RepoId,
    options: &HubOptions,
    progress: &mut dyn FnMut(FetchEvent<'_>),
) -> Result<PathBuf, HubError> {
    if options.offline {
        return cached_snapshot(repo, &options.cache_dir);
    }
    let listing = list_repo(repo, options)?;
    for file in select_files(repo, &listing.siblings)? {
        listing.download(repo, options, &file, progress)?;
        // The shards are named inside the index, so they come once it is on disk.
        if file == INDEX_FILE {
            for shard in select::shards_of_index(repo, &listing.snapshot.join(INDEX_FILE), &listing.siblings)? {
                listing.download(repo, options, &shard, progress)?;
            }
        }
    }
    listing.pin_revision(repo, options)?;
    Ok(listing.snapshot)
}

/// A repository at one commit, as the hub lists it.
struct Listing {
    /// hf-hub's client, set up from the options.
    api: Api,
    /// The commit the revision resolved to.
    commit: String,
    /// Every file of the repository at that commit.
    siblings: Vec<String>,
    /// The snapshot folder of that commit in the cache.
    snapshot: PathBuf,
}

/// Asks the hub which commit `repo`'s revision is at and which files it has.
fn list_repo(repo: &RepoId, options: &HubOptions) -> Result<Listing, HubError> {
    let api = ApiBuilder::from_cache(Cache::new(options.cache_dir.clone()))
        .with_endpoint(options.endpoint.clone())
        .with_token(options.token.clone())
        .with_progress(false)
        .with_retries(options.retries)
        .build()
        .map_err(|e| HubError::from_api(e, repo, options, None))?;
    let info = api
        .repo(Repo::with_revision(repo.id(), RepoType::Model, repo.revision().to_owned()))
        .info()
        .map_err(|e| HubError::from_api(e, repo, options, None))?;
    let commit = info.sha;
    if !is_commit_hash(&commit) {
        return Err(HubError::BadCommit { repo: repo.clone(), found: commit });
    }
    let siblings: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let snapshot = snapshot_dir(&options.cache_dir, repo, &commit);
    Ok(Listing { api, commit, siblings, snapshot })
}

impl Listing {
    /// Downloads `file` at the listing's commit unless the snapshot already has it, and checks
    /// a `.safetensors` file against the sha256 in its etag.
    fn download(
        &self,
        repo: &RepoId,
        options: &HubOptions,
        file: &str,
        progress: &mut dyn FnMut(FetchEvent<'_>),
    ) -> Result<(), HubError> {
        let target = self.snapshot.join(file);
        if target.is_file() {
            return Ok(());
        }
        // Asking by commit keeps every file of one snapshot, even if the branch moves meanwhile.
        let pinned = self.api.repo(Repo::with_revision(repo.id(), RepoType::Model, self.commit.clone()));
        let sink = ProgressSink { file, done_bytes: 0, sink: &mut *progress };
        let path =
            pinned.download_with_progress(file, sink).map_err(|e| HubError::from_api(e, repo, options, Some(file)))?;
        if path != target {
            return Err(HubError::CommitMoved {
                repo: repo.clone(),
                file: file.to_owned(),
                expected: self.commit.clone(),
            });
        }
        if file.ends_with(".safetensors") {
            verify::check_blob(repo, file, &target)?;
        }
        Ok(())
    }

    /// Points `refs/<revision>` at the listing's commit, as huggingface_hub does, so that
    /// `--offline` finds the snapshot by the revision asked for.
    fn pin_revision(&self, repo: &RepoId, options: &HubOptions) -> Result<(), HubError> {
        if repo.revision() != self.commit {
            Cache::new(options.cache_dir.clone())
                .repo(Repo::with_revision(repo.id(), RepoType::Model, repo.revision().to_owned()))
                .create_ref(&self.commit)
                .map_err(|source| HubError::Cache { path: options.cache_dir.clone(), source })?;
        }
        Ok(())
    }
}

/// The snapshot folder of `repo` at `commit` in the hub cache at `cache_dir`.
fn snapshot_dir(cache_dir: &Path, repo: &RepoId, commit: &str) -> PathBuf {
    let folder = Repo::model(repo.id()).folder_name();
    cache_dir.join(folder).join("snapshots").join(commit)
}

/// The snapshot that `refs/<revision>` (or a commit hash given as the revision) names in the
/// cache, if it holds a checkpoint.
fn cached_snapshot(repo: &RepoId, cache_dir: &Path) -> Result<PathBuf, HubError> {
    let repo_dir = cache_dir.join(Repo::model(repo.id()).folder_name());
    let commit = match std::fs::read_to_string(repo_dir.join("refs").join(repo.revision())) {
        Ok(text) => text.trim().to_owned(),
        Err(_) if is_commit_hash(repo.revision()) => repo.revision().to_owned(),
        Err(_) => return Err(HubError::NotCached { repo: repo.clone(), cache: cache_dir.to_owned() }),
    };
    let snapshot = repo_dir.join("snapshots").join(&commit);
    let not_cached = || HubError::NotCached { repo: repo.clone(), cache: cache_dir.to_owned() };
    if !is_commit_hash(&commit) || !snapshot.join("config.json").is_file() {
        return Err(not_cached());
    }
    // `inspect` caches config.json and the index without the weights: that is not a checkpoint.
    let index = snapshot.join(INDEX_FILE);
    let has_weights = if index.is_file() {
        select::index_shards(repo, &index)?.iter().all(|shard| snapshot.join(shard).is_file())
    } else {
        snapshot.join(SINGLE_FILE).is_file()
    };
    if !has_weights {
        return Err(not_cached());
    }
    Ok(snapshot)
}

/// Whether `s` is a full git commit hash (40 lowercase hex digits), as the hub reports them.
fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// hf-hub's progress trait, forwarded as [`FetchEvent`]s.
struct ProgressSink<'a> {
    file: &'a str,
    done_bytes: u64,
    sink: &'a mut dyn FnMut(FetchEvent<'_>),
}

impl hf_hub::api::Progress for ProgressSink<'_> {
    fn init(&mut self, size: usize, _filename: &str) {
        self.done_bytes = 0;
        (self.sink)(FetchEvent::Start { file: self.file, total_bytes: size as u64 });
    }

    fn update(&mut self, size: usize) {
        self.done_bytes += size as u64;
        (self.sink)(FetchEvent::Progress { file: self.file, done_bytes: self.done_bytes });
    }

    fn finish(&mut self) {
        (self.sink)(FetchEvent::Finish { file: self.file });
    }
}
