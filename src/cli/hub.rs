//! Model arguments that name a hub repository: fetched into the Hugging Face cache, with a
//! progress bar per file, before the command runs on the snapshot folder; or, for `inspect`,
//! read by their safetensors headers alone.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::output::byte_progress;
use gguftune::hub::{self, FetchEvent, HubOptions, RepoId};
use gguftune::inspect::{inspect, inspect_hub, Report};

/// The local folder `input` names: `input` itself when it exists or is not shaped like a
/// repository id (`owner/name[@revision]`), else the repository's snapshot in the hub cache,
/// downloaded unless `offline`.
pub fn resolve_model_dir(input: &str, offline: bool) -> anyhow::Result<PathBuf> {
    let Some(repo) = repo_of(input) else {
        return Ok(PathBuf::from(input));
    };
    let options = options(offline)?;
    let mut bars = Bars::default();
    let snapshot = hub::fetch_checkpoint(&repo, &options, &mut |event| bars.show(event)).with_context(|| {
        format!("fetching {repo} from {}", if options.offline { "the hub cache" } else { &options.endpoint })
    })?;
    eprintln!("{repo}: {}", snapshot.display());
    Ok(snapshot)
}

/// The `inspect` report on the hub repository `input` names (see [`resolve_model_dir`]), or
/// `None` when it names none: config.json and the tensor table from the safetensors headers,
/// read by range requests without downloading the weights; with `offline`, the cached snapshot.
pub fn inspect_repo(input: &str, offline: bool) -> anyhow::Result<Option<Report>> {
    let Some(repo) = repo_of(input) else {
        return Ok(None);
    };
    let options = options(offline)?;
    if options.offline {
        let snapshot = resolve_model_dir(input, true)?;
        return Ok(Some(inspect(&snapshot).with_context(|| format!("inspecting {}", snapshot.display()))?));
    }
    let mut bars = Bars::default();
    let remote = hub::fetch_headers(&repo, &options, &mut |event| bars.show(event))
        .with_context(|| format!("reading {repo} from {}", options.endpoint))?;
    Ok(Some(inspect_hub(&remote)))
}

/// The repository `input` names: only when no such path exists and it reads as one.
fn repo_of(input: &str) -> Option<RepoId> {
    if Path::new(input).exists() {
        return None;
    }
    RepoId::parse(input).ok()
}

/// The hub options from the environment, with `--offline` on top.
fn options(offline: bool) -> anyhow::Result<HubOptions> {
    let mut options = HubOptions::from_env()?;
    options.offline |= offline;
    Ok(options)
}

/// One progress bar per file being downloaded.
#[derive(Default)]
struct Bars {
    bar: Option<indicatif::ProgressBar>,
}

impl Bars {
    fn show(&mut self, event: FetchEvent<'_>) {
        match event {
            FetchEvent::Start { file, total_bytes } => {
                if let Some(old) = self.bar.take() {
                    old.finish_and_clear();
                }
                self.bar = Some(byte_progress(total_bytes, file));
            }
            FetchEvent::Progress { done_bytes, .. } => {
                if let Some(bar) = &self.bar {
                    bar.set_position(done_bytes);
                }
            }
            FetchEvent::Finish { .. } => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
            }
        }
    }
}
